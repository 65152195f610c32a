"""data.binance.vision USDⓈ-M futures dumps: file names, URLs, checksums and CSV parsers.

Monthly and daily zips of ``klines``, ``markPriceKlines`` and ``premiumIndexKlines`` per interval,
and monthly ``fundingRate`` zips, each beside a ``.CHECKSUM`` file (``<sha256>  <filename>``)::

    {base}/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip
    {base}/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-15.zip
    {base}/data/futures/um/monthly/fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip

Kline CSVs have 12 columns (``open_time,open,high,low,close,volume,close_time,quote_volume,count,
taker_buy_volume,taker_buy_quote_volume,ignore``), with a header in newer files and none in older
ones; mark-price and premium-index files share the layout (their volumes mean nothing and are
dropped). Funding CSVs: ``calc_time,funding_interval_hours,last_funding_rate``. Timestamps that
are microseconds (some newer dumps) are converted to milliseconds. The venue's field names stay in
this module; the parsers return ``core.frames`` layouts.

A malformed line (text in a number, a short row) does not cost the file: the parsers keep every
readable line and list the others in ``frame.attrs["rejected_lines"]`` as (reason, detail, raw
values) for the data-quality door to record. A file with no readable line is refused.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from core.errors import DataQualityError
from core.symbols import validate_internal
from core.time import DAY_MS, interval_ms, parse_utc

DumpKind = Literal["klines", "markPriceKlines", "premiumIndexKlines", "fundingRate"]
Period = Literal["monthly", "daily"]

KLINE_KINDS: tuple[str, ...] = ("klines", "markPriceKlines", "premiumIndexKlines")
KINDS: tuple[str, ...] = (*KLINE_KINDS, "fundingRate")

KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
FUNDING_COLUMNS: tuple[str, ...] = ("calc_time", "funding_interval_hours", "last_funding_rate")

_DATASET_PREFIX = {"klines": "candles", "markPriceKlines": "mark", "premiumIndexKlines": "premium"}
#: Epoch values above this are microseconds (ms values stay below it until the year 5138).
_MICROSECONDS_ABOVE = 100_000_000_000_000
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def lake_dataset(kind: str, interval: str | None) -> str:
    """Return the lake dataset (``core.frames``) a dump kind and interval is stored as."""
    if kind == "fundingRate":
        return "funding"
    if kind not in _DATASET_PREFIX:
        raise ValueError(f"unknown dump kind {kind!r}; expected one of {', '.join(KINDS)}")
    if interval is None:
        raise ValueError(f"{kind} needs an interval such as '1m'")
    return f"{_DATASET_PREFIX[kind]}_{interval}"


@dataclass(frozen=True, slots=True)
class DumpFile:
    """One dump zip: kind, symbol, interval (None for fundingRate), period and its date.

    ``date`` is ``YYYY-MM`` for monthly files and ``YYYY-MM-DD`` for daily ones.
    """

    kind: str
    symbol: str
    interval: str | None
    period: Period
    date: str

    @property
    def filename(self) -> str:
        """Return the zip's name (``BTCUSDT-1m-2024-01.zip``, ``BTCUSDT-fundingRate-2024-01.zip``)."""
        middle = "fundingRate" if self.kind == "fundingRate" else self.interval
        return f"{self.symbol}-{middle}-{self.date}.zip"

    @property
    def path(self) -> str:
        """Return the path below the server root (``data/futures/um/…/<filename>``)."""
        parts = ["data", "futures", "um", self.period, self.kind, self.symbol]
        if self.interval is not None:
            parts.append(self.interval)
        parts.append(self.filename)
        return "/".join(parts)

    @property
    def dataset(self) -> str:
        """Return the lake dataset the file's rows are stored as."""
        return lake_dataset(self.kind, self.interval)

    @property
    def start_ms(self) -> int:
        """Return the first epoch ms the file covers."""
        return parse_utc(f"{self.date}-01" if self.period == "monthly" else self.date)

    @property
    def end_ms(self) -> int:
        """Return the epoch ms just after the period the file covers (exclusive)."""
        if self.period == "daily":
            return self.start_ms + DAY_MS
        year, month = (int(x) for x in self.date.split("-"))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return parse_utc(f"{year:04d}-{month:02d}-01")

    def url(self, base_url: str) -> str:
        """Return the URL of the zip on a dump server (``https://data.binance.vision``)."""
        return f"{base_url.rstrip('/')}/{self.path}"

    def checksum_url(self, base_url: str) -> str:
        """Return the URL of the zip's ``.CHECKSUM`` file."""
        return self.url(base_url) + ".CHECKSUM"


