"""The dashboard in Debian's headless Chromium against a running shadow replay: ``ShadowSession`` with
``ShadowOptions(api=True)`` deploys the API behind Ray Serve's HTTP proxy on loopback, the replay venue
plays 10 minutes of a synthetic market over about 40 s, and the browser watches it.

Every one of the nine pages loads with no script error in the console; values update live over the
WebSocket (the overview's newest-signal time moves on, no reload); a kill from the header (confirm
dialog) shows the kill switch active as the API reports it, and a resume clears it; where the app has
the trading controls, a double click on "Stop entries" sends one request and "Start" resumes. A
screenshot of each page is saved under the test's temporary folder (the path is printed; the token never).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from browser_fixtures import RERENDERED, chromium, click, click_and_confirm, console_errors, text_in
from model_fixtures import SHADOW_MODEL, install_production_model
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.synthetic import generate_market
from pipelines.market import write_synthetic_market
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from serve.api.auth import read_token
from serve.api.pages import PAGES
from storage.lake import Lake

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
T0 = 1_736_121_600_000  # 2025-01-06 00:00 UTC
MINUTE = 60_000
HISTORY = 600
REPLAY = 10
START = T0 + HISTORY * MINUTE
END = START + REPLAY * MINUTE
SPEED = REPLAY * MINUTE / 40_000  # venue ms per wall ms: the 10 minutes over 40 s
#: Waits for what the API replica answers: generous, as the 2 cores are shared by the whole session.
SLOW_S = 45
see = partial(text_in, wait_s=SLOW_S)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base: str
    token: str = field(repr=False)  # never in a failure's output
    session: ShadowSession = field(repr=False)

    def status(self, path: str) -> int:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.get(self.base + path, headers=headers, timeout=30).status_code

    def get(self, path: str) -> Any:
        answer = requests.get(self.base + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        assert answer.status_code == 200, f"{path}: {answer.status_code}"
        return answer.json()


@pytest.fixture
def live(tmp_path: Path, redis_url: str) -> Iterator[Live]:
    """A shadow replay of three symbols with the API and dashboard on a free loopback port."""
    from ray import serve

    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", universe=SYMBOLS, ray_num_cpus=2, redis_url=redis_url,
        api_port=free_port(), label=LabelSpec(k_sl=0.35, k_tp=0.5, risk_mae_atr=0.5),
        policy=PolicyConfig(max_positions=50, position_notional_pct=0.05, btc_high_vol_action="none"),
        risk=RiskConfig(max_positions=50, max_orders_per_s=100),
    )  # fmt: skip
    market = generate_market(list(SYMBOLS), T0, HISTORY + REPLAY + 5, seed=21)
    write_synthetic_market(market, Lake(settings.lake_root))
    install_production_model(settings, T0)
    serve.shutdown()  # Serve's HTTP options are fixed at its start: an earlier module may have started it without
    options = ShadowOptions(symbols=SYMBOLS, model_name=SHADOW_MODEL, group_size=len(SYMBOLS), start_ms=START,
                            end_ms=END, speed=SPEED, mark_ticks_per_minute=6, predictor_poll_s=0.0, api=True,
                            session_id="shadow-dashboard")  # fmt: skip
    session = ShadowSession(settings, options)
    try:
        session.start()
        assert session.api_url is not None
        token = read_token(settings.data_dir.resolve() / "api_token")
        live = Live(session.api_url, token, session)
        # The API replica opens the MLflow registry at its first models request, seconds on a loaded
        # machine, while holding one of the Api deployment's few request slots (Serve's default
        # max_ongoing_requests, 5, which every open WebSocket also takes): open it before the browser.
        for path in ("/api/models", "/api/models/promotions"):
            t = time.monotonic()
            live.get(path)
            print(f"warm {path}: {time.monotonic() - t:.1f} s")
        yield live
        session.stop()  # the pages were checked: the rest of the replay is not waited for
    finally:
        session.shutdown()
        serve.shutdown()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


#: page -> (element id, a text it shows once the page has rendered the replay's state)
EXPECTED = {
    "dashboard": ("top-signals", "USDT"),
    "signals": ("signals-table", "USDT"),
    "positions": ("pnl", "net"),
    "orders": ("orders-open", ""),
    "training": ("models-table", SHADOW_MODEL),
    "risk": ("risk-state", "active"),
    "data-quality": ("dq-summary", "BTCUSDT"),
    "settings": ("settings-view", "127.0.0.1"),
}


def rendered(driver: webdriver.Chrome) -> int:
    """The time the page's script last finished a refresh (0: not yet)."""
    return int(driver.execute_script("return Number(document.body.dataset.refreshedMs || 0);"))


def wait_rendered(driver: webdriver.Chrome, path: str) -> None:
    try:
        WebDriverWait(driver, SLOW_S, ignored_exceptions=RERENDERED).until(lambda d: rendered(d) > 0)
    except TimeoutException:
        shown = driver.find_element(By.ID, "action-result").text
        done = driver.execute_script(
            "return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/'))"
            ".map((e) => e.name.split('/api/')[1] + ' ' + Math.round(e.duration) + ' ms');"
        )
        raise AssertionError(
            f"{path} never rendered; it shows {shown!r}; requests answered: {done}"
        ) from None


