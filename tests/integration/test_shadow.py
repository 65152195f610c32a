"""The whole shadow loop on the replay venue: ingest actors → Serve Predictor → policy → signals →
risk/execution actor, at high speed for 10 symbols; then backtest parity and a reconnect run."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from model_fixtures import SHADOW_MODEL, install_production_model

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.messages import Topic
from core.sim import BacktestResult, run_backtest, sim_config_for
from core.synthetic import generate_market
from pipelines.backtest import load_panel, policy_signals
from pipelines.market import write_synthetic_market
from pipelines.shadow_parity import compare_trades, load_shadow_trades
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from storage import db
from storage.bus import open_bus
from storage.lake import Lake
from storage.registry import ModelRegistry
from storage.schema import candles_1m, features_1m, positions, signals

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT",
           "LINKUSDT", "LTCUSDT")  # fmt: skip
T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MINUTE = 60_000
HISTORY = 600
REPLAY = 40
START = T0 + HISTORY * MINUTE
END = START + REPLAY * MINUTE
MODEL = SHADOW_MODEL


def settings_for(tmp: Path, redis_url: str | None = None) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp, universe=SYMBOLS, ray_num_cpus=2, redis_url=redis_url,
        label=LabelSpec(k_sl=0.35, k_tp=0.5, risk_mae_atr=0.5),
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),  # no binding limit: order-independent
    )  # fmt: skip


@pytest.fixture(scope="module")
def session_data(tmp_path_factory, redis_url: str) -> Settings:
    tmp = tmp_path_factory.mktemp("shadow")
    settings = settings_for(tmp, redis_url)
    market = generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=21)
    write_synthetic_market(market, Lake(settings.lake_root))
    install_production_model(settings, T0)
    return settings


def run_session(settings: Settings, faults=None, **overrides) -> dict:
    overrides.setdefault("speed", 100.0)
    options = ShadowOptions(symbols=SYMBOLS, model_name=MODEL, group_size=4, start_ms=START, end_ms=END,
                            mark_ticks_per_minute=6, predictor_poll_s=0.0, **overrides)  # fmt: skip
    session = ShadowSession(settings, options)
    try:
        session.start()
        if faults is not None:
            faults(session.venue)
        assert session.wait(timeout_s=240), "the shadow session did not reach the end of the replay"
        return session.stop()
    finally:
        session.shutdown()


def table(settings: Settings, t: sa.Table, where=None) -> pd.DataFrame:
    engine = db.make_engine(settings.database_url)
    query = sa.select(t) if where is None else sa.select(t).where(where)
    with engine.connect() as c:
        frame = pd.DataFrame([dict(r._mapping) for r in c.execute(query)])
    engine.dispose()
    return frame


BUS_TOPICS = (Topic.SIGNALS_NEW, Topic.POSITIONS_UPDATE, Topic.FEATURES_READY)


@pytest.fixture(scope="module")
def shadow(session_data: Settings) -> tuple[Settings, dict]:
    group = f"test-{uuid.uuid4().hex[:8]}"
    with open_bus(session_data.redis_url) as bus:
        for topic in BUS_TOPICS:  # from now on: what this session publishes on the real Redis bus
            bus.subscribe(topic, group, "reader", start="latest")
        # lockstep: each minute is released once every group decided the last one, so the trades
        # do not depend on this machine's load (a fast replay fills at whatever book latency reaches)
        report = run_session(session_data, session_id="shadow-main", speed="step")
        received: dict[str, list] = {}
        for topic in BUS_TOPICS:
            while batch := bus.read(topic, group, "reader", count=1000):
                received.setdefault(topic, []).extend(d.message for d in batch)
    return session_data, report | {"bus": received}


def test_candles_and_features_are_stored_without_gaps(shadow):
    settings, report = shadow
    minutes = np.arange(START, END, MINUTE)
    candles = table(settings, candles_1m, candles_1m.c.ts >= START)
    feats = table(settings, features_1m, features_1m.c.ts >= START)
    lake = Lake(settings.lake_root)
    for s in SYMBOLS:
        got = candles[candles.symbol == s].sort_values("ts")
        np.testing.assert_array_equal(got["ts"].to_numpy()[: len(minutes)], minutes, err_msg=s)
        truth = lake.read("candles_1m", s, START, END)
        np.testing.assert_array_equal(got["close"].to_numpy()[: len(minutes)], truth["close"].to_numpy())
        f = feats[feats.symbol == s].sort_values("ts")
        np.testing.assert_array_equal(f["ts"].to_numpy()[: len(minutes)], minutes, err_msg=s)
    assert report["closes"] == 3 * REPLAY  # three groups, one close per minute each


def test_signals_are_produced_for_every_symbol_and_minute(shadow):
    settings, report = shadow
    sig = table(settings, signals)
    assert len(sig) == len(SYMBOLS) * REPLAY == report["signals"]
    assert set(sig["model_version"]) == {"1"}
    assert (sig["decision"] == "LONG").any()
    entries = sig[sig.decision != "FLAT"]
    assert entries[["size_notional", "leverage", "sl_price", "tp_price"]].notna().all().all()
    assert (entries["sl_price"] < entries["explain"].map(lambda e: e["price"])).all()
    flat = sig[sig.decision == "FLAT"]
    assert flat["block_reason_codes"].map(len).gt(0).all()
    assert math.isfinite(report["close_to_signal_p99_ms"])


def test_positions_open_and_close_by_sl_tp_with_the_simulators_pnl(shadow):
    settings, report = shadow
    pos = table(settings, positions, positions.c.trade_group_id.like("shadow-main:%"))
    entries, finals = pos[pos.event_type == "entry"], pos[pos.event_type == "FINAL"]
    assert len(entries) >= 5 and set(finals["trade_group_id"]) == set(entries["trade_group_id"])
    assert {"SL", "TP"} <= set(finals["exit_reason"])
    side = np.where(finals["side"] == "LONG", 1.0, -1.0)
    pnl = (
        side * finals["amt"] * (finals["exit_price"] - finals["entry_price"])
        - finals["fees"]
        - finals["funding"]
    )
    np.testing.assert_allclose(finals["realized_pnl"], pnl, rtol=1e-9, atol=1e-9)
    ex = report["execution"]
    assert ex["exits"] == len(finals) and ex["realized_pnl"] == pytest.approx(finals["realized_pnl"].sum())
    updates = report["bus"][Topic.POSITIONS_UPDATE]  # one per entry and one per exit, on Redis
    assert len(updates) == len(entries) + len(finals)
    assert sum(u.qty == 0.0 for u in updates) == len(finals)


def test_signals_and_features_ready_reach_the_redis_bus(shadow):
    settings, report = shadow
    signals_on_bus = report["bus"][Topic.SIGNALS_NEW]
    assert len(signals_on_bus) == len(SYMBOLS) * REPLAY
    assert {m.model_version for m in signals_on_bus} == {"1"}
    assert len(report["bus"][Topic.FEATURES_READY]) == len(SYMBOLS) * REPLAY


def test_backtest_of_the_session_data_gives_the_same_trades(shadow):
    """Replay the session's stored features through the same model, policy and simulator."""
    settings, _ = shadow
    bt = backtest_of_session(settings)
    # the same trades: (symbol, side, entry bar), exit kind, exit bar (a tick inside it, or the bar rule
    # at its close); prices within the book's spread and, for exits, the first tick past the trigger
    # (6 a minute here) against the bar rule's trigger price; an entry decided on the last replayed bar
    # fills after the replay, where the backtest has no bar
    engine = db.make_engine(settings.database_url)
    shadow_trades = load_shadow_trades(engine, "shadow-main")
    engine.dispose()
    parity = compare_trades(shadow_trades, bt, END)
    assert parity.ok, parity.problems
    assert parity.matched == len(bt) == len(shadow_trades[shadow_trades["entry_ts"] < END])


