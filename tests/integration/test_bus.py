"""Contract of the event bus (storage/bus.py), run against both implementations.

Every test in the first part runs on ``InProcessBus`` and on ``RedisStreamBus`` (a real Redis from
the ``redis_url`` fixture, one namespace per test). The second part covers what only Redis has.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from message_samples import SAMPLES, candle

from core.errors import DataQualityError, FatalError, TransientError
from core.messages import CandleClosed, Topic
from raytrade.devservices import free_port
from storage.bus import Bus, InProcessBus, open_bus
from storage.bus_redis import RedisStreamBus

CANDLES = Topic.MARKET_CANDLE_CLOSED
MakeBus = Callable[..., Bus]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _drain(bus: Bus, group: str, consumer: str, topic: Topic = CANDLES, count: int = 1000) -> list:
    out = []
    while batch := bus.read(topic, group, consumer, count=count):
        out.extend(batch)
    return out


@pytest.fixture(params=["in_process", "redis"])
def make_bus(request: pytest.FixtureRequest) -> Iterator[MakeBus]:
    """Factory of buses of one kind; on Redis all share one fresh namespace, deleted afterwards."""
    created: list[Bus] = []
    namespace = f"t{uuid.uuid4().hex[:12]}"
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def make(maxlen: int = 100_000) -> Bus:
        bus: Bus = (
            RedisStreamBus(url, namespace=namespace, maxlen=maxlen) if url else InProcessBus(maxlen=maxlen)
        )
        created.append(bus)
        return bus

    yield make
    for bus in created:
        bus.close()
    if url:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def bus(make_bus: MakeBus) -> Bus:
    return make_bus()


# --- contract: both implementations -------------------------------------------------------------


def test_publish_then_read_roundtrips_every_message_type(bus: Bus) -> None:
    for topic in Topic:
        bus.subscribe(topic, "g", "c1")
    ids = {topic: bus.publish(topic, msg) for topic, msg in SAMPLES.items()}
    for topic, msg in SAMPLES.items():
        got = bus.read(topic, "g", "c1")
        assert [(d.id, d.topic, d.message) for d in got] == [(ids[topic], topic, msg)]
        assert type(got[0].message) is type(msg)


def test_read_returns_a_topics_messages_in_publish_order(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    ids = [bus.publish(CANDLES, candle(i)) for i in range(20)]
    ids += bus.publish_many(CANDLES, [candle(i) for i in range(20, 50)])
    assert bus.publish_many(CANDLES, []) == []
    got: list = []
    while batch := bus.read(CANDLES, "g", "c1", count=7):
        assert len(batch) <= 7
        got.extend(batch)
    assert [d.message for d in got] == [candle(i) for i in range(50)]
    assert [d.id for d in got] == ids
    assert [_id_key(i) for i in ids] == sorted({_id_key(i) for i in ids})  # strictly increasing


def test_consumers_of_one_group_share_its_messages(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "a")
    bus.publish_many(CANDLES, [candle(i) for i in range(10)])
    got_a = bus.read(CANDLES, "g", "a", count=4)
    got_b = bus.read(CANDLES, "g", "b", count=100)
    assert [d.message.ts_ms for d in got_a + got_b] == [candle(i).ts_ms for i in range(10)]
    assert len(got_a) == 4 and len(got_b) == 6
    assert bus.read(CANDLES, "g", "a") == [] and bus.read(CANDLES, "g", "b") == []


def test_each_group_gets_every_message(bus: Bus) -> None:
    bus.subscribe(CANDLES, "features", "c1")
    bus.subscribe(CANDLES, "recorder", "c1")
    ids = bus.publish_many(CANDLES, [candle(i) for i in range(10)])
    assert [d.id for d in _drain(bus, "features", "c1")] == ids
    assert [d.id for d in _drain(bus, "recorder", "c1")] == ids


def test_subscribe_latest_skips_earlier_messages_and_earliest_gets_them(bus: Bus) -> None:
    bus.publish_many(CANDLES, [candle(0), candle(1)])
    bus.subscribe(CANDLES, "late", "c1", start="latest")
    bus.subscribe(CANDLES, "replay", "c1", start="earliest")
    bus.publish(CANDLES, candle(2))
    assert [d.message for d in _drain(bus, "late", "c1")] == [candle(2)]
    assert [d.message for d in _drain(bus, "replay", "c1")] == [candle(0), candle(1), candle(2)]


def test_subscribe_rejects_an_unknown_start(bus: Bus) -> None:
    with pytest.raises(ValueError, match="start must be 'latest' or 'earliest'"):
        bus.subscribe(CANDLES, "g", "c1", start="0")  # type: ignore[arg-type]


def test_subscribing_again_keeps_the_groups_position(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    bus.publish_many(CANDLES, [candle(i) for i in range(3)])
    assert len(bus.read(CANDLES, "g", "c1", count=2)) == 2
    bus.subscribe(CANDLES, "g", "c2", start="earliest")
    assert [d.message for d in _drain(bus, "g", "c2")] == [candle(2)]


def test_read_without_subscribing_raises_fatal_error_naming_group_and_topic(bus: Bus) -> None:
    bus.publish(CANDLES, candle(0))
    with pytest.raises(FatalError, match=r"group 'nobody' of topic market\.candle_closed does not exist"):
        bus.read(CANDLES, "nobody", "c1")


def test_ack_removes_messages_from_pending(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    bus.publish_many(CANDLES, [candle(i) for i in range(5)])
    assert bus.pending(CANDLES, "g") == 0
    got = bus.read(CANDLES, "g", "c1")
    assert bus.pending(CANDLES, "g") == 5
    assert bus.ack(CANDLES, "g", [got[0].id, got[1].id]) == 2
    assert bus.pending(CANDLES, "g") == 3
    assert bus.ack(CANDLES, "g", [got[0].id, "1-0"]) == 0  # already acked / never delivered
    assert bus.ack(CANDLES, "g", []) == 0
    assert bus.ack(CANDLES, "g", [d.id for d in got[2:]]) == 3
    assert bus.pending(CANDLES, "g") == 0


def test_claim_stale_hands_a_dead_consumers_unacked_messages_to_another(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "dead")
    bus.publish_many(CANDLES, [candle(i) for i in range(4)])
    got = bus.read(CANDLES, "g", "dead", count=3)
    bus.ack(CANDLES, "g", [got[0].id])
    assert bus.claim_stale(CANDLES, "g", "heir", min_idle_ms=60_000) == []  # not idle long enough
    time.sleep(0.25)
    claimed = bus.claim_stale(CANDLES, "g", "heir", min_idle_ms=150)
    assert [(d.id, d.message) for d in claimed] == [(d.id, d.message) for d in got[1:]]
    assert bus.pending(CANDLES, "g") == 2
    assert bus.claim_stale(CANDLES, "g", "third", min_idle_ms=150) == []  # the claim reset idle time
    assert [d.message for d in bus.read(CANDLES, "g", "heir")] == [candle(3)]  # only the unread one
    assert bus.ack(CANDLES, "g", [d.id for d in claimed]) == 2
    assert bus.pending(CANDLES, "g") == 1


def test_claim_stale_respects_count(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "dead")
    bus.publish_many(CANDLES, [candle(i) for i in range(10)])
    bus.read(CANDLES, "g", "dead")
    first = bus.claim_stale(CANDLES, "g", "heir", min_idle_ms=0, count=4)
    assert [d.message for d in first] == [candle(i) for i in range(4)]


def test_publishing_another_topics_message_type_is_rejected_and_sends_nothing(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    with pytest.raises(FatalError, match=r"topic market\.candle_closed carries CandleClosed, not BookTicker"):
        bus.publish(CANDLES, SAMPLES[Topic.MARKET_BOOK_TICKER])
    with pytest.raises(FatalError, match="not BookTicker"):
        bus.publish_many(CANDLES, [candle(0), SAMPLES[Topic.MARKET_BOOK_TICKER], candle(1)])
    assert bus.read(CANDLES, "g", "c1") == []


def test_publishing_to_an_unknown_topic_raises_fatal_error(bus: Bus) -> None:
    with pytest.raises(FatalError, match="unknown bus topic 'market.candles'"):
        bus.publish("market.candles", candle(0))


def test_undecodable_payload_is_set_aside_reported_and_does_not_block_the_group(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    bus.subscribe(CANDLES, "h", "c1")
    first = bus.publish(CANDLES, candle(0))
    bad = bus.publish_raw(CANDLES, b"\xc1garbage")
    last = bus.publish(CANDLES, candle(1))

    with pytest.raises(
        DataQualityError, match=rf"topic market\.candle_closed: 1 undecodable.*{bad}.*malformed"
    ):
        bus.read(CANDLES, "g", "c1")
    assert bus.pending(CANDLES, "g") == 2  # the bad one is acked, the good ones await their handler
    assert [(d.id, d.message) for d in bus.read(CANDLES, "g", "c1")] == [
        (first, candle(0)),
        (last, candle(1)),
    ]
    assert bus.read(CANDLES, "g", "c1") == []

    with pytest.raises(DataQualityError, match="market.candle_closed"):
        bus.read(CANDLES, "h", "c1")
    assert [d.id for d in bus.read(CANDLES, "h", "c1")] == [first, last]

    dead = bus.dead_letters(CANDLES)
    assert [(d.id, d.topic, d.group, d.data) for d in dead] == [
        (bad, CANDLES, "g", b"\xc1garbage"),
        (bad, CANDLES, "h", b"\xc1garbage"),
    ]
    assert "does not decode as CandleClosed" in dead[0].error


def test_payload_that_decodes_but_fails_checks_is_set_aside_too(bus: Bus) -> None:
    import msgspec

    bus.subscribe(CANDLES, "g", "c1")
    fields = {f: getattr(candle(0), f) for f in CandleClosed.__struct_fields__}
    bus.publish_raw(CANDLES, msgspec.msgpack.encode({**fields, "close": float("nan")}))
    with pytest.raises(DataQualityError, match=r"CandleClosed\.close must be finite"):
        bus.read(CANDLES, "g", "c1")
    assert bus.pending(CANDLES, "g") == 0
    assert len(bus.dead_letters(CANDLES)) == 1


def test_publish_raw_of_a_valid_payload_is_delivered(bus: Bus) -> None:
    from core.messages import encode

    bus.subscribe(CANDLES, "g", "c1")
    bus.publish_raw(CANDLES, encode(candle(5)))
    assert [d.message for d in bus.read(CANDLES, "g", "c1")] == [candle(5)]


def test_blocking_read_of_an_empty_topic_returns_nothing_after_block_ms(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    t0 = time.monotonic()
    assert bus.read(CANDLES, "g", "c1", block_ms=300) == []
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 5, elapsed


def test_read_without_block_ms_does_not_wait(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(bus.read(CANDLES, "g", "c1")), daemon=True)
    reader.start()
    reader.join(timeout=3)  # BLOCK 0 would wait forever
    assert not reader.is_alive()
    assert result == [[]]


def test_blocking_read_wakes_up_when_a_message_arrives(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c1")
    timer = threading.Timer(0.2, lambda: bus.publish(CANDLES, candle(7)))
    timer.start()
    t0 = time.monotonic()
    got = bus.read(CANDLES, "g", "c1", block_ms=5_000)
    elapsed = time.monotonic() - t0
    timer.join()
    assert [d.message for d in got] == [candle(7)]
    assert elapsed < 4, elapsed


def test_concurrent_publishers_and_consumers_see_each_message_exactly_once(bus: Bus) -> None:
    bus.subscribe(CANDLES, "g", "c0")
    n_producers, per_producer = 4, 250
    total = n_producers * per_producer
    received: list = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        for i in range(per_producer):
            bus.publish(CANDLES, candle(p * per_producer + i))

    def consume(name: str) -> None:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    if len(received) >= total:
                        return
                batch = bus.read(CANDLES, "g", name, count=50, block_ms=100)
                bus.ack(CANDLES, "g", [d.id for d in batch])
                with lock:
                    received.extend(batch)
        except BaseException as e:  # surfaced below: a thread's exception would vanish otherwise
            errors.append(e)

    consumers = [threading.Thread(target=consume, args=(f"c{i}",), daemon=True) for i in range(3)]
    producers = [threading.Thread(target=produce, args=(p,), daemon=True) for p in range(n_producers)]
    for th in consumers + producers:
        th.start()
    for th in consumers + producers:
        th.join(timeout=60)
    assert not errors
    assert len(received) == total
    assert len({d.id for d in received}) == total
    assert sorted(d.message.ts_ms for d in received) == [candle(i).ts_ms for i in range(total)]
    assert bus.pending(CANDLES, "g") == 0


def test_a_topic_keeps_about_its_last_maxlen_messages(make_bus: MakeBus) -> None:
    bus = make_bus(maxlen=100)
    for start in range(0, 1000, 50):
        bus.publish_many(CANDLES, [candle(i) for i in range(start, start + 50)])
    bus.subscribe(CANDLES, "g", "c1", start="earliest")
    kept = [d.message for d in _drain(bus, "g", "c1")]
    assert 100 <= len(kept) <= 300, len(kept)  # Redis trims whole nodes of 100 entries
    assert kept == [candle(i) for i in range(1000 - len(kept), 1000)]


def test_closed_bus_refuses_calls_and_fails_its_health_check(bus: Bus) -> None:
    assert bus.ping() is True
    bus.close()
    assert bus.ping() is False
    with pytest.raises(FatalError, match="closed"):
        bus.publish(CANDLES, candle(0))


def test_throughput_smoke(bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    n, batch = 20_000, 500
    msgs = [candle(i) for i in range(n)]
    bus.subscribe(CANDLES, "g", "c1")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        bus.publish_many(CANDLES, msgs[i : i + batch])
    t1 = time.perf_counter()
    got = 0
    while chunk := bus.read(CANDLES, "g", "c1", count=batch):
        bus.ack(CANDLES, "g", [d.id for d in chunk])
        got += len(chunk)
    t2 = time.perf_counter()
    assert got == n
    single = 2_000
    t3 = time.perf_counter()
    for i in range(single):
        bus.publish(CANDLES, msgs[i])
    t4 = time.perf_counter()
    with capsys.disabled():
        print(
            f"\n[bus throughput] {type(bus).__name__}: publish_many {n / (t1 - t0):,.0f} msg/s, "
            f"read+ack {n / (t2 - t1):,.0f} msg/s, single publish {single / (t4 - t3):,.0f} msg/s"
        )


# --- Redis only ---------------------------------------------------------------------------------


@pytest.fixture
def redis_ns(redis_url: str) -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    yield client, namespace
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_streams_live_under_the_namespace_prefix(
    redis_url: str, redis_ns: tuple[redis.Redis, str]
) -> None:
    client, ns = redis_ns
    with RedisStreamBus(redis_url, namespace=ns) as bus:
        entry_id = bus.publish(CANDLES, candle(0))
    rows = client.xrange(f"{ns}:market.candle_closed")
    assert [(i.decode(), set(f)) for i, f in rows] == [(entry_id, {b"data"})]


def test_redis_payload_injected_with_xadd_is_set_aside_and_acked(
    redis_url: str, redis_ns: tuple[redis.Redis, str]
) -> None:
    client, ns = redis_ns
    key = f"{ns}:market.candle_closed"
    with RedisStreamBus(redis_url, namespace=ns) as bus:
        bus.subscribe(CANDLES, "g", "c1")
        garbage = client.xadd(key, {"data": b"\x92\x01"}).decode()  # msgpack [1], not a map
        wrong_field = client.xadd(key, {"payload": b"whatever"}).decode()
        good = bus.publish(CANDLES, candle(0))
        with pytest.raises(
            DataQualityError, match=rf"market\.candle_closed: 2 undecodable.*{garbage}, {wrong_field}"
        ):
            bus.read(CANDLES, "g", "c1")
        assert client.xpending(key, "g")["pending"] == 1
        assert [d.id for d in bus.read(CANDLES, "g", "c1")] == [good]
        dead = bus.dead_letters(CANDLES)
    assert [(d.id, d.data) for d in dead] == [(garbage, b"\x92\x01"), (wrong_field, b"")]
    assert "no 'data' field" in dead[1].error
    assert client.xlen(f"{ns}:dead-letter:market.candle_closed") == 2


def test_redis_buses_in_two_clients_share_a_group_like_two_processes(
    redis_url: str, redis_ns: tuple[redis.Redis, str]
) -> None:
    _, ns = redis_ns
    with RedisStreamBus(redis_url, namespace=ns) as one, RedisStreamBus(redis_url, namespace=ns) as two:
        one.subscribe(CANDLES, "g", "a")
        two.subscribe(CANDLES, "g", "b")  # same group: no reset
        one.publish_many(CANDLES, [candle(i) for i in range(6)])
        assert len(one.read(CANDLES, "g", "a", count=2)) == 2
        assert [d.message for d in two.read(CANDLES, "g", "b")] == [candle(i) for i in range(2, 6)]
        claimed = two.claim_stale(CANDLES, "g", "b", min_idle_ms=0)
        assert [d.message for d in claimed] == [candle(i) for i in range(6)]


def test_redis_unreachable_server_raises_transient_error_from_the_connection_error() -> None:
    bus = RedisStreamBus(f"redis://127.0.0.1:{free_port()}/0", retries=0)
    assert bus.ping() is False
    with pytest.raises(
        TransientError, match=r"redis publish on topic market\.candle_closed at 127\.0\.0\.1"
    ) as info:
        bus.publish(CANDLES, candle(0))
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    bus.close()


def test_redis_error_messages_do_not_reveal_the_password() -> None:
    bus = RedisStreamBus(f"redis://user:s3cret@127.0.0.1:{free_port()}/0", retries=0)
    with pytest.raises(TransientError) as info:
        bus.pending(CANDLES, "g")
    assert "s3cret" not in str(info.value)
    bus.close()


def test_redis_blocking_read_is_capped_below_the_socket_timeout(
    redis_url: str, redis_ns: tuple[redis.Redis, str]
) -> None:
    _, ns = redis_ns
    with RedisStreamBus(redis_url, namespace=ns, socket_timeout_s=1.0) as bus:
        bus.subscribe(CANDLES, "g", "c1")
        t0 = time.monotonic()
        assert bus.read(CANDLES, "g", "c1", block_ms=10_000) == []  # no TransientError from a timeout
        assert time.monotonic() - t0 < 1.0


def test_open_bus_uses_redis_when_a_url_is_given_and_in_process_otherwise(
    redis_url: str, redis_ns: tuple[redis.Redis, str]
) -> None:
    client, ns = redis_ns
    assert isinstance(open_bus(None), InProcessBus)
    assert isinstance(open_bus(""), InProcessBus)
    with open_bus(redis_url, namespace=ns) as bus:
        assert isinstance(bus, RedisStreamBus)
        assert bus.ping() is True
        bus.publish(Topic.SYSTEM_STATUS, SAMPLES[Topic.SYSTEM_STATUS])
    assert client.xlen(f"{ns}:system.status") == 1
