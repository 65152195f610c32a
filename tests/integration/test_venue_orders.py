"""The replay venue's order side (PaperBroker) over real HTTP, driven by python-binance (no patching).

Books and marks are fed on the server's event loop as the replay driver does; user-data events are
collected from ``publish_user`` and, in one test, over the real ``/private`` WebSocket. Fills, fees
and realized PnL are compared with ``core.sim.FillSimulator`` for the same prices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from binance.client import Client
from binance.exceptions import BinanceAPIException
from venue_fixtures import LoopbackVenue, load_exchange_info
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from core.sim import FillSimulator, SimConfig, SymbolRules, parse_leverage_brackets, parse_symbol_filters
from core.synthetic import generate_market
from exchange.venue import BackgroundServer, ReplayVenue, create_app
from exchange.venue.faults import Faults
from exchange.venue.streams import StreamHub
from exchange.venue.trading import PaperBroker
from pipelines.market import write_synthetic_market
from storage.lake import Lake

KEY = "venue-test-key"
SECRET = "venue-test-secret"
T0 = 1772323200000  # 2026-03-01 00:00 UTC, the replay clock
CONFIG = SimConfig(fee_rate=0.0004, impact_k=0.0005, default_leverage=20)
BTC = "BTCUSDT"


class Clock:
    """A settable clock (epoch ms); ``offset`` mode follows the system clock shifted by ``shift_ms``."""

    def __init__(self, now_ms: int | None = None) -> None:
        self.fixed = now_ms
        self.shift_ms = 0

    def __call__(self) -> int:
        return self.fixed if self.fixed is not None else int(time.time() * 1000) + self.shift_ms


@dataclass
class Venue(LoopbackVenue):
    clock: Clock
    wall: Clock
    events: list[dict[str, Any]] = field(default_factory=list)

    def book(
        self, symbol: str, bid: float, ask: float, mark: float | None = None, last: float | None = None
    ) -> None:
        self.clock.fixed = (self.clock.fixed or T0) + 1000
        ts = self.clock()
        self.run(self.broker.on_book, symbol, ts, bid, ask)
        if mark is not None:
            self.run(self.broker.on_mark, symbol, ts, mark, last if last is not None else mark)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["e"] == kind]


@pytest.fixture(scope="module")
def exchange_info(shared_data: Path) -> dict[str, Any]:
    return load_exchange_info(shared_data)


@pytest.fixture(scope="module")
def brackets(shared_data: Path) -> dict[str, Any]:
    return parse_leverage_brackets(
        json.loads((shared_data / "payloads" / "rest" / "leverage_brackets.json").read_text())
    )


@pytest.fixture(scope="module")
def fixtures(shared_data: Path) -> Callable[[str], Any]:
    root = shared_data / "payloads" / "fixtures"
    return lambda name: json.loads((root / name).read_text())


@pytest.fixture
def venue(exchange_info: dict[str, Any], brackets: dict[str, Any], tmp_path: Path) -> Iterator[Venue]:
    clock, wall = Clock(T0), Clock()
    events: list[dict[str, Any]] = []
    broker = PaperBroker(exchange_info, clock, events.append, api_key=KEY, api_secret=SECRET,
                         sim_config=CONFIG, wall_ms=wall, leverage_brackets=brackets)  # fmt: skip
    app = create_app(Lake(tmp_path / "lake"), clock, weight_limit_1m=None)
    broker.add_routes(app)
    server = BackgroundServer(app)
    url = server.start()
    try:
        yield Venue(url, server, broker, clock, wall, events)
    finally:
        server.stop()


@pytest.fixture
def client(venue: Venue) -> Client:
    return _client(venue.url)


def _client(url: str, key: str = KEY, secret: str = SECRET) -> Client:
    c = Client(key, secret, ping=False)
    c.FUTURES_URL = url + "/fapi"
    return c


def _code(call: Callable[[], Any]) -> int:
    with pytest.raises(BinanceAPIException) as e:
        call()
    return int(e.value.code)


def _simulator(exchange_info: dict[str, Any], brackets: dict[str, Any]) -> FillSimulator:
    rules = {BTC: SymbolRules(filters=parse_symbol_filters(exchange_info)[BTC], brackets=brackets[BTC])}
    return FillSimulator([BTC], CONFIG, rules=rules)


def _market(client: Client, side: str, qty: str, **extra: Any) -> dict[str, Any]:
    return client.futures_create_order(symbol=BTC, side=side, type="MARKET", quantity=qty,
                                       newOrderRespType="RESULT", **extra)  # fmt: skip


def _wallet(client: Client) -> float:
    return float(client.futures_account_balance()[0]["balance"])


def _keys(payload: dict[str, Any], fixture: dict[str, Any]) -> None:
    """Assert ``payload`` has the fixture's key set, recursively into objects and first list items."""
    assert set(payload) == set(fixture), set(payload) ^ set(fixture)
    for k, v in fixture.items():
        if isinstance(v, dict):
            _keys(payload[k], v)
        elif isinstance(v, list) and v and isinstance(v[0], dict) and payload[k]:
            _keys(payload[k][0], v[0])


