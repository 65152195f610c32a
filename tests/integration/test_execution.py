"""The risk/execution actor: shadow fills, SL/TP exits, positions rows, restart recovery, no double entry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sqlalchemy as sa

from actors.execution import (
    ExecutionBook,
    ExecutionConfig,
    start_execution_actor,
    trade_group_id,
)
from core.config import RiskConfig
from core.messages import BarClose, CloseIntent, EntryIntent, MarketTick, close_client_id
from core.signals import empty_signals
from core.sim import FillSimulator, MarketPanel, SimConfig, run_backtest
from core.time import MINUTE_MS
from pipelines.shadow_parity import compare_trades, load_shadow_trades
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


# --- parity with the backtest on the same bars and signals ---------------------------------------

PARITY_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PARITY_SIM = SimConfig(fee_rate=0.0004, slippage_k=0.15, impact_k=0.0, default_leverage=5)
LOOSE = dict(max_positions=10, max_used_margin_pct=1.0, max_total_notional_pct=5.0,
             max_directional_notional_pct=5.0, max_symbol_notional_pct=1.0, max_btc_beta_notional_pct=50.0,
             max_orders_per_s=100, daily_loss_limit_pct=0.5)  # fmt: skip


def flat_panel(n: int, prices=(100.0, 50.0, 10.0)) -> dict[str, np.ndarray]:
    """[bar, symbol] arrays of a quiet market: every bar opens, closes and marks at its symbol's price."""
    base = np.tile(np.asarray(prices, np.float64), (n, 1))
    return {
        name: base.copy() for name in ("open", "close", "mark_open", "mark_high", "mark_low", "mark_close")
    }


def make_panel(bars: dict[str, np.ndarray]) -> MarketPanel:
    n, m = bars["open"].shape
    return MarketPanel(
        PARITY_SYMBOLS, T0 + MINUTE_MS * np.arange(n, dtype=np.int64),
        **{k: np.ascontiguousarray(v) for k, v in bars.items()},
        quote_volume=np.full((n, m), 5e6), funding_rate=np.zeros((n, m)), atr=0.005 * bars["close"],
    )  # fmt: skip


def parity_book(tmp_path, risk: RiskConfig, session: str) -> ExecutionBook:
    url = f"sqlite:///{tmp_path / f'{session}.db'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    sync_universe(engine, PARITY_SYMBOLS)
    engine.dispose()
    return ExecutionBook(ExecutionConfig(session_id=session, symbols=PARITY_SYMBOLS, database_url=url,
                                         sim=PARITY_SIM, risk=risk))  # fmt: skip


def replay(book: ExecutionBook, panel: MarketPanel, sig, groups, ticks=None) -> None:
    """Drive the book as the realtime path does: each bar's close goes to the bar rule, then every group
    reports its decisions of that close (in ``groups`` order), the entries filling at the next bar's open
    as the book's ask/bid; ``ticks[j]``: mark ticks that arrive after bar j's close, before the decisions."""
    n, m = panel.shape
    for j in range(n - 1):
        ts = int(panel.ts[j])
        book.on_bars([BarClose(s, ts, panel.open[j, k], max(panel.open[j, k], panel.close[j, k]),
                               min(panel.open[j, k], panel.close[j, k]), panel.close[j, k], panel.mark_open[j, k],
                               panel.mark_high[j, k], panel.mark_low[j, k], panel.mark_close[j, k],
                               panel.quote_volume[j, k]) for k, s in enumerate(PARITY_SYMBOLS)])  # fmt: skip
        for t in (ticks or {}).get(j, []):
            book.on_ticks([t])
        for group in groups:
            intents = []
            for s in group:
                k = PARITY_SYMBOLS.index(s)
                if sig.direction[j, k] == 0:
                    continue
                nxt = panel.open[j + 1, k]
                intents.append(EntryIntent(
                    symbol=s, decision_ts=ts, side=int(sig.direction[j, k]), size_fraction=float(sig.size_fraction[j, k]),
                    leverage=int(sig.leverage[j, k]), sl_price=float(sig.sl_price[j, k]),
                    tp_price=float(sig.tp_price[j, k]), decision_price=float(panel.close[j, k]),
                    atr=float(panel.atr[j, k]), quote_volume=float(panel.quote_volume[j, k]), bid=nxt, ask=nxt,
                    book_ts=ts + MINUTE_MS + 5, mark=float(panel.mark_open[j + 1, k]),
                ))  # fmt: skip
            book.submit(intents, ts, group)


