"""The live book (``actors.live_book``) against the replay venue's paper broker on loopback, with a real
database: entries are protected on the venue, the ledger holds the venue's own orders and fills, exits
on the venue are reconciled (the sibling protection cancelled), and the kill switch blocks and flattens.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue
from venue_fixtures import exchange_info as exchange_info

from actors.live_book import LiveBook, LiveConfig
from core.config import RiskConfig
from core.killswitch import KillSwitch
from core.messages import BarClose, CloseIntent, EntryIntent, MarketTick, close_client_id
from exchange.binance.orders import client_id
from exchange.binance.signed import TradingConfig
from storage import killswitch_store
from storage.schema import engine_signals, events, positions, risk_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KEY = "live-book-test-key"
SECRET = "live-book-test-secret-91ad"
D = Decimal
MINUTE = 60_000


class Venue(WallClockVenue):
    def open_algos(self) -> list[Any]:
        return [a for a in self.broker.algos.values() if a.status == "NEW"]

    def position(self) -> Decimal:
        return D(self.broker.positions[BTC].amount) if BTC in self.broker.positions else D(0)

    def fills(self) -> list[tuple[int, Decimal]]:
        return sorted((f.trade_id, D(f.qty)) for f in self.broker.order_state.fills)


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET, cls=Venue) as venue:
        yield venue


class Monotonic:
    def __init__(self) -> None:
        self.s = 0.0

    def __call__(self) -> float:
        return self.s


@pytest.fixture
def book(venue: Venue, engine: sa.Engine, tmp_path: Path) -> Iterator[tuple[LiveBook, Monotonic]]:
    trading = TradingConfig(base_url=venue.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                            recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0, sync_clock=False)  # fmt: skip
    cfg = LiveConfig(session_id="live-test", symbols=(BTC,), database_url=engine.url.render_as_string(False),
                     trading=trading, kill_file=tmp_path / "KILL", audit_dir=tmp_path / "audit")  # fmt: skip
    clock = Monotonic()
    live = LiveBook(cfg, monotonic=clock)
    yield live, clock
    live.close()


def intent(venue: Venue, *, sl: float = 59_400.0, tp: float = 60_600.0) -> EntryIntent:
    now = venue.wall()
    decision = now - now % MINUTE - MINUTE  # the bar that closed last (two bars back would be stale)
    return EntryIntent(BTC, decision, 1, 0.02, 3, sl, tp, MARK, 50.0, 1e9, 60_000.0, 60_000.1, now, mark=MARK)


def ledger_matches_venue(live: LiveBook, venue: Venue) -> None:
    fills = sorted((f.trade_id, f.qty) for f in live.store.fills(BTC))
    assert fills == venue.fills()
    assert (
        live.store.positions().get(BTC, None) is None or live.store.positions()[BTC].qty == venue.position()
    )


def test_an_entry_is_protected_and_the_ledger_holds_the_venues_orders_and_fills(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine, tmp_path: Path
) -> None:
    live, _ = book
    (result,) = live.submit([intent(venue)])
    assert result["outcome"] == "protected" and result["naked_ms"] < 1_000
    assert venue.position() == D("0.003")  # 2% of 10,000 USDT at 60,000, floored to the step
    assert sorted(a.order_type for a in venue.open_algos()) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    ledger_matches_venue(live, venue)
    algos = {a.client_algo_id: a for a in live.store.algo_orders(BTC)}
    group = result["trade_group_id"]
    assert set(algos) == {client_id(group, "sl"), client_id(group, "tp")}
    with engine.connect() as c:
        signal = c.execute(sa.select(engine_signals)).one()
    assert signal.client_order_id == client_id(group, "entry") and signal.meta_json["sl_price"] == "59400.0"
    lines = "".join(p.read_text() for p in (tmp_path / "audit").glob("*.jsonl"))
    assert '"kind":"decision"' in lines and '"kind":"fill"' in lines and SECRET not in lines
    assert live.summary()["protected"] == 1


def test_a_take_profit_on_the_venue_is_reconciled_and_the_stop_cancelled(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, clock = book
    live.submit([intent(venue)])
    venue.quote(60_700.0, 60_700.1, 60_700.0)  # the venue triggers the TP: the position is gone
    assert venue.position() == 0 and len(venue.open_algos()) == 1  # the SL is left: an orphan
    clock.s += 31.0
    exits = live.on_ticks([MarketTick(BTC, venue.wall(), 60_700.0, 60_700.0, 60_700.1)])
    assert exits == 1 and venue.open_algos() == [] and live.summary()["open_positions"] == []
    ledger_matches_venue(live, venue)
    assert live.store.positions()[BTC].qty == 0
    with engine.connect() as c:  # the trade's positions rows, its FINAL from the reconciled TP fill
        rows = {r.event_type: r for r in c.execute(sa.select(positions))}
    tp_fill = max(venue.broker.order_state.fills, key=lambda f: f.time_ms)
    assert set(rows) == {"entry", "FINAL"} and rows["FINAL"].exit_reason == "VENUE"
    assert rows["FINAL"].exit_price == tp_fill.price and rows["FINAL"].realized_pnl > 0


def test_the_kill_file_blocks_entries_and_the_operator_kill_flattens(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine, tmp_path: Path
) -> None:
    live, _ = book
    live.submit([intent(venue)])
    (tmp_path / "KILL").write_text("test")
    (blocked,) = live.submit([intent(venue)])
    assert blocked["reasons"] == ("KILL_SWITCH",)
    live.kill_switch(close_positions=True)
    assert venue.position() == 0 and venue.open_algos() == []
    ledger_matches_venue(live, venue)
    with engine.connect() as c:
        kinds = {
            r.kind for r in c.execute(sa.select(events.c.kind).where(events.c.kind.like("killswitch.%")))
        }
        flattened = c.execute(sa.select(risk_events).where(risk_events.c.event_type == "flatten")).all()
    assert {"killswitch.triggered", "killswitch.entries_blocked", "killswitch.close_requested"} <= kinds
    assert flattened
    (tmp_path / "KILL").unlink()
    assert live.resume()["active"] is False


def test_a_refused_stop_is_flattened_and_the_ledger_still_matches_the_venue(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, _ = book
    venue.faults.reject_order(-4045, "Reach max stop order limit.", kind="algo")
    (result,) = live.submit([intent(venue)])
    assert result["outcome"] == "flattened" and venue.position() == 0 and venue.open_algos() == []
    ledger_matches_venue(live, venue)
    with engine.connect() as c:
        kinds = [r.event_type for r in c.execute(sa.select(risk_events.c.event_type))]
    assert sorted(kinds) == ["naked_closed", "protection_failed"]


def test_the_daily_loss_limit_on_the_mirror_flattens_the_venue(
    book: tuple[LiveBook, Monotonic], venue: Venue
) -> None:
    live, _ = book
    cfg = live.cfg.model_copy(
        update={"risk": RiskConfig(daily_loss_limit_pct=0.0001), "session_id": "live-tight"}
    )
    tight = LiveBook(cfg)  # 1 USDT of a 10,000 USDT day
    try:
        (result,) = tight.submit([intent(venue)])
        assert result["filled"] and tight.kill.entries_allowed
        bar, crash = result["decision_ts"] + MINUTE, 59_000.0  # 0.003 BTC marked ~3 USDT under its entry
        bars = [BarClose(BTC, bar, 60_000.0, 60_000.0, crash, crash, 60_000.0, 60_000.0, crash, crash, 1e9)]
        assert tight.on_bars(bars) == 1
        assert venue.position() == 0 and venue.open_algos() == [] and not tight.kill.entries_allowed
        ledger_matches_venue(tight, venue)
    finally:
        tight.close()


def test_a_kill_and_a_resume_recorded_by_another_process_reach_the_running_book(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    """What ``raytrade kill --close-positions`` and ``raytrade resume`` write (killswitch.* rows) is
    taken by the book at its next call, at most a second later."""
    live, clock = book
    live.submit([intent(venue)])
    cli = KillSwitch()
    killswitch_store.record(
        engine, killswitch_store.event_rows(cli.operator(venue.wall(), True, "cli"), cli.state())
    )
    clock.s += 1.5
    live.on_ticks([])
    assert not live.kill.entries_allowed and venue.position() == 0 and venue.open_algos() == []
    killswitch_store.record(engine, killswitch_store.event_rows(cli.resume(venue.wall(), "cli"), cli.state()))
    clock.s += 1.5
    live.on_ticks([])
    assert live.kill.entries_allowed
    assert killswitch_store.latest_state(engine) is not None  # the book's own rows read back as states


# --- close intents (the RL agent's CLOSE and reversals) --------------------------------------------


def rl_close(result: dict[str, Any], *, session: str = "live-test", side: int = 0) -> CloseIntent:
    """The agent's close of BTC decided on the bar after the entry's."""
    bar = result["decision_ts"] + MINUTE
    return CloseIntent(BTC, bar, close_client_id(session, BTC, bar), side=side)


def venue_orders(venue: Venue, client_order_id: str) -> list[Any]:
    return [o for o in venue.broker.order_state.orders.values() if o.client_order_id == client_order_id]


def test_a_close_intent_closes_reduce_only_then_cancels_both_protections(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, _ = book
    (entry,) = live.submit([intent(venue)])
    assert entry["outcome"] == "protected" and len(venue.open_algos()) == 2
    close = rl_close(entry, side=1)
    (done,) = live.submit([close])
    venue_id = client_id(close.client_id, "close")
    assert done["kind"] == "close" and done["filled"] and done["client_order_id"] == venue_id
    assert venue.position() == 0 and venue.open_algos() == []
    (order,) = venue_orders(venue, venue_id)
    assert order.reduce_only and order.status == "FILLED" and order.executed_qty == D("0.003")
    assert {a.status for a in venue.broker.algos.values()} == {"CANCELED"}
    ledger_matches_venue(live, venue)
    assert live.store.positions()[BTC].qty == 0 and live.summary()["open_positions"] == []
    with engine.connect() as c:
        signal = c.execute(
            sa.select(engine_signals).where(engine_signals.c.client_order_id == venue_id)
        ).one()
        kinds = [r.event_type for r in c.execute(sa.select(risk_events.c.event_type))]
    assert signal.engine == "rl" and signal.reason == "RL_CLOSE" and kinds == ["rl_close"]
    # the same close again, and after a restart (the venue's record is the book's): no second order
    assert live.submit([close])[0]["reasons"] == ("DUPLICATE_INTENT",)
    again = LiveBook(live.cfg)
    try:
        assert again.submit([close])[0]["reasons"] == ("FLAT",)
    finally:
        again.close()
    assert len(venue_orders(venue, venue_id)) == 1 and venue.position() == 0


def test_a_close_whose_answer_is_lost_is_found_by_its_client_id_not_sent_twice(
    book: tuple[LiveBook, Monotonic], venue: Venue
) -> None:
    live, _ = book
    (entry,) = live.submit([intent(venue)])
    venue.faults.rest_timeout("/fapi/v1/order", sleep_s=2.0, apply=True)  # placed; the answer comes too late
    close = rl_close(entry)
    (done,) = live.submit([close])
    assert done["filled"], done
    assert len(venue_orders(venue, client_id(close.client_id, "close"))) == 1
    assert venue.position() == 0 and venue.open_algos() == []
    ledger_matches_venue(live, venue)


def test_a_refused_close_leaves_the_position_protected_and_a_later_close_goes_through(
    book: tuple[LiveBook, Monotonic], venue: Venue, engine: sa.Engine
) -> None:
    live, _ = book
    (entry,) = live.submit([intent(venue)])
    venue.faults.reject_order(-2010, "Order would immediately trigger.", kind="order")
    (failed,) = live.submit([rl_close(entry)])
    assert not failed["filled"] and failed["reasons"] == ("CLOSE_REJECTED",)
    # never naked: the position and both protections stay on the venue, the book still holds it
    assert venue.position() == D("0.003") and len(venue.open_algos()) == 2
    assert sorted(a.order_type for a in venue.open_algos()) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert live.summary()["open_positions"] == [BTC]
    ledger_matches_venue(live, venue)
    with engine.connect() as c:
        failures = c.execute(sa.select(risk_events).where(risk_events.c.event_type == "close_failed")).all()
    assert len(failures) == 1 and failures[0].severity == 2
    # the agent's next close (a new decision bar) closes it and only then cancels the protections
    bar = entry["decision_ts"] + 2 * MINUTE
    (done,) = live.submit([CloseIntent(BTC, bar, close_client_id("live-test", BTC, bar))])
    assert done["filled"] and venue.position() == 0 and venue.open_algos() == []
    ledger_matches_venue(live, venue)


def test_a_reversal_closes_then_enters_the_other_side_protected(
    book: tuple[LiveBook, Monotonic], venue: Venue
) -> None:
    live, _ = book
    (entry,) = live.submit([intent(venue)])  # long
    close = rl_close(entry, side=1)
    short = EntryIntent(BTC, close.decision_ts, -1, 0.02, 3, 60_600.0, 59_400.0, MARK, 50.0, 1e9, 60_000.0,
                        60_000.1, venue.wall(), mark=MARK)  # fmt: skip
    closed, entered = live.submit([close, short])
    assert closed["kind"] == "close" and closed["filled"] and entered["outcome"] == "protected"
    assert venue.position() == D("-0.003") and len(venue.open_algos()) == 2  # the short's SL and TP
    group = entered["trade_group_id"]
    assert {a.client_algo_id for a in venue.open_algos()} == {client_id(group, "sl"), client_id(group, "tp")}
    ledger_matches_venue(live, venue)