# --- MARKET orders ---------------------------------------------------------------------------------
def test_market_buy_fills_at_ask_with_the_simulators_slippage_and_fee(
    venue: Venue, client: Client, exchange_info: dict[str, Any], brackets: dict[str, Any]
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.05)
    order = _market(client, "BUY", "0.010")
    sim = _simulator(exchange_info, brackets)
    fill = 50_000.1 * (1 + CONFIG.impact_k)
    assert sim.open_position(BTC, 1, venue.clock(), 50_000.1, 0.010 * fill, sl=49_000.0, leverage=20,
                             mark_price=50_000.05) == ()  # fmt: skip
    expected = sim.fills().iloc[0]
    assert order["status"] == "FILLED" and order["executedQty"] == "0.010"
    assert float(order["avgPrice"]) == expected["price"]
    trade = venue.of("ORDER_TRADE_UPDATE")[-1]["o"]
    assert (trade["x"], trade["X"], trade["i"]) == ("TRADE", "FILLED", order["orderId"])
    assert float(trade["n"]) == pytest.approx(expected["fee"], abs=1e-8)
    assert _wallet(client) == pytest.approx(sim.wallet, abs=1e-8)
    position = client.futures_position_information(symbol=BTC)[0]
    assert position["positionAmt"] == "0.010"
    assert float(position["entryPrice"]) == expected["price"]
    assert float(position["isolatedWallet"]) == pytest.approx(sim.position(BTC).margin_usdt, abs=1e-8)
    assert float(position["liquidationPrice"]) == pytest.approx(
        sim.position(BTC).liquidation_price, rel=1e-12
    )


def test_market_order_answers_ack_by_default_and_is_queried_by_client_id(
    venue: Venue, client: Client
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    ack = client.futures_create_order(symbol=BTC, side="SELL", type="MARKET", quantity="0.004",
                                      newClientOrderId="entry-1")  # fmt: skip
    assert (ack["status"], ack["executedQty"], ack["clientOrderId"]) == ("NEW", "0.000", "entry-1")
    queried = client.futures_get_order(symbol=BTC, origClientOrderId="entry-1")
    assert queried["orderId"] == ack["orderId"] and queried["status"] == "FILLED"
    assert float(queried["avgPrice"]) == 50_000.0 * (1 - CONFIG.impact_k)
    assert [e["o"]["X"] for e in venue.of("ORDER_TRADE_UPDATE")] == ["NEW", "FILLED"]
    assert _code(lambda: client.futures_get_order(symbol=BTC, origClientOrderId="nope")) == -2013
    assert _code(lambda: client.futures_cancel_order(symbol=BTC, orderId=ack["orderId"])) == -2011
    assert client.futures_get_open_orders(symbol=BTC) == []
    # client ids are unique among open orders only: a filled order's id may be used again
    again = client.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.004",
                                        newClientOrderId="entry-1", reduceOnly="true")  # fmt: skip
    assert again["orderId"] != ack["orderId"]
    assert client.futures_get_order(symbol=BTC, origClientOrderId="entry-1")["orderId"] == again["orderId"]


def test_conditional_types_on_the_order_endpoint_answer_4120(venue: Venue, client: Client) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    for order_type in ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TRAILING_STOP_MARKET"):
        params = {
            "symbol": BTC,
            "side": "SELL",
            "type": order_type,
            "quantity": "0.010",
            "stopPrice": "49000",
        }
        with pytest.raises(BinanceAPIException) as e:
            client._request_futures_api("post", "order", True, data=params)
        assert e.value.code == -4120 and "Algo Order API" in e.value.message
    assert _code(lambda: client.futures_create_order(symbol=BTC, side="BUY", type="LIMIT", quantity="0.010",
                                                     price="49000", timeInForce="GTC")) == -1116  # fmt: skip
    assert venue.events == []


