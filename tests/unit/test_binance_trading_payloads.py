"""Signed REST answers → typed structures → core.messages, against the recorded payloads (no network).

``fixtures/http_json`` holds Binance documentation examples, ``orders_2023`` real mainnet answers
(ids and times as strings, hedge-mode positions, closePosition stops from before the algo migration).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.errors import MalformedMessage
from exchange.binance.payloads import (
    parse_algo_order,
    parse_balance,
    parse_order_response,
    parse_position_risk,
    parse_user_trade,
)

#: POST /fapi/v1/algoOrder answer in the shape Binance documents (the replay venue answers the same keys).
NEW_ALGO_ORDER = {
    "algoId": 2146760, "clientAlgoId": "6B2I9XVcJpCjqPAJ4YoFX7", "algoType": "CONDITIONAL",
    "orderType": "TAKE_PROFIT_MARKET", "symbol": "BNBUSDT", "side": "SELL", "positionSide": "BOTH",
    "timeInForce": "GTC", "quantity": "0.01", "algoStatus": "NEW", "triggerPrice": "750.000", "price": "0.000",
    "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "MARK_PRICE",
    "priceMatch": "NONE", "closePosition": False, "priceProtect": True, "reduceOnly": True, "activatePrice": "",
    "callbackRate": "", "createTime": 1750485492076, "updateTime": 1750485492076, "triggerTime": 0,
    "goodTillDate": 0,
}  # fmt: skip
#: GET /fapi/v1/userTrades row in the shape Binance documents.
USER_TRADE = {
    "buyer": False, "commission": "-0.07819010", "commissionAsset": "USDT", "id": 698759, "maker": False,
    "orderId": 25851813, "price": "7819.01", "qty": "0.002", "quoteQty": "15.63802", "realizedPnl": "-0.91539999",
    "side": "SELL", "positionSide": "SHORT", "symbol": "BTCUSDT", "time": 1569514978020,
}  # fmt: skip


def _load(shared_data: Path, name: str) -> Any:
    return json.loads((shared_data / "payloads" / name).read_text())


def test_documented_order_answer(shared_data: Path) -> None:
    order = parse_order_response(_load(shared_data, "fixtures/http_json/order_response.json"))
    assert (order.orderId, order.clientOrderId, order.status, order.origQty) == (
        12345678, "testOrder123", "NEW", Decimal("0.001"))  # fmt: skip
    update = order.to_update()
    assert (update.order_id, update.qty, update.filled_qty, update.avg_fill_price) == (
        "12345678",
        0.001,
        0.0,
        None,
    )


def test_real_market_fill_and_closing_stops_from_2023(shared_data: Path) -> None:
    fill = parse_order_response(_load(shared_data, "orders_2023/create_market_buy_order.json")["info"])
    assert (fill.orderId, fill.status, fill.executedQty, fill.avgPrice) == (
        209177894884, "FILLED", Decimal("0.003"), Decimal("37225.10000"))  # fmt: skip
    assert fill.updateTime == 1699624060971 and fill.to_update().avg_fill_price == 37225.1
    stops = [parse_order_response(o["info"]) for o in _load(shared_data, "orders_2023/tp_sl.json")]
    assert [(s.origType, s.stopPrice, s.closePosition, s.positionSide) for s in stops] == [
        ("TAKE_PROFIT_MARKET", Decimal("36200"), True, "SHORT"), ("STOP_MARKET", Decimal("37400"), True, "SHORT")]  # fmt: skip
    assert all(s.to_update().reduce_only and s.to_update().stop_price for s in stops)
    [open_order] = [
        parse_order_response(o["info"]) for o in _load(shared_data, "orders_2023/fetch_open_orders.json")
    ]
    assert open_order.updateTime == 1699670337888


def test_algo_orders_documented_and_open_list(shared_data: Path) -> None:
    placed = parse_algo_order(NEW_ALGO_ORDER)
    assert (placed.algoId, placed.orderType, placed.triggerPrice, placed.actualOrderId) == (
        2146760, "TAKE_PROFIT_MARKET", Decimal("750.000"), None)  # fmt: skip
    assert placed.priceProtect and placed.reduceOnly and not placed.closePosition
    [listed] = [parse_algo_order(r) for r in _load(shared_data, "fixtures/http_json/open_algo_orders.json")]
    assert (listed.clientAlgoId, listed.orderType, listed.workingType, listed.closePosition) == (
        "test-algo-order-1",
        "STOP_MARKET",
        "MARK_PRICE",
        False,
    )  # "type" in this example, no closePosition
    update = listed.to_update()
    assert (update.order_id, update.status, update.stop_price, update.client_order_id) == (
        "123456789", "NEW", 45000.0, "test-algo-order-1")  # fmt: skip
    triggered = parse_algo_order(NEW_ALGO_ORDER | {"algoStatus": "FINISHED", "actualOrderId": "8000000001"})
    assert triggered.actualOrderId == 8000000001


def test_positions_balances_and_trades(shared_data: Path) -> None:
    [documented] = [
        parse_position_risk(r) for r in _load(shared_data, "fixtures/http_json/position_risk.json")
    ]
    assert documented.to_update().leverage == 20 and documented.marginType == "cross"
    real = [
        parse_position_risk(r) for r in _load(shared_data, "orders_2023/fapiprivatev2_get_positionrisk.json")
    ]
    assert [(p.positionSide, p.positionAmt) for p in real] == [
        ("LONG", Decimal("0.000")),
        ("SHORT", Decimal("-0.003")),
    ]
    assert real[1].to_update().qty == -0.003 and real[0].to_update().liquidation_price is None
    v3 = {k: v for k, v in _load(shared_data, "fixtures/http_json/position_risk.json")[0].items()
          if k not in ("leverage", "marginType")}  # fmt: skip
    assert parse_position_risk(v3).leverage is None
    [usdt] = [parse_balance(r) for r in _load(shared_data, "fixtures/http_json/balance.json")]
    assert (usdt.asset, usdt.balance, usdt.availableBalance) == (
        "USDT",
        Decimal("122.12345678"),
        Decimal("122.12345678"),
    )
    trade = parse_user_trade(USER_TRADE)
    fill = trade.to_fill("our-id")
    assert (fill.trade_id, fill.order_id, fill.client_order_id, fill.fee, fill.realized_pnl) == (
        "698759", "25851813", "our-id", -0.0781901, -0.91539999)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"orderId": None}, "bad_number"),
        ({"origQty": "abc"}, "bad_number"),
        ({"origQty": "-1"}, "bad_value"),
        ({"avgPrice": "NaN"}, "bad_value"),
        ({"side": "LONG"}, "bad_value"),
        ({"symbol": "btc/usdt"}, "bad_symbol"),
        ({"reduceOnly": "yes"}, "bad_value"),
    ],
)
def test_a_bad_order_answer_is_malformed_naming_the_field(
    shared_data: Path, change: dict[str, Any], reason: str
) -> None:
    payload = _load(shared_data, "fixtures/http_json/order_response.json") | change
    with pytest.raises(MalformedMessage) as info:
        parse_order_response(payload)
    assert info.value.reason == reason and info.value.payload == payload


def test_missing_fields_and_non_objects_are_malformed() -> None:
    with pytest.raises(MalformedMessage, match="'triggerPrice' missing"):
        parse_algo_order({k: v for k, v in NEW_ALGO_ORDER.items() if k != "triggerPrice"})
    with pytest.raises(MalformedMessage, match="expected an object"):
        parse_user_trade([USER_TRADE])  # type: ignore[arg-type]