def signal(
    sig, j: int, symbol: str, side: int = 1, size: float = 0.3, sl: float = 0.5, tp: float = 2.0
) -> None:
    """An entry of ``symbol`` decided on bar j; SL/TP as fractions of its price (wide: they do not trigger)."""
    k = PARITY_SYMBOLS.index(symbol)
    price = (100.0, 50.0, 10.0)[k]
    sig.direction[j, k], sig.size_fraction[j, k], sig.leverage[j, k] = side, size, 5
    sig.sl_price[j, k] = price * (1 - side * sl)
    sig.tp_price[j, k] = price * (1 + side * tp)


def assert_same_trades(book: ExecutionBook, bt_trades, end_ms: int):
    shadow = load_shadow_trades(book.engine, book.cfg.session_id)
    parity = compare_trades(shadow, bt_trades, end_ms)
    assert parity.ok, parity.problems
    assert parity.matched == len(bt_trades) == len(shadow)
    return shadow, parity


def test_daily_loss_limit_flattens_at_the_next_open_as_the_backtest_does(tmp_path):
    # three longs at bar 2's open; bars 4–6 fall 1% a bar; the 2% daily loss limit trips at the close of
    # bar 5 (0.9 of equity long, −2.97%): the backtest closes everything at bar 6's open (FLATTEN) and
    # refuses the entries decided afterwards (TRADING_DISABLED)
    n = 12
    bars = flat_panel(n)
    for j in range(4, n):
        f = 0.99 ** min(j - 3, 3)
        for name in bars:
            bars[name][j] = np.asarray((100.0, 50.0, 10.0)) * f
    panel = make_panel(bars)
    sig = empty_signals(panel.shape)
    for s in PARITY_SYMBOLS:
        signal(sig, 1, s)
    signal(sig, 8, "ETHUSDT", size=0.1)
    risk = RiskConfig(**{**LOOSE, "daily_loss_limit_pct": 0.02})
    bt = run_backtest(panel, sig, PARITY_SIM, risk, close_at_end=False)
    assert list(bt.trades["exit_reason"]) == ["FLATTEN"] * 3
    (flatten_ts,) = set(bt.trades["exit_ts"])  # the open after the close where the limit tripped
    book = parity_book(tmp_path, risk, "loss")
    replay(book, panel, sig, [PARITY_SYMBOLS])
    shadow, _ = assert_same_trades(book, bt.trades, int(panel.ts[-1]))
    assert set(shadow["exit_ts"]) == {flatten_ts} and set(shadow["exit_reason"]) == {"FLATTEN"}
    assert book.summary()["open_positions"] == []
    assert book.summary()["blocked"] == 1  # the entry decided on bar 8: entries are off for the day
    engine = book.engine
    with engine.connect() as c:
        got = c.execute(sa.select(risk_events.c.event_type, risk_events.c.ts, risk_events.c.details)).all()
    flat = [r for r in got if r.event_type == "daily_loss_flatten"]
    assert (
        len(flat) == 1
        and flat[0].ts == flatten_ts
        and sorted(flat[0].details["closed"]) == sorted(PARITY_SYMBOLS)
    )
    blocked = [r for r in got if r.event_type == "entry_blocked"]
    assert len(blocked) == 1 and "TRADING_DISABLED" in blocked[0].details["reasons"]


