"""The risk/execution actor: shadow fills, SL/TP exits, positions rows, restart recovery, no double entry."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from actors.execution import (
    ExecutionBook,
    ExecutionConfig,
    start_execution_actor,
    trade_group_id,
)
from core.config import RiskConfig
from core.messages import BarClose, EntryIntent, MarketTick
from core.sim import FillSimulator, SimConfig
from core.time import MINUTE_MS
from storage import db
from storage.instruments import sync_universe
from storage.schema import positions, risk_events

T0 = 1_717_200_000_000


SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIM = SimConfig(fee_rate=0.0004, slippage_k=0.15, impact_k=0.0, default_leverage=5)


@pytest.fixture
def cfg(db_url: str) -> ExecutionConfig:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sync_universe(engine, SYMBOLS)
    engine.dispose()
    return ExecutionConfig(session_id="s1", symbols=SYMBOLS, database_url=db_url, sim=SIM, risk=RiskConfig())


def intent(symbol: str = "ETHUSDT", ts: int = T0, side: int = 1, **kw) -> EntryIntent:
    base = dict(
        symbol=symbol, decision_ts=ts, side=side, size_fraction=0.1, leverage=5, sl_price=1900.0 if side > 0 else 2100.0,
        tp_price=2150.0 if side > 0 else 1850.0, decision_price=2000.0, atr=20.0, quote_volume=5e6,
        bid=1999.9, ask=2000.1, book_ts=ts + MINUTE_MS + 50, mark=2000.0,
    )  # fmt: skip
    base.update(kw)
    return EntryIntent(**base)


def rows(url: str) -> list[dict]:
    engine = db.make_engine(url)
    with engine.connect() as c:
        out = [dict(r._mapping) for r in c.execute(sa.select(positions).order_by(positions.c.ts))]
    engine.dispose()
    return out


def reference_trade(side: int, exit_mark: float, exit_bid: float, exit_ask: float) -> dict:
    """The same entry and exit through a bare FillSimulator: the PnL the actor must book."""
    sim = FillSimulator(SYMBOLS, SIM, RiskConfig())
    it = intent(side=side)
    price = it.ask if side > 0 else it.bid
    assert sim.open_position(it.symbol, side, it.book_ts, price, 0.1 * sim.equity, decision_price=2000.0, atr=20.0,
                             sl=it.sl_price, tp=it.tp_price, leverage=5, mark_price=2000.0,
                             quote_volume_usdt=5e6) == ()  # fmt: skip
    assert sim.on_mark(it.symbol, it.book_ts + 1000, exit_mark, bid=exit_bid, ask=exit_ask) is not None
    return sim.trades().iloc[-1].to_dict()


def test_entry_fills_at_the_ask_and_a_mark_tick_through_tp_closes_with_the_simulators_pnl(cfg):
    book = ExecutionBook(cfg)
    (res,) = book.submit([intent()])
    assert res.filled and res.trade_group_id == trade_group_id("s1", "ETHUSDT", T0)
    assert res.price > 2000.1  # the ask plus slippage
    assert book.on_ticks([MarketTick("ETHUSDT", T0 + MINUTE_MS + 1050, 2140.0, 2139.9, 2140.1)]) == 0
    assert book.on_ticks([MarketTick("ETHUSDT", T0 + MINUTE_MS + 1050, 2151.0, 2150.9, 2151.1)]) == 1
    got = rows(cfg.database_url)
    assert [r["event_type"] for r in got] == ["entry", "FINAL"]
    assert got[0]["trade_group_id"] == got[1]["trade_group_id"]
    final = got[1]
    ref = reference_trade(1, 2151.0, 2150.9, 2151.1)
    assert final["exit_reason"] == "TP"
    assert final["realized_pnl"] == pytest.approx(ref["pnl"], rel=1e-12)
    assert final["fees"] == pytest.approx(ref["fees"], rel=1e-12)
    assert final["exit_price"] == pytest.approx(ref["exit_price"], rel=1e-12)
    assert book.summary()["exits"] == 1 and book.summary()["wins"] == 1


def test_short_stop_loss_on_the_bar_rule(cfg):
    book = ExecutionBook(cfg)
    assert book.submit([intent(side=-1)])[0].filled
    ts = T0 + MINUTE_MS
    bar = BarClose("ETHUSDT", ts, 2000, 2120, 1995, 2110, 2000, 2115, 1996, 2108, 5e6)
    assert book.on_bars([bar]) == 1
    final = rows(cfg.database_url)[-1]
    assert final["event_type"] == "FINAL" and final["exit_reason"] == "SL" and final["realized_pnl"] < 0


def test_no_double_entry_for_a_held_symbol_or_a_redelivered_intent(cfg):
    book = ExecutionBook(cfg)
    assert book.submit([intent()])[0].filled
    again = book.submit([intent(ts=T0 + MINUTE_MS, book_ts=T0 + 2 * MINUTE_MS)])[0]
    assert not again.filled and "POSITION_OPEN" in again.reasons
    redelivered = book.submit([intent()])[0]
    assert not redelivered.filled and redelivered.reasons == ("DUPLICATE_INTENT",)
    assert [r["event_type"] for r in rows(cfg.database_url)] == ["entry"]
    engine = db.make_engine(cfg.database_url)
    with engine.connect() as c:
        blocked = c.execute(sa.select(risk_events.c.event_type, risk_events.c.symbol)).all()
    engine.dispose()
    assert ("entry_blocked", "ETHUSDT") in blocked


def test_a_new_book_recovers_the_open_position_and_closes_it_once(cfg):
    first = ExecutionBook(cfg)
    res = first.submit([intent()])[0]
    equity = first.sim.equity
    first.close()
    second = ExecutionBook(cfg)  # what a restarted actor does
    pos = second.sim.position("ETHUSDT")
    assert pos is not None and pos.entry_price == pytest.approx(res.price)
    assert second.sim.equity == pytest.approx(equity)
    assert second.summary()["restarts_recovered"] == 1
    assert not second.submit([intent()])[0].filled  # re-delivered after the restart: refused
    assert second.on_ticks([MarketTick("ETHUSDT", T0 + 3 * MINUTE_MS, 1899.0, 1898.9, 1899.1)]) == 1
    assert [r["event_type"] for r in rows(cfg.database_url)] == ["entry", "FINAL"]
    third = ExecutionBook(cfg)
    assert third.sim.position("ETHUSDT") is None and third.summary()["exits"] == 1


def test_open_entries_without_a_snapshot_stop_the_book(cfg):
    engine = db.make_engine(cfg.database_url)
    with engine.begin() as c:
        c.execute(positions.insert(), [{"trade_group_id": "s1:ETHUSDT:1", "symbol": "ETHUSDT", "ts": T0, "side": "LONG",
                                        "event_type": "entry", "amt": 1.0}])  # fmt: skip
    engine.dispose()
    with pytest.raises(RuntimeError, match="no state snapshot"):
        ExecutionBook(cfg)


@pytest.mark.usefixtures("ray_session")
def test_the_detached_actor_is_restarted_by_ray_and_keeps_its_book(tmp_path):
    import os
    import signal
    import time

    import ray

    url = f"sqlite:///{tmp_path / 'exec.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    sync_universe(engine, SYMBOLS)
    engine.dispose()
    cfg = ExecutionConfig(session_id="s2", symbols=SYMBOLS, database_url=url, sim=SIM)
    actor = start_execution_actor(cfg, name="test-execution-restart")
    try:
        assert ray.get(actor.submit.remote([intent()]))[0].filled
        pid = ray.get(actor.pid.remote())
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 60
        while True:
            try:
                new_pid = ray.get(actor.pid.remote(), timeout=10)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert new_pid != pid
        summary = ray.get(actor.summary.remote())
        assert summary["open_positions"] == ["ETHUSDT"] and summary["restarts_recovered"] == 1
        assert not ray.get(actor.submit.remote([intent()]))[0].filled
        assert math.isfinite(ray.get(actor.equity.remote()))
    finally:
        ray.kill(actor, no_restart=True)
