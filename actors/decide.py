"""The decision side of a symbol group (seed 000 §2; spec 001 §12–13, §16): an ``IngestHook``.

On each 1m close of the group (``CloseEvent``) the ``Decider``:

1. checks freshness per symbol: a symbol the ingest marks stale, or whose features were not
   accepted, is skipped and the reason recorded (an ``events`` row ``signal.skipped``);
2. sends the merged 132 features of the fresh symbols to the Ray Serve ``Predictor`` (one request
   per close; the deployment batches requests of all groups) and gets every output with the model
   version that computed it;
3. runs the policy exactly as the backtest does (``core.policy.decide_arrays`` on the close, the
   15m ATR of ``core.labels.label_atr`` and BTC's regime feature, an unknown regime left NaN for the
   policy to treat as high volatility: ``decide_symbols``), and
   stores one ``signals`` row per symbol with all outputs, the decision, size, leverage, SL/TP,
   block reasons and the explain numbers, in one transaction;
4. hands the entries to the risk/execution actor (which applies the book and the hard risk
   guards) with the list of symbols it decided — every close, entries or none, so the actor admits
   a bar's entries of all groups together in the backtest's order — and every closed bar of the
   group to its bar rule; mark ticks go there as they come;
5. then asks the Predictor to ``explain`` the entries (LightGBM ``pred_contrib``: the top feature
   contributions of each output) and adds them to those signal rows' ``explain`` as
   ``"contributions"`` with an UPDATE (``_explain_entries``; see there why after, not before).

With ``decision_policy="rl"`` (``raytrade run --policy rl``) the hybrid agent of spec 001 §25 decides
instead of ``core.policy`` (the signals rows are still written, as the Predictor's record, marked
``explain.policy = "rl"``; their ``decision`` is the supervised policy's and is not acted on):

- Observations: ``core.rl_obs.build_observations`` on the Predictor's outputs and the feature row, the
  same builder the environment uses. The position dims come from the book itself — one
  ``open_positions()`` call to the execution actor per decision close, the paper book's simulator or
  the live book's protected entries (``rl_position_dims``): side, bars held = (close of this bar −
  entry fill time) in 1m bars, unrealized return at the bar's mark close.
- The ``RLPolicy`` deployment (``serve.rl_policy``) answers actions, probabilities and value estimates,
  carried out as the environment's signals (``rl.env.ACTION_SIGNALS``): CLOSE becomes a
  ``CloseIntent`` of either side; LONG/SHORT become a ``CloseIntent`` of the opposite side followed
  by the entry intent in the same submit (the reversal: close, then enter), the entry sized as the
  environment sizes it (``PolicyConfig``'s notional share and leverage, SL/TP at close ∓ k_sl·ATR /
  ± k_tp·ATR of ``LabelSpec``) and through the execution actor's risk guards as usual; the close is
  never refused by them. The book, not this view, decides whether there is a position to close (it
  answers ``FLAT`` otherwise). The close's client id is
  ``close_client_id(session, symbol, decision bar)``. Not carried out, and said so in the row's
  ``model_predictions.not_executed``: LONG while long / SHORT while short (nothing to do), an entry
  without ATR (a reversal still closes).
- Cadence: the agent decides as it was trained, every ``decision_every`` bars (the serving version's
  ``rl_decision_every`` tag, carried by every ``PolicyAnswer``; ``rl.train.DecisionEvery``): it is asked
  only at closes whose bar index (open time // 1 min) is a multiple of it — the same bars in every
  group and after a restart. Between them nothing is asked, recorded or sent (the close is still
  reported to the execution actor with no intents, so SL/TP/time exits keep running on the book). The
  cadence is learnt from the answers (``warm``'s zero observation first); when the alias moves to a
  version of another cadence, an answer at a bar off the new cadence is dropped unrecorded and the
  next bars follow the new one.
- One ``rl_decisions`` row per fresh symbol and decision close, written before the intents go out
  (``executed`` false, ``position_after`` = before); the book's answer sets them: a close filled makes
  the row ``executed`` with ``position_after`` 0 (a reversal whose entry the guards refuse stays so,
  as the environment's CLOSE); an entry filled — in the submit's answer, or for an entry admitted with
  another group's report, by its ``entry`` row seen at a later close — makes it ``executed`` with
  ``position_after`` = the side; when the trade's ``FINAL`` row appears, the row that opened it gets
  ``pnl_result`` = its realized PnL (USDT). A trade still open when the session stops (flattened at END
  after the last close) keeps ``pnl_result`` null. The live book writes the same rows from its ledger
  fills (``storage.trade_rows``).

Each close also publishes, for the anomaly monitor's spread check (``actors.health``), one
``market.book_ticker`` message per traded symbol with the latest bookTicker the ingest handed over
(``CloseEvent.book``; quantities unknown there: 0), after the intents went out, off the decision path;
a bus error is logged and counted.

The 15m ATR needs history: the decider keeps a window of 1m bars per symbol (``ATR_WINDOW_BARS``)
seeded by ``warm`` from the ingest's warm-up history (lake plus REST top-up) and extended by every
closed bar; a symbol without history has no ATR yet, and the policy keeps it flat (NO_ATR). Latency from the last kline's arrival to
the signals commit is recorded per close.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.config import LabelSpec, PolicyConfig
from core.features_kernel import INPUT_COLUMNS
from core.features_schema import FEATURE_INDEX, KEY_COLUMNS
from core.labels import label_atr
from core.messages import (
    EXECUTION_ACTOR_NAME,
    PREDICTOR_APP_NAME,
    PREDICTOR_DEPLOYMENT_NAME,
    BarClose,
    BookTicker,
    CloseEvent,
    CloseIntent,
    EntryIntent,
    MarketTick,
    Prediction,
    SignalNew,
    Topic,
    close_client_id,
)
from core.policy import PREDICTION_KEYS, Action, PolicyArrays, decide_arrays, reason_names
from core.rl_obs import FEATURE_INPUTS, OBS_DIM, PREDICTION_INPUTS, build_observations

log = logging.getLogger(__name__)

#: 1m bars kept per symbol for the 15m ATR: the backtest's warm-up of 10·period coarse bars, plus two.
ATR_WINDOW_BARS = (10 * 14 + 2) * 15
_I = {name: i for i, name in enumerate(INPUT_COLUMNS)}
_DECISION = {int(Action.LONG): "LONG", int(Action.SHORT): "SHORT", int(Action.FLAT): "FLAT"}
#: The RL agent's deployment (``serve.rl_policy``: APP_NAME, DEPLOYMENT_NAME) and actions (``rl.env.Action``).
RL_POLICY_APP_NAME = "raytrade-rl-policy"
RL_POLICY_DEPLOYMENT_NAME = "RLPolicy"
RL_ACTION_NAMES: tuple[str, ...] = ("HOLD", "LONG", "SHORT", "CLOSE")
_RL_SIDE = {1: 1, 2: -1}  # entry actions → side


class DeciderConfig(BaseModel):
    """Plain data the ingest actor builds its decider from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    session_id: str
    database_url: str
    redis_url: str | None = None
    model_name: str
    predictor_app: str = PREDICTOR_APP_NAME
    predictor_deployment: str = PREDICTOR_DEPLOYMENT_NAME
    execution_actor: str = EXECUTION_ACTOR_NAME
    trade_symbols: tuple[str, ...] | None = Field(None, description="symbols traded; None: all of the group")
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    label: LabelSpec = Field(default_factory=LabelSpec)
    predict_timeout_s: float = 10.0
    explain_top_k: int = Field(5, ge=1, le=132, description="features per output in a signal's contributions")
    explain_timeout_s: float = 30.0
    decision_policy: Literal["supervised", "rl"] = Field(
        "supervised",
        description="supervised: core.policy decides; rl: the RLPolicy agent decides (rl_decisions)",
    )
    rl_app: str = RL_POLICY_APP_NAME
    rl_deployment: str = RL_POLICY_DEPLOYMENT_NAME
    rl_timeout_s: float = 10.0


