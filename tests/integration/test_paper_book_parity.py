"""One paper book: the replay venue's PaperBroker and ``core.sim.FillSimulator`` given the same orders.

The broker is driven over real HTTP by python-binance (opens, an add that averages, partial and full
reduces, a flip, reduce-only orders, a leverage change, a liquidation); after every step its book,
the positions Binance's endpoints show, its last fill's price, fee and realized PnL and its wallet
equal, exactly, a FillSimulator sent the same orders at the same touch prices.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from binance.client import Client

from core.sim import FillSimulator, SimConfig, SymbolRules, parse_leverage_brackets, parse_symbol_filters
from core.sim.orders import OrderFill
from exchange.venue import BackgroundServer, create_app
from exchange.venue.trading import PaperBroker
from storage.lake import Lake

KEY, SECRET = "parity-key", "parity-secret"
T0 = 1772323200000  # 2026-03-01 00:00 UTC, the venue clock
CONFIG = SimConfig(fee_rate=0.0004, impact_k=0.0005, default_leverage=20)
BTC = "BTCUSDT"


class Venue:
    """A PaperBroker on a local server, a client, and the FillSimulator it must agree with."""

    def __init__(self, exchange_info: dict[str, Any], brackets: dict[str, Any], lake: Lake) -> None:
        self.now = T0
        self.broker = PaperBroker(exchange_info, lambda: self.now, lambda event: None, api_key=KEY,
                                  api_secret=SECRET, sim_config=CONFIG, leverage_brackets=brackets)  # fmt: skip
        app = create_app(lake, lambda: self.now, weight_limit_1m=None)
        self.broker.add_routes(app)
        self.server = BackgroundServer(app)
        self.client = Client(KEY, SECRET, ping=False)
        self.client.FUTURES_URL = self.server.start() + "/fapi"
        rules = {BTC: SymbolRules(filters=parse_symbol_filters(exchange_info)[BTC], brackets=brackets[BTC])}
        self.sim = FillSimulator([BTC], CONFIG, rules=rules)
        self.leverage = CONFIG.default_leverage
        self.bid = self.ask = self.mark = 0.0

    def quote(self, bid: float, ask: float, mark: float) -> None:
        """Move the venue clock 1 s and feed the book and the mark on the server's loop."""
        self.now += 1000
        self.bid, self.ask, self.mark = bid, ask, mark

        async def feed() -> None:
            self.broker.on_book(BTC, self.now, bid, ask)
            self.broker.on_mark(BTC, self.now, mark, mark)

        assert self.server._loop is not None
        asyncio.run_coroutine_threadsafe(feed(), self.server._loop).result(10)

    def order(self, side: str, qty: str, reduce_only: bool = False) -> OrderFill:
        """Send a MARKET order to the broker and the same order to the simulator; return the latter's."""
        extra = {"reduceOnly": "true"} if reduce_only else {}
        self.client.futures_create_order(symbol=BTC, side=side, type="MARKET", quantity=qty, **extra)
        d = 1 if side == "BUY" else -1
        expected = self.sim.fill_order(BTC, d, self.now, float(qty), self.ask if d > 0 else self.bid,
                                       reduce_only=reduce_only, leverage=self.leverage, mark_price=self.mark)  # fmt: skip
        assert expected.filled
        return expected


@pytest.fixture
def venue(shared_data: Path, tmp_path: Path) -> Iterator[Venue]:
    rest = shared_data / "payloads" / "rest"
    exchange_info = json.loads((rest / "exchange_info_2025-12.json").read_text())
    brackets = parse_leverage_brackets(json.loads((rest / "leverage_brackets.json").read_text()))
    v = Venue(exchange_info, brackets, Lake(tmp_path / "lake"))
    try:
        yield v
    finally:
        v.server.stop()


def _same(a: Any, b: Any) -> None:
    # exact equality of two dataclasses, NaN equal to NaN (an order by quantity sets no SL/TP)
    assert type(a) is type(b)
    np.testing.assert_equal(dataclasses.asdict(a), dataclasses.asdict(b))


