"""Paper broker records and payload builders against the recorded Binance payloads (no server)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange.venue.trading_events import (
    AlgoOrder,
    Fill,
    Order,
    PaperPosition,
    account_update,
    algo_json,
    algo_update,
    order_json,
    order_trade_update,
    symbol_rules,
)


def _fixture(shared_data: Path, name: str) -> Any:
    return json.loads((shared_data / "payloads" / name).read_text())


def _algo(side: str, order_type: str, trigger: str = "100") -> AlgoOrder:
    return AlgoOrder(1, "a", "BTCUSDT", side, order_type, Decimal("0.010"), False, True, Decimal(trigger),
                     "MARK_PRICE", False, "GTC", 0)  # fmt: skip


@pytest.mark.parametrize(
    ("side", "order_type", "fires_at", "holds_at"),
    [
        ("SELL", "STOP_MARKET", (100.0, 99.9), (100.1,)),  # a long's stop: price falls to it
        ("SELL", "TAKE_PROFIT_MARKET", (100.0, 100.1), (99.9,)),  # a long's target: price rises to it
        ("BUY", "STOP_MARKET", (100.0, 100.1), (99.9,)),  # a short's stop
        ("BUY", "TAKE_PROFIT_MARKET", (100.0, 99.9), (100.1,)),  # a short's target
    ],
)
def test_algo_trigger_direction(
    side: str, order_type: str, fires_at: tuple[float, ...], holds_at: tuple[float, ...]
) -> None:
    algo = _algo(side, order_type)
    assert all(algo.triggered_by(p) for p in fires_at)
    assert not any(algo.triggered_by(p) for p in holds_at)


def test_symbol_rules_are_the_exchange_info_decimals(shared_data: Path) -> None:
    rules = symbol_rules(_fixture(shared_data, "rest/exchange_info_2025-12.json"))
    btc = rules["BTCUSDT"]
    assert (btc.tick, btc.step, btc.min_qty, btc.min_notional) == (
        Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("100"))  # fmt: skip
    assert (btc.price_precision, btc.quantity_precision) == (2, 3)
    assert rules["ALGOUSDT"].step == Decimal("0.1")


def _same_keys(payload: dict[str, Any], fixture: dict[str, Any]) -> None:
    assert set(payload) == set(fixture)
    for k, v in fixture.items():
        if isinstance(v, dict):
            _same_keys(payload[k], v)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            _same_keys(payload[k][0], v[0])


def test_user_data_events_have_the_recorded_key_sets(shared_data: Path) -> None:
    order = Order(7, "c-1", "BTCUSDT", "BUY", Decimal("0.010"), False, 1_000)
    fill = Fill(9, 7, "BTCUSDT", "BUY", Decimal("0.010"), 50_025.05, 0.2001, 0.0, 1_000)
    order.executed_qty, order.cum_quote, order.status = Decimal("0.010"), 500.2505, "FILLED"
    events = _fixture(shared_data, "fixtures/user_data_json/order_update_trade.json")
    trade = order_trade_update(order, 3, 1_000, "TRADE", fill=fill)
    _same_keys(trade, events)
    assert (trade["o"]["l"], trade["o"]["z"], trade["o"]["L"], trade["o"]["n"]) == (
        "0.010", "0.010", "50025.05", "0.20010000")  # fmt: skip
    _same_keys(algo_update(_algo("SELL", "STOP_MARKET"), 3, 1_000),
               _fixture(shared_data, "fixtures/user_data_json/algo_update_canceled.json"))  # fmt: skip
    position = PaperPosition(leverage=20, amount=Decimal("-0.020"), entry_price=50_000.0, margin=50.0)
    update = account_update(1_000, 9_999.6, 9_949.6, [("BTCUSDT", position, 49_000.0, 0.0004, 3)])
    _same_keys(update, _fixture(shared_data, "fixtures/user_data_json/account_update.json"))
    row = update["a"]["P"][0]
    assert (row["pa"], row["up"], row["iw"], row["mt"]) == (
        "-0.020",
        "20.00000000",
        "50.00000000",
        "isolated",
    )


def test_rest_shapes_hold_the_recorded_fields(shared_data: Path) -> None:
    order = Order(7, "c-1", "BTCUSDT", "SELL", Decimal("0.010"), True, 1_000)
    assert set(_fixture(shared_data, "fixtures/http_json/order_response.json")) <= set(order_json(order, 3))
    algo = algo_json(_algo("SELL", "STOP_MARKET", "49000.5"), 3)
    assert set(_fixture(shared_data, "fixtures/http_json/open_algo_orders.json")[0]) <= set(algo)
    assert (algo["triggerPrice"], algo["quantity"], algo["actualOrderId"]) == ("49000.5", "0.010", "")
