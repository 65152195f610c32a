"""WebSocket channel ``account_updates`` and the deletion of a connection's consumer groups
(serve/api/ws.py, ``Bus.delete_group``), on the in-process bus and on a real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from core.errors import FatalError
from core.messages import AccountUpdate, Topic
from serve.api.ws import CHANNELS, compare_tokens, ws_router
from storage.bus import Bus, InProcessBus
from storage.bus_redis import RedisStreamBus

TOKEN = "acct-token"


def _account(equity: float) -> AccountUpdate:
    return AccountUpdate(ts_ms=1_700_000_000_000, source="execution:shadow:s1", mode="shadow", wallet=10_000.0,
                         equity=equity, available=equity - 200.0, unrealized_pnl=equity - 10_000.0,
                         margin_used=200.0, positions=1)  # fmt: skip


@pytest.fixture(params=["in_process", pytest.param("redis", marks=pytest.mark.redis)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "in_process":
        b: Bus = InProcessBus()
        yield b
        b.close()
        return
    url = request.getfixturevalue("redis_url")
    namespace = f"t{uuid.uuid4().hex[:12]}"
    b = RedisStreamBus(url, namespace=namespace)
    yield b
    b.close()
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def _client(bus: Bus) -> TestClient:
    app = FastAPI()
    app.include_router(
        ws_router(bus, compare_tokens(TOKEN), heartbeat_s=0.1, pong_timeout_s=30.0, read_block_ms=100)
    )
    return TestClient(app)


def _next(ws: WebSocketTestSession, deadline_s: float = 5.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        msg = ws.receive_json()
        if msg.get("op") == "ping":
            ws.send_json({"op": "pong", "ts": msg["ts"]})
            continue
        return msg
    raise AssertionError(f"no message within {deadline_s} s")


def _groups(bus: Bus, topic: Topic) -> set[str]:
    """The consumer groups of ``topic`` as the bus itself holds them."""
    if isinstance(bus, RedisStreamBus):
        client = bus._client  # XINFO GROUPS: what Redis holds
        if not client.exists(bus.key(topic)):
            return set()
        return {g["name"].decode() for g in client.xinfo_groups(bus.key(topic))}
    assert isinstance(bus, InProcessBus)
    stream = bus._streams.get(topic)
    return set(stream.groups) if stream else set()


def _wait_for(cond: Any, deadline_s: float = 5.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_account_updates_arrive_on_their_channel(bus: Bus) -> None:
    assert CHANNELS["account_updates"] is Topic.ACCOUNT_UPDATE
    with _client(bus) as client, client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        assert "account_updates" in _next(ws)["channels"]
        ws.send_json({"op": "subscribe", "channels": ["account_updates"]})
        assert _next(ws) == {"op": "subscribed", "channels": ["account_updates"]}
        ids = [bus.publish(Topic.ACCOUNT_UPDATE, _account(10_000.0 + i)) for i in range(2)]
        got = [_next(ws) for _ in ids]
        assert got == [
            {"channel": "account_updates", "id": i, "data": msgspec.to_builtins(_account(10_000.0 + n))}
            for n, i in enumerate(ids)
        ]


def test_a_closed_connection_deletes_its_groups_and_unsubscribe_deletes_at_once(bus: Bus) -> None:
    with _client(bus) as client:
        with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
            _next(ws)
            ws.send_json(
                {"op": "subscribe", "channels": ["account_updates", "signal_updates", "risk_events"]}
            )
            assert _next(ws)["op"] == "subscribed"
            assert len(_groups(bus, Topic.ACCOUNT_UPDATE)) == 1 and len(_groups(bus, Topic.SIGNALS_NEW)) == 1
            ws.send_json({"op": "unsubscribe", "channels": ["signal_updates"]})
            assert _next(ws) == {"op": "unsubscribed", "channels": ["signal_updates"]}
            assert _groups(bus, Topic.SIGNALS_NEW) == set()
            bus.publish(Topic.ACCOUNT_UPDATE, _account(1.0))
            assert _next(ws)["channel"] == "account_updates"
        assert _wait_for(
            lambda: not _groups(bus, Topic.ACCOUNT_UPDATE) and not _groups(bus, Topic.RISK_EVENT)
        )
        # the topic keeps its messages: a later subscriber from the earliest still reads them
        bus.subscribe(Topic.ACCOUNT_UPDATE, "later", "c", start="earliest")
        assert [d.message for d in bus.read(Topic.ACCOUNT_UPDATE, "later", "c")] == [_account(1.0)]


def test_delete_group_contract(bus: Bus) -> None:
    assert bus.delete_group(Topic.ACCOUNT_UPDATE, "never") is False  # no stream yet
    bus.subscribe(Topic.ACCOUNT_UPDATE, "g", "c", start="earliest")
    bus.subscribe(Topic.ACCOUNT_UPDATE, "other", "c", start="earliest")
    bus.publish(Topic.ACCOUNT_UPDATE, _account(2.0))
    assert len(bus.read(Topic.ACCOUNT_UPDATE, "g", "c")) == 1 and bus.pending(Topic.ACCOUNT_UPDATE, "g") == 1
    assert bus.delete_group(Topic.ACCOUNT_UPDATE, "g") is True
    assert bus.delete_group(Topic.ACCOUNT_UPDATE, "g") is False
    with pytest.raises(FatalError, match="does not exist"):
        bus.read(Topic.ACCOUNT_UPDATE, "g", "c")
    assert len(bus.read(Topic.ACCOUNT_UPDATE, "other", "c")) == 1  # other groups are untouched
    bus.subscribe(Topic.ACCOUNT_UPDATE, "g", "c", start="earliest")  # a new group of the same name
    assert bus.pending(Topic.ACCOUNT_UPDATE, "g") == 0 and len(bus.read(Topic.ACCOUNT_UPDATE, "g", "c")) == 1