@dataclass(slots=True)
class _Bars:
    ts: deque[int] = field(default_factory=lambda: deque(maxlen=ATR_WINDOW_BARS))
    high: deque[float] = field(default_factory=lambda: deque(maxlen=ATR_WINDOW_BARS))
    low: deque[float] = field(default_factory=lambda: deque(maxlen=ATR_WINDOW_BARS))
    close: deque[float] = field(default_factory=lambda: deque(maxlen=ATR_WINDOW_BARS))
    last_mark_close: float = math.nan

    def add(self, ts: int, high: float, low: float, close: float) -> None:
        if self.ts and ts <= self.ts[-1]:
            return
        self.ts.append(ts)
        self.high.append(high)
        self.low.append(low)
        self.close.append(close)

    def atr(self, spec: LabelSpec) -> float:
        if not self.ts:
            return math.nan
        ts = np.fromiter(self.ts, np.int64, len(self.ts))
        arrays = (np.fromiter(d, np.float64, len(d)) for d in (self.high, self.low, self.close))
        return float(label_atr(ts, *arrays, spec.atr_timeframe, spec.atr_period)[-1])


def decide_symbols(
    features: np.ndarray,
    preds: Mapping[str, np.ndarray],
    price: np.ndarray,
    atr: np.ndarray,
    policy: PolicyConfig,
    label_spec: LabelSpec,
) -> PolicyArrays:
    """The policy's decisions for the fresh symbols of one close, as the backtest makes them: each
    symbol's row of the 132 features (``features``, its ``f_15m_btc_regime`` the BTC regime), its
    predictions, close and 15m ATR. An unknown regime (NaN: BTC's regime warms up over ~5.6 days of
    15m bars) reaches the policy as NaN, which treats it as high volatility, as the backtest does."""
    regime = features[:, FEATURE_INDEX[KEY_COLUMNS["btc_regime"]]]
    return decide_arrays(preds, price, atr, regime, policy, label_spec)