def monthly_file(kind: str, symbol: str, month: str, interval: str | None = None) -> DumpFile:
    """Return the monthly dump of ``kind`` for ``symbol`` and ``month`` (``YYYY-MM``)."""
    _check(kind, symbol, interval)
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        raise ValueError(f"month {month!r} is not YYYY-MM")
    return DumpFile(kind, symbol, None if kind == "fundingRate" else interval, "monthly", month)


def daily_file(kind: str, symbol: str, day: str | date, interval: str) -> DumpFile:
    """Return the daily dump of a kline ``kind`` for ``symbol`` and ``day`` (``YYYY-MM-DD``).

    fundingRate has no daily files.
    """
    if kind == "fundingRate":
        raise ValueError("fundingRate dumps are monthly only")
    _check(kind, symbol, interval)
    text = day.isoformat() if isinstance(day, date) else day
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"day {text!r} is not YYYY-MM-DD") from None
    return DumpFile(kind, symbol, interval, "daily", text)


def _check(kind: str, symbol: str, interval: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown dump kind {kind!r}; expected one of {', '.join(KINDS)}")
    validate_internal(symbol)
    if kind != "fundingRate":
        if interval is None:
            raise ValueError(f"{kind} needs an interval such as '1m'")
        interval_ms(interval)


# Checksums ----------------------------------------------------------------------------------------
def parse_checksum(text: str, filename: str) -> str:
    """Return the sha256 hex digest of a ``.CHECKSUM`` file's text (``<sha256>  <filename>``).

    Raise DataQualityError naming ``filename`` if the text is malformed or names another file.
    """
    fields = text.strip().split()
    if len(fields) < 1 or not _SHA256.match(fields[0]):
        raise DataQualityError(f"{filename}.CHECKSUM is not '<sha256>  <filename>': {text[:120]!r}")
    if len(fields) >= 2 and fields[1].lstrip("*") != filename:
        raise DataQualityError(f"{filename}.CHECKSUM names another file: {fields[1]!r}")
    return fields[0].lower()


def verify_checksum(data: bytes, checksum_text: str, filename: str) -> str:
    """Check ``data`` against a ``.CHECKSUM`` text; return the digest or raise DataQualityError naming the file."""
    expected = parse_checksum(checksum_text, filename)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataQualityError(
            f"checksum mismatch for {filename}: .CHECKSUM says {expected}, the download hashes to {actual}"
        )
    return actual


# Parsers ------------------------------------------------------------------------------------------
def read_zip(data: bytes, filename: str = "zip") -> bytes:
    """Return the bytes of the one CSV inside a dump zip; raise DataQualityError naming the file."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataQualityError(f"{filename}: expected one CSV inside, found {archive.namelist()}")
            return archive.read(members[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DataQualityError(f"{filename}: not a readable zip: {e}") from None


def parse_dump(dump: DumpFile, zip_bytes: bytes) -> pd.DataFrame:
    """Parse a dump zip into the layout of its lake dataset (``DumpFile.dataset``)."""
    text = read_zip(zip_bytes, dump.filename)
    if dump.kind == "fundingRate":
        return parse_funding_csv(text, name=dump.filename)
    return parse_klines_csv(text, kind=dump.kind, name=dump.filename)


def parse_klines_csv(text: str | bytes, kind: str = "klines", name: str = "csv") -> pd.DataFrame:
    """Parse a kline dump CSV (with or without header) into a candles or mark/premium layout.

    ``kind`` ``klines`` gives ts, open, high, low, close, volume, quote_volume, trade_count,
    taker_buy_volume; ``markPriceKlines`` and ``premiumIndexKlines`` give ts, open, high, low, close.
    ``ts`` is the bar open time in epoch ms (microsecond files are converted).
    """
    if kind not in KLINE_KINDS:
        raise ValueError(f"{kind!r} is not a kline dump kind ({', '.join(KLINE_KINDS)})")
    types = {
        "open_time": pa.int64(),
        "close_time": pa.int64(),
        "count": pa.int64(),
        "ignore": pa.string(),
        **{c: pa.float64() for c in ("open", "high", "low", "close", "volume", "quote_volume")},
        **{c: pa.float64() for c in ("taker_buy_volume", "taker_buy_quote_volume")},
    }
    table, rejected = _read_csv(text, KLINE_COLUMNS, types, name)
    ts = _to_ms(table.column("open_time").to_numpy())
    columns = {
        "ts": ts,
        "open": table.column("open").to_numpy(),
        "high": table.column("high").to_numpy(),
        "low": table.column("low").to_numpy(),
        "close": table.column("close").to_numpy(),
    }
    if kind == "klines":
        columns |= {
            "volume": table.column("volume").to_numpy(),
            "quote_volume": table.column("quote_volume").to_numpy(),
            "trade_count": table.column("count").to_numpy(),
            "taker_buy_volume": table.column("taker_buy_volume").to_numpy(),
        }
    return _with_rejected(pd.DataFrame(columns), rejected)


def parse_funding_csv(text: str | bytes, name: str = "csv") -> pd.DataFrame:
    """Parse a fundingRate dump CSV into the funding layout: ts (funding time, epoch ms), funding_rate."""
    types = {
        "calc_time": pa.int64(),
        "funding_interval_hours": pa.float64(),
        "last_funding_rate": pa.float64(),
    }
    table, rejected = _read_csv(text, FUNDING_COLUMNS, types, name)
    frame = pd.DataFrame(
        {
            "ts": _to_ms(table.column("calc_time").to_numpy()),
            "funding_rate": table.column("last_funding_rate").to_numpy(),
        }
    )
    return _with_rejected(frame, rejected)


#: A line the parser could not read: (reason, detail, raw values) for a data-quality event.
RejectedLine = tuple[str, str, dict[str, object]]


def _with_rejected(frame: pd.DataFrame, rejected: list[RejectedLine]) -> pd.DataFrame:
    if rejected:
        frame.attrs["rejected_lines"] = rejected
    return frame


def _read_csv(
    text: str | bytes, expected: tuple[str, ...], types: dict[str, pa.DataType], name: str
) -> tuple[pa.Table, list[RejectedLine]]:
    data = text.encode() if isinstance(text, str) else text
    data = data.removeprefix(b"\xef\xbb\xbf")
    first_line = data.split(b"\n", 1)[0].strip()
    if not first_line:
        return pa.table({c: pa.array([], type=types[c]) for c in expected}), []
    has_header = not first_line[:1].isdigit()
    header = [h.strip() for h in first_line.decode(errors="replace").split(",")]
    if has_header and header != list(expected):
        raise DataQualityError(f"{name}: header {header} is not the expected {list(expected)}")
    if not has_header and len(header) != len(expected):
        raise DataQualityError(
            f"{name}: {len(header)} columns, expected {len(expected)} ({', '.join(expected)})"
        )
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(expected), skip_rows=1 if has_header else 0),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
        return table, []
    except pa.ArrowInvalid as e:
        error = str(e)
    table, rejected = _read_lines(data, expected, types, name, has_header)
    if table.num_rows == 0:
        raise DataQualityError(f"{name}: malformed CSV, no readable line: {error}")
    return table, rejected


def _read_lines(
    data: bytes, expected: tuple[str, ...], types: dict[str, pa.DataType], name: str, has_header: bool
) -> tuple[pa.Table, list[RejectedLine]]:
    """Line by line (the slow path, for a file with malformed lines): the readable lines as a table,
    the others as rejected lines with their line number and text."""
    good: dict[str, list[object]] = {c: [] for c in expected}
    rejected: list[RejectedLine] = []
    lines = data.decode(errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if (has_header and number == 1) or not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        raw: dict[str, object] = {"file": name, "line": number, "text": line}
        if len(fields) != len(expected):
            rejected.append(
                (
                    "malformed_line",
                    f"{name} line {number}: {len(fields)} fields, expected {len(expected)}",
                    raw,
                )
            )
            continue
        try:
            values = [_convert(value, types[column]) for column, value in zip(expected, fields, strict=True)]
        except ValueError:
            bad = next(c for c, v in zip(expected, fields, strict=True) if not _convertible(v, types[c]))
            detail = f"{name} line {number}: {bad}={fields[expected.index(bad)]!r} is not a number"
            rejected.append(("malformed_line", detail, raw))
            continue
        for column, value in zip(expected, values, strict=True):
            good[column].append(value)
    return pa.table({c: pa.array(good[c], type=types[c]) for c in expected}), rejected


def _convert(value: str, kind: pa.DataType) -> object:
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def _convertible(value: str, kind: pa.DataType) -> bool:
    try:
        _convert(value, kind)
    except ValueError:
        return False
    return True


def _to_ms(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64, copy=False)
    if len(values) and int(values.max()) > _MICROSECONDS_ABOVE:
        return values // 1000
    return values
