"""Messages the realtime parts hand each other through Ray calls, and the names they find each other by.

These never leave the Ray cluster: they travel as pickled arguments and answers of actor and Serve
calls, so they are frozen dataclasses that may hold numpy arrays (the bus messages of
``core.messages.bus`` are what crosses process and storage boundaries as MessagePack).

- an ingest actor → its decider (an ``IngestHook``): ``MarketTick`` batches with the latest mark and
  book of the symbols whose mark moved, never held back more than about 100 ms; one ``CloseEvent``
  per 1m close of the symbol group, after the features of that minute were computed and handed to
  the writer;
- a decider → the Predictor (Serve app ``PREDICTOR_APP_NAME``, deployment
  ``PREDICTOR_DEPLOYMENT_NAME``): a feature block; the answer is a ``Prediction``;
- a decider → the execution actor (``EXECUTION_ACTOR_NAME``): ``EntryIntent`` lists (and the RL
  agent's ``CloseIntent``s, each before the entry it precedes), ``BarClose`` lists, and the
  ``MarketTick`` batches.

Times are epoch milliseconds of the venue's clock unless a name says ``wall``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.errors import FatalError

#: Name of the detached execution actor (one per Ray namespace and mode; a session may suffix it).
EXECUTION_ACTOR_NAME = "raytrade-execution"
#: The Serve application and deployment names the realtime path looks the Predictor up by.
PREDICTOR_APP_NAME = "raytrade-predictor"
PREDICTOR_DEPLOYMENT_NAME = "Predictor"


@dataclass(frozen=True, slots=True)
class MarketTick:
    """Latest mark (``ts_ms`` is the markPrice event time) and best bid/ask of one symbol."""

    symbol: str
    ts_ms: int
    mark: float
    bid: float
    ask: float


@dataclass(frozen=True, slots=True)
class CloseEvent:
    """One 1m close of a symbol group, after its features are computed and submitted for storage.

    ``features`` is float64 (len(symbols), 132), NaN rows where a symbol has no accepted bar;
    ``status`` is int8 per symbol: 0 OK, else the FeatureEngine reason code (``STATUS_TEXT``).
    ``close``/``quote_volume`` hold the closed bar's last price and quote volume (USDT) of the
    symbols that have one. ``book`` is (bid, ask, ts_ms) of the latest bookTicker, ``mark`` is
    (mark, ts_ms) of the latest markPrice. ``stale`` names, per symbol, why it is not fresh
    (missing bar, book/mark older than the limits, stream silent, backfilling); a fresh symbol is
    absent. ``received_ms`` is the wall-clock time the last kline of this close was received.
    ``inputs`` is the feature engine's input matrix of the close (len(symbols) ×
    ``core.features_kernel.INPUT_COLUMNS``: the bar's OHLCV, taker volume, mark high/low/close,
    premium, funding in force), NaN rows where a symbol has no bar.
    """

    group_id: int
    ts_ms: int
    symbols: tuple[str, ...]
    features: np.ndarray
    status: np.ndarray
    close: dict[str, float]
    quote_volume: dict[str, float]
    book: dict[str, tuple[float, float, int]]
    mark: dict[str, tuple[float, int]]
    stale: dict[str, str]
    received_ms: int
    inputs: np.ndarray


class IngestHook(Protocol):
    """The decision side's entry points; errors raised here are logged and counted, never fatal.

    A hook may also define ``async def warm(history)``: called once after the ingest's warm-up,
    before the first close, with the last ``HOOK_HISTORY_BARS`` 1m inputs per symbol
    (``core.features.SymbolInputs``, lake plus REST top-up), to build its own state.
    """

    async def on_close(self, event: CloseEvent) -> None: ...

    async def on_ticks(self, ticks: list[MarketTick]) -> None: ...


@dataclass(frozen=True, slots=True)
class EntryIntent:
    """An entry decided by the policy on the close of bar ``decision_ts`` (its open time, ms)."""

    symbol: str
    decision_ts: int
    side: int  # +1 long, −1 short
    size_fraction: float  # of equity (SimConfig.sizing "equity_fraction")
    leverage: int
    sl_price: float
    tp_price: float
    decision_price: float
    atr: float
    quote_volume: float
    bid: float
    ask: float
    book_ts: int
    mark: float = math.nan
    signal_received_ms: int = 0


@dataclass(frozen=True, slots=True)
class CloseIntent:
    """A close of ``symbol``'s position decided on the close of bar ``decision_ts`` (its open time, ms):
    the RL agent's CLOSE, or the first half of a reversal (LONG while short, SHORT while long).

    ``side`` is the side it closes: +1 only a long, −1 only a short, 0 either (the backtest's signal
    exits: LONG exits a short, SHORT a long, CLOSE either). A book closes only a position entered on
    a decision bar before ``decision_ts``, so a re-delivered close never closes the position the same
    reversal (or a later decision) opened. ``client_id`` (``close_client_id``) is deterministic from
    the session, the symbol and the decision bar: the live book derives its venue order id from it, so
    a retried close is found, not sent twice. Exits are never refused by the risk guards.
    """

    symbol: str
    decision_ts: int
    client_id: str
    side: int = 0
    reason: str = "RL_CLOSE"


def close_client_id(session_id: str, symbol: str, decision_ts: int) -> str:
    """The client id of the close of ``symbol`` decided on bar ``decision_ts`` in session ``session_id``
    (distinct from the trade group ``<session>:<symbol>:<ts>`` of an entry decided on the same bar)."""
    return f"{session_id}:{symbol}:{int(decision_ts)}:close"


@dataclass(frozen=True, slots=True)
class BarClose:
    """A closed 1m bar of one symbol, for the bar rule (SL/TP on the mark range, time exit, funding)."""

    symbol: str
    ts_ms: int  # bar open time
    open: float
    high: float
    low: float
    close: float
    mark_open: float
    mark_high: float
    mark_low: float
    mark_close: float
    quote_volume: float
    funding_rate: float = 0.0  # summed rates of the symbol's funding times in (ts, ts + 1m]


@dataclass(frozen=True, slots=True)
class Prediction:
    """The Predictor's answer to one request: every model output for its rows, and which model.

    ``preds`` maps each output (``core.policy.PREDICTION_KEYS`` and any other target of the model)
    to a 1-D array with one value per requested row, in request order. ``name`` and ``version`` are
    the registered model and the version that computed every value (an alias swap never mixes two
    versions in one answer); ``model_id`` is its MLflow logged-model id, None when unknown.

    Raise FatalError when the arrays are not 1-D of one length: a Predictor that answers so is broken.
    """

    name: str
    version: str
    model_id: str | None
    preds: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        shapes = {k: np.shape(v) for k, v in self.preds.items()}
        if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
            raise FatalError(f"Prediction of {self.name} v{self.version}: outputs must be 1-D of one length, "
                             f"got shapes {shapes}")  # fmt: skip

    @property
    def rows(self) -> int:
        """Number of rows predicted (0 for an answer without outputs)."""
        return len(next(iter(self.preds.values()))) if self.preds else 0

    def output(self, key: str) -> np.ndarray:
        """Return output ``key`` as float64; raise FatalError naming the outputs when the model has none."""
        if key not in self.preds:
            raise FatalError(
                f"model {self.name} v{self.version} has no output {key!r}; it has {sorted(self.preds)}"
            )
        return np.asarray(self.preds[key], np.float64)
