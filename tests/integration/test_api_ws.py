"""WebSocket ``/ws`` (serve/api/ws.py) fed from a real bus: in-process and Redis Streams.

Every receive has a deadline: the server pings every 0.1 s, so ``receive_json`` never waits longer
than that while the connection is up, and ``_next`` gives up after its deadline.
"""

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
from message_samples import SAMPLES
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from core.messages import PositionUpdate, RiskEvent, SignalNew, Topic
from serve.api.ws import CHANNELS, CLOSE_HEARTBEAT, CLOSE_UNAUTHORIZED, compare_tokens, ws_router
from storage.bus import Bus, InProcessBus
from storage.bus_redis import RedisStreamBus

TOKEN = "s3cret-token"


def _signal(i: int) -> SignalNew:
    return SignalNew(symbol="BTCUSDT", ts_ms=1_700_000_000_000 + i * 60_000, decision="LONG",
                     ev_long=0.001 * i, ev_short=-0.002, model_version="7", block_reasons=["COOLDOWN"])  # fmt: skip


def _position(qty: float) -> PositionUpdate:
    return PositionUpdate(symbol="ETHUSDT", ts_ms=1_700_000_000_000, qty=qty, entry_price=2000.0,
                          unrealized_pnl=1.5, mark_price=2001.0)  # fmt: skip