def signal_rows(
    event: CloseEvent,
    symbols: Sequence[str],
    preds: dict[str, np.ndarray],
    decided: Any,
    atr: np.ndarray,
    model_id: str,
    version: str,
    equity: float,
) -> list[dict[str, Any]]:
    """The ``signals`` rows of one close: every output, the decision, sizing (USDT notional at the
    book's ``equity`` now), SL/TP, reasons, explain."""
    rows = []
    for j, s in enumerate(symbols):
        d = int(decided.direction[j])
        entry = d != 0

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        rows.append({
            "symbol": s, "ts": event.ts_ms, "model_id": model_id, "model_version": version,
            "ev_long": float(np.nan_to_num(decided.ev_long[j], nan=-1.0)),
            "ev_short": float(np.nan_to_num(decided.ev_short[j], nan=-1.0)),
            "er_long": num(preds["er_long"][j]), "er_short": num(preds["er_short"][j]),
            "q05_long": num(preds["q05_long"][j]), "q05_short": num(preds["q05_short"][j]),
            "e_mae_long": num(preds["e_mae_long"][j]), "e_mae_short": num(preds["e_mae_short"][j]),
            "e_hold_long_min": int(round(preds["e_hold_long"][j])) if math.isfinite(preds["e_hold_long"][j]) else None,
            "e_hold_short_min": int(round(preds["e_hold_short"][j])) if math.isfinite(preds["e_hold_short"][j])
            else None,
            "decision": _DECISION[d], "size_notional": float(decided.size_fraction[j]) * equity if entry else None,
            "leverage": int(decided.leverage[j]) if entry else None,
            "sl_price": num(decided.sl_price[j]) if entry else None,
            "tp_price": num(decided.tp_price[j]) if entry else None,
            "block_reason_codes": list(reason_names(int(decided.reasons[j]))),
            "explain": {
                "candidate": _DECISION[int(decided.candidate[j])], "price": event.close.get(s), "atr": num(atr[j]),
                "cost_long": num(decided.cost_long[j]), "cost_short": num(decided.cost_short[j]),
                "risk_penalty_long": num(decided.risk_penalty_long[j]),
                "risk_penalty_short": num(decided.risk_penalty_short[j]),
                "size_fraction": float(decided.size_fraction[j]), "equity": equity,
                "group": event.group_id, "received_ms": event.received_ms,
            },
        })  # fmt: skip
    return rows


