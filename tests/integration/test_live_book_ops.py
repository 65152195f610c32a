"""The live book's operations records on the replay venue (loopback) and a real database: the
``positions`` rows of a trade from the venue's fills (so the health checker's fill notifications fire
for live trading, sent to a Slack webhook on loopback), and the venue's account written as
``account_snapshots`` rows off the order path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from venue_fixtures import BTC, MARK, WallClockVenue, running_venue
from venue_fixtures import exchange_info as exchange_info

from actors.health import HealthChecker, HealthConfig
from actors.live_book import LiveBook, LiveConfig
from core.messages import BarClose, CloseIntent, EntryIntent, close_client_id
from core.notify import NotifyConfig
from exchange.binance.signed import SignedTransport, TradingConfig
from exchange.logging_safety import uninstall_redaction
from storage.schema import account_snapshots, positions, risk_events

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

KEY = "live-ops-test-key"
SECRET = "live-ops-test-secret-5c1e"
MINUTE = 60_000


@pytest.fixture
def venue(exchange_info: dict[str, Any], tmp_path: Path) -> Iterator[WallClockVenue]:
    with running_venue(exchange_info, tmp_path / "lake", key=KEY, secret=SECRET) as venue:
        yield venue


@pytest.fixture
def slack() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/services/T0/B0/hook", posts
    httpd.shutdown()
    httpd.server_close()
    uninstall_redaction()


def trading(venue: WallClockVenue) -> TradingConfig:
    return TradingConfig(base_url=venue.url, api_key=SecretStr(KEY), api_secret=SecretStr(SECRET),
                         recv_window_ms=1_000, timeout_s=0.5, backoff_s=0.0, sync_clock=False)  # fmt: skip


def test_a_live_trade_writes_positions_rows_and_a_fill_notification_and_the_venues_account_is_snapshotted(
    venue: WallClockVenue, engine: sa.Engine, db_url: str, slack: tuple[str, list[dict[str, Any]]]
) -> None:
    hook, posts = slack
    health = HealthChecker(HealthConfig(check_serve=False, check_mlflow=False), db_url, universe=(BTC,),
                           notify=NotifyConfig(slack_webhook_url=SecretStr(hook), dedup_window_s=0))  # fmt: skip
    live = LiveBook(
        LiveConfig(session_id="live-ops", symbols=(BTC,), database_url=db_url, trading=trading(venue))
    )
    try:
        now = venue.wall()
        bar = now - now % MINUTE - MINUTE
        (entry,) = live.submit([EntryIntent(BTC, bar, 1, 0.02, 3, 59_400.0, 60_600.0, MARK, 50.0, 1e9, 60_000.0,
                                            60_000.1, now, mark=MARK)])  # fmt: skip
        assert entry["outcome"] == "protected"
        venue.quote(60_100.0, 60_100.1, 60_100.0)
        close = CloseIntent(BTC, bar + MINUTE, close_client_id("live-ops", BTC, bar + MINUTE), side=1)
        assert live.submit([close])[0]["filled"]

        # positions rows: the venue's fill prices, the ledger's realized PnL net of fees
        (opened, closed) = sorted(venue.broker.order_state.fills, key=lambda f: f.time_ms)
        with engine.connect() as c:
            rows = {r.event_type: r for r in c.execute(sa.select(positions)).all()}
        assert set(rows) == {"entry", "FINAL"}
        assert {r.trade_group_id for r in rows.values()} == {entry["trade_group_id"]}
        assert rows["entry"].entry_price == opened.price and rows["entry"].amt == pytest.approx(0.003)
        assert rows["FINAL"].exit_price == closed.price and rows["FINAL"].exit_reason == "RL_CLOSE"
        ledger = live.store.positions()[BTC]
        assert ledger.qty == 0 and rows["FINAL"].realized_pnl == float(ledger.realized_pnl - ledger.fees)
        venue_pnl = sum(f.realized - f.fee for f in (opened, closed))
        assert rows["FINAL"].realized_pnl == pytest.approx(venue_pnl, abs=1e-6)
        print(
            f"live trade: entry {opened.price}, exit {closed.price}, realized {rows['FINAL'].realized_pnl:.6f} USDT"
        )

        # the health checker notifies both fills, as it does for the paper book
        health.check()
        titles = [p["text"] for p in posts]
        assert any("BTCUSDT LONG opened [live]" in t for t in titles), titles
        assert any("BTCUSDT LONG closed (RL_CLOSE) [live]" in t for t in titles), titles

        # the account at a minute close: the venue's own figures, one row per minute
        entry2 = EntryIntent(BTC, bar + MINUTE, 1, 0.02, 3, 59_400.0, 60_800.0, MARK, 50.0, 1e9, 60_100.0,
                             60_100.1, venue.wall(), mark=MARK)  # fmt: skip
        assert live.submit([entry2])[0]["outcome"] == "protected"  # an open position: unrealized and margin
        venue.quote(60_200.0, 60_200.1, 60_200.0)
        close_ts = bar + 2 * MINUTE
        b = BarClose(BTC, close_ts - MINUTE, 60_100.0, 60_200.0, 60_100.0, 60_200.0, 60_100.0, 60_200.0, 60_100.0,
                     60_200.0, 1e9)  # fmt: skip
        live.on_bars([b])
        live.on_bars([b])  # the same minute again: no second request
        live.snapshots.flush()
        http = SignedTransport(trading(venue))
        try:
            raw = http.call("GET", "/fapi/v3/account")
        finally:
            http.close()
        with engine.connect() as c:
            (snap,) = c.execute(sa.select(account_snapshots)).all()
            missed = c.execute(
                sa.select(risk_events).where(risk_events.c.event_type == "account_snapshot_missed")
            ).all()
        expected = {
            "equity": float(raw["totalMarginBalance"]), "wallet_balance": float(raw["totalWalletBalance"]),
            "unrealized_pnl": float(raw["totalUnrealizedProfit"]), "available_margin": float(raw["availableBalance"]),
            "used_margin": float(raw["totalInitialMargin"]),
            "margin_ratio": float(raw["totalMaintMargin"]) / float(raw["totalMarginBalance"]),
        }  # fmt: skip
        assert snap.ts == close_ts and snap.mode == "live" and live.snapshots.written == 1 and missed == []
        assert {k: getattr(snap, k) for k in expected} == pytest.approx(expected)
        assert (
            snap.unrealized_pnl > 0 and snap.used_margin > 0 and Decimal(raw["totalWalletBalance"]) < 10_000
        )
        print(f"live snapshot: {expected}")
    finally:
        live.close()
        health.close()


def test_a_failed_account_read_is_a_risk_event_and_never_reaches_the_order_path(
    venue: WallClockVenue, engine: sa.Engine, db_url: str
) -> None:
    live = LiveBook(
        LiveConfig(session_id="live-ops2", symbols=(BTC,), database_url=db_url, trading=trading(venue))
    )
    try:
        venue.faults.rest_reset("/fapi/v3/account", n=10)
        now = venue.wall()
        b = BarClose(BTC, now - now % MINUTE - MINUTE, *([60_000.0] * 8), 1e9)
        assert live.on_bars([b]) == 0  # returns at once: the read is the thread's
        live.snapshots.flush()
        with engine.connect() as c:
            rows = c.execute(sa.select(account_snapshots)).all()
            missed = c.execute(
                sa.select(risk_events).where(risk_events.c.event_type == "account_snapshot_missed")
            ).all()
        assert rows == [] and len(missed) == 1 and live.snapshots.missed == 1
    finally:
        live.close()
