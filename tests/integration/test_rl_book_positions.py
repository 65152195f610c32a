"""Both execution books answer ``open_positions()`` (the RL agent's position dims come from it, not
from the ``positions`` table the live book never writes): the paper book from its simulator, the live
book — against the replay venue's paper broker on loopback — from the protected entries its close path
closes. The decider's ``rl_position_dims`` turns either answer into observation dims 14–16."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue
from venue_fixtures import exchange_info as exchange_info

from actors.decide import rl_position_dims
from actors.execution import ExecutionBook, ExecutionConfig
from actors.live_book import LiveBook, LiveConfig
from core.config import RiskConfig
from core.messages import CloseIntent, EntryIntent, close_client_id
from core.rl_obs import FEATURE_INPUTS, MARKET_DIMS, PREDICTION_INPUTS, build_observations
from core.sim import SimConfig
from core.time import MINUTE_MS
from exchange.binance.signed import TradingConfig
from storage import db
from storage.instruments import sync_universe

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KEY = "rl-book-test-key"
SECRET = "rl-book-test-secret-7c21"
T0 = 1_717_200_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIM = SimConfig(fee_rate=0.0004, slippage_k=0.15, impact_k=0.0, default_leverage=5)
HOLD_NORM = 60.0


def obs_of(
    book: dict[str, dict[str, Any]], symbols: tuple[str, ...], bar_open: int, marks: list[float]
) -> np.ndarray:
    """The decider's observation rows of ``symbols`` (zero predictions and features) on ``book``."""
    side, held, upnl = rl_position_dims(book, symbols, bar_open, np.array(marks))
    preds = {k: np.zeros(len(symbols)) for k in PREDICTION_INPUTS}
    feats = {f: np.zeros(len(symbols)) for f in FEATURE_INPUTS.values()}
    return build_observations(preds, feats, side=side, bars_held=held, unrealized_return=upnl,
                              hold_norm_min=HOLD_NORM)  # fmt: skip


# --- the paper book ------------------------------------------------------------------------------------


@pytest.fixture
def paper(db_url: str) -> Iterator[ExecutionBook]:
    engine = db.make_engine(db_url)
    db.upgrade(engine)
    sync_universe(engine, SYMBOLS)
    engine.dispose()
    book = ExecutionBook(ExecutionConfig(session_id="rl-pos", symbols=SYMBOLS, database_url=db_url, sim=SIM,
                                         risk=RiskConfig()))  # fmt: skip
    yield book
    book.close()


def test_the_paper_book_reports_its_open_position_and_flat_after_the_close(paper: ExecutionBook) -> None:
    assert paper.open_positions() == {}
    entry = EntryIntent(symbol="ETHUSDT", decision_ts=T0, side=-1, size_fraction=0.1, leverage=5, sl_price=2100.0,
                        tp_price=1850.0, decision_price=2000.0, atr=20.0, quote_volume=5e6, bid=1999.9, ask=2000.1,
                        book_ts=T0 + MINUTE_MS + 50, mark=2000.0)  # fmt: skip
    (done,) = paper.submit([entry])
    assert done.filled, done.reasons
    (trade_pos,) = paper.sim.positions().values()
    held = paper.open_positions()
    assert set(held) == {"ETHUSDT"}
    eth = held["ETHUSDT"]
    assert eth["side"] == -1 and eth["qty"] == pytest.approx(trade_pos.qty) and eth["qty"] > 0
    assert (
        eth["entry_price"] == pytest.approx(done.price) and eth["entry_price"] < 1999.9
    )  # a short: bid − slip
    assert eth["entry_ts_ms"] == trade_pos.entry_ts_ms

    # the observation's position dims: short, held 10 bars at the close of the bar opened 9 bars later
    bar_open = eth["entry_ts_ms"] + 9 * MINUTE_MS
    obs = obs_of(held, SYMBOLS, bar_open, [60_000.0, 1_980.0])
    expected = -(1_980.0 - eth["entry_price"]) / eth["entry_price"] * 100.0
    np.testing.assert_allclose(obs[1, MARKET_DIMS:], [-1.0, 10 / HOLD_NORM, expected], rtol=1e-5)
    np.testing.assert_array_equal(obs[0, MARKET_DIMS:], [0.0, 0.0, 0.0])  # BTC: flat

    bar = T0 + MINUTE_MS
    (closed,) = paper.submit([CloseIntent("ETHUSDT", bar, close_client_id("rl-pos", "ETHUSDT", bar))])
    assert closed.filled
    assert paper.open_positions() == {}
    np.testing.assert_array_equal(obs_of({}, SYMBOLS, bar_open, [60_000.0, 1_980.0])[:, MARKET_DIMS:], 0.0)


# --- the live book ----------------------------------------------------------------------------------


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET, cls=WallClockVenue) as venue:
        yield venue


@pytest.fixture
def live(venue: WallClockVenue, engine: sa.Engine, tmp_path: Path) -> Iterator[LiveBook]:
    trading = TradingConfig(base_url=venue.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                            recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0, sync_clock=False)  # fmt: skip
    cfg = LiveConfig(session_id="rl-live", symbols=(BTC,), database_url=engine.url.render_as_string(False), trading=trading,
                     kill_file=tmp_path / "KILL")  # fmt: skip
    book = LiveBook(cfg)
    yield book
    book.close()


def test_the_live_book_reports_what_it_holds_on_the_venue_and_flat_after_the_close(
    live: LiveBook, venue: WallClockVenue
) -> None:
    assert live.open_positions() == {}
    now = venue.wall()
    decision = now - now % MINUTE_MS - MINUTE_MS
    entry = EntryIntent(BTC, decision, 1, 0.02, 3, 59_400.0, 60_600.0, MARK, 50.0, 1e9, 60_000.0, 60_000.1, now,
                        mark=MARK)  # fmt: skip
    (done,) = live.submit([entry])
    assert done["filled"] and done["outcome"] == "protected"
    held = live.open_positions()
    assert set(held) == {BTC}
    btc = held[BTC]
    assert btc["side"] == 1 and btc["qty"] == pytest.approx(0.003)  # 2% of 10,000 USDT at 60,000, to the step
    assert btc["qty"] == pytest.approx(float(venue.broker.positions[BTC].amount))
    assert btc["entry_price"] == pytest.approx(done["price"]) and btc["entry_price"] > 0
    assert decision + MINUTE_MS <= btc["entry_ts_ms"] <= venue.wall()

    # the observation's position dims, as the decider builds them at a later close
    bar_open = btc["entry_ts_ms"] - btc["entry_ts_ms"] % MINUTE_MS + 4 * MINUTE_MS
    mark = btc["entry_price"] * 1.01
    obs = obs_of(held, (BTC,), bar_open, [mark])
    bars = round((bar_open + MINUTE_MS - btc["entry_ts_ms"]) / MINUTE_MS)
    np.testing.assert_allclose(obs[0, MARKET_DIMS:], [1.0, bars / HOLD_NORM, 1.0], rtol=1e-4)
    assert obs[0, MARKET_DIMS] == 1.0 and bars >= 4

    bar = decision + MINUTE_MS
    (closed,) = live.submit([CloseIntent(BTC, bar, close_client_id("rl-live", BTC, bar))])
    assert closed["filled"]
    gone = venue.broker.positions.get(BTC)
    assert gone is None or Decimal(gone.amount) == 0
    assert live.open_positions() == {}
