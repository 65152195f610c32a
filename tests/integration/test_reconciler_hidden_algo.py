"""The reconciler against an algo order the venue acknowledged and then hides from its queries (-2013).

Binance's query side can lag its matching side: the replay venue's ``Faults.hide_algo_orders`` places
and acknowledges a stop that ``GET /fapi/v1/algoOrder`` then answers -2013 for and ``openAlgoOrders``
leaves out, for 60 s of the venue clock. No mocks: a real SQLite ledger (``storage.ledger``), the
reconciler (``actors.reconciler``) and the signed client on loopback; the venue clock is the wall clock
shared with the client, moved forward instead of waited for. Grace periods for naked positions and
orphans are 0, so the hidden stop would be "missing" at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue, signed_client
from venue_fixtures import exchange_info as exchange_info

from actors.reconciler import Reconciler, ReconcilerConfig
from core.ledger import NOT_FOUND, EngineSignal
from core.reconcile import CorrectionKind as K
from core.reconcile import LookupKind, ReconcileConfig
from exchange.binance.ledger_records import algo_of_response, order_of_response
from exchange.binance.trading import BinanceTrading
from storage import db
from storage.ledger import LedgerStore

KEY = "hidden-reconcile-key"
SECRET = "hidden-reconcile-secret-5a0f"
HIDE_S = 60


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


@pytest.fixture
def trading(venue: WallClockVenue) -> Iterator[BinanceTrading]:
    client = signed_client(venue.url, KEY, SECRET, wall_clock_ms=venue.wall, sync_clock=False,
                           recv_window_ms=1_000, timeout_s=2.0, backoff_s=0.0)  # fmt: skip
    client.start()
    yield client
    client.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    db.upgrade(engine)
    yield LedgerStore(engine, source="live")
    engine.dispose()


def _protected_entry_with_a_hidden_stop(
    venue: WallClockVenue, trading: BinanceTrading, store: LedgerStore
) -> tuple[int, int]:
    """What the execution actor does: an entry and its SL/TP, each recorded in the ledger as the venue
    acknowledged it; the venue hides the SL. The ledger knows the levels too, so a reconciler that
    believed the SL missing would place another one. Returns the SL's and the TP's algo ids."""
    store.record_signal(EngineSignal(venue.wall() - 1_000, BTC, "LONG", "lgbm", "ev",
                                     meta={"sl_price": 58_000, "tp_price": 62_000}))  # fmt: skip
    entry = trading.place_entry(BTC, "BUY", D("0.003"), "hid-entry", mark_price=MARK)
    price = entry.avgPrice or D(str(MARK))
    venue.faults.hide_algo_orders(HIDE_S)
    stop = trading.place_protection(BTC, "SL", "LONG", 58_000, price, "hid-sl", D("0.003"))
    target = trading.place_protection(BTC, "TP", "LONG", 62_000, price, "hid-tp", D("0.003"))
    store.record([order_of_response(entry), algo_of_response(stop), algo_of_response(target)])
    assert {a.clientAlgoId for a in trading.open_algo_orders(BTC)} == {"hid-tp"}  # the fault is on
    return stop.algoId, target.algoId


def _venue_algos(venue: WallClockVenue) -> list[tuple[str, str]]:
    return sorted((a.client_algo_id, a.status) for a in venue.broker.algos.values())


def _stored_status(store: LedgerStore, client_algo_id: str) -> str:
    [algo] = [a for a in store.algo_orders(BTC) if a.client_algo_id == client_algo_id]
    return algo.status


def test_a_hidden_protection_is_neither_cancelled_nor_duplicated_and_the_ledger_shows_it_new(
    venue: WallClockVenue, trading: BinanceTrading, store: LedgerStore
) -> None:
    stop_id, _ = _protected_entry_with_a_hidden_stop(venue, trading, store)
    grace = ReconcileConfig(protection_grace_ms=0, orphan_grace_ms=0)  # unconfirmed_algo_ms: default
    reconciler = Reconciler(store, trading, ReconcilerConfig(reconcile=grace))
    for shift_ms in (0, 30_000, 29_000):  # 0 s, 30 s and 59 s after the SL was acknowledged: hidden
        venue.wall.shift_ms += shift_ms
        report = reconciler.run_once()
        assert not report.errors and report.actions == [], report.format()
        assert not {K.PROTECT_OR_FLATTEN, K.CANCEL_ORPHAN} & set(report.found), report.format()
        assert _venue_algos(venue) == [("hid-sl", "NEW"), ("hid-tp", "NEW")]  # one of each, resting
        assert venue.broker.positions[BTC].amount == D("0.003")
        assert _stored_status(store, "hid-sl") == "NEW"  # acknowledged: not concluded absent
        assert [(lk.kind, lk.algo_id) for lk in report.lookups_pending] == [
            (LookupKind.QUERY_ALGO_ORDER, stop_id)
        ]
    assert "acknowledged" in report.lookups_pending[0].reason
    venue.wall.shift_ms += 1_000  # 60 s: the venue shows it
    report = reconciler.run_once()
    assert not report.errors and report.actions == [] and report.lookups_pending == [], report.format()
    assert _stored_status(store, "hid-sl") == _stored_status(store, "hid-tp") == "NEW"
    assert sorted(a.client_algo_id for a in store.algo_orders(open_only=True)) == ["hid-sl", "hid-tp"]
    assert _venue_algos(venue) == [("hid-sl", "NEW"), ("hid-tp", "NEW")]
    assert store.positions()[BTC].qty == D("0.003") == venue.broker.positions[BTC].amount
    assert {f.trade_id for f in store.fills()} == {f.trade_id for f in venue.broker.fills}
    assert reconciler.run_once().consistent


def test_a_stop_concluded_absent_while_hidden_is_new_again_in_the_ledger_once_the_venue_shows_it(
    venue: WallClockVenue, trading: BinanceTrading, store: LedgerStore
) -> None:
    """A reconciler that trusts no acknowledgement (unconfirmed_algo_ms=0) writes NOT_FOUND on the -2013
    answer; the venue's later NEW must replace it (the ledger's precedence), not stay NOT_FOUND."""
    _protected_entry_with_a_hidden_stop(venue, trading, store)
    grace = ReconcileConfig(protection_grace_ms=0, orphan_grace_ms=0, unconfirmed_algo_ms=0)
    config = ReconcilerConfig(reconcile=grace, naked_with_levels="report", naked_without_levels="report")
    reconciler = Reconciler(store, trading, config)
    report = reconciler.run_once()
    assert K.PROTECT_OR_FLATTEN in report.found and {a.outcome for a in report.actions} == {"skipped"}
    assert _stored_status(store, "hid-sl") == NOT_FOUND, report.format()
    venue.wall.shift_ms += HIDE_S * 1_000
    report = reconciler.run_once()
    assert K.UPDATE_ALGO_ORDER in report.found and not report.errors, report.format()
    assert _stored_status(store, "hid-sl") == "NEW"
    assert _venue_algos(venue) == [("hid-sl", "NEW"), ("hid-tp", "NEW")]  # nothing sent
    assert reconciler.run_once().consistent
