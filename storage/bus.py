"""Event bus: at-least-once topics with consumer groups, on Redis Streams or inside one process.

One interface (``Bus``, storage/bus_base.py), two implementations with the same semantics, checked by one contract test
suite (tests/integration/test_bus.py):

- ``RedisStreamBus`` (storage/bus_redis.py; ``open_bus`` imports it only for a Redis URL, so the
  embedded default never imports redis): one Redis stream per
  topic (key ``<namespace>:<topic>``), XADD with approximate MAXLEN, consumer groups (XGROUP
  CREATE MKSTREAM / XREADGROUP / XACK / XPENDING / XAUTOCLAIM). Used when a Redis URL is set.
- ``InProcessBus``: the same in memory, thread-safe; the embedded default. It lives in one process:
  it refuses to be pickled (a copy in a Ray worker would silently be a different bus).

Semantics, for both:

- ``publish`` checks the message type of the topic (FatalError otherwise) and that the payload
  decodes again (DataQualityError otherwise) before anything is sent, and returns the entry id
  (``"<ms>-<seq>"``, increasing within a topic).
- ``subscribe`` creates a consumer group if it does not exist (idempotent: an existing group keeps
  its position); ``start="latest"`` delivers only later messages, ``"earliest"`` everything still
  retained. ``read`` on a group that was never created raises FatalError. ``delete_group`` removes
  a group and its pending list (XGROUP DESTROY); the topic's messages stay.
- Consumers of one group share its messages; every group gets every message. A delivered message
  stays pending for its group until acked; ``claim_stale`` hands messages pending longer than
  ``min_idle_ms`` (e.g. of a dead consumer) to another consumer. Delivery is at least once:
  handlers must be idempotent.
- Topics keep their last ``maxlen`` messages (about, on Redis); a group that falls further behind
  loses the oldest ones, as with any capped log.

Undecodable payloads (written around the bus, or by a producer of another version): ``read`` and
``claim_stale`` never block on one. They *set it aside* — copy the raw bytes with the decode error
to the topic's dead-letter list (``dead_letters``), and ack it for the group — and then raise
DataQualityError naming the topic, the entry ids and the problem. The good messages of the same
batch are not lost: the next ``read`` by the same consumer returns them, in order. The caller
decides whether to publish a ``DataQualityEvent``; nothing is dropped silently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from core.errors import FatalError
from core.messages import Message, Topic, as_topic, encode_for
from storage.bus_base import (
    DATA_FIELD,
    Bus,
    DeadLetter,
    Delivery,
    StartAt,
    check_names,
    check_positive,
    check_start,
)

__all__ = [
    "DATA_FIELD",
    "Bus",
    "DeadLetter",
    "Delivery",
    "InProcessBus",
    "StartAt",
    "open_bus",
]


# --- in process ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    seq: int
    consumer: str
    delivered_at_s: float  # time.monotonic()


@dataclass(slots=True)
class _Group:
    last_seq: int
    pending: dict[str, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    entries: list[tuple[int, str, bytes]] = field(default_factory=list)  # (seq, id, payload)
    first_seq: int = 1  # seq of entries[0], or next_seq when empty
    next_seq: int = 1
    last_ms: int = -1
    last_ms_seq: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)
    dead: deque[DeadLetter] = field(default_factory=deque)


class InProcessBus(Bus):
    """The bus inside one process (the embedded default). Thread-safe; state is per instance."""

    def __init__(self, maxlen: int = 100_000, dead_letter_maxlen: int = 10_000) -> None:
        super().__init__()
        check_positive("maxlen", maxlen)
        check_positive("dead_letter_maxlen", dead_letter_maxlen)
        self._maxlen = maxlen
        self._dead_maxlen = dead_letter_maxlen
        self._streams: dict[Topic, _Stream] = {}
        self._cond = threading.Condition()
        self._closed = False

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "InProcessBus lives in one process and cannot be pickled (a copy would be a different "
            "bus): configure a Redis URL to share the bus between Ray workers"
        )

    def publish(self, topic: str, msg: Message) -> str:
        t = as_topic(topic)
        return self._append(t, [encode_for(t, msg)])[0]

    def publish_many(self, topic: str, msgs: Sequence[Message]) -> list[str]:
        t = as_topic(topic)
        return self._append(t, [encode_for(t, m) for m in msgs])

    def publish_raw(self, topic: str, data: bytes) -> str:
        return self._append(as_topic(topic), [bytes(data)])[0]

    def subscribe(self, topic: str, group: str, consumer: str, *, start: StartAt = "latest") -> None:
        t = as_topic(topic)
        check_names(group, consumer)
        check_start(start)
        with self._cond:
            self._check_open()
            s = self._streams.setdefault(t, _Stream())
            if group not in s.groups:
                s.groups[group] = _Group(last_seq=(s.next_seq if start == "latest" else s.first_seq) - 1)

    def ack(self, topic: str, group: str, ids: Iterable[str]) -> int:
        t = as_topic(topic)
        with self._cond:
            self._check_open()
            s = self._streams.get(t)
            g = s.groups.get(group) if s else None
            if g is None:
                return 0
            return sum(g.pending.pop(i, None) is not None for i in ids)

    def delete_group(self, topic: str, group: str) -> bool:
        t = as_topic(topic)
        check_names(group)
        with self._cond:
            self._check_open()
            s = self._streams.get(t)
            gone = s is not None and s.groups.pop(group, None) is not None
        with self._carry_lock:
            for key in [k for k in self._carry if k[0] == t and k[1] == group]:
                del self._carry[key]
        return gone

    def pending(self, topic: str, group: str) -> int:
        t = as_topic(topic)
        with self._cond:
            self._check_open()
            return len(self._group(t, group)[1].pending)

    def dead_letters(self, topic: str, count: int = 100) -> list[DeadLetter]:
        t = as_topic(topic)
        check_positive("count", count)
        with self._cond:
            self._check_open()
            s = self._streams.get(t)
            return list(s.dead)[:count] if s else []

    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise FatalError("the bus is closed")

    def _group(self, topic: Topic, group: str) -> tuple[_Stream, _Group]:
        s = self._streams.get(topic)
        g = s.groups.get(group) if s else None
        if s is None or g is None:
            raise FatalError(
                f"consumer group {group!r} of topic {topic.value} does not exist: subscribe first"
            )
        return s, g

    def _append(self, topic: Topic, payloads: list[bytes]) -> list[str]:
        ids: list[str] = []
        with self._cond:
            self._check_open()
            s = self._streams.setdefault(topic, _Stream())
            for data in payloads:
                now_ms = time.time_ns() // 1_000_000
                if now_ms > s.last_ms:
                    s.last_ms, s.last_ms_seq = now_ms, 0
                else:  # same millisecond, or the wall clock stepped back: ids still increase
                    s.last_ms_seq += 1
                entry_id = f"{s.last_ms}-{s.last_ms_seq}"
                s.entries.append((s.next_seq, entry_id, data))
                s.next_seq += 1
                ids.append(entry_id)
            # Trim in chunks, like Redis' approximate MAXLEN, so a publish is not O(maxlen).
            excess = len(s.entries) - self._maxlen
            if excess > max(1, self._maxlen // 10):
                del s.entries[:excess]
                s.first_seq += excess
            self._cond.notify_all()
        return ids

    def _fetch(
        self, topic: Topic, group: str, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, bytes | None]]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            while True:
                self._check_open()
                s, g = self._group(topic, group)
                start = max(g.last_seq + 1, s.first_seq)
                if start < s.next_seq:
                    i = start - s.first_seq
                    batch = s.entries[i : i + count]
                    now = time.monotonic()
                    for seq, entry_id, _ in batch:
                        g.pending[entry_id] = _Pending(seq, consumer, now)
                    g.last_seq = batch[-1][0]
                    return [(entry_id, data) for _, entry_id, data in batch]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)

    def _claim(
        self, topic: Topic, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        with self._cond:
            self._check_open()
            s, g = self._group(topic, group)
            now = time.monotonic()
            for entry_id, p in sorted(g.pending.items(), key=lambda kv: kv[1].seq):
                if len(out) >= count:
                    break
                if (now - p.delivered_at_s) * 1000 < min_idle_ms:
                    continue
                i = p.seq - s.first_seq
                if i < 0:  # trimmed away while pending: XAUTOCLAIM drops these too
                    del g.pending[entry_id]
                    continue
                p.consumer, p.delivered_at_s = consumer, now
                out.append((entry_id, s.entries[i][2]))
        return out

    def _set_aside(self, topic: Topic, group: str, bad: list[DeadLetter]) -> None:
        with self._cond:
            s, g = self._group(topic, group)
            for d in bad:
                g.pending.pop(d.id, None)
                s.dead.append(d)
            while len(s.dead) > self._dead_maxlen:
                s.dead.popleft()


def open_bus(redis_url: str | None, namespace: str = "raytrade", maxlen: int = 100_000) -> Bus:
    """Return a ``RedisStreamBus`` on ``redis_url``, or an ``InProcessBus`` when it is None or empty."""
    if redis_url:
        # Imported here so the embedded default never imports redis.
        from storage.bus_redis import RedisStreamBus

        return RedisStreamBus(redis_url, namespace=namespace, maxlen=maxlen)
    return InProcessBus(maxlen=maxlen)