# --- algo orders -----------------------------------------------------------------------------------
def test_stop_close_position_triggers_on_mark_like_the_simulator_and_expires_the_take_profit(
    venue: Venue,
    client: Client,
    exchange_info: dict[str, Any],
    brackets: dict[str, Any],
    fixtures: Callable[[str], Any],
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.05)
    t_entry = venue.clock()
    _market(client, "BUY", "0.010")
    stop = client.futures_create_order(symbol=BTC, side="SELL", type="STOP_MARKET", stopPrice="49000",
                                       closePosition="true", workingType="MARK_PRICE", clientAlgoId="sl-1")  # fmt: skip
    take = client.futures_create_algo_order(symbol=BTC, side="SELL", type="TAKE_PROFIT_MARKET",
                                            triggerPrice="52000", closePosition="true", workingType="MARK_PRICE")  # fmt: skip
    assert (stop["algoStatus"], stop["clientAlgoId"], stop["closePosition"]) == ("NEW", "sl-1", True)
    assert {a["algoId"] for a in client.futures_get_open_orders(symbol=BTC, conditional=True)} == {
        stop["algoId"], take["algoId"]}  # fmt: skip
    venue.book(BTC, 49_020.0, 49_020.1, mark=49_000.1, last=48_900.0)  # last beyond, mark not: no trigger
    assert venue.broker.algos[stop["algoId"]].status == "NEW"
    del venue.events[:]
    venue.book(BTC, 48_990.0, 48_990.1, mark=48_999.9, last=48_995.0)
    t_exit = venue.clock()
    kinds = [(e["e"], e["o"]["X"]) if "o" in e else (e["e"], e["a"]["m"]) for e in venue.events]
    assert kinds == [
        ("ALGO_UPDATE", "TRIGGERING"), ("ALGO_UPDATE", "TRIGGERED"), ("ORDER_TRADE_UPDATE", "NEW"),
        ("ORDER_TRADE_UPDATE", "FILLED"), ("ACCOUNT_UPDATE", "ORDER"), ("ALGO_UPDATE", "EXPIRED"),
        ("ALGO_UPDATE", "FINISHED"),
    ]  # fmt: skip
    assert {(e["E"], e["T"]) for e in venue.events} == {(t_exit, t_exit)}  # stamped with the venue clock
    triggered, child = venue.events[1]["o"], venue.events[3]["o"]
    assert triggered["aid"] == stop["algoId"] and triggered["ai"] == str(child["i"]) != ""
    assert (child["ot"], child["sp"], child["cp"], child["c"]) == ("STOP_MARKET", "49000", True, "sl-1")
    assert venue.events[5]["o"]["aid"] == take["algoId"]
    finished = venue.events[6]["o"]
    assert finished["ai"] == triggered["ai"] and finished["aq"] == "0.010" and finished["ap"] == child["ap"]
    assert venue.events[4]["a"]["P"][0]["pa"] == "0.000"
    # the same trade through the simulator: entry at the ask, stop by the mark, exit at the bid
    sim = _simulator(exchange_info, brackets)
    fill = 50_000.1 * (1 + CONFIG.impact_k)
    sim.open_position(BTC, 1, t_entry, 50_000.1, 0.010 * fill, sl=49_000.0, leverage=20, mark_price=50_000.05)
    assert sim.on_mark(BTC, t_exit, 48_999.9, bid=48_990.0, ask=48_990.1) == "SL"
    trade = sim.trades().iloc[0]
    assert float(child["ap"]) == trade["exit_price"]
    fills = [e["o"] for e in venue.of("ORDER_TRADE_UPDATE") if e["o"]["x"] == "TRADE"]
    assert len(fills) == 1 and float(child["rp"]) == pytest.approx(trade["pnl"] + trade["fees"], abs=1e-9)
    assert _wallet(client) == pytest.approx(sim.wallet, abs=1e-8)
    assert _wallet(client) - 10_000.0 == pytest.approx(trade["pnl"], abs=1e-8)
    assert client.futures_get_open_orders(symbol=BTC, conditional=True) == []
    queried = client.futures_get_algo_order(algoId=stop["algoId"])
    assert (queried["algoStatus"], queried["actualOrderId"]) == ("FINISHED", triggered["ai"])
    _keys(venue.events[0], fixtures("user_data_json/algo_update_new.json"))
    _keys(venue.events[3], fixtures("user_data_json/order_update_trade.json"))
    _keys(venue.events[4], fixtures("user_data_json/account_update.json"))
    open_algo = fixtures("http_json/open_algo_orders.json")[0]
    assert set(open_algo) <= set(queried)


