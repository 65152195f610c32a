"""The dashboard in a real headless Chromium (Debian's chromium + chromium-driver) against the real
API app (``create_app`` + ``pages_router``) served by uvicorn over a seeded SQLite database.

Every page loads and shows the seeded state; a signal written while the page is open appears
without a reload (pushed over /ws when the app has it, by polling when not: both are run); a kill and a resume through the header's buttons (confirm dialogs accepted)
change the kill-switch badge and write the kill switch's rows. A screenshot of each page is saved
under the test's temporary folder.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from browser_fixtures import RERENDERED, chromium, click, click_and_confirm, console_errors, text_in
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from core.messages import SignalNew, Topic
from serve.api.app import ApiConfig, create_app
from serve.api.auth import ensure_token
from serve.api.pages import PAGES, pages_router
from serve.api.ws import compare_tokens, ws_router
from storage import schema
from storage.bus import Bus, InProcessBus

WAIT_S = 15
CONTRIBUTIONS = {
    "er_long": {"base": 0.001, "top": [{"feature": "ret_15m", "value": 0.012, "contribution": 0.0031},
                                       {"feature": "funding_z", "value": None, "contribution": -0.0012}]},
    "q05_long": {"base": -0.01, "top": [{"feature": "atr_pct", "value": 0.004, "contribution": -0.0021}]},
}  # fmt: skip
MODEL_ID = uuid.uuid4().hex


def _seed(engine: sa.Engine) -> int:
    """Seed the database around the current minute (taken now: collection can be minutes earlier in a
    full run, and candles that old read as stale data); return that minute."""
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    t0 = now_ms - 30 * 60_000
    with engine.begin() as c:
        c.execute(
            sa.insert(schema.instruments),
            [{"symbol": s, "created_at": t0} for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")],
        )
        c.execute(
            sa.insert(schema.candles_1m),
            [
                {"symbol": "BTCUSDT", "ts": t0 + i * 60_000, "open": 100.0 + i, "high": 101.5 + i}
                | {"low": 99.5 + i, "close": 100.5 + i, "volume": 10.0}
                for i in range(30)
            ],
        )
        c.execute(
            sa.insert(schema.models),
            {
                "model_id": MODEL_ID,
                "created_at": t0,
                "algo": "lgbm",
                "feature_schema_version": 1,
                "label_spec_hash": "abc",
                "train_start": t0 - 86_400_000,
                "train_end": t0,
                "metrics": {},
                "artifact_uri": "file:///nowhere",
            },
        )
        c.execute(
            sa.insert(schema.premium_index),
            [{"symbol": "BTCUSDT", "ts": t0 + i * 60_000, "mark_price": 100.4 + i} for i in range(30)],
        )
        signal = {"model_id": MODEL_ID, "er_long": None, "er_short": None, "explain": {"cost": 0.1}}
        signal |= {"q05_long": None, "e_mae_long": None}
        c.execute(
            sa.insert(schema.signals),
            [
                signal
                | {"symbol": "BTCUSDT", "ts": now_ms - 60_000, "ev_long": 0.42, "ev_short": -0.3}
                | {"er_long": 0.45, "er_short": -0.28, "q05_long": -0.021, "e_mae_long": 0.0137}
                | {"explain": {"cost": 0.1, "contributions": CONTRIBUTIONS}}
                | {"decision": "LONG", "block_reason_codes": [], "sl_price": 95.0, "tp_price": 140.0},
                signal
                | {"symbol": "ETHUSDT", "ts": now_ms - 60_000, "ev_long": -0.12, "ev_short": -0.2}
                | {"decision": "FLAT", "block_reason_codes": ["EV_BELOW_MIN", "SPREAD_TOO_WIDE"]}
                | {"sl_price": None, "tp_price": None},
            ],
        )
        c.execute(
            sa.insert(schema.positions),
            {
                "trade_group_id": "tg-btc-1",
                "symbol": "BTCUSDT",
                "ts": t0 + 10 * 60_000,
                "side": "LONG",
                "event_type": "entry",
                "amt": 0.5,
                "entry_price": 110.25,
                "mark_price": 129.0,
                "leverage": 3,
                "liquidation_price": 74.5,
                "notional": 55.0,
                "sl_price": 95.0,
                "tp_price": 140.0,
            },
        )
        order = {"symbol": "BTCUSDT", "reduce_only": False, "created_at": t0, "updated_at": t0}
        c.execute(
            sa.insert(schema.orders),
            order
            | {"order_id": 7001, "client_order_id": "rt-entry-1", "side": "BUY", "type": "MARKET"}
            | {"status": "FILLED", "qty": 0.5, "filled_qty": 0.5, "avg_price": 110.25},
        )
        c.execute(
            sa.insert(schema.algo_orders),
            order
            | {"algo_id": 9001, "client_algo_id": "rt-sl-1", "type": "STOP_MARKET", "side": "SELL"}
            | {"status": "NEW", "qty": 0.5, "trigger_price": 95.0, "reduce_only": True},
        )
        c.execute(
            sa.insert(schema.risk_events),
            {
                "ts": t0,
                "event_type": "protection_failed",
                "symbol": "SOLUSDT",
                "severity": 3,
                "message": "stop rejected; flattened",
            },
        )
        c.execute(
            sa.insert(schema.training_jobs),
            {"job_id": uuid.uuid4().hex, "kind": "train", "created_at": t0, "status": "running"}
            | {"progress": 0.4, "config": {}},
        )
        c.execute(
            sa.insert(schema.drift_metrics),
            {"symbol": "BTCUSDT", "ts": t0, "schema_version": 1, "psi": 0.07, "missing_rate": 0.0},
        )
    return now_ms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    token: str = field(repr=False)  # never in a failure's output
    bus: Bus | None  # the bus behind /ws; None: the app has no WebSocket, the pages poll
    now_ms: int = 0  # the minute the database was seeded around


@pytest.fixture
def server(engine: sa.Engine, db_url: str, tmp_path: Path, live: str) -> Iterator[Server]:
    """The API app with the dashboard pages (and /ws on an in-process bus) on a free loopback port."""
    now_ms = _seed(engine)
    config = ApiConfig(
        database_url=db_url,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        data_dir=tmp_path / "data",
        token_file=tmp_path / "api.token",
    )
    token = ensure_token(config.token_file)
    bus: Bus | None = InProcessBus() if live == "websocket" else None
    routers = [pages_router()]
    if bus is not None:
        routers.append(ws_router(bus, compare_tokens(token), heartbeat_s=5.0, read_block_ms=100))
    app = create_app(config, routers=routers)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", token, bus, now_ms)
    finally:
        uv.should_exit = True
        thread.join(10)
        if bus is not None:
            bus.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium through chromium-driver (explicit paths: no driver download)."""
    with chromium() as driver:
        yield driver