@pytest.fixture(params=["in_process", pytest.param("redis", marks=pytest.mark.redis)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """A bus of each kind; on Redis a fresh namespace, deleted afterwards."""
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


def _client(bus: Bus, **kw: Any) -> TestClient:
    kw = {"heartbeat_s": 0.1, "pong_timeout_s": 30.0, "read_block_ms": 200} | kw
    app = FastAPI()
    app.include_router(ws_router(bus, compare_tokens(TOKEN), **kw))
    return TestClient(app)


def _next(ws: WebSocketTestSession, deadline_s: float = 5.0) -> dict[str, Any]:
    """The next message that is not a ping (answered with a pong)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        msg = ws.receive_json()
        if msg.get("op") == "ping":
            ws.send_json({"op": "pong", "ts": msg["ts"]})
            continue
        return msg
    raise AssertionError(f"no message within {deadline_s} s")


def _subscribe(ws: WebSocketTestSession, channels: list[str], **kw: Any) -> dict[str, Any]:
    ws.send_json({"op": "subscribe", "channels": channels} | kw)
    while (msg := _next(ws))["op"] != "subscribed":
        assert msg["op"] == "error", msg
    return msg


def _connect(client: TestClient) -> WebSocketTestSession:
    ws = client.websocket_connect(f"/ws?token={TOKEN}").__enter__()
    assert _next(ws) == {"op": "ready", "channels": list(CHANNELS)}
    return ws


def test_published_messages_arrive_on_their_channel_only(bus: Bus) -> None:
    with _client(bus) as client, client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        assert _next(ws)["op"] == "ready"
        assert _subscribe(ws, ["signal_updates"]) == {"op": "subscribed", "channels": ["signal_updates"]}
        bus.publish(Topic.POSITIONS_UPDATE, _position(1.0))  # not subscribed: never delivered
        ids = [bus.publish(Topic.SIGNALS_NEW, _signal(i)) for i in range(3)]
        got = [_next(ws) for _ in ids]
        assert got == [
            {"channel": "signal_updates", "id": i, "data": msgspec.to_builtins(_signal(n))}
            for n, i in enumerate(ids)
        ]
        assert _subscribe(ws, ["position_updates"])["channels"] == ["position_updates"]
        pid = bus.publish(Topic.POSITIONS_UPDATE, _position(-2.0))
        assert _next(ws) == {
            "channel": "position_updates",
            "id": pid,
            "data": msgspec.to_builtins(_position(-2.0)),
        }


def test_resume_after_reconnect_gets_exactly_what_was_published_meanwhile(bus: Bus) -> None:
    with _client(bus) as client:
        with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
            _next(ws)
            _subscribe(ws, ["signal_updates"])
            seen = [bus.publish(Topic.SIGNALS_NEW, _signal(i)) for i in range(2)]
            assert [_next(ws)["id"] for _ in seen] == seen
        missed = [bus.publish(Topic.SIGNALS_NEW, _signal(i)) for i in range(2, 5)]
        with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
            _next(ws)
            _subscribe(ws, ["signal_updates"], resume_from={"signal_updates": seen[-1]})
            resumed = [_next(ws) for _ in missed]
            assert [m["id"] for m in resumed] == missed
            assert [m["data"]["ev_long"] for m in resumed] == [0.002, 0.003, 0.004]
            # Then live messages, and nothing already seen in between.
            live = bus.publish(Topic.SIGNALS_NEW, _signal(9))
            assert _next(ws)["id"] == live


def test_unknown_channel_and_bad_resume_id_are_named(bus: Bus) -> None:
    with _client(bus) as client, client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        _next(ws)
        ws.send_json({"op": "subscribe", "channels": ["margin_calls", "risk_events"],
                      "resume_from": {"risk_events": "yesterday"}})  # fmt: skip
        err = _next(ws)
        assert err["op"] == "error" and err["channel"] == "margin_calls"
        assert "unknown channel 'margin_calls'" in err["error"]
        err = _next(ws)
        assert err["channel"] == "risk_events" and "'yesterday'" in err["error"]
        assert _next(ws) == {"op": "subscribed", "channels": []}
        ws.send_json({"op": "dance"})
        assert "unknown op 'dance'" in _next(ws)["error"]


@pytest.mark.parametrize("how", ["query", "first_message", "header"])
def test_wrong_or_missing_token_is_closed_4401(bus: Bus, how: str) -> None:
    with _client(bus, auth_timeout_s=0.3) as client:
        for token in ("wrong", ""):
            with pytest.raises(WebSocketDisconnect) as e:
                if how == "query":
                    with client.websocket_connect(f"/ws?token={token}") as ws:
                        ws.receive_json()
                elif how == "header":
                    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
                        ws.receive_json()
                else:
                    with client.websocket_connect("/ws") as ws:
                        ws.send_json({"op": "auth", "token": token})
                        ws.receive_json()
            assert e.value.code == CLOSE_UNAUTHORIZED
        if how == "first_message":  # nothing within auth_timeout_s
            with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as e:
                ws.receive_json()
            assert e.value.code == CLOSE_UNAUTHORIZED
        with client.websocket_connect("/ws") as ws:  # a first message that is not auth
            ws.send_json({"op": "subscribe", "channels": ["signal_updates"]})
            with pytest.raises(WebSocketDisconnect) as e:
                ws.receive_json()
            assert e.value.code == CLOSE_UNAUTHORIZED
        # The right token, by each way, is accepted.
        if how == "query":
            ctx = client.websocket_connect(f"/ws?token={TOKEN}")
        elif how == "header":
            ctx = client.websocket_connect("/ws", headers={"Authorization": f"Bearer {TOKEN}"})
        else:
            ctx = client.websocket_connect("/ws")
        with ctx as ws:
            if how == "first_message":
                ws.send_json({"op": "auth", "token": TOKEN})
            assert _next(ws)["op"] == "ready"


def test_heartbeat_pings_and_closes_a_silent_client(bus: Bus) -> None:
    with (
        _client(bus, heartbeat_s=0.1, pong_timeout_s=0.5) as client,
        client.websocket_connect(f"/ws?token={TOKEN}") as ws,
    ):
        assert ws.receive_json()["op"] == "ready"
        start = time.monotonic()
        pings = []
        while time.monotonic() - start < 1.0:  # answered: the connection stays up past the timeout
            msg = ws.receive_json()
            assert msg["op"] == "ping" and isinstance(msg["ts"], int)
            pings.append(msg["ts"])
            ws.send_json({"op": "pong", "ts": msg["ts"]})
        assert len(pings) >= 5 and pings == sorted(pings)
        silent_since = time.monotonic()
        with pytest.raises(WebSocketDisconnect) as e:
            for _ in range(100):  # not answered: closed after about pong_timeout_s
                assert ws.receive_json()["op"] == "ping"
        assert e.value.code == CLOSE_HEARTBEAT
        assert 0.4 < time.monotonic() - silent_since < 3.0


def test_every_channel_carries_its_topic_as_json(bus: Bus) -> None:
    with _client(bus) as client, client.websocket_connect(f"/ws?token={TOKEN}") as ws:
        _next(ws)
        assert _subscribe(ws, list(CHANNELS))["channels"] == list(CHANNELS)
        bus.publish(Topic.MARKET_CANDLE_CLOSED, SAMPLES[Topic.MARKET_CANDLE_CLOSED])  # on no channel
        sent = [(channel, bus.publish(topic, SAMPLES[topic])) for channel, topic in CHANNELS.items()]
        nan_risk = RiskEvent(ts_ms=1, event_type="GUARD", symbol=None, severity="warning", message="m",
                             details={"value": float("nan"), "limit": float("inf")})  # fmt: skip
        sent.append(("risk_events", bus.publish(Topic.RISK_EVENT, nan_risk)))
        got = {(m["channel"], m["id"]): m["data"] for m in (_next(ws) for _ in sent)}  # ids are per channel
        assert sorted(got) == sorted(sent)
        for (channel, entry_id), data in got.items():
            if (channel, entry_id) == sent[-1]:
                assert data["details"] == {"value": None, "limit": "inf"}  # strict JSON: no NaN token
            else:
                assert data == msgspec.to_builtins(SAMPLES[CHANNELS[channel]])
