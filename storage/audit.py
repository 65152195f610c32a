"""The JSONL audit log of live trading (issue 15): decisions, orders, fills, risk and kill-switch events.

One JSON object per line in ``<directory>/audit-YYYY-MM-DD.jsonl``, the file of the record's UTC
day (from its ``ts_ms``, not the wall clock: a replay writes the days it replays). Each line is
``{"ts_ms": …, "kind": …, <fields>}``; ``Decimal`` is written as its exact string in plain notation, a non-finite
float as ``"NaN"``/``"Infinity"``, and every string (keys and values, nested too) goes through
``core.redact.redact`` with the secrets the log was given, so a key, a signature or a listen key
that slips into a payload is never written. Each line is flushed when written (``fsync=True`` also
syncs it to disk); writes from several threads never interleave.

The database is the ledger; this file is the operator's plain-text trail beside it, readable with
``jq`` when the database is not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from core.redact import redact

__all__ = ["KINDS", "AuditLog", "audit_file_name"]

#: The kinds the live path writes; others are allowed (``correction``, ``reconcile`` …) but must be
#: plain lowercase words so ``jq 'select(.kind == "fill")'`` finds them.
KINDS = ("decision", "order", "fill", "risk", "killswitch", "correction", "reconcile", "session")

_DAY_MS = 86_400_000


def audit_file_name(ts_ms: int) -> str:
    """Return the file name of the UTC day of ``ts_ms``: ``audit-YYYY-MM-DD.jsonl``."""
    day = dt.datetime.fromtimestamp(ts_ms // _DAY_MS * 86_400, tz=dt.UTC).date()
    return f"audit-{day.isoformat()}.jsonl"


class AuditLog:
    """Append-only JSONL audit files under ``directory``, one per UTC day; thread-safe."""

    def __init__(
        self, directory: Path | str, *, secrets: Iterable[str | None] = (), fsync: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self._secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        self._day: int | None = None
        self._file: IO[str] | None = None
        self._path: Path | None = None

    def add_secret(self, value: str | None) -> None:
        """Mask ``value`` in every line written from now on."""
        if value:
            with self._lock:
                self._secrets = (*self._secrets, value)

    def record(self, kind: str, ts_ms: int, **fields: Any) -> Path:
        """Append one line ``{"ts_ms", "kind", **fields}`` to the file of ``ts_ms``'s UTC day; return its path."""
        if not kind or not kind.replace("_", "").replace(".", "").isalnum() or kind != kind.lower():
            raise ValueError(f"audit kind must be a lowercase word, got {kind!r}")
        ts_ms = int(ts_ms)
        line = json.dumps(
            {"ts_ms": ts_ms, "kind": kind, **self._clean(fields)}, ensure_ascii=False, separators=(",", ":")
        )
        with self._lock:
            f = self._open(ts_ms // _DAY_MS)
            f.write(line + "\n")
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
            assert self._path is not None
            return self._path

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file, self._day = None, None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, day: int) -> IO[str]:
        if self._file is not None and self._day == day:
            return self._file
        if self._file is not None:
            self._file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / audit_file_name(day * _DAY_MS)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file, self._day, self._path = os.fdopen(fd, "a", encoding="utf-8"), day, path
        return self._file

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self._secrets)
        if isinstance(value, Decimal):
            return format(value, "f")  # exact, never in exponent notation (1E-8)
        if isinstance(value, bool) or value is None or isinstance(value, int):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        if isinstance(value, Mapping):
            return {self._clean(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._clean(v) for v in value]
        if hasattr(value, "item") and callable(value.item):  # numpy scalar
            return self._clean(value.item())
        if hasattr(value, "get_secret_value"):  # pydantic SecretStr: never its value
            return "***"
        return redact(str(value), self._secrets)