def test_the_dashboard_follows_a_running_shadow_replay_and_kills_and_resumes(
    live: Live, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    started = time.monotonic()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    steps: list[tuple[str, float]] = []

    # The overview over the WebSocket: the newest signal's time moves on without a reload.
    browser.get(f"{live.base}/dashboard?token={live.token}")
    see(browser, "live-state", "websocket")
    assert "token" not in browser.current_url and live.token not in browser.page_source
    browser.execute_script("window.__same_page = true;")
    WebDriverWait(browser, 30, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_element(By.ID, "latest-signal").text not in ("", "–"), "no signal shown"
    )
    seen = [browser.find_element(By.ID, "latest-signal").text]
    for _ in range(2):  # a replayed minute every 4 s
        WebDriverWait(browser, 30, ignored_exceptions=RERENDERED).until(
            lambda d: d.find_element(By.ID, "latest-signal").text != seen[-1],
            "the newest signal never moved on",
        )
        seen.append(browser.find_element(By.ID, "latest-signal").text)
    assert browser.execute_script("return window.__same_page === true;"), "the page was reloaded"
    assert seen == sorted(seen) and len(set(seen)) == 3
    assert live.get("/api/status")["latest_signal_ts_ms"] >= START
    assert console_errors(browser) == []
    browser.save_screenshot(str(shots / "dashboard.png"))
    steps.append(("overview live", time.monotonic() - started))

    # Every page loads and renders the session's state, with no script error.
    for name, (path, _title) in PAGES.items():
        if name == "dashboard":
            continue
        browser.get(live.base + path)
        wait_rendered(browser, path)
        element_id, text = EXPECTED[name]
        see(browser, element_id, text)
        assert "loading…" not in browser.find_element(By.ID, element_id).text
        assert console_errors(browser) == [], path
        browser.save_screenshot(str(shots / f"{name}.png"))
        steps.append((name, time.monotonic() - started))

    # The symbol page of a symbol with an open position if there is one (its lines and active stop).
    open_positions = live.get("/api/positions/latest")["open"]
    symbol = open_positions[0]["symbol"] if open_positions else SYMBOLS[0]
    browser.get(f"{live.base}/symbol/{symbol}")
    WebDriverWait(browser, SLOW_S, ignored_exceptions=RERENDERED).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#price-plot .main-svg")
            and d.find_elements(By.CSS_SELECTOR, "#tail-plot .main-svg")
        ),
        "the symbol's charts were not drawn",
    )
    see(browser, "series-latest", "e_mae_long")
    if open_positions:
        see(browser, "active-stop", "active stop")
        see(browser, "price-lines", "liquidation")
    assert console_errors(browser) == []
    browser.save_screenshot(str(shots / "symbol.png"))
    steps.append(("symbol", time.monotonic() - started))

    # Kill from the header (confirm dialog): the badge and the API agree; then resume, and it clears.
    browser.get(f"{live.base}/risk")
    see(browser, "killswitch-state", "off")
    click_and_confirm(browser, "kill-button")
    see(browser, "killswitch-state", "ACTIVE")
    see(browser, "action-result", "kill switch ACTIVE")
    assert live.get("/api/risk/state")["kill_switch"]["active"] is True
    assert live.get("/api/status")["kill_switch_active"] is True
    browser.save_screenshot(str(shots / "killed.png"))
    steps.append(("kill", time.monotonic() - started))
    click_and_confirm(browser, "resume-button")
    see(browser, "killswitch-state", "off")
    see(browser, "action-result", "kill switch off")
    assert live.get("/api/risk/state")["kill_switch"]["active"] is False
    assert console_errors(browser) == []

    # Trading controls (when the app has them): a double click on "Stop entries" sends one request.
    if live.status("/api/trading") == 200:
        browser.execute_script(
            "window.confirm = () => true;"
            "const b = document.getElementById('stop-entries-button'); b.click(); b.click();"
        )
        see(browser, "trading-state", "entries stopped")
        see(browser, "action-result", "trading entries stopped")
        assert live.get("/api/trading")["state"] == "entries_stopped"
        sent = "return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/api/trading/stop-entries')).length;"
        assert browser.execute_script(sent) == 1
        click(browser, "start-button")
        see(browser, "trading-state", "running")
        assert live.get("/api/trading")["state"] == "running"
        assert console_errors(browser) == []
        steps.append(("trading stop-entries and start", time.monotonic() - started))

    assert sorted(p.name for p in shots.iterdir()) == sorted(
        [*(f"{n}.png" for n in PAGES), "symbol.png", "killed.png"]
    )
    steps.append(("end", time.monotonic() - started))
    print("steps (s since start):", ", ".join(f"{n} {t:.1f}" for n, t in steps))
    print(f"browser part {time.monotonic() - started:.1f} s; screenshots: {shots}")
