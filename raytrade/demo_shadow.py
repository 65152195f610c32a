"""The demo's shadow replay: the market's last day through the realtime path, beside the backtest.

After a promotion the production model trades the last ``minutes`` of the lake in shadow mode, on
the replay venue: ``raytrade.realtime.ShadowSession`` (replay venue → ingest actors → Serve
Predictor → policy → execution actor), in lockstep with the replay so the trades do not depend on
this machine's speed. The same model's policy is then backtested on the same window from the
offline features (``pipelines.model_backtest.backtest_model``) and the two trade lists are compared
by ``pipelines.shadow_parity.compare_trades``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from pipelines.backtest import load_panel
from pipelines.model_backtest import backtest_model, rows_in
from pipelines.shadow_parity import ShadowReplay, compare_trades, load_shadow_trades
from raytrade.cmd_backtest import sim_config
from raytrade.defaults import SHADOW_MINUTES  # re-exported: minutes of the shadow replay (the last day)
from raytrade.realtime import ShadowOptions, ShadowSession, default_replay_window
from raytrade.settings import Settings
from storage import db
from storage.lake import Lake
from tune.dataset import TrainingSet

#: markPrice and bookTicker updates per symbol-minute in the demo's replay (SL/TP ticks inside a bar).
SHADOW_MARK_TICKS = 6


def run_shadow_replay(
    settings: Settings,
    data: TrainingSet,
    model: Any,
    *,
    model_name: str,
    model_version: str,
    minutes: int = SHADOW_MINUTES,
    seed: int = 0,
) -> ShadowReplay:
    """Replay the lake's last ``minutes`` through the realtime path with the ``production`` model of
    ``model_name`` (which must be ``model``, version ``model_version``), then backtest ``model`` on the
    same window from ``data``'s offline features and compare the trades."""
    symbols = tuple(data.symbols)
    start_ms, end_ms = default_replay_window(settings.lake_root, symbols, minutes)
    options = ShadowOptions(
        symbols=symbols, model_name=model_name, venue="replay", start_ms=start_ms, end_ms=end_ms,
        speed="step", mark_ticks_per_minute=SHADOW_MARK_TICKS, seed=seed, predictor_poll_s=0.0,
        session_id=f"demo-{uuid.uuid4().hex[:10]}",
    )  # fmt: skip
    session = ShadowSession(settings, options)
    t0 = time.monotonic()
    try:
        session.start()
        if not session.wait(timeout_s=max(300.0, minutes * 1.0)):
            raise RuntimeError("the shadow replay did not reach the end of its window in time")
        report = session.stop()
    except BaseException:
        with contextlib.suppress(Exception):  # clean up what started; the first error is the one to see
            session.shutdown()
        raise
    session.shutdown()
    wall_s = time.monotonic() - t0
    panel = load_panel(Lake(settings.lake_root), symbols, start_ms, end_ms)
    backtest = backtest_model(
        model, data, panel, policy=settings.policy, label_spec=settings.label, sim=sim_config(settings),
        risk=settings.risk, window=rows_in(data, start_ms, end_ms),
    )  # fmt: skip
    engine = db.make_engine(settings.database_url)
    try:
        shadow = load_shadow_trades(engine, options.session_id)
    finally:
        engine.dispose()
    execution = report.get("execution", {})
    return ShadowReplay(
        session_id=options.session_id, model_version=model_version, start_ms=start_ms, end_ms=end_ms,
        symbols=len(symbols), closes=int(report["closes"]), signals=int(report["signals"]),
        realized_pnl=float(execution.get("realized_pnl", 0.0)), wall_s=wall_s,
        parity=compare_trades(shadow, backtest.result.trades, end_ms),
    )  # fmt: skip
