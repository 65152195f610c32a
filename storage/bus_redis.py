"""The event bus on Redis Streams: the ``Bus`` contract (storage/bus_base.py) across processes.

One stream per topic at ``<namespace>:<topic>`` holding the encoded message in field ``data``;
dead letters of a topic at ``<namespace>:dead-letter:<topic>``. Import it through
``storage.bus.open_bus`` (or directly, to construct one by hand): the embedded default does not
import redis at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from core.errors import FatalError, TransientError
from core.messages import Message, Topic, as_topic, encode_for
from storage.bus_base import DATA_FIELD, Bus, DeadLetter, StartAt, check_names, check_positive, check_start


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamBus(Bus):
    """The bus on Redis Streams. Connects lazily: ``ping()`` tells whether Redis answers.

    Connection failures raise TransientError (after ``retries`` quick reconnect attempts);
    authentication, permission and unknown-group failures raise FatalError. ``block_ms`` of a
    read is capped below ``socket_timeout_s`` so that a blocking read never looks like a dead
    connection (a capped read just returns early, empty).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "raytrade",
        maxlen: int = 100_000,
        dead_letter_maxlen: int = 10_000,
        socket_timeout_s: float = 10.0,
        retries: int = 2,
    ) -> None:
        super().__init__()
        check_positive("maxlen", maxlen)
        check_positive("dead_letter_maxlen", dead_letter_maxlen)
        if not namespace or ":" in namespace:
            raise ValueError(f"namespace must be non-empty without ':', got {namespace!r}")
        if socket_timeout_s < 1:
            raise ValueError(f"socket_timeout_s must be >= 1, got {socket_timeout_s}")
        self._namespace = namespace
        self._maxlen = maxlen
        self._dead_maxlen = dead_letter_maxlen
        self._max_block_ms = int(socket_timeout_s * 1000 * 0.8)
        self._closed = False
        self._client = redis.Redis.from_url(
            url,
            protocol=2,  # the reply shapes parsed below are RESP2's
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(socket_timeout_s, 5.0),
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
        )
        kw = self._client.connection_pool.connection_kwargs
        # Named in errors; the URL itself is not, as it may hold a password.
        self._where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}/{kw.get('db', 0)}"

    def key(self, topic: str) -> str:
        """Return the Redis key of the stream of ``topic``."""
        return f"{self._namespace}:{as_topic(topic).value}"

    def dead_letter_key(self, topic: str) -> str:
        """Return the Redis key of the dead-letter stream of ``topic``."""
        return f"{self._namespace}:dead-letter:{as_topic(topic).value}"

    def publish(self, topic: str, msg: Message) -> str:
        t = as_topic(topic)
        return self._xadd(t, [encode_for(t, msg)])[0]

    def publish_many(self, topic: str, msgs: Sequence[Message]) -> list[str]:
        t = as_topic(topic)
        return self._xadd(t, [encode_for(t, m) for m in msgs])

    def publish_raw(self, topic: str, data: bytes) -> str:
        return self._xadd(as_topic(topic), [bytes(data)])[0]

    def subscribe(self, topic: str, group: str, consumer: str, *, start: StartAt = "latest") -> None:
        t = as_topic(topic)
        check_names(group, consumer)
        check_start(start)
        with self._errors("subscribe", t, group):
            try:
                self._client.xgroup_create(
                    self.key(t), group, id="$" if start == "latest" else "0", mkstream=True
                )
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def ack(self, topic: str, group: str, ids: Iterable[str]) -> int:
        t = as_topic(topic)
        id_list = list(ids)
        if not id_list:
            return 0
        with self._errors("ack", t, group):
            return int(self._client.xack(self.key(t), group, *id_list))

    def delete_group(self, topic: str, group: str) -> bool:
        t = as_topic(topic)
        check_names(group)
        with self._errors("delete_group", t, group):
            try:
                gone = bool(self._client.xgroup_destroy(self.key(t), group))
            except redis.ResponseError as e:
                if "key to exist" not in str(e):
                    raise
                gone = False  # no stream, so no group
        with self._carry_lock:
            for key in [k for k in self._carry if k[0] == t and k[1] == group]:
                del self._carry[key]
        return gone

    def pending(self, topic: str, group: str) -> int:
        t = as_topic(topic)
        with self._errors("pending", t, group):
            return int(self._client.xpending(self.key(t), group)["pending"])

    def dead_letters(self, topic: str, count: int = 100) -> list[DeadLetter]:
        t = as_topic(topic)
        check_positive("count", count)
        with self._errors("dead_letters", t):
            rows: Any = self._client.xrange(self.dead_letter_key(t), count=count)
        return [
            DeadLetter(
                id=_str(f[b"id"]),
                topic=t,
                group=_str(f[b"group"]),
                error=_str(f[b"error"]),
                data=f[b"data"],
            )
            for _, f in rows
        ]

    def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(self._client.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        self._closed = True
        self._client.close()

    @contextmanager
    def _errors(self, op: str, topic: Topic, group: str | None = None) -> Iterator[None]:
        if self._closed:
            raise FatalError("the bus is closed")
        where = f"redis {op} on topic {topic.value} at {self._where}"
        try:
            yield
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError) as e:
            raise FatalError(f"{where}: not allowed: {e}") from e
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise TransientError(f"{where} failed: {e}") from e
        except (redis.exceptions.OutOfMemoryError, redis.ReadOnlyError, redis.exceptions.TryAgainError) as e:
            raise TransientError(f"{where} refused for now: {e}") from e
        except redis.ResponseError as e:
            if str(e).startswith("NOGROUP"):
                raise FatalError(
                    f"consumer group {group!r} of topic {topic.value} does not exist: subscribe first"
                ) from e
            raise FatalError(f"{where}: {e}") from e
        except redis.RedisError as e:
            raise FatalError(f"{where}: {e}") from e

    def _xadd(self, topic: Topic, payloads: list[bytes]) -> list[str]:
        key = self.key(topic)
        with self._errors("publish", topic):
            if len(payloads) == 1:
                ids = [
                    self._client.xadd(key, {DATA_FIELD: payloads[0]}, maxlen=self._maxlen, approximate=True)
                ]
            else:
                pipe = self._client.pipeline(transaction=False)
                for data in payloads:
                    pipe.xadd(key, {DATA_FIELD: data}, maxlen=self._maxlen, approximate=True)
                ids = pipe.execute()
        return [_str(i) for i in ids]

    @staticmethod
    def _entries(raw: list[Any]) -> list[tuple[str, bytes | None]]:
        return [(_str(i), (fields or {}).get(DATA_FIELD.encode())) for i, fields in raw]

    def _fetch(
        self, topic: Topic, group: str, consumer: str, count: int, block_ms: int
    ) -> list[tuple[str, bytes | None]]:
        block = min(block_ms, self._max_block_ms) if block_ms > 0 else None  # BLOCK 0 waits forever
        with self._errors("read", topic, group):
            reply: Any = self._client.xreadgroup(
                group, consumer, {self.key(topic): ">"}, count=count, block=block
            )
        return self._entries(reply[0][1]) if reply else []

    def _claim(
        self, topic: Topic, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[tuple[str, bytes | None]]:
        out: list[tuple[str, bytes | None]] = []
        cursor: bytes | str = "0-0"
        with self._errors("claim_stale", topic, group):
            while len(out) < count:
                # Entries trimmed while pending come back in the third element; Redis has already
                # dropped them from pending, so there is nothing to do with them.
                cursor, claimed, *_ = self._client.xautoclaim(
                    self.key(topic), group, consumer, min_idle_ms, cursor, count=count - len(out)
                )
                out.extend(self._entries(claimed))
                if cursor in (b"0-0", "0-0"):
                    break
        return out

    def _set_aside(self, topic: Topic, group: str, bad: list[DeadLetter]) -> None:
        with self._errors("set_aside", topic, group):
            pipe = self._client.pipeline(transaction=True)
            for d in bad:
                pipe.xadd(
                    self.dead_letter_key(topic),
                    {"id": d.id, "group": group, "error": d.error, "data": d.data},
                    maxlen=self._dead_maxlen,
                    approximate=True,
                )
            pipe.xack(self.key(topic), group, *(d.id for d in bad))
            pipe.execute()
