"""Download data.binance.vision dump files: checksum first, zip to a ``.part`` file, verify, parse.

A file the server does not have (HTTP 404: not published yet, or the symbol did not trade then)
is an ordinary answer, returned as None. Transport failures are retried with backoff and then
raised as ``UnreachableError`` (nothing answered) or ``TransientError``; a checksum mismatch is
retried once and then raised as ``DataQualityError`` naming the file. A ``.part`` file never
outlives the call that wrote it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd
import requests

from core.errors import DataQualityError, RejectedError, TransientError, UnreachableError
from exchange.dumps import DumpFile, parse_dump, verify_checksum
from exchange.net import describe, is_unreachable

DEFAULT_BASE_URL = "https://data.binance.vision"
_CHUNK_BYTES = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Downloaded:
    """A verified, parsed dump: its frame (lake layout), sha256 and size in bytes."""

    dump: DumpFile
    frame: pd.DataFrame
    sha256: str
    size_bytes: int


class DumpClient:
    """Fetch dump files from a data.binance.vision-compatible server (thread-safe)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._local = threading.local()

    def fetch(self, dump: DumpFile, part_path: Path) -> Downloaded | None:
        """Download ``dump`` through ``part_path``, verify its checksum and parse it; None if absent (404)."""
        checksum = self._get(dump.checksum_url(self.base_url), _content)
        if checksum is None:
            return None
        checksum_text = checksum.decode(errors="replace")
        for attempt in (1, 2):
            try:
                size = self._get(dump.url(self.base_url), functools.partial(_stream_to, part_path=part_path))
                if size is None:
                    return None
                data = part_path.read_bytes()
                try:
                    digest = verify_checksum(data, checksum_text, dump.filename)
                except DataQualityError:
                    if attempt == 1:
                        continue
                    raise
                return Downloaded(dump, parse_dump(dump, data), digest, len(data))
            finally:
                part_path.unlink(missing_ok=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close this thread's HTTP session (others close when their threads end)."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _get(self, url: str, handle: Callable[[requests.Response], T]) -> T | None:
        """GET ``url`` and return ``handle(response)``, or None on 404; retry transient failures."""
        last: BaseException | None = None
        unreachable = False
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                with self._session().get(url, timeout=self._timeout, stream=True) as response:
                    status = response.status_code
                    if status == 404:
                        return None
                    if status == 429 or status >= 500:
                        last, unreachable = TransientError(f"HTTP {status}"), False
                        continue
                    if status != 200:
                        raise RejectedError(f"{url}: HTTP {status}")
                    return handle(response)
            except requests.RequestException as e:
                last, unreachable = e, is_unreachable(e)
        if unreachable:
            raise UnreachableError(f"cannot reach {self.base_url}: {describe(last)} ({url})") from last
        raise TransientError(f"{url}: failed after {self._attempts} attempt(s): {describe(last)}") from last


def _content(response: requests.Response) -> bytes:
    return response.content


def _stream_to(response: requests.Response, part_path: Path) -> int:
    part_path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with part_path.open("wb") as out:
        for chunk in response.iter_content(_CHUNK_BYTES):
            out.write(chunk)
            size += len(chunk)
    return size
