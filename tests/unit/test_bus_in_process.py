"""What only the in-process bus has to guarantee (its shared contract is in tests/integration/test_bus.py)."""

from __future__ import annotations

import pickle

import pytest
from message_samples import candle

from core.messages import Topic
from storage.bus import InProcessBus

CANDLES = Topic.MARKET_CANDLE_CLOSED


def test_in_process_buses_share_no_state() -> None:
    one, two = InProcessBus(), InProcessBus()
    one.subscribe(CANDLES, "g", "c1", start="earliest")
    two.subscribe(CANDLES, "g", "c1", start="earliest")
    one.publish(CANDLES, candle(0))
    assert two.read(CANDLES, "g", "c1") == []
    assert [d.message for d in one.read(CANDLES, "g", "c1")] == [candle(0)]


def test_in_process_bus_refuses_to_be_pickled_into_another_process() -> None:
    with pytest.raises(TypeError, match="cannot be pickled.*Redis URL"):
        pickle.dumps(InProcessBus())


def test_in_process_ids_increase_within_one_millisecond() -> None:
    bus = InProcessBus()
    ids = bus.publish_many(CANDLES, [candle(i) for i in range(500)])
    keys = [tuple(int(p) for p in i.split("-")) for i in ids]
    assert keys == sorted(set(keys))


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [({"count": 0}, "count must be an int >= 1"), ({"block_ms": -1}, "block_ms must be an int >= 0")],
)
def test_read_rejects_nonsense_arguments(kwargs: dict[str, int], problem: str) -> None:
    bus = InProcessBus()
    bus.subscribe(CANDLES, "g", "c1")
    with pytest.raises(ValueError, match=problem):
        bus.read(CANDLES, "g", "c1", **kwargs)


def test_close_wakes_a_blocked_reader() -> None:
    import threading
    import time

    from core.errors import FatalError

    bus = InProcessBus()
    bus.subscribe(CANDLES, "g", "c1")
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            bus.read(CANDLES, "g", "c1", block_ms=30_000)
        except FatalError as e:
            errors.append(e)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    bus.close()
    th.join(timeout=5)
    assert not th.is_alive() and time.monotonic() - t0 < 5
    assert len(errors) == 1 and "closed" in str(errors[0])
