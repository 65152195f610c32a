"""The RL agent on the Training & models page (spec 001 §25.6) in a real headless Chromium against the
real API app over a seeded SQLite database and a real MLflow registry.

Two RL versions are registered as train-rl leaves them (a checkpoint folder, run metrics,
``evaluation.json``): v1 passes the §25.7 gates, v2 fails max drawdown; both have decisions. The page
shows the models table (metrics, gates, production badge), the action distribution chart and the
24 h stats, and the decisions with their probability bars. Promote asks first (dismissed: nothing sent),
a double click sends one request; v2 is refused with its failed gate, then promoted with an override
reason typed into the prompt; the events and the production flag agree. With the RL endpoints
answering 404 the page says "not available" and the rest of it goes on. Screenshots under tmp_path.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from browser_fixtures import RERENDERED, chromium, click, click_and_confirm, console_errors, text_in
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from serve.api.app import ApiConfig, create_app
from serve.api.auth import ensure_token
from serve.api.pages import pages_router
from storage import schema

WAIT_S = 15
RL_NAME = "raytrade-lgbm-rl"
NAMES = ("HOLD", "LONG", "SHORT", "CLOSE")
SPREAD = {"HOLD": 500, "LONG": 200, "SHORT": 200, "CLOSE": 100}
MIN = 60_000
NO_WS = "/ws' failed"  # this app has no /ws: the page polls


def _evaluation(max_drawdown: float) -> dict:
    rl = {"trades": 40.0, "profit_factor": 1.6, "win_rate": 0.55, "sharpe": 2.1, "max_drawdown": max_drawdown,
          "actions_chosen": SPREAD}  # fmt: skip
    return {"rl": rl, "supervised": {"profit_factor": 1.1}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _register(engine: sa.Engine, config: ApiConfig, tmp_path: Path) -> dict[str, str]:
    """v1 (gates pass) and v2 (max DD 20%) in the registry and ``rl_models``, with decisions."""
    from rl_fixtures import make_checkpoint

    from storage.registry import ModelRegistry
    from storage.rl_registry import register_rl_checkpoint

    now = int(time.time() * 1000) // MIN * MIN
    folder = make_checkpoint(tmp_path / "ckpt", seed=1)
    registry = ModelRegistry(config.tracking_uri, artifact_root=config.data_dir / "mlartifacts")
    with engine.begin() as c:
        c.execute(
            sa.insert(schema.instruments), [{"symbol": s, "created_at": now} for s in ("BTCUSDT", "ETHUSDT")]
        )
    ids = {}
    for key, mdd in (("v1", 0.04), ("v2", 0.2)):
        metrics = {"eval_profit_factor": 1.6, "eval_sharpe": 2.1, "eval_max_drawdown": mdd, "eval_win_rate": 0.55,
                   "gates_passed": float(mdd < 0.1)}  # fmt: skip
        v = register_rl_checkpoint(registry, RL_NAME, folder, symbol="BTCUSDT", train_start_ms=now - 90 * 1440 * MIN,
                                   train_end_ms=now - 7 * 1440 * MIN, metrics=metrics, engine=engine)  # fmt: skip
        registry.log_run_json(RL_NAME, v.version, "evaluation.json", _evaluation(mdd))
        ids[key] = v.model_id
    rows = []
    plan = [("v1", "BTCUSDT", 1, True, 4.5), ("v1", "BTCUSDT", 0, False, None), ("v1", "BTCUSDT", 3, True, -1.25),
            ("v2", "ETHUSDT", 2, True, 2.0), ("v2", "ETHUSDT", 2, False, None)]  # fmt: skip
    for i, (key, sym, action, executed, pnl) in enumerate(plan):
        probs = dict.fromkeys(NAMES, 0.1) | {NAMES[action]: 0.7}
        rows.append({"ts": now - (10 - i) * MIN, "symbol": sym, "model_id": ids[key], "action": action,
                     "action_name": NAMES[action], "confidence": 0.7, "action_probs": probs, "value_estimate": 0.25 + i,
                     "model_predictions": {}, "position_before": 0.0, "position_after": 1.0 if executed else 0.0,
                     "executed": executed, "pnl_result": pnl, "created_at": now})  # fmt: skip
    with engine.begin() as c:
        c.execute(sa.insert(schema.rl_decisions), rows)
    return ids


@pytest.fixture
def server(
    engine: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str, dict[str, str]]]:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config = ApiConfig(database_url=db_url, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                       data_dir=tmp_path / "data", token_file=tmp_path / "api.token")  # fmt: skip
    ids = _register(engine, config, tmp_path)
    token = ensure_token(config.token_file)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(config, routers=[pages_router()]), host="127.0.0.1", port=port,
                                       log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", token, ids
    finally:
        uv.should_exit = True
        thread.join(10)


def _events(engine: sa.Engine) -> list[tuple[str, dict]]:
    e = schema.events.c
    with engine.connect() as c:
        rows = c.execute(sa.select(e.kind, e.payload).where(e.kind.like("rl_model.%")).order_by(e.id)).all()
    return [(k, p if isinstance(p, dict) else json.loads(p)) for k, p in rows]


def _production(engine: sa.Engine) -> set[str]:
    with engine.connect() as c:
        q = sa.select(schema.rl_models.c.model_id).where(schema.rl_models.c.is_production)
        return set(c.execute(q).scalars())


def _promote_requests(browser: webdriver.Chrome) -> int:
    return int(browser.execute_script(
        "return performance.getEntriesByType('resource').filter((e) => /\\/api\\/rl\\/models\\/.+\\/promote/.test(e.name)).length;"
    ))  # fmt: skip


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_rl_section_shows_models_actions_decisions_and_promotes(
    server, engine: sa.Engine, tmp_path: Path
) -> None:
    base, token, ids = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    t0 = time.monotonic()
    with chromium("1400,2000") as browser:
        browser.get(f"{base}/training?token={token}")
        for text in (f"{RL_NAME} v1", f"{RL_NAME} v2", "BTCUSDT", "1.600", "2.100", "4.0 %", "20.0 %", "passed (train)",
                     "failed (train)"):  # fmt: skip
            text_in(browser, "rl-models-table", text)
        assert browser.find_element(By.ID, f"rl-model-{ids['v1']}").text.count("production") == 0
        for text in ("LONG", "CLOSE", "SHORT", "70.0 %", "4.500", "-1.250", "ETHUSDT"):
            text_in(browser, "rl-decisions-table", text)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#rl-decisions-table .probs")) == 5
        widths = browser.execute_script(
            "return [...document.querySelectorAll('#rl-decisions-table tbody tr:first-child .prob')].map((p) => p.style.width);"
        )  # newest first: v2's second SHORT
        assert widths == ["10%", "10%", "70%", "10%"]
        WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
            lambda d: d.execute_script("const p = document.getElementById('rl-actions-plot');"
                                       "return p && p.data ? p.data.length : 0;") == 2,
            "the action distribution chart has no trace per model",
        )  # fmt: skip
        shares = browser.execute_script(
            "return document.getElementById('rl-actions-plot').data.map((t) => [t.name, t.y]);"
        )
        assert sorted(shares) == sorted(
            [[f"{RL_NAME} v1", [1 / 3, 1 / 3, 0, 1 / 3]], [f"{RL_NAME} v2", [0, 0, 1, 0]]]
        )
        text_in(browser, "rl-stats-24h", f"{RL_NAME} v2")
        assert console_errors(browser, (NO_WS,)) == []
        browser.save_screenshot(str(shots / "rl-section.png"))
        print(f"\nRL section rendered in {time.monotonic() - t0:.1f} s")

        # Promote asks first: "no" sends nothing.
        click(browser, f"rl-promote-{ids['v2']}")
        WebDriverWait(browser, WAIT_S).until(ec.alert_is_present()).dismiss()
        time.sleep(0.3)
        assert _promote_requests(browser) == 0 and _events(engine) == []

        # v2 fails the max drawdown gate: refused, shown, one request, nothing moves.
        click_and_confirm(browser, f"rl-promote-{ids['v2']}")
        text_in(browser, "action-result", "refused: gates failed: max_drawdown")
        text_in(browser, "rl-models-table", "failed: max_drawdown")
        assert _promote_requests(browser) == 1
        assert [k for k, _ in _events(engine)] == ["rl_model.refused"] and _production(engine) == set()
        browser.save_screenshot(str(shots / "rl-refused.png"))

        # Override… asks for the reason (recorded); promoted with it.
        click(browser, f"rl-override-{ids['v2']}")
        prompt = WebDriverWait(browser, WAIT_S).until(ec.alert_is_present())
        prompt.send_keys("shadow week was fine")
        prompt.accept()
        text_in(browser, "action-result", "with override by dashboard (shadow week was fine)")
        WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
            lambda d: "production" in d.find_element(By.ID, f"rl-model-{ids['v2']}").text,
            "no production badge on v2",
        )
        kinds = _events(engine)
        assert [k for k, _ in kinds] == ["rl_model.refused", "rl_model.promoted"]
        assert kinds[-1][1]["override"] == "shadow week was fine" and kinds[-1][1]["actor"] == "dashboard"
        assert _production(engine) == {ids["v2"]}

        # A double click on v1's Promote sends one request; v1 passes and becomes production.
        browser.execute_script(
            "window.confirm = () => true;"
            f"const b = document.getElementById('rl-promote-{ids['v1']}'); b.click(); b.click();"
        )
        text_in(browser, "action-result", f"{RL_NAME} v1 is production, all gates passed")
        WebDriverWait(browser, WAIT_S, ignored_exceptions=RERENDERED).until(
            lambda d: "production" in d.find_element(By.ID, f"rl-model-{ids['v1']}").text,
            "no production badge on v1",
        )
        assert _promote_requests(browser) == 3
        assert [k for k, _ in _events(engine)] == [
            "rl_model.refused",
            "rl_model.promoted",
            "rl_model.promoted",
        ]
        assert _production(engine) == {ids["v1"]}
        assert (
            console_errors(browser, ("/promote",)) == []
        )  # the 409 of the refusal is logged as a failed request
        browser.save_screenshot(str(shots / "rl-promoted.png"))

        # The RL endpoints gone (404): the sections say so, the rest of the page goes on.
        browser.execute_script(
            "const real = window.fetch; window.fetch = (path, opts) => String(path).startsWith('/api/rl/')"
            ' ? Promise.resolve(new Response(\'{"detail":"Not Found"}\', {status: 404})) : real(path, opts);'
        )
        text_in(browser, "rl-models", "RL models: not available")
        text_in(browser, "rl-decisions", "RL decisions: not available")
        text_in(browser, "jobs-table", "no job")
        text_in(browser, "models-table", "no model")  # the RL name is in the RL section only
        browser.save_screenshot(str(shots / "rl-not-available.png"))
    assert sorted(p.name for p in shots.iterdir()) == [
        "rl-not-available.png", "rl-promoted.png", "rl-refused.png", "rl-section.png"]  # fmt: skip
    print(f"RL dashboard test: {time.monotonic() - t0:.1f} s in the browser")