def _agree(venue: Venue, fill: OrderFill | None = None) -> None:
    """Assert the broker's book, shown position, last fill and wallet equal the simulator's, exactly."""
    broker, sim = venue.broker, venue.sim
    held = sim.position(BTC)
    if held is None:
        assert broker.book.position(BTC) is None
    else:
        _same(broker.book.position(BTC), held)
    shown = broker.positions[BTC]
    assert shown.amount == (Decimal(f"{held.side * held.qty:.3f}") if held else 0)
    assert shown.entry_price == (held.entry_price if held else 0.0)
    assert shown.margin == (held.margin_usdt if held else 0.0)
    assert shown.open_fees == (held.entry_fee_usdt if held else 0.0)
    assert shown.liquidation_price == (held.liquidation_price if held else 0.0)
    if fill is not None:
        last = broker.fills[-1]
        assert (last.price, last.fee, last.realized) == (fill.price, fill.fee_usdt, fill.realized_pnl_usdt)
        assert last.qty == Decimal(f"{fill.closed_qty + fill.opened_qty:.3f}")
    assert (broker.wallet, broker.used_margin) == (sim.wallet, sim.used_margin)
    pd.testing.assert_frame_equal(broker.book.trades(), sim.trades(), check_exact=True)
    rows = venue.client.futures_position_information(symbol=BTC)
    if held is None:
        assert rows == []
    else:
        assert rows[0]["positionAmt"] == f"{held.side * held.qty:.3f}"
        assert float(rows[0]["entryPrice"]) == held.entry_price
        assert float(rows[0]["liquidationPrice"]) == max(held.liquidation_price, 0.0)
    assert float(venue.client.futures_account_balance()[0]["balance"]) == round(sim.wallet, 8)


def test_the_broker_books_every_order_exactly_as_the_fill_simulator(venue: Venue) -> None:
    venue.quote(50_000.0, 50_000.1, 50_000.05)
    opened = venue.order("BUY", "0.010")
    assert (opened.opened_qty, opened.closed_qty) == (0.010, 0.0)
    _agree(venue, opened)
    venue.quote(50_400.0, 50_400.2, 50_400.1)
    added = venue.order("BUY", "0.006")  # the entry averages by quantity
    assert added.opened_qty == 0.006 and venue.sim.position(BTC).qty == pytest.approx(0.016)
    _agree(venue, added)
    venue.quote(50_800.0, 50_800.1, 50_800.0)
    part = venue.order("SELL", "0.004")  # a partial reduce realizes a profit
    assert part.closed_qty == 0.004 and part.realized_pnl_usdt > 0
    _agree(venue, part)
    venue.quote(50_700.0, 50_700.1, 50_700.0)
    flip = venue.order("SELL", "0.020")  # closes the 0.012 left and opens a 0.008 short
    assert (flip.closed_qty, flip.opened_qty) == pytest.approx((0.012, 0.008))
    _agree(venue, flip)
    venue.quote(50_900.0, 50_900.1, 50_900.0)
    reduced = venue.order("BUY", "0.003", reduce_only=True)  # a short's partial reduce at a loss
    assert reduced.closed_qty == 0.003 and reduced.realized_pnl_usdt < 0
    _agree(venue, reduced)
    closed = venue.order("BUY", "0.010", reduce_only=True)  # larger than the position: closes it all
    assert closed.closed_qty == pytest.approx(0.005) and closed.opened_qty == 0.0
    _agree(venue, closed)
    assert venue.broker.orders[max(venue.broker.orders)].status == "EXPIRED"
    # a new long at 50x, then the mark reaches its liquidation price
    venue.client.futures_change_leverage(symbol=BTC, leverage=50)
    venue.leverage = 50
    venue.quote(51_000.0, 51_000.1, 51_000.0)
    _agree(venue, venue.order("BUY", "0.030"))
    liq = venue.sim.position(BTC).liquidation_price
    venue.quote(liq - 20.0, liq - 19.9, liq - 0.5)
    assert venue.sim.on_mark(BTC, venue.now, liq - 0.5) == "LIQUIDATION"
    _agree(venue)
    exit_fill = venue.sim.last_exit()
    last = venue.broker.fills[-1]
    assert (last.price, last.fee, last.realized) == (
        exit_fill.price,
        exit_fill.fee_usdt,
        exit_fill.realized_pnl_usdt,
    )
    assert list(venue.sim.trades()["exit_reason"]) == ["SIGNAL", "SIGNAL", "SIGNAL", "SIGNAL", "LIQUIDATION"]
    # fees and PnL are conserved: the wallet moved by the closed trades' PnL, nothing else is open
    assert venue.broker.wallet - 10_000.0 == pytest.approx(venue.sim.trades()["pnl"].sum(), abs=1e-9)