def test_take_profit_of_a_short_triggers_on_the_last_price_and_buys_at_the_ask(
    venue: Venue, client: Client, exchange_info: dict[str, Any], brackets: dict[str, Any]
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    t_entry = venue.clock()
    _market(client, "SELL", "0.020")
    client.futures_create_algo_order(symbol=BTC, side="BUY", type="TAKE_PROFIT_MARKET", triggerPrice="48000",
                                     closePosition="true")  # fmt: skip
    venue.book(BTC, 47_990.0, 47_990.2, mark=48_050.0, last=48_000.0)  # CONTRACT_PRICE: the last price
    t_exit = venue.clock()
    assert venue.broker.positions[BTC].amount == 0
    sim = _simulator(exchange_info, brackets)
    fill = 50_000.0 * (1 - CONFIG.impact_k)
    sim.open_position(BTC, -1, t_entry, 50_000.0, 0.020 * fill, sl=51_000.0, tp=48_000.0, leverage=20,
                      mark_price=50_000.0)  # fmt: skip
    assert sim.on_mark(BTC, t_exit, 48_000.0, bid=47_990.0, ask=47_990.2) == "TP"
    trade = sim.trades().iloc[0]
    exit_fill = [e["o"] for e in venue.of("ORDER_TRADE_UPDATE") if e["o"]["x"] == "TRADE"][-1]
    assert exit_fill["S"] == "BUY" and float(exit_fill["ap"]) == trade["exit_price"]
    assert _wallet(client) - 10_000.0 == pytest.approx(trade["pnl"], abs=1e-8)


def test_liquidation_loses_the_isolated_margin_like_the_simulator(
    venue: Venue, client: Client, exchange_info: dict[str, Any], brackets: dict[str, Any]
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    t_entry = venue.clock()
    _market(client, "BUY", "0.010")
    liq = float(client.futures_position_information(symbol=BTC)[0]["liquidationPrice"])
    venue.book(BTC, liq - 50, liq - 49.9, mark=liq - 1)
    sim = _simulator(exchange_info, brackets)
    fill = 50_000.1 * (1 + CONFIG.impact_k)
    sim.open_position(BTC, 1, t_entry, 50_000.1, 0.010 * fill, sl=40_000.0, leverage=20, mark_price=50_000.0)
    assert sim.on_mark(BTC, venue.clock(), liq - 1, bid=liq - 50, ask=liq - 49.9) == "LIQUIDATION"
    event = venue.of("ORDER_TRADE_UPDATE")[-1]["o"]
    assert (event["x"], event["X"], event["o"], event["c"][:10]) == (
        "CALCULATED",
        "FILLED",
        "LIMIT",
        "autoclose-",
    )
    assert _wallet(client) == pytest.approx(sim.wallet, abs=1e-8)
    assert client.futures_position_information(symbol=BTC) == []


def test_reduce_only_never_increases_or_flips(venue: Venue, client: Client) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    assert _code(lambda: _market(client, "SELL", "0.010", reduceOnly="true")) == -2022
    _market(client, "BUY", "0.010")
    assert _code(lambda: _market(client, "BUY", "0.010", reduceOnly="true")) == -2022
    reduced = _market(client, "SELL", "0.025", reduceOnly="true")
    assert (reduced["status"], reduced["executedQty"], reduced["origQty"]) == ("EXPIRED", "0.010", "0.025")
    assert [e["o"]["X"] for e in venue.of("ORDER_TRADE_UPDATE")][-2:] == ["PARTIALLY_FILLED", "EXPIRED"]
    assert venue.broker.positions[BTC].amount == 0
    # a reduce-only algo order with nothing to reduce is rejected at its trigger
    algo = client.futures_create_algo_order(symbol=BTC, side="SELL", type="STOP_MARKET", triggerPrice="49000",
                                            quantity="0.010", reduceOnly="true", workingType="MARK_PRICE")  # fmt: skip
    venue.book(BTC, 48_900.0, 48_900.1, mark=48_950.0)
    assert client.futures_get_algo_order(algoId=algo["algoId"])["algoStatus"] == "REJECTED"
    assert venue.of("ALGO_UPDATE")[-1]["o"]["rm"] == "ReduceOnly Order is rejected."
    assert venue.broker.positions[BTC].amount == 0


def test_filters_precision_notional_and_margin_are_enforced(venue: Venue, client: Client) -> None:
    def market(qty: str, symbol: str = BTC) -> int:
        return _code(
            lambda: client.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity=qty)
        )

    assert _code(lambda: client.futures_create_order(symbol=BTC, side="BUY", type="MARKET")) == -1102
    assert market("0.010", "NOPEUSDT") == -1121
    assert market("0.010") == -2020  # no book yet
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    assert market("0.0105") == -1111
    assert market("0") == -4003
    assert market("1x") == -1100
    assert market("1000.001") == -4005
    assert market("0.001") == -4164  # 50 USDT < MIN_NOTIONAL 100 at the mark
    assert market("5.000") == -2019  # 12,500 USDT of margin at 20x on a 10,000 USDT wallet
    client.futures_change_leverage(symbol=BTC, leverage=125)
    assert market("1.100") == -2027  # 55,000 USDT notional is above BTCUSDT's 125x bracket cap of 50,000

    def algo(trigger: str, **extra: Any) -> int:
        params = {"symbol": BTC, "side": "SELL", "type": "STOP_MARKET", "triggerPrice": trigger, "quantity": "0.010",
                  "workingType": "MARK_PRICE", **extra}  # fmt: skip
        return _code(lambda: client.futures_create_algo_order(**params))

    assert algo("49000.123") == -1111
    assert algo("49000.15") == -4014
    assert algo("51000") == -2021  # a sell stop above the mark would trigger at once
    assert algo("49000", type="TRAILING_STOP_MARKET") == -1116
    assert algo("49000", closePosition="true") == -1106  # quantity with closePosition
    assert algo("49000", workingType="INDEX_PRICE") == -4031
    assert algo("49000", clientAlgoId="bad id!") == -4015
    assert venue.broker.fills == [] and venue.of("ORDER_TRADE_UPDATE") == []


def test_duplicate_client_algo_id_among_open_orders_is_refused(venue: Venue, client: Client) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    _market(client, "BUY", "0.010")

    def stop(trigger: str) -> dict[str, Any]:
        return client.futures_create_algo_order(symbol=BTC, side="SELL", type="STOP_MARKET", triggerPrice=trigger,
                                                closePosition="true", clientAlgoId="sl:dup/1.x")  # fmt: skip

    first = stop("49000")
    assert _code(lambda: stop("48000")) == -4116
    cancelled = client.futures_cancel_order(symbol=BTC, algoId=first["algoId"])
    assert cancelled["algoId"] == first["algoId"] and venue.of("ALGO_UPDATE")[-1]["o"]["X"] == "CANCELED"
    second = stop("48000")  # free again once the first is no longer open
    assert second["algoId"] != first["algoId"]
    assert _code(lambda: client.futures_cancel_order(symbol=BTC, algoId=first["algoId"])) == -2011
    answer = client.futures_cancel_all_open_orders(symbol=BTC, conditional=True)
    assert answer["code"] == 200
    assert client.futures_get_open_orders(symbol=BTC, conditional=True) == []
    assert client.futures_get_algo_order(clientAlgoId="sl:dup/1.x")["algoStatus"] == "CANCELED"


# --- authentication, listenKey, faults -------------------------------------------------------------
def test_signature_key_and_timestamp_errors(venue: Venue) -> None:
    assert _code(lambda: _client(venue.url, secret="wrong").futures_account_balance()) == -1022
    with pytest.raises(BinanceAPIException) as e:
        _client(venue.url, key="other").futures_account_balance()
    assert (e.value.code, e.value.status_code) == (-2015, 401)
    assert requests.get(venue.url + "/fapi/v2/balance", timeout=5).json()["code"] == -2014
    late = _client(venue.url)
    late.timestamp_offset = -15_000  # outside python-binance's recvWindow of 10 s, by the wall clock
    assert _code(late.futures_account_balance) == -1021
    late.REQUEST_RECVWINDOW = 30_000
    assert float(late.futures_account_balance()[0]["balance"]) == 10_000.0
    early = _client(venue.url)
    early.timestamp_offset = 5_000
    assert _code(early.futures_account_balance) == -1021


def test_listen_key_lives_sixty_minutes_and_keepalive_extends_it(venue: Venue, client: Client) -> None:
    key = client.futures_stream_get_listen_key()
    assert venue.broker.listen_key_valid(key) and not venue.broker.listen_key_valid("x" * 64)
    assert client.futures_stream_get_listen_key() == key  # the live key is answered again
    venue.wall.shift_ms += 59 * 60_000
    client.futures_stream_keepalive(key)
    venue.wall.shift_ms += 59 * 60_000
    assert venue.broker.listen_key_valid(key)
    venue.wall.shift_ms += 2 * 60_000
    assert not venue.broker.listen_key_valid(key)
    assert _code(lambda: client.futures_stream_keepalive(key)) == -1125
    fresh = client.futures_stream_get_listen_key()
    assert fresh != key and venue.broker.listen_key_valid(fresh)
    client.futures_stream_close(fresh)
    assert not venue.broker.listen_key_valid(fresh)
    assert _code(lambda: _client(venue.url, key="other").futures_stream_get_listen_key()) == -2015


def test_reject_next_refuses_the_next_orders_without_placing_them(venue: Venue, client: Client) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    venue.broker.reject_next(-1007, "Timeout waiting for response from backend server.", 2)
    with pytest.raises(BinanceAPIException) as e:
        _market(client, "BUY", "0.010")
    assert (e.value.code, e.value.status_code) == (-1007, 503)
    assert _code(lambda: client.futures_create_algo_order(symbol=BTC, side="SELL", type="STOP_MARKET",
                                                          triggerPrice="49000", closePosition="true")) == -1007  # fmt: skip
    assert venue.events == [] and venue.broker.fills == []
    assert _market(client, "BUY", "0.010")["status"] == "FILLED"


# --- shapes ----------------------------------------------------------------------------------------
def test_rest_answers_carry_the_recorded_fields(
    venue: Venue, client: Client, fixtures: Callable[[str], Any]
) -> None:
    venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
    order = _market(client, "BUY", "0.010")
    assert set(fixtures("http_json/order_response.json")) <= set(order)
    assert set(fixtures("http_json/balance.json")[0]) == set(client.futures_account_balance()[0])
    risk = client._request_futures_api("get", "positionRisk", True, 2, data={"symbol": BTC})
    assert set(fixtures("http_json/position_risk.json")[0]) <= set(risk[0])
    assert risk[0]["marginType"] == "isolated" and risk[0]["positionAmt"] == "0.010"
    account = client.futures_account()
    expected = fixtures("http_json/account_info_v2.json")
    assert set(expected) == set(account)
    assert set(expected["assets"][0]) == set(account["assets"][0])
    assert set(expected["positions"][0]) == set(account["positions"][0])
    held = next(p for p in account["positions"] if p["symbol"] == BTC)
    assert held["positionAmt"] == "0.010" and held["isolated"] is True
    assert float(account["totalWalletBalance"]) == pytest.approx(venue.broker.wallet, abs=1e-8)
    v3 = client._request_futures_api("get", "account", True, 3, data={})
    assert [p["symbol"] for p in v3["positions"]] == [BTC]
    assert client.futures_change_leverage(symbol=BTC, leverage=10)["leverage"] == 10
    assert _code(lambda: client.futures_change_leverage(symbol=BTC, leverage=126)) == -4028
    assert _code(lambda: client.futures_change_margin_type(symbol=BTC, marginType="ISOLATED")) == -4046
    assert _code(lambda: client.futures_change_margin_type(symbol=BTC, marginType="CROSSED")) == -1130
    trades = client.futures_account_trades(symbol=BTC)
    assert len(trades) == 1 and trades[0]["orderId"] == order["orderId"]


def test_user_events_reach_the_private_socket(
    exchange_info: dict[str, Any], tmp_path: Path, fixtures: Callable[[str], Any]
) -> None:
    clock = Clock(T0)
    hub = StreamHub(Faults())
    broker = PaperBroker(
        exchange_info, clock, hub.publish_user, api_key=KEY, api_secret=SECRET, sim_config=CONFIG
    )
    hub.listen_key_valid = broker.listen_key_valid
    app = create_app(Lake(tmp_path / "lake"), clock, weight_limit_1m=None)
    hub.add_routes(app)
    broker.add_routes(app)
    server = BackgroundServer(app)
    url = server.start()
    try:
        venue = Venue(url, server, broker, clock, Clock())
        client = _client(url)
        key = client.futures_stream_get_listen_key()
        ws_url = "ws" + url.removeprefix("http") + f"/private?listenKey={key}"
        with connect(ws_url, open_timeout=5) as socket:
            time.sleep(0.2)  # let the hub register the connection on its loop
            # no book yet: the order is refused and nothing is published
            assert _code(lambda: client.futures_create_order(symbol=BTC, side="BUY", type="MARKET",
                                                             quantity="0.010")) == -2020  # fmt: skip
            with pytest.raises(TimeoutError):
                socket.recv(timeout=0.3)
            venue.book(BTC, 50_000.0, 50_000.1, mark=50_000.0)
            client.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity="0.010")
            received = [json.loads(socket.recv(timeout=5)) for _ in range(3)]
        assert [(e["e"], e.get("o", {}).get("X")) for e in received] == [
            ("ORDER_TRADE_UPDATE", "NEW"), ("ORDER_TRADE_UPDATE", "FILLED"), ("ACCOUNT_UPDATE", None)]  # fmt: skip
        _keys(received[0], fixtures("user_data_json/order_update_new.json"))
        _keys(received[1], fixtures("user_data_json/order_update_trade.json"))
        with (
            connect(ws_url.replace(key, "f" * 64), open_timeout=5) as refused,
            pytest.raises(ConnectionClosed),
        ):
            refused.recv(timeout=5)
    finally:
        server.stop()


