"""User data stream events → typed structures → fills and core.messages, against the recorded payloads.

``fixtures/user_data_json`` holds Binance's USDⓈ-M examples (some from its documentation): ORDER_TRADE_UPDATE
(new, trade, partial, liquidation, ADL, insurance, settlement, a COIN-M delivery), ALGO_UPDATE (new,
canceled), ACCOUNT_UPDATE (hedge positions, BNFCR) and TRADE_LITE. MARGIN_CALL and listenKeyExpired have
no recording: they are Binance's documented examples, inline.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.errors import MalformedMessage
from exchange.binance.payloads import (
    AccountUpdateEvent,
    AlgoUpdateEvent,
    ListenKeyExpiredEvent,
    MarginCallEvent,
    OrderTradeUpdateEvent,
    TradeLiteEvent,
    parse_user_event,
    user_fill_of_trade,
    user_fill_of_update,
)
from exchange.binance.payloads import parse_user_trade as parse_trade_row

#: MARGIN_CALL as Binance documents it for USDⓈ-M futures.
MARGIN_CALL = {
    "e": "MARGIN_CALL", "E": 1587727187525, "cw": "3.16812045",
    "p": [{"s": "ETHUSDT", "ps": "LONG", "pa": "1.327", "mt": "CROSSED", "iw": "0", "mp": "187.17127",
           "up": "-1.166074", "mm": "1.614445"}],
}  # fmt: skip
#: listenKeyExpired as Binance documents it (``E`` a string).
EXPIRED = {"e": "listenKeyExpired", "E": "1736996475556", "listenKey": "WsCMN0a4KHUPTQuX6IUnqEZfB1inxmv1qR4k"}


def _load(shared_data: Path, name: str) -> Any:
    return json.loads((shared_data / "payloads" / "fixtures" / "user_data_json" / name).read_text())


def _order(shared_data: Path, name: str) -> OrderTradeUpdateEvent:
    event = parse_user_event(_load(shared_data, name))
    assert isinstance(event, OrderTradeUpdateEvent)
    return event


def test_new_order_is_an_update_without_a_fill(shared_data: Path) -> None:
    event = _order(shared_data, "order_update_new.json")
    o = event.o
    assert (o.s, o.c, o.S, o.o, o.x, o.X, o.i, o.ps) == (
        "BTCUSDT", "TEST", "BUY", "TRAILING_STOP_MARKET", "NEW", "NEW", 8886774, "LONG")  # fmt: skip
    assert (o.q, o.sp, o.l, o.t) == (Decimal("0.001"), Decimal("7103.04"), Decimal(0), 0)
    assert not o.is_fill and event.to_fill() is None and user_fill_of_update(event) is None
    update = event.to_update()
    assert (update.order_id, update.status, update.qty, update.stop_price, update.avg_fill_price) == (
        "8886774", "NEW", 0.001, 7103.04, None)  # fmt: skip


def test_trade_carries_trade_id_commission_and_realized_pnl_as_decimals(shared_data: Path) -> None:
    event = _order(shared_data, "order_update_trade.json")
    fill = user_fill_of_update(event)
    assert fill is not None and fill.source == "stream"
    assert (fill.symbol, fill.trade_id, fill.order_id, fill.client_order_id, fill.side) == (
        "BTCUSDT", 12345678, 8886774, "TEST", "BUY")  # fmt: skip
    assert (fill.price, fill.qty, fill.fee, fill.fee_asset, fill.realized_pnl, fill.is_maker) == (
        Decimal("7100.50"), Decimal("0.001"), Decimal("0.01000000"), "USDT", Decimal("12.34"), True)  # fmt: skip
    assert fill.ts_ms == 1568879465651 and fill.to_fill() == event.to_fill()
    bus = fill.to_fill()
    assert (bus.trade_id, bus.order_id, bus.qty, bus.realized_pnl) == ("12345678", "8886774", 0.001, 12.34)
    partial = _order(shared_data, "order_update_trade_partial.json")
    assert (partial.o.X, partial.o.q, partial.o.z, partial.o.l) == (
        "PARTIALLY_FILLED", Decimal("0.002"), Decimal("0.001"), Decimal("0.001"))  # fmt: skip
    assert partial.to_update().filled_qty == 0.001


@pytest.mark.parametrize(
    ("name", "status", "trade_id", "realized"),
    [
        ("order_update_calculated.json", "FILLED", 12345999, "-5.67"),  # liquidation
        ("order_update_adl.json", "NEW_ADL", 12346001, "-2.50"),
        ("order_update_insurance.json", "NEW_INSURANCE", 12346003, "-8.00"),
        ("order_update_settlement.json", "FILLED", 12346002, "-10.00"),
    ],
)
def test_liquidation_adl_insurance_and_settlement_executions_are_fills(
    shared_data: Path, name: str, status: str, trade_id: int, realized: str
) -> None:
    event = _order(shared_data, name)
    fill = user_fill_of_update(event)
    assert fill is not None and (event.o.X, fill.trade_id) == (status, trade_id)
    assert fill.realized_pnl == Decimal(realized)
    assert fill.client_order_id == event.o.c and event.to_update().reduce_only


def test_calculated_event_without_a_trade_is_no_fill_and_may_lack_the_commission(shared_data: Path) -> None:
    event = _order(shared_data, "order_update_calculated_pending.json")
    assert (event.o.x, event.o.t, event.o.N, event.o.n) == ("CALCULATED", 0, "", Decimal(0))
    assert user_fill_of_update(event) is None and event.to_update().reason == "CALCULATED"


def test_coin_margined_delivery_symbol_is_refused(shared_data: Path) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_user_event(_load(shared_data, "order_update_delivery.json"))
    assert info.value.reason == "bad_symbol" and info.value.symbol == "BTCUSD_240329"


def test_algo_updates_new_and_canceled(shared_data: Path) -> None:
    new = parse_user_event(_load(shared_data, "algo_update_new.json"))
    canceled = parse_user_event(_load(shared_data, "algo_update_canceled.json"))
    assert isinstance(new, AlgoUpdateEvent) and isinstance(canceled, AlgoUpdateEvent)
    o = new.o
    assert (o.caid, o.aid, o.at, o.o, o.s, o.S, o.X, o.ai) == (
        "Q5xaq5EGKgXXa0fD7fs0Ip", 2148719, "CONDITIONAL", "TAKE_PROFIT", "BNBUSDT", "SELL", "NEW", None)  # fmt: skip
    assert (o.q, o.tp, o.aq, o.wt, o.cp, o.pP, o.R) == (
        Decimal("0.01"), Decimal("750"), Decimal("0.00000"), "CONTRACT_PRICE", False, False, False)  # fmt: skip
    assert (canceled.o.X, canceled.o.rm) == ("CANCELED", "Reduce Only reject")
    update = canceled.to_update()
    assert (update.order_id, update.client_order_id, update.status, update.stop_price, update.reason) == (
        "2148719", "Q5xaq5EGKgXXa0fD7fs0Ip", "CANCELED", 750.0, "Reduce Only reject")  # fmt: skip


@pytest.mark.parametrize(("ai", "child"), [("", None), ("8000000002", 8000000002), (8000000002, 8000000002)])
def test_triggered_algo_update_names_its_child_order_or_none(shared_data: Path, ai: Any, child: Any) -> None:
    payload = _load(shared_data, "algo_update_new.json")
    payload["o"] |= {"X": "TRIGGERED", "ai": ai}  # the recorded shape at the trigger; ``ai`` may be empty
    event = parse_user_event(payload)
    assert isinstance(event, AlgoUpdateEvent) and (event.o.X, event.o.ai) == ("TRIGGERED", child)


def test_account_update_with_hedge_positions_and_a_bnfcr_balance(shared_data: Path) -> None:
    event = parse_user_event(_load(shared_data, "account_update.json"))
    assert isinstance(event, AccountUpdateEvent) and event.a.m == "ORDER"
    [usdt] = event.a.B
    assert (usdt.a, usdt.wb, usdt.cw, usdt.bc) == (
        "USDT", Decimal("122624.12345678"), Decimal("100.12345678"), Decimal("50.12345678"))  # fmt: skip
    assert [(p.ps, p.pa, p.cr) for p in event.a.P] == [
        ("BOTH", Decimal(0), Decimal(200)), ("LONG", Decimal(20), Decimal(0)),
        ("SHORT", Decimal(-10), Decimal("-45.04000000"))]  # fmt: skip
    short = event.a.P[2]
    assert (short.ep, short.bep, short.up, short.mt, short.iw) == (
        Decimal("6563.8"), Decimal("6563.861"), Decimal("-1423.15600"), "isolated", Decimal("6570.42511771"))  # fmt: skip
    updates = event.to_updates()
    assert (updates[2].qty, updates[2].unrealized_pnl, updates[2].ts_ms) == (-10.0, -1423.156, 1564745798939)
    bnfcr = parse_user_event(_load(shared_data, "account_update_bnfcr.json"))
    assert isinstance(bnfcr, AccountUpdateEvent) and bnfcr.a.P == ()
    assert (bnfcr.a.B[0].a, bnfcr.a.B[0].wb) == ("BNFCR", Decimal("5001.28983031"))


def test_trade_lite_margin_call_and_listen_key_expired() -> None:
    margin = parse_user_event(MARGIN_CALL)
    assert isinstance(margin, MarginCallEvent) and margin.cw == Decimal("3.16812045")
    [p] = margin.p
    assert (p.s, p.ps, p.pa, p.mt, p.mp, p.up, p.mm) == (
        "ETHUSDT", "LONG", Decimal("1.327"), "CROSSED", Decimal("187.17127"), Decimal("-1.166074"),
        Decimal("1.614445"))  # fmt: skip
    isolated = parse_user_event({k: v for k, v in MARGIN_CALL.items() if k != "cw"})
    assert isinstance(isolated, MarginCallEvent) and isolated.cw is None
    expired = parse_user_event(EXPIRED)
    assert isinstance(expired, ListenKeyExpiredEvent) and expired.E == 1736996475556
    assert expired.listenKey == EXPIRED["listenKey"] and EXPIRED["listenKey"] not in repr(expired)
    bare = parse_user_event({"e": "listenKeyExpired", "E": 1576653824250})  # the portfolio-margin shape
    assert isinstance(bare, ListenKeyExpiredEvent) and bare.listenKey == ""


def test_trade_lite(shared_data: Path) -> None:
    event = parse_user_event(_load(shared_data, "trade_lite.json"))
    assert isinstance(event, TradeLiteEvent)
    assert (event.s, event.c, event.S, event.i, event.t, event.l, event.L, event.m) == (
        "BTCUSDT", "TEST", "BUY", 8886774, 12345678, Decimal("0.001"), Decimal("7100.50"), True)  # fmt: skip


def test_backfilled_trade_is_the_same_fill_as_the_stream_one(shared_data: Path) -> None:
    streamed = user_fill_of_update(_order(shared_data, "order_update_trade.json"))
    row = {"buyer": True, "commission": "0.01000000", "commissionAsset": "USDT", "id": 12345678, "maker": True,
           "orderId": 8886774, "price": "7100.50", "qty": "0.001", "quoteQty": "7.1005", "realizedPnl": "12.34",
           "side": "BUY", "positionSide": "LONG", "symbol": "BTCUSDT", "time": 1568879465651}  # fmt: skip
    backfilled = user_fill_of_trade(parse_trade_row(row), "TEST")
    assert streamed is not None and backfilled.source == "backfill"
    assert backfilled == dataclasses.replace(streamed, source="backfill")
    assert user_fill_of_trade(parse_trade_row(row)).client_order_id is None  # userTrades has no client id


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"e": "SOMETHING_NEW"}, "unknown_event"),
        ({"o": None}, "bad_shape"),
        ({"E": -1}, "bad_number"),
        ({"o": {"S": "HOLD"}}, "bad_value"),
        ({"o": {"q": "1e"}}, "bad_number"),
        ({"o": {"s": "btcusdt"}}, "bad_symbol"),
    ],
)
def test_malformed_events_raise_naming_the_problem(
    shared_data: Path, change: dict[str, Any], reason: str
) -> None:
    payload = _load(shared_data, "order_update_trade.json")
    for name, value in change.items():
        payload[name] = payload[name] | value if isinstance(value, dict) else value
    with pytest.raises(MalformedMessage) as info:
        parse_user_event(payload)
    assert info.value.reason == reason and info.value.payload is payload
    with pytest.raises(MalformedMessage, match="bad_shape"):
        parse_user_event([payload])  # type: ignore[arg-type]