def test_a_binding_position_limit_admits_the_backtests_symbols(shadow):
    """Three groups and room for three positions where more are signalled on one bar: the book admits
    the backtest's symbols (its order, its equity)."""
    session_data, _ = shadow  # its session stored the window's features
    unlimited = backtest_of_session(session_data)
    assert (unlimited.groupby("entry_ts").size() > 3).any(), "no bar signals more than three entries"
    settings = session_data.model_copy(update={"risk": RiskConfig(max_positions=3, max_orders_per_s=100)})
    bt = assert_session_gives_the_backtests_trades(settings, "shadow-room")
    assert len(bt) >= 3 and bt.groupby("entry_ts").size().max() == 3


def test_the_daily_loss_flatten_gives_the_backtests_trades(shadow):
    """A daily loss limit that trips: the book blocks the entries and flattens where the backtest does."""
    session_data, _ = shadow
    room = RiskConfig(max_positions=3, max_orders_per_s=100)
    limit = daily_loss_limit_crossed_decisively(session_data.model_copy(update={"risk": room}))
    settings = session_data.model_copy(
        update={"risk": room.model_copy(update={"daily_loss_limit_pct": limit})}
    )
    bt = assert_session_gives_the_backtests_trades(settings, "shadow-daily-loss")
    assert "FLATTEN" in set(bt["exit_reason"])


