"""The paper book (``actors.execution``) writes its simulator's account as an ``account_snapshots`` row at
each minute close, once a minute, on a real database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from actors.execution import ExecutionBook, ExecutionConfig
from core.config import RiskConfig
from core.messages import BarClose, EntryIntent
from core.sim import SimConfig
from core.time import MINUTE_MS
from storage.instruments import sync_universe
from storage.schema import account_snapshots

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

T0 = 1_717_200_000_000
SYMBOLS = ("BTCUSDT",)


def bar(ts: int, close: float) -> BarClose:
    return BarClose("BTCUSDT", ts, 60_000.0, max(close, 60_000.0), min(close, 60_000.0), close, 60_000.0,
                    max(close, 60_000.0), min(close, 60_000.0), close, 5e6)  # fmt: skip


def test_the_paper_book_writes_its_simulator_account_once_per_minute_close(
    engine: sa.Engine, db_url: str
) -> None:
    sync_universe(engine, SYMBOLS)
    book = ExecutionBook(ExecutionConfig(session_id="snap", symbols=SYMBOLS, database_url=db_url,
                                         sim=SimConfig(fee_rate=0.0004, default_leverage=5), risk=RiskConfig()))  # fmt: skip
    try:
        p = 60_000.0
        (res,) = book.submit([EntryIntent("BTCUSDT", T0, 1, 0.1, 5, p * 0.95, p * 1.075, p, p / 100, 5e6, p - 0.1,
                                          p + 0.1, T0 + MINUTE_MS + 50, mark=p)])  # fmt: skip
        assert res.filled
        book.on_bars([bar(T0 + MINUTE_MS, 60_300.0)])
        sim = book.sim
        pos = sim.position("BTCUSDT")
        terms = sim.margin_terms("BTCUSDT")
        assert pos is not None and terms is not None
        maint = pos.qty * pos.mark_price * terms.maint_margin_rate - terms.maint_amount_usdt
        expected = {"ts": T0 + 2 * MINUTE_MS, "mode": "shadow", "equity": sim.equity, "wallet_balance": sim.wallet,
                    "unrealized_pnl": sim.unrealized, "available_margin": sim.equity - sim.used_margin,
                    "used_margin": sim.used_margin, "margin_ratio": maint / sim.equity}  # fmt: skip
        book.on_bars([bar(T0 + MINUTE_MS, 60_300.0)])  # the same close again: no second row
        with engine.connect() as c:
            rows = [dict(r) for r in c.execute(sa.select(account_snapshots)).mappings()]
        assert rows == [pytest.approx(expected)] and sim.unrealized > 0 and maint > 0
        book.on_bars([bar(T0 + 2 * MINUTE_MS, 60_100.0)])
        with engine.connect() as c:
            newest = c.execute(sa.select(account_snapshots).order_by(account_snapshots.c.ts.desc())).first()
        assert (
            newest is not None
            and newest.ts == T0 + 3 * MINUTE_MS
            and newest.equity == pytest.approx(sim.equity)
        )
    finally:
        book.close()
