"""The ``Bus`` contract shared by both buses: the abstract class, its delivery types and checks.

The semantics are described in storage/bus.py, the module to import the bus from. Both
implementations import this module (``InProcessBus`` in storage/bus.py, ``RedisStreamBus`` in
storage/bus_redis.py), so neither bus module imports the other back.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Self, get_args

from core.errors import DataQualityError
from core.messages import Message, Topic, as_topic, decode

__all__ = [
    "DATA_FIELD",
    "Bus",
    "DeadLetter",
    "Delivery",
    "StartAt",
    "check_names",
    "check_positive",
    "check_start",
]

StartAt = Literal["latest", "earliest"]

#: Stream entry field holding the encoded message.
DATA_FIELD = "data"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to a consumer; ack ``id`` once it is handled."""

    id: str
    topic: Topic
    message: Message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload that did not decode, set aside by ``group``. ``id`` is its entry id in the topic."""

    id: str
    topic: Topic
    group: str
    error: str
    data: bytes


def check_names(group: str, consumer: str | None = None) -> None:
    """Raise ValueError unless the group (and consumer) names are non-empty strings."""
    for what, name in (("group", group), ("consumer", consumer)):
        if name is not None and (not isinstance(name, str) or name == ""):
            raise ValueError(f"{what} name must be a non-empty string, got {name!r}")


def check_start(start: object) -> None:
    """Raise ValueError unless ``start`` is a ``StartAt``."""
    if start not in get_args(StartAt):
        raise ValueError(f"start must be 'latest' or 'earliest', got {start!r}")


def check_positive(name: str, value: int, allow_zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be an int {'>= 0' if allow_zero else '>= 1'}, got {value!r}")


class Bus(ABC):
    """At-least-once publish/subscribe over the topics of ``core.messages``."""

    def __init__(self) -> None:
        # Good deliveries of a batch that also held an undecodable payload, keyed by
        # (topic, group, consumer): returned by that consumer's next read.
        self._carry: dict[tuple[Topic, str, str], deque[Delivery]] = {}
        self._carry_lock = threading.Lock()

    @abstractmethod
    def publish(self, topic: str, msg: Message) -> str:
        """Append ``msg`` to ``topic`` and return its entry id."""

    @abstractmethod
    def publish_many(self, topic: str, msgs: Sequence[Message]) -> list[str]:
        """Append ``msgs`` in order in one round trip; check all of them before sending any."""

    @abstractmethod
    def publish_raw(self, topic: str, data: bytes) -> str:
        """Append ``data`` unchecked: to re-drive dead letters after a fix, and for tests."""

    @abstractmethod
    def subscribe(self, topic: str, group: str, consumer: str, *, start: StartAt = "latest") -> None:
        """Create ``group`` on ``topic`` unless it exists (an existing group keeps its position)."""

    def read(
        self, topic: str, group: str, consumer: str, count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        """Return up to ``count`` new messages of ``topic`` for ``consumer`` of ``group``, oldest first.

        Waits up to ``block_ms`` milliseconds for a message when none is ready (0: do not wait);
        returns an empty list when none came. Raises DataQualityError after setting aside
        undecodable payloads (see the module docstring); the next read returns the batch's good
        messages.
        """
        t = as_topic(topic)
        check_names(group, consumer)
        check_positive("count", count)
        check_positive("block_ms", block_ms, allow_zero=True)
        carried = self._take_carried(t, group, consumer, count)
        if carried:
            return carried
        return self._deliver(t, group, consumer, self._fetch(t, group, consumer, count, block_ms))

    def claim_stale(
        self, topic: str, group: str, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        """Take over up to ``count`` messages of ``group`` pending for at least ``min_idle_ms``.

        Returns them (oldest first) as delivered to ``consumer``, whose they now are; their idle
        time restarts. Messages trimmed from the topic meanwhile are dropped from pending.
        """
        t = as_topic(topic)
        check_names(group, consumer)
        check_positive("count", count)
        check_positive("min_idle_ms", min_idle_ms, allow_zero=True)
        return self._deliver(t, group, consumer, self._claim(t, group, consumer, min_idle_ms, count))

    @abstractmethod
    def ack(self, topic: str, group: str, ids: Iterable[str]) -> int:
        """Mark messages handled for ``group``; return how many were pending (others are ignored)."""

    @abstractmethod
    def delete_group(self, topic: str, group: str) -> bool:
        """Delete ``group`` of ``topic`` with its pending messages (the topic keeps its messages);
        return whether it existed. Reading the group afterwards raises FatalError until subscribed again."""

    @abstractmethod
    def pending(self, topic: str, group: str) -> int:
        """Return how many messages ``group`` has delivered and not yet acked."""

    @abstractmethod
    def dead_letters(self, topic: str, count: int = 100) -> list[DeadLetter]:
        """Return up to ``count`` set-aside payloads of ``topic``, oldest first."""

    @abstractmethod
    def ping(self) -> bool:
        """Return whether the bus can be used now. Never raises."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; any later call raises FatalError (``ping`` returns False)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- implementation hooks: entries are (id, payload or None when the entry has no payload) ---

    @abstractmethod
    def _fetch(
        self, topic: Topic, group: str, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, bytes | None]]: ...

    @abstractmethod
    def _claim(
        self, topic: Topic, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, bytes | None]]: ...

    @abstractmethod
    def _set_aside(self, topic: Topic, group: str, bad: list[DeadLetter]) -> None:
        """Record ``bad`` as dead letters and ack them for ``group``."""

    # --- shared ---

    def _take_carried(self, topic: Topic, group: str, consumer: str, count: int) -> list[Delivery]:
        with self._carry_lock:
            queue = self._carry.get((topic, group, consumer))
            if not queue:
                return []
            out = [queue.popleft() for _ in range(min(count, len(queue)))]
            if not queue:
                del self._carry[(topic, group, consumer)]
            return out

    def _deliver(
        self, topic: Topic, group: str, consumer: str, entries: list[tuple[str, bytes | None]]
    ) -> list[Delivery]:
        good: list[Delivery] = []
        bad: list[DeadLetter] = []
        for entry_id, data in entries:
            if data is None:
                bad.append(DeadLetter(entry_id, topic, group, f"entry has no {DATA_FIELD!r} field", b""))
                continue
            try:
                good.append(Delivery(entry_id, topic, decode(topic, data)))
            except DataQualityError as e:
                bad.append(DeadLetter(entry_id, topic, group, str(e), bytes(data)))
        if not bad:
            return good
        self._set_aside(topic, group, bad)
        if good:
            with self._carry_lock:
                self._carry.setdefault((topic, group, consumer), deque()).extend(good)
        ids = ", ".join(d.id for d in bad)
        raise DataQualityError(
            f"topic {topic.value}: {len(bad)} undecodable payload(s) set aside as dead letters for "
            f"group {group!r} (entry ids {ids}); first problem: {bad[0].error}"
            + (f"; {len(good)} good message(s) follow on the next read" if good else "")
        )
