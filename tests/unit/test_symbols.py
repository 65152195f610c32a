from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.symbols import (
    DEFAULT_UNIVERSE,
    SymbolError,
    parse_universe,
    split_internal,
    to_ccxt,
    to_internal,
    to_rest,
    to_ws,
    validate_internal,
)


def test_default_universe_is_the_30_symbols_of_spec_26():
    assert len(DEFAULT_UNIVERSE) == 30
    assert DEFAULT_UNIVERSE[0] == "BTCUSDT" and DEFAULT_UNIVERSE[-1] == "PAXGUSDT"
    assert {"XAUUSDT", "XAGUSDT", "PAXGUSDT", "1000PEPEUSDT"} <= set(DEFAULT_UNIVERSE)


@pytest.mark.parametrize(
    ("symbol", "source", "internal"),
    [
        ("BTCUSDT", "rest", "BTCUSDT"),
        ("btcusdt", "ws", "BTCUSDT"),
        ("1000pepeusdt", "ws", "1000PEPEUSDT"),
        ("BTC/USDT:USDT", "ccxt", "BTCUSDT"),
        ("BTC/USDT", "ccxt", "BTCUSDT"),
        ("ETH/USDC:USDC", "ccxt", "ETHUSDC"),
        ("1000PEPE/USDT:USDT", "ccxt", "1000PEPEUSDT"),
    ],
)
def test_to_internal_converts_each_source(symbol, source, internal):
    assert to_internal(symbol, source) == internal


def test_adapters_convert_out_of_internal_form():
    assert to_ws("BTCUSDT") == "btcusdt"
    assert to_rest("BTCUSDT") == "BTCUSDT"
    assert to_ccxt("1000PEPEUSDT") == "1000PEPE/USDT:USDT"
    assert split_internal("XAUUSDT") == ("XAU", "USDT")


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("", "empty"),
        ("btcusdt", "not upper case"),
        (" BTCUSDT", "white space"),
        ("BTC-USDT", "characters other than"),
        ("BTC/USDT", "characters other than"),
        ("BTCEUR", "quote asset"),
        ("USDT", "no base asset"),
    ],
)
def test_validate_internal_names_the_problem(bad, fragment):
    with pytest.raises(SymbolError, match=fragment):
        validate_internal(bad)


def test_ws_symbol_must_be_lower_case():
    with pytest.raises(SymbolError, match="lower case"):
        to_internal("BTCUSDT", "ws")


def test_ccxt_inverse_contract_is_refused():
    with pytest.raises(SymbolError, match="settles in BTC"):
        to_internal("BTC/USD:BTC", "ccxt")


def test_ccxt_garbage_is_refused_with_the_expected_form():
    with pytest.raises(SymbolError, match="BASE/QUOTE:SETTLE"):
        to_internal("BTCUSDT", "ccxt")


def test_unknown_source_is_refused():
    with pytest.raises(SymbolError, match="unknown symbol source"):
        to_internal("BTCUSDT", "fix")  # type: ignore[arg-type]


def test_parse_universe_reports_every_bad_entry_and_duplicates():
    with pytest.raises(SymbolError) as e:
        parse_universe("BTCUSDT, ethusdt,BTCUSDT,XYZ")
    msg = str(e.value)
    assert "entry 2" in msg and "not upper case" in msg
    assert "entry 3: BTCUSDT repeats entry 1" in msg
    assert "entry 4" in msg and "quote asset" in msg


def test_parse_universe_keeps_order_and_ignores_blank_entries():
    assert parse_universe(" SOLUSDT,BTCUSDT,, ETHUSDT ") == ("SOLUSDT", "BTCUSDT", "ETHUSDT")


@given(st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True), st.sampled_from(["USDT", "USDC"]))
def test_round_trips_through_every_form(base, quote):
    internal = base + quote
    assert to_internal(to_ws(internal), "ws") == internal
    assert to_internal(to_rest(internal), "rest") == internal
    assert to_internal(to_ccxt(internal), "ccxt") == internal