class Decider:
    """``IngestHook`` of one group: freshness → Predictor → policy → signals → execution."""

    def __init__(self, cfg: DeciderConfig) -> None:
        import ray
        from ray import serve

        from storage import db

        self.cfg = cfg
        from storage.bus import open_bus

        self._engine = db.make_engine(cfg.database_url)
        self._bus = open_bus(cfg.redis_url)
        self._predictor = serve.get_deployment_handle(cfg.predictor_deployment, app_name=cfg.predictor_app)
        self._execution = ray.get_actor(cfg.execution_actor)
        self._bars: dict[str, _Bars] = {}
        self._model_ids: dict[str, str] = {}
        self._pending: set[asyncio.Future[Any]] = set()
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        self.last_close_ms = 0  # bar open time of the last close handled (decided or skipped)
        self.counts = {"closes": 0, "signals": 0, "entries_sent": 0, "skipped": 0, "errors": 0,
                       "explained": 0, "explain_errors": 0}  # fmt: skip
        self.skip_reasons: dict[str, int] = {}  # reason → skipped decisions, for the run summary
        self._rl: Any = None
        if cfg.decision_policy == "rl":
            self._rl = serve.get_deployment_handle(cfg.rl_deployment, app_name=cfg.rl_app)
        # rl: entry decisions waiting for the book's answer: (symbol, decision ts) → (rl_decisions id, side)
        self._rl_waiting: dict[tuple[str, int], tuple[int, int]] = {}
        # rl: close intents waiting for the book's answer: (symbol, decision ts) → rl_decisions id
        self._rl_closing: dict[tuple[str, int], int] = {}
        self._rl_close_counted: set[int] = set()  # rows counted executed by a close, their entry pending
        # trade group of an executed entry → its decision id (for pnl_result)
        self._rl_held: dict[str, int] = {}
        self._rl_known: set[str] = set()  # model ids seen in rl_models
        self._rl_every: int | None = None  # the serving version's decision_every (from its answers)
        self.rl_counts: dict[str, int] = {"decisions": 0, **dict.fromkeys(RL_ACTION_NAMES, 0), "executed": 0,
                                          "not_executed": 0, "between": 0}  # fmt: skip
        self.rl_not_executed: dict[str, int] = {}  # why an LONG/SHORT/CLOSE was not carried out

    # --- the hook ----------------------------------------------------------------------------------
    async def warm(self, history: Mapping[str, Any]) -> None:
        """Seed the ATR windows from the ingest's warm-up history (``SymbolInputs`` per symbol) and
        rehearse one close's decision with the arrays a real close passes, so the first close pays
        no start-up cost (numba compiling or loading a kernel for a signature not seen yet)."""
        for symbol, inputs in history.items():
            bars = _Bars()
            x = inputs.values
            for t, h, lo, c in zip(
                inputs.ts_ms, x[:, _I["high"]], x[:, _I["low"]], x[:, _I["close"]], strict=True
            ):
                if np.isfinite(c):
                    bars.add(int(t), float(h), float(lo), float(c))
            if len(x):
                bars.last_mark_close = float(x[-1, _I["mark_close"]])
            self._bars[symbol] = bars
            bars.atr(self.cfg.label)  # compiles/loads the ATR kernels now
        probe = _Bars()  # the same kernels when no symbol has history yet
        for i in range(60):
            probe.add(i * 60_000, 101.0, 99.0, 100.0)
        probe.atr(self.cfg.label)
        n = max(1, len(self.cfg.trade_symbols or history))
        features = np.zeros((n, len(FEATURE_INDEX)))
        answer: Prediction = await asyncio.wait_for(
            self._predictor.predict.remote(features), self.cfg.predict_timeout_s * 3
        )
        answered = {k: answer.output(k) for k in PREDICTION_KEYS}
        price, atr = np.full(n, 100.0), np.full(n, 1.0)
        # The answer's arrays arrive through Ray read-only (out-of-band buffers), which numba types
        # apart from writable ones: the policy kernel has a signature for each, warm both.
        for preds in (answered, {k: np.array(v) for k, v in answered.items()}):
            decide_symbols(features, preds, price, atr, self.cfg.policy, self.cfg.label)
        await self._execution.equity.remote()  # resolves the actor handle now
        if self._rl is not None:
            probe = await asyncio.wait_for(
                self._rl.decide.remote(np.zeros((n, OBS_DIM), np.float32)), self.cfg.rl_timeout_s * 3
            )
            self._rl_every = _decision_every(probe)
        try:
            await asyncio.to_thread(self._model_id, answer.version)
        except RuntimeError as e:  # each close reports it (counted as a hook error)
            log.warning("decider: %s", e)

    async def on_close(self, event: CloseEvent) -> None:
        intents: list[EntryIntent | CloseIntent] = []
        to_explain: _ToExplain | None = None
        try:
            intents, to_explain = await self._on_close(event)
        finally:
            # every close is reported, entries or none, so the execution actor can admit the bar's
            # entries of all groups together in the backtest's symbol order
            traded = tuple(self.cfg.trade_symbols or event.symbols)
            self.counts["entries_sent"] += sum(isinstance(i, EntryIntent) for i in intents)
            ref = self._execution.submit.remote(intents, event.ts_ms, traded)
            if self._rl is None:
                self._track(ref)
            else:
                future = asyncio.ensure_future(self._rl_results(ref))
                self._pending.add(future)
                future.add_done_callback(self._pending.discard)
            self.last_close_ms = max(self.last_close_ms, event.ts_ms)
            self._quotes(event, traded)
        if to_explain is not None:
            future = asyncio.ensure_future(self._explain_entries(to_explain))
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    async def _on_close(self, event: CloseEvent) -> tuple[list[EntryIntent | CloseIntent], _ToExplain | None]:
        """Decide one close; return the entries for the execution actor and the entry rows to explain."""
        self.counts["closes"] += 1
        inputs = event.inputs
        fresh: list[int] = []
        skipped: list[tuple[str, str]] = []
        bar_closes: list[BarClose] = []
        traded = set(self.cfg.trade_symbols or event.symbols)
        for k, s in enumerate(event.symbols):
            ok_bar = int(event.status[k]) == 0 and np.isfinite(inputs[k, _I["close"]])
            if ok_bar:
                window = self._bars.setdefault(s, _Bars())
                row = inputs[k]
                window.add(event.ts_ms, row[_I["high"]], row[_I["low"]], row[_I["close"]])
                mark_close = row[_I["mark_close"]]
                mark_open = (
                    window.last_mark_close if math.isfinite(window.last_mark_close) else row[_I["open"]]
                )
                window.last_mark_close = mark_close if math.isfinite(mark_close) else window.last_mark_close
                if (
                    math.isfinite(mark_close) and s in traded
                ):  # a reference symbol's bar comes from its own group
                    bar_closes.append(BarClose(
                        s, event.ts_ms, row[_I["open"]], row[_I["high"]], row[_I["low"]], row[_I["close"]],
                        mark_open, row[_I["mark_high"]], row[_I["mark_low"]], mark_close,
                        event.quote_volume.get(s, math.nan),
                    ))  # fmt: skip
            if s not in traded:
                continue
            if s in event.stale:
                skipped.append((s, event.stale[s]))
            elif not ok_bar:
                skipped.append((s, f"features not accepted (status {int(event.status[k])})"))
            else:
                fresh.append(k)
        if bar_closes:
            self._track(self._execution.on_bars.remote(bar_closes))
        if skipped:
            await asyncio.to_thread(self._record_skips, event, skipped)
        if not fresh:
            return [], None
        symbols = [event.symbols[k] for k in fresh]
        answer: Prediction = await asyncio.wait_for(
            self._predictor.predict.remote(np.ascontiguousarray(event.features[fresh])),
            self.cfg.predict_timeout_s,
        )
        preds = {k: answer.output(k) for k in PREDICTION_KEYS}
        price = np.array([event.close[s] for s in symbols])
        atr = np.array([self._bars[s].atr(self.cfg.label) for s in symbols])
        decided = decide_symbols(event.features[fresh], preds, price, atr, self.cfg.policy, self.cfg.label)
        version = answer.version
        model_id = await asyncio.to_thread(self._model_id, version)
        equity = float(await self._execution.equity.remote())
        rows = signal_rows(event, symbols, preds, decided, atr, model_id, version, equity)
        if self._rl is not None:  # the Predictor's record; the RL agent's decision is in rl_decisions
            for r in rows:
                r["explain"]["policy"] = "rl"
        await asyncio.to_thread(self._store, rows)
        await asyncio.to_thread(self._publish, event, rows)
        self.latencies_ms.append(time.time() * 1000 - event.received_ms)
        self.counts["signals"] += len(rows)
        if self._rl is not None:
            return await self._rl_decide(event, fresh, symbols, preds, price, atr, version), None
        entries = np.flatnonzero(decided.direction != 0)
        to_explain = None
        if len(entries):
            to_explain = _ToExplain(
                event.ts_ms, [rows[j] for j in entries], np.ascontiguousarray(event.features[fresh][entries])
            )
        return [*self._intents(event, symbols, decided, price, atr)], to_explain

    async def on_ticks(self, ticks: list[MarketTick]) -> None:
        if ticks:
            self._track(self._execution.on_ticks.remote(ticks))

    # --- helpers -----------------------------------------------------------------------------------
    def _intents(
        self, event: CloseEvent, symbols: Sequence[str], decided: Any, price: np.ndarray, atr: np.ndarray
    ) -> list[EntryIntent]:
        out = []
        for j in np.flatnonzero(decided.direction != 0):
            s = symbols[j]
            bid, ask, book_ts = event.book[s]
            mark = event.mark.get(s, (math.nan, 0))[0]
            out.append(EntryIntent(
                symbol=s, decision_ts=event.ts_ms, side=int(decided.direction[j]),
                size_fraction=float(decided.size_fraction[j]), leverage=int(decided.leverage[j]),
                sl_price=float(decided.sl_price[j]), tp_price=float(decided.tp_price[j]),
                decision_price=float(price[j]), atr=float(atr[j]),
                quote_volume=float(event.quote_volume.get(s, math.nan)), bid=float(bid), ask=float(ask),
                book_ts=int(book_ts), mark=float(mark), signal_received_ms=event.received_ms,
            ))  # fmt: skip
        return out

    # --- the hybrid RL decision (decision_policy "rl") ------------------------------------------------
    async def _rl_decide(
        self,
        event: CloseEvent,
        fresh: list[int],
        symbols: Sequence[str],
        preds: Mapping[str, np.ndarray],
        price: np.ndarray,
        atr: np.ndarray,
        predictor_version: str,
    ) -> list[EntryIntent | CloseIntent]:
        """The RL agent decides the fresh symbols of one close on the Predictor's outputs (module
        docstring); return the closes and entries for the execution actor, each close before its entry.
        Off the agent's cadence (``rl_due``) nothing is asked: no intents, no rows."""
        if self._rl_every is not None and not rl_due(event.ts_ms, self._rl_every):
            self.rl_counts["between"] += 1
            return []
        book = await self._execution.open_positions.remote()  # one call per decision close, either book
        await asyncio.to_thread(self._rl_book, list(symbols))  # the paper book's rows: executed, pnl_result
        marks = event.inputs[fresh][:, _I["mark_close"]]
        side, held, upnl = rl_position_dims(
            book, symbols, event.ts_ms, np.where(np.isfinite(marks), marks, price)
        )
        feats = event.features[fresh]
        obs = build_observations(
            {k: preds[k] for k in PREDICTION_INPUTS},
            {f: feats[:, FEATURE_INDEX[f]] for f in FEATURE_INPUTS.values()},
            side=side, bars_held=held, unrealized_return=upnl, hold_norm_min=float(self.cfg.label.h_bars),
        )  # fmt: skip
        answer = await asyncio.wait_for(self._rl.decide.remote(obs), self.cfg.rl_timeout_s)
        every = _decision_every(answer)
        if every != self._rl_every:
            log.info("decider: RL version %s decides every %d bar(s)", answer.version, every)
            self._rl_every = every
            if not rl_due(event.ts_ms, every):  # a version of another cadence: not its bar
                self.rl_counts["between"] += 1
                return []
        intents: list[EntryIntent | CloseIntent] = []
        rows: list[dict[str, Any]] = []
        entry_of: dict[int, int] = {}  # row index → side of its entry intent
        closes: list[int] = []  # row indices with a close intent
        pol, spec = self.cfg.policy, self.cfg.label
        for j, s in enumerate(symbols):
            a = int(answer.actions[j])
            d = _RL_SIDE.get(a, 0)
            why = None
            if d and side[j] == d:
                why = "already in position"
            elif a == 3 or d:  # CLOSE exits either side; LONG exits a short, SHORT a long, first
                intents.append(CloseIntent(s, event.ts_ms, close_client_id(self.cfg.session_id, s, event.ts_ms),
                                           side=-d))  # fmt: skip
                closes.append(j)
                if d and not (math.isfinite(atr[j]) and math.isfinite(price[j]) and atr[j] > 0):
                    why = "no ATR"
            if d and why is None:
                bid, ask, book_ts = event.book[s]
                mark = event.mark.get(s, (math.nan, 0))[0]
                intents.append(EntryIntent(
                    symbol=s, decision_ts=event.ts_ms, side=d, size_fraction=float(pol.position_notional_pct),
                    leverage=int(pol.leverage), sl_price=float(price[j] - d * spec.k_sl * atr[j]),
                    tp_price=float(price[j] + d * spec.k_tp * atr[j]), decision_price=float(price[j]),
                    atr=float(atr[j]), quote_volume=float(event.quote_volume.get(s, math.nan)), bid=float(bid),
                    ask=float(ask), book_ts=int(book_ts), mark=float(mark), signal_received_ms=event.received_ms,
                ))  # fmt: skip
                entry_of[j] = d
            if why is not None:
                self.rl_counts["not_executed"] += 1
                self.rl_not_executed[why] = self.rl_not_executed.get(why, 0) + 1
            self.rl_counts["decisions"] += 1
            self.rl_counts[RL_ACTION_NAMES[a]] += 1
            probs = {name: float(p) for name, p in zip(RL_ACTION_NAMES, answer.action_probs[j], strict=True)}
            value = float(answer.value_estimates[j])
            rows.append({
                "ts": event.ts_ms, "symbol": s, "model_id": answer.model_id, "action": a,
                "action_name": RL_ACTION_NAMES[a], "confidence": probs[RL_ACTION_NAMES[a]], "action_probs": probs,
                "value_estimate": value if math.isfinite(value) else None,
                "model_predictions": {**{k: float(preds[k][j]) if math.isfinite(preds[k][j]) else None
                                         for k in PREDICTION_KEYS}, "model_version": predictor_version,
                                      "rl_version": answer.version, "observation": [float(x) for x in obs[j]],
                                      **({"not_executed": why} if why else {})},
                "position_before": float(side[j]), "position_after": float(side[j]), "executed": False,
                "created_at": int(time.time() * 1000),
            })  # fmt: skip
        ids = await asyncio.to_thread(self._rl_store, rows)
        for j, d in entry_of.items():
            self._rl_waiting[(symbols[j], event.ts_ms)] = (ids[j], d)
        for j in closes:
            self._rl_closing[(symbols[j], event.ts_ms)] = ids[j]
        return intents

    def _rl_store(self, rows: list[dict[str, Any]]) -> list[int]:
        import sqlalchemy as sa

        from storage.schema import rl_decisions, rl_models

        with self._engine.begin() as conn:
            model_id = rows[0]["model_id"] if rows else None
            if model_id is not None and model_id not in self._rl_known:
                found = conn.execute(
                    sa.select(rl_models.c.model_id).where(rl_models.c.model_id == model_id)
                ).first()
                # registered without the rl_models mirror: the version stays in model_predictions
                if found is None:
                    log.warning(
                        "decider: RL model %s has no rl_models row; its decisions name no model_id", model_id
                    )
                    rows = [{**r, "model_id": None} for r in rows]
                else:
                    self._rl_known.add(model_id)
            return [
                int(conn.execute(rl_decisions.insert().values(**r)).inserted_primary_key[0]) for r in rows
            ]

    async def _rl_results(self, ref: Any) -> None:
        """The execution actor's results of one close's intents: a filled close marks its decision
        executed (position_after 0), a filled entry too (position_after = its side); a refused one is
        final; PENDING entries are resolved from the ``positions`` table at a later close (``_rl_book``).
        A close that found nothing to close (``FLAT``) is the environment's no-op, not a refusal."""
        try:
            results = await ref
        except Exception:
            self.counts["errors"] += 1
            log.exception("decider: the execution actor failed a call")
            return
        done: list[tuple[int, int, str | None]] = []
        closed: list[int] = []
        for r in results or ():
            get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
            key = (str(get("symbol")), int(get("decision_ts")))
            if get("kind") == "close":
                row_id = self._rl_closing.pop(key, None)
                reasons = tuple(get("reasons") or ())
                if row_id is not None and get("filled"):
                    closed.append(row_id)
                elif row_id is not None and reasons != ("FLAT",):
                    self.rl_counts["not_executed"] += 1
                    why = "close refused: " + ",".join(reasons)
                    self.rl_not_executed[why] = self.rl_not_executed.get(why, 0) + 1
                continue
            if key not in self._rl_waiting or tuple(get("reasons") or ()) == ("PENDING",):
                continue
            waiting = self._rl_waiting.pop(key, None)
            if waiting is None:
                continue
            if get("filled"):
                done.append((waiting[0], waiting[1], get("trade_group_id")))
            else:
                self.rl_counts["not_executed"] += 1
                why = "refused: " + ",".join(get("reasons") or ())
                self.rl_not_executed[why] = self.rl_not_executed.get(why, 0) + 1
        if done or closed:
            await asyncio.to_thread(self._rl_executed, done, closed)

    def _rl_executed(self, done: list[tuple[int, int, str | None]], closed: Sequence[int] = ()) -> None:
        """Mark decisions executed: ``closed`` rows by their close (position_after 0), then ``done`` rows
        by their entry (position_after = its side); a row counts once."""
        import sqlalchemy as sa

        from storage.schema import rl_decisions

        waiting = {row_id for row_id, _ in self._rl_waiting.values()}
        with self._engine.begin() as conn:
            for row_id in closed:
                conn.execute(sa.update(rl_decisions).where(rl_decisions.c.id == row_id)
                             .values(executed=True, position_after=0.0))  # fmt: skip
                self.rl_counts["executed"] += 1
                if row_id in waiting or any(row_id == e[0] for e in done):
                    self._rl_close_counted.add(row_id)
            for row_id, d, group in done:
                conn.execute(sa.update(rl_decisions).where(rl_decisions.c.id == row_id)
                             .values(executed=True, position_after=float(d)))  # fmt: skip
                if group:
                    self._rl_held[group] = row_id
                if row_id in self._rl_close_counted:
                    self._rl_close_counted.discard(row_id)
                else:
                    self.rl_counts["executed"] += 1

    def _rl_book(self, symbols: list[str]) -> None:
        """The decisions' bookkeeping from this session's ``positions`` rows (the paper book writes an
        ``entry`` row when a position opens and a ``FINAL`` row when it closes; the live book writes
        them from its ledger fills, its PENDING-free entries settled by the submit's answer): resolves the entries that were PENDING (their entry row came) and writes
        ``pnl_result`` of executed decisions whose trade closed (its FINAL row's realized PnL). The
        position dims come from the book itself (``open_positions``), not from here."""
        import sqlalchemy as sa

        from storage.schema import positions, rl_decisions

        p = positions.c
        prefix = f"{self.cfg.session_id}:"
        groups = {f"{prefix}{s}:{ts}": (s, ts) for (s, ts) in list(self._rl_waiting)}
        asked = [*groups, *self._rl_held]
        if not asked:
            return
        with self._engine.begin() as conn:
            if asked:
                found = conn.execute(
                    sa.select(p.trade_group_id, p.event_type, p.realized_pnl).where(
                        p.trade_group_id.in_(asked)
                    )
                ).all()
                for group, kind, _ in found:
                    waiting = (
                        self._rl_waiting.pop(groups[group], None)
                        if kind == "entry" and group in groups
                        else None
                    )
                    if waiting is not None:
                        row_id, d = waiting
                        conn.execute(sa.update(rl_decisions).where(rl_decisions.c.id == row_id)
                                     .values(executed=True, position_after=float(d)))  # fmt: skip
                        if row_id in self._rl_close_counted:
                            self._rl_close_counted.discard(row_id)
                        else:
                            self.rl_counts["executed"] += 1
                        self._rl_held[group] = row_id
                for group, kind, pnl in found:
                    held_id = self._rl_held.pop(group, None) if kind == "FINAL" else None
                    if held_id is not None:
                        conn.execute(sa.update(rl_decisions).where(rl_decisions.c.id == held_id)
                                     .values(pnl_result=None if pnl is None else float(pnl)))  # fmt: skip

    async def _explain_entries(self, job: _ToExplain) -> None:
        """Add the Predictor's feature contributions to the entry signals of one close.

        Ordering: the signal rows are committed before the intents go to the execution actor (the
        signal is the record an order refers to; the live book writes its engine signal before the
        order too), and computing ``pred_contrib`` first would put it on the entry's latency path. So
        this runs after the intents were submitted — concurrently with execution — and writes the
        contributions with an UPDATE of those rows' ``explain`` (merged in Python: portable JSON).
        A row may be read without contributions for the few ms in between; a failure or timeout is
        logged and counted (``explain_errors``), the signal keeps its cost/penalty explain, and the
        API recomputes contributions on demand.
        """
        try:
            answer: dict[str, Any] = await asyncio.wait_for(
                self._predictor.explain.remote(job.features, self.cfg.explain_top_k),
                self.cfg.explain_timeout_s,
            )
            if answer["model_version"] != job.rows[0]["model_version"]:
                log.info("decider: explain of %d by version %s, signals by %s (the alias moved)",
                         job.ts_ms, answer["model_version"], job.rows[0]["model_version"])  # fmt: skip
            updates = [
                {"symbol": r["symbol"], "explain": {**r["explain"], "contributions": c,
                                                    "contributions_model_version": answer["model_version"]}}
                for r, c in zip(job.rows, answer["contributions"], strict=True)
            ]  # fmt: skip
            await asyncio.to_thread(self._update_explain, job.ts_ms, updates)
            self.counts["explained"] += len(updates)
        except Exception:
            self.counts["explain_errors"] += 1
            log.exception("decider: could not explain the entries of %d", job.ts_ms)

    def _update_explain(self, ts_ms: int, updates: list[dict[str, Any]]) -> None:
        import sqlalchemy as sa

        from storage.schema import signals

        stmt = (
            signals.update()
            .where(signals.c.symbol == sa.bindparam("b_symbol"), signals.c.ts == ts_ms)
            .values(explain=sa.bindparam("b_explain"))
        )
        with self._engine.begin() as conn:
            conn.execute(stmt, [{"b_symbol": u["symbol"], "b_explain": u["explain"]} for u in updates])

    def _track(self, ref: Any) -> None:
        future = asyncio.ensure_future(self._await(ref))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _await(self, ref: Any) -> None:
        try:
            await ref
        except Exception:
            self.counts["errors"] += 1
            log.exception("decider: the execution actor failed a call")

    def _model_id(self, version: str) -> str:
        if version not in self._model_ids:
            from storage.model_catalog import model_id_for_version

            model_id = model_id_for_version(self._engine, self.cfg.model_name, version)
            if model_id is None:
                raise RuntimeError(
                    f"model {self.cfg.model_name} version {version} is not mirrored in the models table: "
                    "run `raytrade models sync` (promotion does it)"
                )
            self._model_ids[version] = model_id
        return self._model_ids[version]

    def _store(self, rows: list[dict[str, Any]]) -> None:
        from storage.bulk import write_rows

        write_rows(self._engine, "signals", rows)

    def _publish(self, event: CloseEvent, rows: list[dict[str, Any]]) -> None:
        """``signals.new`` on the bus for observers (the database is the record: a bus error is logged)."""
        try:
            self._bus.publish_many(Topic.SIGNALS_NEW, [SignalNew(
                symbol=r["symbol"], ts_ms=event.ts_ms, decision=r["decision"], ev_long=r["ev_long"],
                ev_short=r["ev_short"], model_version=r["model_version"], block_reasons=r["block_reason_codes"],
                size_notional_usdt=r["size_notional"], leverage=r["leverage"], sl_price=r["sl_price"],
                tp_price=r["tp_price"],
            ) for r in rows])  # fmt: skip
        except Exception:
            self.counts["errors"] += 1
            log.exception("decider: could not publish signals of %d", event.ts_ms)

    def _quotes(self, event: CloseEvent, symbols: Sequence[str]) -> None:
        """Publish the close's book tickers in a thread, off the decision path; never raise."""
        try:
            quotes = book_tickers(event, symbols)
        except Exception:  # a malformed book is the ingest's to report; the decision goes on
            self.counts["errors"] += 1
            log.exception("decider: no book tickers of %d", event.ts_ms)
            return
        if quotes:
            published = asyncio.ensure_future(asyncio.to_thread(self._publish_quotes, quotes))
            self._pending.add(published)
            published.add_done_callback(self._pending.discard)

    def _publish_quotes(self, quotes: list[BookTicker]) -> None:
        """``market.book_ticker`` for the anomaly monitor (a bus error is logged and counted)."""
        try:
            self._bus.publish_many(Topic.MARKET_BOOK_TICKER, quotes)
        except Exception:
            self.counts["errors"] += 1
            log.exception("decider: could not publish %d book tickers", len(quotes))

    def _record_skips(self, event: CloseEvent, skipped: list[tuple[str, str]]) -> None:
        from storage.schema import events

        self.counts["skipped"] += len(skipped)
        for _, why in skipped:
            self.skip_reasons[why] = self.skip_reasons.get(why, 0) + 1
        rows = [{"ts": event.ts_ms, "kind": "signal.skipped", "source": f"decider:{event.group_id}", "symbol": s,
                 "payload": {"reason": why, "session": self.cfg.session_id}} for s, why in skipped]  # fmt: skip
        with self._engine.begin() as conn:
            conn.execute(events.insert(), rows)

    def stats(self) -> dict[str, Any]:
        lat = np.fromiter(self.latencies_ms, np.float64, len(self.latencies_ms))
        return {
            **self.counts,
            "skip_reasons": dict(self.skip_reasons),
            "rl": {**self.rl_counts, "not_executed_reasons": dict(self.rl_not_executed)}
            if self._rl is not None
            else None,
            "last_close_ms": self.last_close_ms,
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else math.nan,
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else math.nan,
            "latencies_ms": lat.tolist(),
        }