def assert_session_gives_the_backtests_trades(settings: Settings, session_id: str) -> pd.DataFrame:
    """Run a lockstep session and assert it made the backtest's trades; return the backtest's."""
    run_session(settings, session_id=session_id, speed="step")
    bt = backtest_of_session(settings)
    engine = db.make_engine(settings.database_url)
    shadow_trades = load_shadow_trades(engine, session_id)
    engine.dispose()
    parity = compare_trades(shadow_trades, bt, END)
    assert parity.ok, parity.problems
    assert parity.matched == len(bt) == len(shadow_trades[shadow_trades["entry_ts"] < END])
    return bt


def daily_loss_limit_crossed_decisively(settings: Settings) -> float:
    """A daily loss limit the backtest (no such limit) crosses at its first losing bar close, by half
    that bar's fall either side.

    A shadow book's exits legitimately differ from the backtest's bar rule (a stop exits at the bid
    of the first tick past it, the bar rule at the trigger), a few bps of price per exit; over a
    session that drifts the equity by about a bar's fall, so a limit crossed later by a hair trips
    one bar apart in the two (seen in CI). Before the first exit the two books differ only by their
    entry prices (within the spread), far inside this margin; a tick that trips it inside that bar
    flattens at the same close."""
    result = backtest_of_session(settings, full=True)
    equity = result.equity["equity"].to_numpy()
    drawdown = equity / result.account["initial_equity"] - 1.0
    first = int(np.flatnonzero(drawdown < 0.0)[0])
    assert drawdown[first] <= -1e-4, f"the first losing bar loses only {drawdown[first]:.2e} of equity"
    return float(-drawdown[first] / 2.0)


@overload
def backtest_of_session(settings: Settings, full: Literal[False] = False) -> pd.DataFrame: ...
@overload
def backtest_of_session(settings: Settings, full: Literal[True]) -> BacktestResult: ...
def backtest_of_session(settings: Settings, full: bool = False) -> pd.DataFrame | BacktestResult:
    """The backtest's trades (``full``: its whole result) of the replayed window: the session's stored
    features through the same model, policy and simulator, with the settings' risk limits."""
    registry = ModelRegistry(settings.tracking_uri)
    model = registry.load_model(f"models:/{MODEL}@production")
    panel = load_panel(Lake(settings.lake_root), list(SYMBOLS), START, END)
    feats = table(settings, features_1m, features_1m.c.ts >= START)
    preds: dict[str, np.ndarray] = {}
    for k, s in enumerate(SYMBOLS):
        f = feats[feats.symbol == s].set_index("ts").reindex(panel.ts)
        x = np.array([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES] for r in f["features"]])
        out = model.predict(x, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
        for key, v in out.items():
            preds.setdefault(key, np.full((len(panel.ts), len(SYMBOLS)), np.nan))[:, k] = v
    regime = np.ones((len(panel.ts), 1))
    sig = policy_signals(panel, preds, regime, settings.policy, settings.label)
    sim = sim_config_for(settings.label, settings.policy)
    result = run_backtest(panel, sig, sim, settings.risk)
    return result if full else result.trades


def test_a_venue_that_drops_connections_mid_run_loses_no_candle(session_data):
    def faults(venue):
        assert venue.wait_until(START + 12 * MINUTE, 60)
        venue.faults.disconnect("market")
        assert venue.wait_until(START + 25 * MINUTE, 60)
        venue.faults.disconnect("public")
        venue.faults.disconnect("market")

    report = run_session(session_data, faults, session_id="shadow-reconnect")
    assert sum(st["reconnects"] for st in report["ingest"]) >= 3 * 3  # three groups, three drops each
    candles = table(session_data, candles_1m, candles_1m.c.ts >= START)
    for s in SYMBOLS:
        ts = np.sort(candles[candles.symbol == s]["ts"].to_numpy())
        np.testing.assert_array_equal(ts[:REPLAY], np.arange(START, END, MINUTE), err_msg=s)