def test_max_positions_admits_the_backtests_symbol_whatever_order_the_groups_report_in(tmp_path):
    # ETH and SOL both signal on bar 1 with room for one position: the backtest takes ETH (panel order);
    # the group holding SOL reports first, and the book still takes ETH and refuses SOL
    panel = make_panel(flat_panel(6))
    sig = empty_signals(panel.shape)
    signal(sig, 1, "ETHUSDT", size=0.2)
    signal(sig, 1, "SOLUSDT", size=0.2)
    risk = RiskConfig(**{**LOOSE, "max_positions": 1})
    bt = run_backtest(panel, sig, PARITY_SIM, risk, close_at_end=False)
    assert list(bt.trades["symbol"]) == [] and list(bt.fills["symbol"]) == ["ETHUSDT"]
    book = parity_book(tmp_path, risk, "maxpos")
    replay(book, panel, sig, [("SOLUSDT",), ("BTCUSDT", "ETHUSDT")])
    assert book.summary()["open_positions"] == ["ETHUSDT"]
    with book.engine.connect() as c:
        blocked = c.execute(sa.select(risk_events.c.symbol, risk_events.c.details)).all()
    assert [(r.symbol, "MAX_POSITIONS" in r.details["reasons"]) for r in blocked] == [("SOLUSDT", True)]
    book.flatten("END")
    end = run_backtest(panel, sig, PARITY_SIM, risk, close_at_end=True).trades
    shadow = load_shadow_trades(book.engine, "maxpos")
    assert list(shadow["symbol"]) == list(end["symbol"]) == ["ETHUSDT"]
    assert shadow["entry_ts"].iloc[0] // MINUTE_MS == end["entry_ts"].iloc[0] // MINUTE_MS


def test_directional_limit_judges_on_the_equity_marked_at_the_decision_bars_close(tmp_path):
    # a long BTC (0.5 of equity) is held; after bar 3's close a mark tick lifts BTC 6% before the
    # decisions of bar 3 arrive. The backtest sizes and checks ETH's entry (0.29 of equity) on the
    # book marked at bar 3's close: 0.79 ≤ 0.8, admitted. Marked at the tick, BTC's notional would
    # block it (MAX_DIRECTIONAL_NOTIONAL): the book must judge as the backtest does.
    n = 8
    bars = flat_panel(n)
    for name in bars:
        bars[name][4:, 0] = 106.0
    panel = make_panel(bars)
    sig = empty_signals(panel.shape)
    signal(sig, 0, "BTCUSDT", size=0.5)
    signal(sig, 3, "ETHUSDT", size=0.29)
    risk = RiskConfig(**{**LOOSE, "max_directional_notional_pct": 0.8})
    bt = run_backtest(panel, sig, PARITY_SIM, risk, close_at_end=True)
    assert list(bt.trades["symbol"]) == ["BTCUSDT", "ETHUSDT"] and len(bt.risk_events) == 0
    book = parity_book(tmp_path, risk, "equity")
    tick = MarketTick("BTCUSDT", int(panel.ts[4]) + 1, 106.0, 105.99, 106.01)
    replay(book, panel, sig, [PARITY_SYMBOLS], ticks={3: [tick]})
    held = book.sim.positions()
    assert sorted(held) == ["BTCUSDT", "ETHUSDT"]
    bt_eth = bt.fills[bt.fills["symbol"] == "ETHUSDT"].iloc[0]
    assert held["ETHUSDT"].qty == pytest.approx(float(bt_eth["qty"]), rel=1e-9)  # sized on the same equity


def test_a_second_session_on_the_same_window_records_its_refusals_without_stopping(cfg):
    # the same intents in two sessions (a replay rerun on the same database): the refusal's risk event
    # is already there (unique on ts, type, symbol) and must not stop the entry after it
    naked = intent(symbol="BTCUSDT", sl_price=2100.0)  # a long with its stop above the price: refused
    for session in ("s1", "s2"):
        book = ExecutionBook(cfg.model_copy(update={"session_id": session}))
        first, second = book.submit([naked, intent()])
        assert not first.filled and "NO_PROTECTION" in first.reasons
        assert second.filled and second.trade_group_id == trade_group_id(session, "ETHUSDT", T0)
        book.close()
    engine = db.make_engine(cfg.database_url)
    with engine.connect() as c:
        got = c.execute(sa.select(risk_events.c.symbol, risk_events.c.details)).all()
    engine.dispose()
    assert [(r.symbol, r.details["session"]) for r in got] == [("BTCUSDT", "s1")]
    assert sorted(r["trade_group_id"] for r in rows(cfg.database_url)) == ["s1:ETHUSDT:1717200000000",
                                                                           "s2:ETHUSDT:1717200000000"]  # fmt: skip


# --- close intents (the RL agent's CLOSE and reversals) --------------------------------------------


