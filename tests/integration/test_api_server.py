"""The API under uvicorn in one Ray actor (``serve.api_server``; ``Settings.api_server="uvicorn-actor"``,
the default of ``raytrade serve`` and ``raytrade run``): real HTTP and WebSocket on loopback against
the actor, token auth, a bus message reaching a ``/ws`` subscriber over a real Redis, ``/predict``
through the Serve Predictor's handle, and a stop that frees the port."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import websockets.sync.client as wsc
from model_fixtures import SHADOW_MODEL, install_production_model

from core.features_schema import FEATURE_NAMES
from core.messages import SystemStatus, Topic
from raytrade.cmd_serve import RunningApi, api_config, start_api
from raytrade.settings import Settings
from serve.api.auth import read_token
from storage.bus import open_bus

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.usefixtures("ray_session")]
T0 = 1_736_121_600_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) of the sockets listening on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                out.append(address)
    return out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[dict[str, Any]]:
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("api"), api_port=free_port(),
                        redis_url=redis_url)  # fmt: skip
    assert settings.api_server == "uvicorn-actor"  # the default
    install_production_model(settings, T0)
    running = start_api(settings, SHADOW_MODEL)
    try:
        yield {"running": running, "settings": settings, "token": read_token(api_config(settings).token_file),
               "redis_url": redis_url}  # fmt: skip
    finally:
        running.stop()


def test_rest_answers_on_loopback_with_the_token_and_401_without(api: dict[str, Any]) -> None:
    running: RunningApi = api["running"]
    url, token = running.url, api["token"]
    assert running.actor is not None and url == f"http://127.0.0.1:{api['settings'].api_port}"
    assert requests.get(f"{url}/api/health", timeout=30).status_code == 200
    assert requests.get(f"{url}/api/status", timeout=30).status_code == 401
    assert (
        requests.get(f"{url}/api/status", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code
        == 401
    )
    ok = requests.get(f"{url}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert ok.status_code == 200 and token not in ok.text
    assert "/api/signals/latest" in requests.get(f"{url}/openapi.json", timeout=30).json()["paths"]
    assert requests.get(f"{url}/dashboard", timeout=30).status_code == 200
    # loopback only: the listening socket of this port is 127.0.0.1's, on no other address
    assert listeners(api["settings"].api_port) == ["0100007F"]


def test_a_bus_message_reaches_a_ws_subscriber(api: dict[str, Any]) -> None:
    url, token = api["running"].url.replace("http://", "ws://"), api["token"]
    with wsc.connect(f"{url}/ws", open_timeout=30, close_timeout=5) as ws:
        ws.send(json.dumps({"op": "auth", "token": token}))
        assert json.loads(ws.recv(timeout=30))["op"] == "ready"
        ws.send(json.dumps({"op": "subscribe", "channels": ["status_updates"]}))
        while json.loads(ws.recv(timeout=30)).get("op") != "subscribed":
            pass
        with open_bus(api["redis_url"]) as bus:
            bus.publish(Topic.SYSTEM_STATUS, SystemStatus(ts_ms=int(time.time() * 1000), component="h11-probe", ok=True,
                                                          details={"n": 1}))  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=30))
            if msg.get("channel") == "status_updates" and msg["data"]["component"] == "h11-probe":
                break
        else:
            pytest.fail("the bus message did not arrive over /ws")
    with wsc.connect(f"{url}/ws", open_timeout=30, close_timeout=5) as ws:  # a wrong token is refused
        ws.send(json.dumps({"op": "auth", "token": "wrong"}))
        with pytest.raises(Exception, match="4401"):
            ws.recv(timeout=30)


def test_predict_goes_through_the_predictor_handle(api: dict[str, Any]) -> None:
    url, token = api["running"].url, api["token"]
    rows = np.random.default_rng(3).normal(size=(50, len(FEATURE_NAMES)))
    answer = requests.post(f"{url}/predict", json={"rows": rows.tolist()},
                           headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "1"
    assert body["predictions"] and all(len(v) == 50 for v in body["predictions"].values())
    assert requests.post(f"{url}/predict", json={"rows": rows.tolist()}, timeout=30).status_code == 401


def test_a_port_in_use_is_an_error_naming_it_and_stop_frees_the_port(
    api: dict[str, Any], tmp_path: Any
) -> None:
    from serve.api_server import start_api_server, stop_api_server

    config = api_config(api["settings"])
    with pytest.raises(OSError, match=f"127.0.0.1:{api['settings'].api_port}"):
        start_api_server(config, api["settings"].api_port, name="h11-busy")
    port = free_port()
    actor, url = start_api_server(config, port, name="h11-second")
    assert requests.get(f"{url}/api/health", timeout=30).status_code == 200 and not port_is_free(port)
    with wsc.connect(
        url.replace("http://", "ws://") + "/ws", open_timeout=30
    ) as ws:  # an open socket does not hold the stop
        ws.send(json.dumps({"op": "auth", "token": api["token"]}))
        assert json.loads(ws.recv(timeout=30))["op"] == "ready"
        t = time.perf_counter()
        stop_api_server(actor)
        assert time.perf_counter() - t < 20
    assert port_is_free(port)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/health", timeout=5)


def test_state_reads_are_replayed_for_the_ttl_per_token_and_a_mutation_clears_them(
    api: dict[str, Any],
) -> None:
    from serve.api_server import start_api_server, stop_api_server

    token = api["token"]
    auth = {"Authorization": f"Bearer {token}"}
    actor, url = start_api_server(
        api_config(api["settings"]), free_port(), name="h11-cache", cache_ttl_s=60.0
    )
    try:
        first = requests.get(f"{url}/api/status", headers=auth, timeout=30)
        time.sleep(0.05)
        again = requests.get(f"{url}/api/status", headers=auth, timeout=30)
        assert first.status_code == again.status_code == 200
        assert first.text == again.text and first.json()["kill_switch_active"] is False  # replayed
        # another token, or none, is never answered from that entry
        assert (
            requests.get(f"{url}/api/status", headers={"Authorization": "Bearer x"}, timeout=30).status_code
            == 401
        )
        assert requests.get(f"{url}/api/status", timeout=30).status_code == 401
        kill = requests.post(f"{url}/api/killswitch", json={"active": True, "reason": "h11 cache test"},
                             headers=auth | {"Idempotency-Key": "h11-kill-1"}, timeout=30)  # fmt: skip
        assert kill.status_code == 200, kill.text
        after = requests.get(f"{url}/api/status", headers=auth, timeout=30).json()
        assert after["kill_switch_active"] is True  # the mutation cleared the cache
        resume = requests.post(f"{url}/api/killswitch", json={"active": False, "reason": "h11 cache test"},
                               headers=auth | {"Idempotency-Key": "h11-resume-1"}, timeout=30)  # fmt: skip
        assert resume.status_code == 200, resume.text
        assert (
            requests.get(f"{url}/api/status", headers=auth, timeout=30).json()["kill_switch_active"] is False
        )
    finally:
        stop_api_server(actor)
