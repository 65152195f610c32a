"""Order pieces of the trading client: client ids, rounding to the filters, wire values, parameters, errors."""

from __future__ import annotations

import json
import pickle
import re
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.sim import SymbolFilters, parse_symbol_filters
from exchange.binance.orders import (
    OrderSizeError,
    client_id,
    entry_quantity,
    floor_quantity,
    market_params,
    protection_params,
    protective_trigger,
    to_decimal,
    wire,
)
from exchange.binance.signed import BinanceRejection, OrderOutcomeUnknown, RateLimitedError, TradingConfig

BTC = SymbolFilters(
    tick_size=0.1, min_price=0.1, step_size=0.001, min_qty=0.001, max_qty=120.0, min_notional_usdt=100.0
)


@pytest.fixture(scope="module")
def real_filters(shared_data: Path) -> dict[str, SymbolFilters]:
    return parse_symbol_filters(
        json.loads((shared_data / "payloads" / "rest" / "exchange_info_2025-12.json").read_text())
    )


def test_client_id_is_deterministic_short_and_in_binance_charset() -> None:
    ids = {role: client_id("BTCUSDT|1772323200000|long", role) for role in ("entry", "sl", "tp", "close")}
    assert ids["entry"] == client_id("BTCUSDT|1772323200000|long")  # a retry reuses it
    assert len(set(ids.values())) == 4 and client_id("other") != ids["entry"]
    for value in ids.values():
        assert re.fullmatch(r"[.A-Z:/a-z0-9_-]{1,36}", value) and len(value) == 36


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+1"), "10"),
        (Decimal("1E-8"), "0.00000001"),
        (Decimal("0.0030"), "0.0030"),
        (Decimal("0"), "0"),
        (Decimal("-0"), "0"),
        (to_decimal(0.1), "0.1"),
        (to_decimal(59000.0), "59000.0"),
    ],  # fmt: skip
)
def test_wire_values_are_plain_decimals_without_exponent(value: Decimal, text: str) -> None:
    assert wire(value) == text


def test_quantities_floor_to_the_market_step_and_must_reach_the_minimums() -> None:
    assert floor_quantity(BTC, 0.0037) == Decimal("0.003")
    assert floor_quantity(BTC, 0.3) == Decimal("0.300")  # 0.3 / 0.001 is 299.99999999999994 in floats
    assert floor_quantity(BTC, Decimal("1.2345")) == Decimal("1.234")
    assert entry_quantity(BTC, 0.0037, 60_000) == Decimal("0.003")  # 180 USDT at the mark
    with pytest.raises(OrderSizeError, match="MIN_NOTIONAL"):
        entry_quantity(BTC, 0.0019, 60_000)  # 0.001 x 60000 = 60 USDT
    with pytest.raises(OrderSizeError, match="below the minimum"):
        entry_quantity(BTC, 0.0009, 60_000)
    with pytest.raises(OrderSizeError, match="above the maximum"):
        entry_quantity(BTC, 500, 60_000)


def test_real_filters_floor_and_round_with_their_own_decimals(real_filters: dict[str, SymbolFilters]) -> None:
    algo, doge, pepe = real_filters["ALGOUSDT"], real_filters["DOGEUSDT"], real_filters["1000PEPEUSDT"]
    assert (wire(floor_quantity(algo, 1234.56)), wire(floor_quantity(doge, 1234.56))) == ("1234.5", "1234")
    assert wire(protective_trigger(doge, 0.1234567, 0.13)) == "0.12346"  # tick 1e-05, a long's stop: up
    assert wire(protective_trigger(pepe, 0.00001234567, 0.000011)) == "0.0000123"  # tick 1e-07, a TP: down
    assert wire(entry_quantity(doge, 40.9, 0.125)) == "40"  # 5 USDT at the mark


@pytest.mark.parametrize(
    ("position", "kind", "price", "entry", "expected"),
    [
        ("LONG", "SL", 58_999.97, 60_000, "59000.0"),  # below the entry: rounds up
        ("LONG", "TP", 62_000.06, 60_000, "62000.0"),  # above: rounds down
        ("SHORT", "SL", 61_000.07, 60_000, "61000.0"),  # above: rounds down
        ("SHORT", "TP", 58_000.01, 60_000, "58000.1"),  # below: rounds up
        ("LONG", "SL", 59_000.1, 60_000, "59000.1"),  # already on the tick: unchanged
    ],
)
def test_triggers_round_to_the_tick_toward_the_entry(
    position: str, kind: str, price: float, entry: float, expected: str
) -> None:
    trigger = protective_trigger(BTC, price, entry)
    assert wire(trigger) == expected
    assert abs(trigger - Decimal(entry)) <= abs(Decimal(str(price)) - Decimal(entry))  # never further away


def test_market_and_protection_parameters_one_way_and_hedge() -> None:
    entry = market_params("BTCUSDT", "BUY", Decimal("0.003"), "cid", reduce_only=False, hedge=False)
    assert entry == {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.003",
                     "newClientOrderId": "cid", "newOrderRespType": "RESULT"}  # fmt: skip
    close = market_params("BTCUSDT", "SELL", Decimal("0.003"), "x", reduce_only=True, hedge=False)
    assert close["reduceOnly"] == "true"
    hedged = market_params("BTCUSDT", "BUY", Decimal("0.003"), "x", reduce_only=True, hedge=True)
    assert hedged["positionSide"] == "SHORT" and "reduceOnly" not in hedged  # a buy closes the short
    stop = protection_params("BTCUSDT", "SL", "LONG", Decimal("59000.0"), "sl", Decimal("0.003"), hedge=False)
    assert stop == {"algoType": "CONDITIONAL", "symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                    "triggerPrice": "59000.0", "workingType": "MARK_PRICE", "priceProtect": "TRUE",
                    "clientAlgoId": "sl", "quantity": "0.003", "reduceOnly": "true"}  # fmt: skip
    target = protection_params("BTCUSDT", "TP", "SHORT", Decimal("58000.1"), "tp", None, hedge=True)
    assert (target["side"], target["type"], target["closePosition"], target["positionSide"]) == (
        "BUY", "TAKE_PROFIT_MARKET", "true", "SHORT")  # fmt: skip
    assert "quantity" not in target and "reduceOnly" not in target


def test_config_hides_the_secret_and_refuses_isolated_margin_in_multi_assets_mode() -> None:
    config = TradingConfig(api_key=SecretStr("k"), api_secret=SecretStr("s3cr3t-value"))
    assert "s3cr3t-value" not in repr(config) and "s3cr3t-value" not in str(config.model_dump())
    with pytest.raises(ValidationError, match="CROSSED"):
        TradingConfig(api_key=SecretStr("k"), api_secret=SecretStr("s"), allow_multi_assets_mode=True)
    with pytest.raises(ValidationError):
        TradingConfig(api_key=SecretStr("k"), api_secret=SecretStr("s"), recv_window_ms=90_000)


def test_errors_survive_pickling_with_their_fields() -> None:
    # Ray carries errors across processes by pickling them
    for error in (
        BinanceRejection("/fapi/v1/order", 400, -2021, "Order would immediately trigger."),
        OrderOutcomeUnknown("/fapi/v1/order", "BTCUSDT", "cid", "read timeout", 1_772_323_201_000),
        RateLimitedError("/fapi/v1/order", 12.0, "HTTP 429, code -1003"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and vars(copy) == vars(error) and str(copy) == str(error)