def test_replay_driver_triggers_a_protected_position_over_the_private_socket(
    exchange_info: dict[str, Any], tmp_path: Path
) -> None:
    start, minutes = 1748649600000 + 60 * 60_000, 90
    lake = Lake(tmp_path / "lake")
    write_synthetic_market(generate_market([BTC], 1748649600000, 240, seed=3), lake)
    venue = ReplayVenue(lake, [BTC], start, start + minutes * 60_000, speed="step", mark_ticks_per_minute=6,
                        exchange_info=exchange_info, api_key=KEY, api_secret=SECRET, sim_config=CONFIG)  # fmt: skip
    urls = venue.start()
    try:
        client = _client(urls.rest_url)
        key = client.futures_stream_get_listen_key()
        with connect(f"{urls.ws_url}private?listenKey={key}", open_timeout=5) as socket:
            time.sleep(0.2)
            assert venue.advance_to(start + 60_000, 10)
            mark = venue.broker.mark_price(BTC)
            qty = f"{max(0.002, round(300 / mark, 3)):.3f}"
            client.futures_create_order(symbol=BTC, side="BUY", type="MARKET", quantity=qty)
            for order_type, level in (("STOP_MARKET", 0.998), ("TAKE_PROFIT_MARKET", 1.002)):
                client.futures_create_order(symbol=BTC, side="SELL", type=order_type, closePosition="true",
                                            stopPrice=f"{mark * level:.1f}", workingType="MARK_PRICE")  # fmt: skip
            minute = 1
            while venue.broker.positions[BTC].amount and minute < minutes:
                minute += 1
                assert venue.advance_to(start + minute * 60_000, 10)
            events = []
            while True:
                try:
                    events.append(json.loads(socket.recv(timeout=1)))
                except TimeoutError:
                    break
    finally:
        venue.stop()
    assert venue.broker.positions[BTC].amount == 0, "neither the stop nor the target was reached"
    algo = {(e["o"]["o"], e["o"]["X"]) for e in events if e["e"] == "ALGO_UPDATE"}
    fired = "STOP_MARKET" if ("STOP_MARKET", "FINISHED") in algo else "TAKE_PROFIT_MARKET"
    other = "TAKE_PROFIT_MARKET" if fired == "STOP_MARKET" else "STOP_MARKET"
    assert {(fired, "TRIGGERED"), (fired, "FINISHED"), (other, "EXPIRED")} <= algo
    child = next(e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["ot"] == fired)
    triggered = next(e["o"] for e in events if e["e"] == "ALGO_UPDATE" and e["o"]["X"] == "TRIGGERED")
    assert triggered["ai"] == str(child["i"])
    assert [e["a"]["P"][0]["pa"] for e in events if e["e"] == "ACCOUNT_UPDATE"] == [qty, "0.000"]
