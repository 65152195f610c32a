"""Test helpers for history/dumps/venue tests: generated markets, dump zips, a local dump server."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

from exchange.dumps import KLINE_COLUMNS, DumpFile

KLINE_HEADER = ",".join(KLINE_COLUMNS)


def random_candles(start_ms: int, end_ms: int, step_ms: int, seed: int, price: float = 0.1) -> pd.DataFrame:
    """Return a deterministic random-walk candles frame (candles layout with optional columns)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(start_ms, end_ms, step_ms, dtype=np.int64)
    n = len(ts)
    close = np.round(price * np.exp(np.cumsum(rng.normal(0, 0.001, n))), 6)
    open_ = np.round(np.concatenate([[price], close[:-1]]), 6)
    high = np.round(np.maximum(open_, close) * (1 + rng.uniform(0, 0.001, n)), 6)
    low = np.round(np.minimum(open_, close) * (1 - rng.uniform(0, 0.001, n)), 6)
    volume = np.round(rng.uniform(1, 1000, n), 1)
    return pd.DataFrame(
        {
            "ts": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "quote_volume": np.round(volume * close, 5),
            "trade_count": rng.integers(1, 500, n).astype(np.int64),
            "taker_buy_volume": np.round(volume / 2, 1),
        }
    )


def random_funding(start_ms: int, end_ms: int, seed: int) -> pd.DataFrame:
    """Return funding events every 8 h in [start_ms, end_ms) with rates and mark prices."""
    rng = np.random.default_rng(seed)
    step = 8 * 3_600_000
    first = start_ms + (-start_ms) % step
    ts = np.arange(first, end_ms, step, dtype=np.int64)
    return pd.DataFrame(
        {
            "ts": ts,
            "funding_rate": np.round(rng.normal(0.0001, 0.0001, len(ts)), 8),
            "mark_price": np.round(rng.uniform(0.09, 0.11, len(ts)), 8),
        }
    )


def kline_csv(frame: pd.DataFrame, step_ms: int, header: bool = True) -> str:
    """Render a frame as a Binance kline dump CSV (12 columns; missing volumes as 0)."""
    lines = [KLINE_HEADER] if header else []
    zeros = np.zeros(len(frame))
    volume, quote, count, taker = (
        frame[c].to_numpy() if c in frame else zeros
        for c in ("volume", "quote_volume", "trade_count", "taker_buy_volume")
    )
    o, h, lo, c = (frame[k].to_numpy().tolist() for k in ("open", "high", "low", "close"))
    for i, ts in enumerate(frame["ts"].to_numpy().tolist()):
        lines.append(
            f"{ts},{o[i]!r},{h[i]!r},{lo[i]!r},{c[i]!r},{float(volume[i])!r},{ts + step_ms - 1},"
            f"{float(quote[i])!r},{int(count[i])},{float(taker[i])!r},0,0"
        )
    return "\n".join(lines) + "\n"


def funding_csv(frame: pd.DataFrame) -> str:
    """Render funding events as a Binance fundingRate dump CSV."""
    lines = ["calc_time,funding_interval_hours,last_funding_rate"]
    pairs = zip(frame["ts"].tolist(), frame["funding_rate"].tolist(), strict=True)
    lines += [f"{ts},8,{rate!r}" for ts, rate in pairs]
    return "\n".join(lines) + "\n"


def zip_bytes(name: str, text: str) -> bytes:
    """Return a zip holding one CSV member ``name``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def checksum_text(data: bytes, filename: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {filename}\n"


class DumpServer:
    """Files by URL path, served over HTTP on 127.0.0.1; records every request path.

    ``status`` forces an HTTP status for a path (e.g. 500); absent paths answer 404.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def add_dump(self, dump: DumpFile, csv_text: str, checksum: str | None = None) -> None:
        """Serve ``dump`` (zip of ``csv_text``) and its .CHECKSUM (``checksum`` overrides the digest)."""
        data = zip_bytes(dump.filename.replace(".zip", ".csv"), csv_text)
        self.files["/" + dump.path] = data
        digest = checksum if checksum is not None else hashlib.sha256(data).hexdigest()
        self.files["/" + dump.path + ".CHECKSUM"] = f"{digest}  {dump.filename}\n".encode()

    def downloads(self) -> list[str]:
        """Return the zip paths requested (not checksums), in order."""
        with self._lock:
            return [p for p in self.requests if p.endswith(".zip")]

    @contextmanager
    def running(self) -> Iterator[str]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests.append(self.path)
                status = owner.status.get(self.path)
                body = owner.files.get(self.path)
                if status is None:
                    status = 200 if body is not None else 404
                self.send_response(status)
                payload = body if status == 200 and body is not None else b"<Error>NoSuchKey</Error>"
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def files_under(root: Path) -> list[Path]:
    """Return every file below ``root`` (empty if it does not exist)."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