def test_a_close_intent_closes_at_the_bid_with_the_simulators_per_symbol_exit(cfg):
    book = ExecutionBook(cfg)
    assert book.submit([intent()])[0].filled  # ETH long decided on T0
    tick = MarketTick("ETHUSDT", T0 + MINUTE_MS + 1050, 2010.0, 2009.9, 2010.1)
    assert book.on_ticks([tick]) == 0
    bar = T0 + MINUTE_MS
    close = CloseIntent("ETHUSDT", bar, close_client_id("s1", "ETHUSDT", bar))
    (res,) = book.submit([close])
    assert res.kind == "close" and res.filled and res.trade_group_id == trade_group_id("s1", "ETHUSDT", T0)
    got = rows(cfg.database_url)
    assert [r["event_type"] for r in got] == ["entry", "FINAL"]
    final = got[1]
    assert final["exit_reason"] == "RL_CLOSE" and final["ts"] == bar + MINUTE_MS
    # the same trade through a bare simulator: open, the tick, the per-symbol market exit at the bid
    sim = FillSimulator(SYMBOLS, SIM, RiskConfig())
    it = intent()
    assert sim.open_position(it.symbol, 1, it.book_ts, it.ask, 0.1 * sim.equity, decision_price=2000.0, atr=20.0,
                             sl=it.sl_price, tp=it.tp_price, leverage=5, mark_price=2000.0,
                             quote_volume_usdt=5e6) == ()  # fmt: skip
    assert sim.on_mark("ETHUSDT", tick.ts_ms, tick.mark, bid=tick.bid, ask=tick.ask) is None
    assert sim.close_position("ETHUSDT", bar + MINUTE_MS, 2009.9, reason="SIGNAL")
    ref = sim.trades().iloc[-1]
    for key, col in (
        ("realized_pnl", "pnl"),
        ("fees", "fees"),
        ("funding", "funding"),
        ("exit_price", "exit_price"),
    ):
        assert final[key] == pytest.approx(float(ref[col]), rel=1e-12, abs=1e-12), key
    assert book.sim.wallet == pytest.approx(sim.wallet, rel=1e-12)
    # the same close again (a retry): nothing more is closed or written
    again = book.submit([close])[0]
    assert not again.filled and again.reasons == ("DUPLICATE_INTENT",)
    assert len(rows(cfg.database_url)) == 2 and book.summary()["exits"] == 1


def test_a_reversal_closes_then_enters_in_one_submit_and_exits_pass_the_kill_switch(cfg):
    book = ExecutionBook(cfg)
    assert book.submit([intent()])[0].filled  # long
    bar = T0 + 2 * MINUTE_MS
    rev = [
        CloseIntent("ETHUSDT", bar, close_client_id("s1", "ETHUSDT", bar), side=1),
        intent(ts=bar, side=-1, book_ts=bar + MINUTE_MS + 20),
    ]
    wrong_side = CloseIntent("ETHUSDT", bar, close_client_id("s1", "ETHUSDT", bar + 1), side=-1)
    assert book.submit([wrong_side])[0].reasons == ("FLAT",)  # a SHORT's exit does not close a long
    closed, entered = book.submit(rev, bar, SYMBOLS)
    assert closed.kind == "close" and closed.filled and entered.kind == "entry" and entered.filled
    got = rows(cfg.database_url)
    assert [(r["event_type"], r["side"]) for r in got] == [
        ("entry", "LONG"),
        ("FINAL", "LONG"),
        ("entry", "SHORT"),
    ]
    assert got[1]["ts"] <= got[2]["ts"] and got[1]["exit_reason"] == "RL_CLOSE"
    # a close re-delivered (even under a new id) never closes the position its own reversal opened
    redelivered = CloseIntent("ETHUSDT", bar, close_client_id("s2", "ETHUSDT", bar))
    assert book.submit([redelivered])[0].reasons == ("FLAT",)
    # with the kill switch on, an entry is refused but a close goes through (exits are never refused)
    book.kill_switch(close_positions=False)
    later = bar + 3 * MINUTE_MS
    closed, refused = book.submit(
        [CloseIntent("ETHUSDT", later, close_client_id("s1", "ETHUSDT", later)),
         intent(ts=later, book_ts=later + MINUTE_MS + 20)], later, SYMBOLS,
    )  # fmt: skip
    assert closed.filled and not refused.filled and "KILL_SWITCH" in refused.reasons
    assert [r["event_type"] for r in rows(cfg.database_url)] == ["entry", "FINAL", "entry", "FINAL"]
    assert book.sim.position("ETHUSDT") is None and book.summary()["exit_reasons"] == {"RL_CLOSE": 2}