_text_in = text_in
_click_and_confirm = click_and_confirm


def _missing(server: Server, path: str) -> bool:
    """Whether this app lacks the endpoint (404): routers other helpers build are wired later."""
    answer = httpx.get(server.base + path, headers={"Authorization": f"Bearer {server.token}"}, timeout=10)
    return answer.status_code == 404


def _killswitch_rows(engine: sa.Engine) -> list[Any]:
    e = schema.events.c
    query = sa.select(e.kind, e.payload).where(e.kind.startswith("killswitch.")).order_by(e.id)
    with engine.connect() as c:
        return list(c.execute(query))


@pytest.mark.parametrize("live", ["websocket", "polling"])
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_dashboard_pages_show_state_update_live_and_kill_resume(
    server: Server, browser: webdriver.Chrome, engine: sa.Engine, tmp_path: Path, live: str
) -> None:
    base, token = server.base, server.token
    shots = tmp_path / "screenshots"
    shots.mkdir()
    allowed = ("/ws' failed",) if live == "polling" else ()  # an app without /ws refuses the upgrade

    # First load carries the token; the page keeps it in sessionStorage and drops it from the URL.
    browser.get(f"{base}/dashboard?token={token}")
    _text_in(browser, "health-state", "ok")
    _text_in(browser, "killswitch-state", "off")
    _text_in(browser, "drift-state", "psi 0.07")
    _text_in(browser, "top-signals", "ETHUSDT")
    _text_in(browser, "live-state", "websocket" if live == "websocket" else "polling")
    assert "token" not in browser.current_url
    assert token not in browser.page_source
    # trading, account and promotions are other routers: without them the page says so and goes on
    if _missing(server, "/api/trading"):
        _text_in(browser, "trading-state", "not available")
    if _missing(server, "/api/account"):
        _text_in(browser, "account", "account: not available")
    if _missing(server, "/api/models/promotions"):
        _text_in(browser, "promotion-banner", "not available")
    WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_element(By.ID, "trading-state").text not in ("", "…"), "no trading state shown"
    )
    assert console_errors(browser, allowed) == []

    expected = {
        "dashboard": ("top-signals", "SPREAD_TOO_WIDE"),
        "signals": ("signals-table", "EV_BELOW_MIN"),
        "positions": ("positions-table", "110.25"),
        "orders": ("orders-open", "STOP_MARKET"),
        "training": ("jobs-table", "running"),
        "risk": ("risk-state", "stop rejected; flattened"),
        "data-quality": ("drift-table", "BTCUSDT"),
        "settings": ("settings-view", "127.0.0.1"),
    }
    for name, (path, _title) in PAGES.items():
        element_id, text = expected[name]
        browser.get(base + path)
        _text_in(browser, element_id, text)
        if name == "training":
            _text_in(browser, "models-table", "no model")
        browser.save_screenshot(str(shots / f"{name}.png"))

    # Symbol page: the chart's lines come from the series endpoint (entry, SL, TP, liquidation) and the
    # open position (mark).
    browser.get(f"{base}/symbol/BTCUSDT")
    for text in ("entry", "sl", "tp", "liquidation", "74.5", "mark", "129", "stop"):
        _text_in(browser, "price-lines", text)
    _text_in(browser, "symbol-orders", "STOP_MARKET")
    # the open trade's stop is the active stop; it risks 0.5 × (110.25 − 95) = 7.625 USDT
    _text_in(browser, "active-stop", "active stop 95")
    _text_in(browser, "active-stop", "risk 7.625 USDT = 13.83 %")
    _text_in(browser, "risk-table", "7.625")
    for text in ("er_long", "0.4500", "q05_long", "-0.02100", "e_mae_long", "0.01370"):
        _text_in(browser, "series-latest", text)
    _text_in(browser, "explain", "ret_15m")
    WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#price-plot .main-svg"), "price chart not drawn"
    )
    WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tail-plot .scatterlayer .trace")) == 4,
        "q05 / expected MAE chart not drawn",
    )
    last = browser.execute_script("return document.getElementById('price-plot').data[0].type;")
    assert last == "candlestick"
    click(browser, "price-mark")
    WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
        lambda d: d.execute_script("const p = document.getElementById('price-plot');"
                                   "return p && p.data && p.data[0].name === 'mark' && p.data[0].y.length;") == 30,
        "the mark toggle did not draw the 30 stored marks",
    )  # fmt: skip
    assert console_errors(browser, allowed) == []
    browser.save_screenshot(str(shots / "symbol.png"))

    # A new signal appears on the open signals page without a reload.
    browser.get(f"{base}/signals")
    _text_in(browser, "signals-table", "ETHUSDT")
    browser.execute_script("window.__same_page = true;")
    assert not browser.find_elements(By.ID, "signal-SOLUSDT")
    with engine.begin() as c:
        c.execute(
            sa.insert(schema.signals),
            {
                "symbol": "SOLUSDT",
                "ts": server.now_ms,
                "model_id": MODEL_ID,
                "ev_long": -0.05,
                "ev_short": -0.07,
            }
            | {"decision": "FLAT", "block_reason_codes": ["FUNDING_EXTREME"], "explain": {}},
        )
    if server.bus is not None:  # the page polls no more: only the bus message makes it refresh
        signal = SignalNew(symbol="SOLUSDT", ts_ms=server.now_ms, decision="FLAT", ev_long=-0.05, ev_short=-0.07,
                           model_version="1", block_reasons=["FUNDING_EXTREME"])  # fmt: skip
        server.bus.publish(Topic.SIGNALS_NEW, signal)
    _text_in(browser, "signals-table", "FUNDING_EXTREME")
    assert browser.execute_script("return window.__same_page === true;"), "the page was reloaded"

    # The drawer says why a symbol did not enter, and shows the stored top features per target.
    browser.find_element(By.CSS_SELECTOR, "#signal-BTCUSDT td:nth-child(3)").click()
    for text in ("er_long", "ret_15m", "0.003100", "funding_z", "-0.001200", "q05_long", "atr_pct"):
        _text_in(browser, "contributions", text)
    browser.find_element(By.CSS_SELECTOR, "#signal-ETHUSDT td:nth-child(3)").click()
    _text_in(browser, "signal-drawer", "ETHUSDT blocked")
    _text_in(browser, "signal-drawer", "SPREAD_TOO_WIDE")
    # without stored contributions: the button asks the on-demand endpoint (not in this app: its 404)
    _text_in(browser, "signal-drawer", "not stored for this signal")
    click(browser, "explain-button")
    _text_in(browser, "explain-error", "not available: Not Found")
    assert console_errors(browser, allowed) == []

    # Kill through the header button, then resume; each asks for confirmation, and "no" sends nothing.
    click(browser, "kill-close-button")
    WebDriverWait(browser, WAIT_S).until(ec.alert_is_present()).dismiss()
    assert _killswitch_rows(engine) == []
    _click_and_confirm(browser, "kill-button")
    _text_in(browser, "killswitch-state", "ACTIVE")
    _text_in(browser, "action-result", "kill switch ACTIVE")
    rows = _killswitch_rows(engine)
    assert rows and rows[-1].payload["state"]["active"] is True
    browser.save_screenshot(str(shots / "killed.png"))

    _click_and_confirm(browser, "resume-button")
    _text_in(browser, "killswitch-state", "off")
    _text_in(browser, "action-result", "kill switch off")
    after = _killswitch_rows(engine)
    assert len(after) > len(rows) and after[-1].payload["state"]["active"] is False

    # Stop entries asks first; this app has no trading router, and the page says so.
    _click_and_confirm(browser, "stop-entries-button")
    if _missing(server, "/api/trading"):
        _text_in(browser, "action-result", "Stop entries: not available on this server")
    else:
        _text_in(browser, "action-result", "Stop entries: trading entries stopped")

    # Enqueue a job from the training page; a double click sends one request.
    browser.get(f"{base}/training")
    _text_in(browser, "jobs-table", "running")
    Select(browser.find_element(By.ID, "job-kind")).select_by_value("label")
    browser.execute_script(
        "window.confirm = () => true;"
        "const b = document.getElementById('enqueue-button'); b.click(); b.click();"
    )
    _text_in(browser, "action-result", "queued job")
    _text_in(browser, "jobs-table", "label")
    with engine.connect() as c:
        kinds = sorted(c.execute(sa.select(schema.training_jobs.c.kind)).scalars())
    assert kinds == ["label", "train"]
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        [*(f"{n}.png" for n in PAGES), "symbol.png", "killed.png"]
    )
