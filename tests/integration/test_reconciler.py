"""The reconciler (actors.reconciler) between a real database ledger and the replay venue on loopback.

No mocks: "an earlier process" trades on the venue through its own signed client; the reconciler
reads the venue through ``exchange.binance.snapshot``, writes through ``storage.ledger`` and acts
through the signed client. Grace periods are 0 so that orders a test has just placed count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue, signed_client
from venue_fixtures import exchange_info as exchange_info

from actors.reconciler import Reconciler, ReconcilerConfig
from core.ledger import EngineSignal, SyncCursor
from core.reconcile import CorrectionKind as K
from core.reconcile import ReconcileConfig
from exchange.binance.snapshot import fetch_snapshot
from exchange.binance.trading import BinanceTrading
from storage import db
from storage.ledger import LedgerStore

KEY = "reconcile-test-key"
SECRET = "reconcile-test-secret-4d1e"
NO_GRACE = ReconcileConfig(protection_grace_ms=0, orphan_grace_ms=0)
TABLES = (
    "orders",
    "algo_orders",
    "fills",
    "events",
    "engine_signals",
    "sync_cursors",
    "risk_events",
    "cancels",
)


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


def client(venue: WallClockVenue) -> BinanceTrading:
    trading = signed_client(venue.url, KEY, SECRET, sync_clock=False, recv_window_ms=1_000, timeout_s=2.0,
                            backoff_s=0.0)  # fmt: skip
    trading.start()
    return trading


@pytest.fixture
def earlier(venue: WallClockVenue) -> Iterator[BinanceTrading]:
    """The process that traded before the ledger knew: its own client, its memory gone afterwards."""
    with client(venue) as trading:
        yield trading


@pytest.fixture
def trading(venue: WallClockVenue) -> Iterator[BinanceTrading]:
    with client(venue) as trading:
        yield trading


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def make(trading: BinanceTrading) -> Callable[..., Reconciler]:
    def build(engine: sa.Engine, **config: Any) -> Reconciler:
        cfg = ReconcilerConfig(reconcile=NO_GRACE, **config)
        return Reconciler(LedgerStore(engine, source="reconcile"), trading, cfg)

    return build


def venue_qty(venue: WallClockVenue) -> D:
    position = venue.broker.positions.get(BTC)
    return D(0) if position is None else D(position.amount)


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def open_algos(venue: WallClockVenue) -> list[Any]:
    return [a for a in venue.broker.algos.values() if a.status == "NEW"]


def test_snapshot_reads_positions_orders_and_trades_from_the_cursor(
    venue: WallClockVenue, earlier: BinanceTrading, trading: BinanceTrading
) -> None:
    entry = earlier.place_entry(BTC, "BUY", D("0.003"), "snap-entry", mark_price=MARK)
    earlier.place_protection(BTC, "SL", "LONG", 58_000, entry.avgPrice or MARK, "snap-sl", D("0.003"))
    earlier.place_entry(BTC, "BUY", D("0.002"), "snap-add", mark_price=MARK)
    now = trading.http.now_ms()
    snap = fetch_snapshot(trading, None, {}, [], now)
    [position] = snap.positions
    assert position.qty == D("0.005") and snap.positions_ms is not None and snap.positions_ms <= now + 1_000
    assert [a.client_algo_id for a in snap.open_algo_orders] == ["snap-sl"]
    first, second = sorted(snap.trades, key=lambda f: f.trade_id)
    assert (first.qty, second.qty) == (D("0.003"), D("0.002")) and snap.trades_from_id == {BTC: None}
    later = fetch_snapshot(trading, [BTC], {BTC: SyncCursor(BTC, first.trade_id, first.time_ms)}, [], now)
    assert [f.trade_id for f in later.trades] == [second.trade_id]
    assert later.trades_from_id == {BTC: first.trade_id + 1}


def test_a_venue_position_and_fills_the_ledger_never_saw_are_adopted_and_a_second_run_finds_nothing(
    venue: WallClockVenue, earlier: BinanceTrading, engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    entry = earlier.place_entry(BTC, "BUY", D("0.003"), "old-entry", mark_price=MARK)
    price = entry.avgPrice or D(str(MARK))
    earlier.place_protection(BTC, "SL", "LONG", 58_000, price, "old-sl", D("0.003"))
    earlier.place_protection(BTC, "TP", "LONG", 62_000, price, "old-tp", D("0.003"))
    reconciler = make(engine)
    first = reconciler.run_once()
    assert not first.errors, first.format()
    assert {K.INSERT_FILL, K.RESTORE_ORDER, K.UPDATE_ORDER, K.ADOPT_POSITION, K.RESTORE_ALGO_ORDER} <= set(
        first.found
    ), first.format()
    assert first.actions == [] and first.lookups_pending == [] and first.exit_code == 2
    store = reconciler.store
    assert store.positions()[BTC].qty == venue_qty(venue) == D("0.003")
    assert {f.trade_id for f in store.fills()} == {f.trade_id for f in venue.broker.fills}
    [order] = store.orders()
    assert (order.status, order.client_order_id) == ("FILLED", "old-entry")
    assert sorted(a.client_algo_id for a in store.algo_orders(open_only=True)) == ["old-sl", "old-tp"]
    assert store.cursors()[BTC].last_trade_id == max(f.trade_id for f in venue.broker.fills)
    events = [e["kind"] for e in store.correction_events()]
    assert "reconcile.adopt_position" in events and "reconcile.insert_fill" in events

    second = reconciler.run_once()
    assert second.consistent and second.exit_code == 0, second.format()
    assert "result: consistent" in second.format() and "found: nothing" in second.format()


def test_a_resting_close_position_stop_of_an_adopted_position_is_adopted_not_duplicated(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    entry = earlier.place_entry(BTC, "SELL", D("0.004"), "short-entry", mark_price=MARK)
    price = entry.avgPrice or D(str(MARK))
    earlier.place_protection(BTC, "SL", "SHORT", 61_000, price, "short-sl")  # closePosition: no quantity
    earlier.place_protection(BTC, "TP", "SHORT", 58_000, price, "short-tp")
    store = LedgerStore(sqlite_engine)  # the ledger even knows the levels: nothing must be placed again
    store.record_signal(EngineSignal(venue.wall() - 60_000, BTC, "SHORT", "lgbm", "ev", meta={"sl_price": 61_000,
                                                                                                "tp_price": 58_000}))  # fmt: skip
    reconciler = make(sqlite_engine)
    report = reconciler.run_once()
    restored = [c for c in report.findings if c.kind == K.RESTORE_ALGO_ORDER]
    assert len(restored) == 2 and all("closePosition" in c.reason for c in restored), report.format()
    assert K.PROTECT_OR_FLATTEN not in report.found and report.actions == []
    assert len(venue.broker.algos) == 2 and len(open_algos(venue)) == 2
    stored = reconciler.store.algo_orders(open_only=True)
    assert [(a.close_position, a.qty) for a in stored] == [(True, D(0)), (True, D(0))]
    assert reconciler.store.positions()[BTC].qty == D("-0.004") == venue_qty(venue)
    assert reconciler.run_once().consistent


def test_an_orphan_algo_order_whose_position_closed_on_the_venue_is_cancelled(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    entry = earlier.place_entry(BTC, "BUY", D("0.003"), "gone-entry", mark_price=MARK)
    earlier.place_protection(BTC, "SL", "LONG", 58_000, entry.avgPrice or MARK, "gone-sl", D("0.003"))
    earlier.close_position(BTC, "SELL", D("0.003"), "gone-close")  # the reduce-only stop stays NEW
    [orphan] = open_algos(venue)
    reconciler = make(sqlite_engine)
    report = reconciler.run_once()
    assert K.CANCEL_ORPHAN in report.found, report.format()
    [action] = report.actions
    assert (action.kind, action.outcome, action.client_id) == ("cancel", "done", "gone-sl")
    assert orphan.status == "CANCELED" and open_algos(venue) == []
    [stored] = reconciler.store.algo_orders()
    assert stored.status == "CANCELED"  # learnt by the next round's query
    done = [e for e in reconciler.store.correction_events(K.CANCEL_ORPHAN) if e["payload"].get("action")]
    assert [e["payload"]["outcome"] for e in done] == ["done"]
    assert row_counts(sqlite_engine)["cancels"] == 1
    assert reconciler.store.positions()[BTC].qty == 0 == venue_qty(venue)
    assert reconciler.run_once().consistent


def test_a_naked_position_is_protected_when_the_ledger_knows_its_levels(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    earlier.place_entry(BTC, "BUY", D("0.003"), "naked-entry", mark_price=MARK)
    LedgerStore(sqlite_engine).record_signal(
        EngineSignal(
            venue.wall() - 1_000, BTC, "LONG", "lgbm", "ev", meta={"sl_price": 58_000.05, "tp_price": 62_000}
        )
    )
    reconciler = make(sqlite_engine)
    report = reconciler.run_once()
    [action] = report.actions
    assert (action.kind, action.outcome) == ("protect", "done"), report.format()
    algos = sorted(open_algos(venue), key=lambda a: a.order_type)
    assert [(a.order_type, str(a.trigger_price), a.quantity, a.reduce_only) for a in algos] == [
        ("STOP_MARKET", "58000.1", D("0.003"), True),  # rounded toward the entry
        ("TAKE_PROFIT_MARKET", "62000.0", D("0.003"), True),
    ]
    assert venue_qty(venue) == D("0.003")
    assert sorted(a.order_type for a in reconciler.store.algo_orders(open_only=True)) == [
        "STOP_MARKET",
        "TAKE_PROFIT_MARKET",
    ]
    again = reconciler.run_once()
    assert again.consistent, again.format()
    assert len(venue.broker.algos) == 2


def test_a_naked_position_without_known_levels_is_flattened_reduce_only(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    earlier.place_entry(BTC, "SELL", D("0.002"), "manual-short", mark_price=MARK)
    reconciler = make(sqlite_engine)
    report = reconciler.run_once()
    [action] = report.actions
    assert (action.kind, action.outcome) == ("flatten", "done") and "levels unknown" in action.detail
    assert venue_qty(venue) == 0 and open_algos(venue) == []
    [close] = [o for o in venue.broker.orders.values() if o.client_order_id == action.client_id]
    assert close.reduce_only and close.side == "BUY" and close.status == "FILLED"
    assert reconciler.store.positions()[BTC].qty == 0
    assert {f.trade_id for f in reconciler.store.fills()} == {f.trade_id for f in venue.broker.fills}
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT event_type FROM risk_events")).scalars().all() == [
            "naked_flattened"
        ]
    assert reconciler.run_once().consistent


def test_a_protection_the_venue_refuses_flattens_the_position_at_once(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    earlier.place_entry(BTC, "BUY", D("0.003"), "late-entry", mark_price=MARK)
    LedgerStore(sqlite_engine).record_signal(  # the mark (60000) is below this stop: -2021
        EngineSignal(
            venue.wall() - 1_000, BTC, "LONG", "lgbm", "ev", meta={"sl_price": 60_500, "tp_price": 62_000}
        )
    )
    report = make(sqlite_engine).run_once()
    [action] = report.actions
    assert (action.kind, action.outcome) == ("flatten", "done") and "never naked" in action.detail
    assert venue_qty(venue) == 0 and open_algos(venue) == []
    with sqlite_engine.connect() as conn:
        kinds = sorted(conn.execute(sa.text("SELECT event_type FROM risk_events")).scalars())
    assert kinds == ["naked_flattened", "protection_failed"]


def test_naked_positions_are_only_reported_under_the_report_policy(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    earlier.place_entry(BTC, "BUY", D("0.003"), "kept-entry", mark_price=MARK)
    report = make(sqlite_engine, naked_without_levels="report").run_once()
    [action] = report.actions
    assert (action.kind, action.outcome) == ("flatten", "skipped") and venue_qty(venue) == D("0.003")
    assert report.exit_code == 2


def test_dry_run_reports_the_same_findings_and_changes_nothing_in_the_database_or_on_the_venue(
    venue: WallClockVenue, earlier: BinanceTrading, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    earlier.place_entry(BTC, "BUY", D("0.003"), "dry-entry", mark_price=MARK)
    earlier.place_entry(BTC, "BUY", D("0.002"), "dry-add", mark_price=MARK)
    before_db = row_counts(sqlite_engine)
    before_venue = (
        len(venue.broker.orders),
        len(venue.broker.algos),
        len(venue.broker.fills),
        venue_qty(venue),
    )
    dry = make(sqlite_engine, dry_run=True)
    report = dry.run_once()
    assert report.dry_run and {K.INSERT_FILL, K.ADOPT_POSITION, K.PROTECT_OR_FLATTEN} <= set(report.found)
    assert report.found[K.INSERT_FILL] == 2 and report.exit_code == 2
    [action] = report.actions
    assert (action.kind, action.outcome) == ("flatten", "dry_run")
    text = report.format()
    assert "dry run" in text and "would do:" in text and "result: would correct" in text
    assert dry.run_once().found == report.found  # nothing was written: the same again
    assert row_counts(sqlite_engine) == before_db == dict.fromkeys(TABLES, 0)
    after_venue = (
        len(venue.broker.orders),
        len(venue.broker.algos),
        len(venue.broker.fills),
        venue_qty(venue),
    )
    assert after_venue == before_venue

    real = make(sqlite_engine).run_once()  # what the dry run said is what a real run does
    assert set(real.found) >= set(report.found) and [a.kind for a in real.actions] == ["flatten"]


def test_run_forever_runs_at_once_and_stops_on_the_event(
    venue: WallClockVenue, sqlite_engine: sa.Engine, make: Callable[..., Reconciler]
) -> None:
    import threading

    stop = threading.Event()
    reports: list[Any] = []

    def keep(report: Any) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    runs = make(sqlite_engine, interval_s=0.05).run_forever(stop, keep)
    assert runs == 2 and all(r.consistent for r in reports)