def rl_position_dims(
    book: Mapping[str, Mapping[str, Any]], symbols: Sequence[str], bar_open_ms: int, marks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observation's position inputs of ``symbols`` at the close of the 1m bar opened at
    ``bar_open_ms`` from a book's ``open_positions()`` (symbol → side, qty, entry_price, entry_ts_ms):
    side (±1, 0 flat), bars held = (the bar's close − entry time) in 1m bars, unrealized return
    ``side · (mark − entry) / entry`` at ``marks`` (the bar's mark closes, aligned with ``symbols``)."""
    n = len(symbols)
    side, held, upnl = np.zeros(n), np.zeros(n), np.zeros(n)
    for j, s in enumerate(symbols):
        pos = book.get(s)
        if pos is None or not pos.get("side"):
            continue
        d, entry_price = int(pos["side"]), float(pos["entry_price"])
        side[j] = d
        held[j] = max(0.0, round((bar_open_ms + 60_000 - int(pos["entry_ts_ms"])) / 60_000))
        mark = float(marks[j])
        upnl[j] = d * (mark - entry_price) / entry_price if entry_price and math.isfinite(mark) else 0.0
    return side, held, upnl


def book_tickers(event: CloseEvent, symbols: Sequence[str]) -> list[BookTicker]:
    """The latest bookTicker of each of ``symbols`` in ``event`` as ``market.book_ticker`` messages
    (quantities 0: the close does not carry them); a symbol without a book, or with a non-positive or
    non-finite side, is left out."""
    out: list[BookTicker] = []
    for s in symbols:
        book = event.book.get(s)
        if book is None:
            continue
        bid, ask, ts = float(book[0]), float(book[1]), int(book[2])
        if math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0 and ts >= 0:
            out.append(BookTicker(symbol=s, ts_ms=ts, bid_price=bid, bid_qty=0.0, ask_price=ask, ask_qty=0.0))
    return out


def rl_due(bar_open_ms: int, decision_every: int) -> bool:
    """Whether the RL agent decides at the close of the 1m bar opened at ``bar_open_ms``: its index
    (open time // 1 min) is a multiple of ``decision_every`` — the same bars in every group and run."""
    return decision_every <= 1 or (int(bar_open_ms) // 60_000) % int(decision_every) == 0


def _decision_every(answer: Any) -> int:
    """A ``PolicyAnswer``'s cadence (1 from a deployment that does not state it)."""
    return max(1, int(getattr(answer, "decision_every", 1) or 1))


@dataclass(frozen=True, slots=True)
class _ToExplain:
    """The entry signal rows of one close and their feature rows, for ``Decider._explain_entries``."""

    ts_ms: int
    rows: list[dict[str, Any]]
    features: np.ndarray


def decider_factory(cfg: DeciderConfig) -> Callable[[], Decider]:
    """A picklable factory the ingest actor calls inside itself."""
    return _Factory(cfg)


@dataclass(frozen=True, slots=True)
class _Factory:
    cfg: DeciderConfig

    def __call__(self) -> Decider:
        return Decider(self.cfg)
