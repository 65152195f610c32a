"""The replay venue's user-stream faults, seen by plain WebSocket and HTTP clients.

``Faults.stall`` hangs the connections open at the time (no message, no pong; later connections are
spared); ``Faults.expire_listen_keys`` ends every live listenKey as Binance's expiry does
(``listenKeyExpired`` to its connections, then nothing more, and -1125 to a keepalive). Both are also
switched over the admin route. ``exchange.binance.user_stream`` is tested against them in
``test_user_stream.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from exchange.venue import BackgroundServer, Faults, create_app
from exchange.venue.exchange_info import filter_exchange_info
from exchange.venue.streams import StreamHub
from exchange.venue.trading import PaperBroker
from storage.lake import Lake

KEY = "venue-user-faults-key"
LISTEN_KEY_PATH = "/fapi/v1/listenKey"


def _wall() -> int:
    return int(time.time() * 1000)


class Venue:
    def __init__(self, url: str, hub: StreamHub, broker: PaperBroker, faults: Faults) -> None:
        self.url, self.hub, self.broker, self.faults = url, hub, broker, faults
        self.ws_url = "ws" + url.removeprefix("http") + "/"


@pytest.fixture
def venue(shared_data: Path, tmp_path: Path) -> Iterator[Venue]:
    info = json.loads((shared_data / "payloads" / "rest" / "exchange_info_2025-12.json").read_text())
    faults = Faults()
    hub = StreamHub(faults)
    broker = PaperBroker(filter_exchange_info(info, ["BTCUSDT"]), _wall, hub.publish_user, api_key=KEY,
                         api_secret="secret", wall_ms=_wall)  # fmt: skip
    hub.listen_key_valid = broker.listen_key_valid
    app = create_app(Lake(tmp_path / "lake"), _wall, weight_limit_1m=None, faults=faults)
    hub.add_routes(app)
    broker.add_routes(app)
    faults.attach(reject_next=broker.reject_next, expire_listen_keys=broker.expire_listen_keys)
    server = BackgroundServer(app)
    yield Venue(server.start(), hub, broker, faults)
    server.stop()


def _listen_key(venue: Venue) -> str:
    answer = requests.post(f"{venue.url}{LISTEN_KEY_PATH}", headers={"X-MBX-APIKEY": KEY}, timeout=5)
    return str(answer.json()["listenKey"])


def _event(socket: Any, timeout_s: float = 2.0) -> dict[str, Any]:
    return dict(json.loads(socket.recv(timeout=timeout_s)))


def test_stall_hangs_open_connections_without_pongs_and_spares_new_ones(venue: Venue) -> None:
    key = _listen_key(venue)
    url = f"{venue.ws_url}private/ws/{key}"
    with connect(url, open_timeout=5) as hung, connect(url, open_timeout=5) as other:
        time.sleep(0.1)
        assert hung.ping().wait(2)
        response = requests.post(f"{venue.url}/_venue/faults", json={"fault": "stall", "channel": "private",
                                                                     "seconds": 0.6}, timeout=5)  # fmt: skip
        assert response.ok and response.json()["stats"]["private"]["stalled"] == 2
        with connect(url, open_timeout=5) as fresh:
            time.sleep(0.1)
            venue.hub.publish_user({"e": "TEST", "E": 1})
            assert _event(fresh) == {"e": "TEST", "E": 1}
            assert fresh.ping().wait(2)
        assert not hung.ping().wait(0.3)  # no pong while stalled
        with pytest.raises(TimeoutError):
            other.recv(timeout=0.1)  # the event of the stall is lost
        time.sleep(0.4)
        assert hung.ping().wait(2)  # the stall is over
        venue.hub.publish_user({"e": "TEST", "E": 2})
        assert _event(hung) == {"e": "TEST", "E": 2}
    assert venue.faults.stats()["private"]["dropped"] >= 2


def test_expiry_sends_listen_key_expired_then_nothing_and_keepalive_answers_1125(venue: Venue) -> None:
    key = _listen_key(venue)
    with connect(f"{venue.ws_url}private?listenKey={key}", open_timeout=5) as socket:
        time.sleep(0.1)
        assert requests.post(f"{venue.url}/_venue/faults", json={"fault": "expire_listen_keys"}, timeout=5).ok
        expired = _event(socket)
        assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key and expired["E"].isdigit()
        venue.hub.publish_user({"e": "TEST", "E": 1})
        with pytest.raises(TimeoutError):
            socket.recv(timeout=0.3)  # open, silent
        put = requests.put(f"{venue.url}{LISTEN_KEY_PATH}", headers={"X-MBX-APIKEY": KEY}, timeout=5)
        assert put.status_code == 400 and put.json()["code"] == -1125
        fresh = _listen_key(venue)
        assert fresh != key and venue.broker.listen_key_valid(fresh)
        with connect(f"{venue.ws_url}private?listenKey={fresh}", open_timeout=5) as renewed:
            time.sleep(0.1)
            venue.hub.publish_user({"e": "TEST", "E": 2})
            assert _event(renewed)["E"] == 2
            assert venue.faults.expire_listen_keys() == [fresh]
            assert _event(renewed)["listenKey"] == fresh  # each key's expiry goes to its own connections
            with pytest.raises(TimeoutError):
                socket.recv(timeout=0.2)  # the first key's connection hears nothing more
        with (
            connect(f"{venue.ws_url}private?listenKey={key}", open_timeout=5) as refused,
            pytest.raises(ConnectionClosed),
        ):
            refused.recv(timeout=2)
