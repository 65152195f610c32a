"""What the ingest actor hands to the decision side: market ticks and group closes.

The ingest actor of a symbol group calls an ``IngestHook`` (built inside the actor by a picklable
factory): ``on_ticks`` with the latest mark and book of the symbols whose mark moved, batched per
burst of received messages and never held back more than about 100 ms; ``on_close`` once per 1m
close of the group, after the features of that minute were computed and handed to the writer.
Times are epoch milliseconds of the venue's clock unless a name says ``wall``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
