"""The API as a Ray Serve ingress (``serve.ingress``, what ``raytrade serve`` and ``raytrade run`` start with
``api_server="serve"``; tests/integration/test_api_server.py covers the default, uvicorn in a Ray actor):
Serve's HTTP proxy on 127.0.0.1, the FastAPI app in a Serve replica, the Predictor behind ``/predict``
through its deployment handle, the dashboard pages — real HTTP requests against all of it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from model_fixtures import SHADOW_MODEL, install_production_model

from core.features_schema import FEATURE_NAMES
from raytrade.cmd_serve import api_config, start_api
from raytrade.settings import Settings
from serve.api.auth import read_token

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
T0 = 1_736_121_600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    from ray import serve

    settings = Settings(
        _env_file=None, data_dir=tmp_path_factory.mktemp("api"), api_port=free_port(), api_server="serve"
    )
    install_production_model(settings, T0)
    serve.shutdown()  # Serve's HTTP options are fixed at its start: an earlier module may have started it without
    try:
        api = start_api(settings, SHADOW_MODEL)
        assert api.actor is None  # Serve's proxy, not the uvicorn actor
        yield api.url, read_token(api_config(settings).token_file)
    finally:
        serve.shutdown()


def test_the_api_answers_over_serves_http_proxy_on_loopback_with_token_auth(api: tuple[str, str]) -> None:
    url, token = api
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(f"{url}/api/health", timeout=30).status_code == 200
    assert requests.get(f"{url}/api/status", timeout=30).status_code == 401
    ok = requests.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 200 and token not in ok.text
    assert "/api/signals/latest" in requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]


def test_predict_over_http_goes_through_the_predictor_and_names_the_model_version(
    api: tuple[str, str],
) -> None:
    url, token = api
    rows = np.random.default_rng(3).normal(size=(50, len(FEATURE_NAMES)))
    answer = requests.post(f"{url}/predict", json={"rows": rows.tolist()},
                           headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "1"
    assert all(len(v) == 50 for v in body["predictions"].values()) and body["predictions"]


def test_the_dashboard_page_is_served_by_the_same_app(api: tuple[str, str], tmp_path: Path) -> None:
    url, _ = api
    page = requests.get(f"{url}/dashboard", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert requests.get(f"{url}/static/plotly.min.js", timeout=30).status_code == 200
