"""The parquet data lake: one file per dataset, symbol and UTC month (year for labels), readable by
Ray Data.

Layout (Hive-style, so ``ray.data.read_parquet`` adds a ``symbol`` column from the path)::

    <root>/<dataset>/symbol=<SYMBOL>/<YYYY-MM>.parquet     (label datasets: <YYYY>.parquet)

Each file holds the rows of one partition, a UTC month or year (by ``ts``, epoch ms UTC), sorted by
``ts`` with unique ``ts``, in the column layout of ``core.frames``; lz4-compressed (see
``_write_options``). The key-value metadata records the dataset, the symbol and every ``source``
that contributed rows (``binance-dump``, ``binance-rest``, ``import:<path>``, ``synthetic`` …).

Months keep appends to raw data cheap and range reads of features narrow. Label datasets are
always rewritten whole per symbol and read whole for training, so they are partitioned by year:
a twelfth of the files to create, rename and open (bench/labels.py).

Writes merge by ``ts`` (new rows win), go to a temporary file and are renamed into place, so a
reader never sees half a file. There is one writer per (dataset, symbol) at a time: concurrent
writers of the same partition would lose one another's rows.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import DataQualityError
from core.frames import check_columns, layout
from core.quality import MAX_TS_MS, MIN_TS_MS  # plausible epoch-ms range, shared with the row door
from core.symbols import SymbolError, validate_internal
from core.time import INTERVAL_MS

#: Parquet key-value metadata keys written by the lake.
META_DATASET = b"raytrade.dataset"
META_SYMBOL = b"raytrade.symbol"
META_SOURCES = b"raytrade.sources"


#: Raw data is read far more often than written (every feature, label and backtest run), so it is
#: stored for read speed: on real Binance 1m klines, lz4 files are 1.5× the size of zstd ones and
#: read 1.7× faster (OHLC of a symbol-year: 9.7 ms against 16.4 ms). A lake of 50 symbols × 4 years
#: of 1m candles is a few GB either way. Files written before this choice stay zstd; readers take both.
_COMPRESSION = "lz4"
#: Derived datasets are rebuilt from the raw ones whenever needed, so write speed beats density.
#: Features (smooth series) still shrink 3.4× under lz4. Label returns and excursions do not
#: compress (lz4 saves 8% at 1.4× the write time): stored plain; their small integer codes go lz4.
_FEATURES, _LABELS = "features_", "labels_"


def _write_options(dataset: str, table: pa.Table) -> dict[str, object]:
    """Parquet options of one lake file. ts (ascending, mostly one step) is delta-encoded to almost
    nothing. Raw datasets: lz4, dictionary encoding on the integer columns (floats rarely repeat),
    statistics on every column. Derived ones: statistics on ts only, the one column read by range."""
    ints = [f.name for f in table.schema if pa.types.is_integer(f.type) and f.name != "ts"]
    options: dict[str, object] = {
        "compression": _COMPRESSION,
        "use_dictionary": ints,
        "column_encoding": {"ts": "DELTA_BINARY_PACKED"},
        "write_statistics": True,
    }
    if dataset.startswith(_FEATURES):
        options.update(compression="lz4", write_statistics=["ts"])
    elif dataset.startswith(_LABELS):
        # Dictionary pages cost more than lz4 on a handful of distinct codes, which lz4 shrinks 20×.
        codes = {f.name: "lz4" if f.name in ints else "none" for f in table.schema}
        options.update(compression=codes, use_dictionary=False, write_statistics=["ts"])
    return options


_SYMBOL_PREFIX = "symbol="


@dataclass(frozen=True, slots=True)
class LakeWrite:
    """What one ``Lake.write`` did: input rows, month files rewritten and files left unchanged."""

    dataset: str
    symbol: str
    rows: int
    files_written: tuple[str, ...]
    files_unchanged: tuple[str, ...]


class Coverage(NamedTuple):
    """First and last ``ts`` (epoch ms) and row count of one dataset and symbol (unpacks as a tuple)."""

    first_ts: int
    last_ts: int
    rows: int


class Lake:
    """A parquet data lake rooted at ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # Paths ----------------------------------------------------------------------------------------
    def symbol_dir(self, dataset: str, symbol: str) -> Path:
        """Return the directory of one dataset and symbol (it may not exist)."""
        return self.root / dataset / f"{_SYMBOL_PREFIX}{symbol}"

    def partition_path(self, dataset: str, symbol: str, period: str) -> Path:
        """Return the file of one partition (``YYYY-MM``, or ``YYYY`` for label datasets) of a dataset
        and symbol (it may not exist)."""
        return self.symbol_dir(dataset, symbol) / f"{period}.parquet"

    # Writing --------------------------------------------------------------------------------------
    def write(
        self, dataset: str, symbol: str, frame: pd.DataFrame | Mapping[str, np.ndarray], source: str
    ) -> LakeWrite:
        """Merge ``frame`` into the lake by ``ts`` (its rows win on equal ``ts``) and record ``source``.

        Validates the columns (core.frames), the symbol, ``ts`` (plausible epoch ms, unique, on the
        interval grid for interval datasets) and that required values are not NaN. Writing the same
        frame twice leaves identical files. Raise DataQualityError naming dataset, symbol and problem.
        """
        if not source or not isinstance(source, str):
            raise DataQualityError(f"{dataset}/{symbol}: source must be a non-empty string")
        columns = _validated_columns(dataset, symbol, frame)
        ts = columns["ts"]
        written: list[str] = []
        unchanged: list[str] = []
        if len(ts) == 0:
            return LakeWrite(dataset, symbol, 0, (), ())
        if not (np.diff(ts) > 0).all():  # already sorted is the common case: skip the copy
            order = np.argsort(ts, kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
        unit = _period_unit(dataset)
        for period, lo, hi in _period_slices(columns["ts"], unit):
            part = {name: values[lo:hi] for name, values in columns.items()}
            path = self.partition_path(dataset, symbol, period)
            if self._merge_partition(dataset, symbol, path, part, source):
                written.append(str(path))
            else:
                unchanged.append(str(path))
            if unit == "Y":  # monthly files of an older layout: superseded, never read
                for stale in path.parent.glob(f"{period}-[0-9][0-9].parquet"):
                    stale.unlink(missing_ok=True)
        return LakeWrite(dataset, symbol, len(ts), tuple(written), tuple(unchanged))

    def _merge_partition(
        self, dataset: str, symbol: str, path: Path, part: Mapping[str, np.ndarray], source: str
    ) -> bool:
        new = _to_table(dataset, part)
        sources = {source}
        old: pa.Table | None = None
        old_meta: dict[bytes, bytes] = {}
        if path.exists():
            old, old_meta = _read_file(path)
            sources |= set(_sources_of(old_meta))
            merged = _merge_tables(dataset, old, new)
        else:
            merged = new
        if old is not None and merged.equals(old) and sources == set(_sources_of(old_meta)):
            return False
        metadata = {
            META_DATASET: dataset.encode(),
            META_SYMBOL: symbol.encode(),
            META_SOURCES: json.dumps(sorted(sources)).encode(),
        }
        merged = merged.replace_schema_metadata(metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(merged, tmp, **_write_options(dataset, merged))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def differing(
        self, dataset: str, symbol: str, frame: pd.DataFrame | Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Return a mask of the rows of ``frame`` whose ``ts`` the lake holds with other values.

        Compares the columns both have (NaN equals NaN). Rows the lake does not hold, or holds
        identically, are False: writing them adds or changes nothing.
        """
        names = list(frame.columns) if isinstance(frame, pd.DataFrame) else list(frame)
        columns = {str(k): np.asarray(frame[k]) for k in names}
        ts = np.asarray(columns["ts"], dtype=np.int64)
        out = np.zeros(len(ts), dtype=bool)
        if len(ts) == 0 or not self._partition_files(dataset, symbol):
            return out
        stored = self._read_table(dataset, symbol, int(ts.min()), int(ts.max()) + 1, None)
        if stored is None or stored.num_rows == 0:
            return out
        old_ts = stored.column("ts").to_numpy()
        at = np.searchsorted(old_ts, ts)
        held = (at < len(old_ts)) & (old_ts[np.minimum(at, len(old_ts) - 1)] == ts)
        rows, where = np.flatnonzero(held), at[held]
        for name in columns.keys() & set(stored.column_names) - {"ts"}:
            old = stored.column(name).to_numpy(zero_copy_only=False)[where]
            new = columns[name][rows]
            if old.dtype.kind == "f" or new.dtype.kind == "f":
                old, new = old.astype(np.float64), new.astype(np.float64)
                same = (old == new) | (np.isnan(old) & np.isnan(new))
            else:
                same = old == new
            out[rows[~same]] = True
        return out

    # Reading --------------------------------------------------------------------------------------
    def read(
        self,
        dataset: str,
        symbol: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        columns: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Return the rows of [start_ms, end_ms) (end exclusive; None: unbounded), sorted by ``ts``.

        Opens only the month files that overlap the range, and reads only ``columns`` (plus ``ts``)
        when given. An absent dataset or symbol gives an empty frame with the layout's required columns.
        """
        wanted = None if columns is None else ["ts", *(c for c in columns if c != "ts")]
        table = self._read_table(dataset, symbol, start_ms, end_ms, wanted)
        if table is None:
            return pd.DataFrame(_empty_columns(dataset, wanted))
        frame = table.to_pandas()
        if start_ms is not None or end_ms is not None:
            ts = frame["ts"].to_numpy()
            keep = np.ones(len(ts), dtype=bool)
            if start_ms is not None:
                keep &= ts >= start_ms
            if end_ms is not None:
                keep &= ts < end_ms
            frame = frame.loc[keep].reset_index(drop=True)
        return frame

    def read_arrays(
        self, dataset: str, symbol: str, columns: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Return every row of a symbol as numpy columns (``ts`` first), skipping pandas: the fast path
        for kernels that read a whole series."""
        wanted = None if columns is None else ["ts", *(c for c in columns if c != "ts")]
        table = self._read_table(dataset, symbol, None, None, wanted)
        if table is None:
            return _empty_columns(dataset, wanted)
        return {name: table.column(name).to_numpy() for name in table.column_names}

    def _read_table(
        self, dataset: str, symbol: str, start_ms: int | None, end_ms: int | None, wanted: list[str] | None
    ) -> pa.Table | None:
        """The partition files overlapping [start_ms, end_ms) as one table (None when there are none)."""
        layout(dataset)  # an unknown dataset is an error, not an empty read
        paths = self._partition_files(dataset, symbol)
        unit = _period_unit(dataset)
        if start_ms is not None:
            first = _period_name(_period_numbers(np.array([start_ms], dtype=np.int64), unit)[0], unit)
            paths = [p for p in paths if p.stem >= first]
        if end_ms is not None:
            last = _period_name(_period_numbers(np.array([end_ms - 1], dtype=np.int64), unit)[0], unit)
            paths = [p for p in paths if p.stem <= last]
        if not paths:
            return None
        tables = [_read_file(p, wanted)[0] for p in paths]
        return _concat(tables) if len(tables) > 1 else tables[0]

    def datasets(self) -> list[str]:
        """Return the datasets that have at least one symbol directory, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob(f"{_SYMBOL_PREFIX}*"))
        )

    def symbols(self, dataset: str) -> list[str]:
        """Return the symbols that have at least one file of ``dataset``, sorted."""
        base = self.root / dataset
        if not base.is_dir():
            return []
        return sorted(
            p.name[len(_SYMBOL_PREFIX) :]
            for p in base.iterdir()
            if p.is_dir() and p.name.startswith(_SYMBOL_PREFIX) and any(p.glob("*.parquet"))
        )

    def files(self, dataset: str, symbols: Iterable[str] | None = None) -> list[str]:
        """Return the parquet files of ``dataset`` (optionally only ``symbols``), for ray.data.read_parquet.

        Paths are absolute and sorted by symbol, then partition.
        """
        chosen = self.symbols(dataset) if symbols is None else list(symbols)
        return [str(p.resolve()) for symbol in chosen for p in self._partition_files(dataset, symbol)]

    def coverage(self, dataset: str, symbol: str) -> Coverage | None:
        """Return (first_ts, last_ts, rows) of a dataset and symbol from file metadata, or None if absent."""
        paths = self._partition_files(dataset, symbol)
        if not paths:
            return None
        rows = 0
        for p in paths:
            rows += pq.ParquetFile(p).metadata.num_rows
        first = _ts_bound(paths[0], first=True)
        last = _ts_bound(paths[-1], first=False)
        return Coverage(first, last, rows)

    def sources(self, dataset: str, symbol: str) -> dict[str, tuple[str, ...]]:
        """Return the sources recorded in each partition file, as {``YYYY-MM`` (or ``YYYY``): (source, …)}."""
        out: dict[str, tuple[str, ...]] = {}
        for p in self._partition_files(dataset, symbol):
            meta = pq.read_schema(p).metadata or {}
            out[p.stem] = tuple(_sources_of(meta))
        return out

    def _partition_files(self, dataset: str, symbol: str) -> list[Path]:
        """The dataset's partition files of ``symbol``, sorted. Files named for another period (monthly
        label files of an older layout) are not part of it."""
        directory = self.symbol_dir(dataset, symbol)
        if not directory.is_dir():
            return []
        pattern = _PERIOD_NAMES[_period_unit(dataset)]
        return sorted(p for p in directory.glob("*.parquet") if pattern.fullmatch(p.stem))


# Helpers ------------------------------------------------------------------------------------------
def _empty_columns(dataset: str, wanted: list[str] | None) -> dict[str, np.ndarray]:
    """Empty required columns of a dataset (those in ``wanted``, when given)."""
    required = layout(dataset).required
    return {k: np.array([], dtype=d) for k, d in required.items() if wanted is None or k in wanted}


def _validated_columns(
    dataset: str, symbol: str, frame: pd.DataFrame | Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    where = f"{dataset}/{symbol}"
    try:
        validate_internal(symbol)
    except SymbolError as e:
        raise DataQualityError(f"{where}: {e}") from None
    if isinstance(frame, pd.DataFrame):
        raw = {name: frame[name].to_numpy() for name in frame.columns}
    elif isinstance(frame, Mapping):
        raw = {str(name): np.asarray(values) for name, values in frame.items()}
    else:
        raise DataQualityError(
            f"{where}: expected a DataFrame or a mapping of columns, got {type(frame).__name__}"
        )
    try:
        columns = check_columns(dataset, raw)
    except DataQualityError as e:
        raise DataQualityError(f"{where}: {e}") from None
    ts = columns["ts"]
    if len(ts) == 0:
        return columns
    out_of_range = (ts < MIN_TS_MS) | (ts >= MAX_TS_MS)
    if out_of_range.any():
        bad = int(ts[out_of_range][0])
        raise DataQualityError(
            f"{where}: {int(out_of_range.sum())} ts value(s) are not epoch milliseconds between 2000 "
            f"and 2100 (first: {bad}); seconds or microseconds?"
        )
    if not (np.diff(ts) > 0).all():  # sorted and unique is the common case: no sort needed
        unique, counts = np.unique(ts, return_counts=True)
        if len(unique) != len(ts):
            dup = unique[counts > 1]
            raise DataQualityError(
                f"{where}: {len(ts) - len(unique)} duplicate ts value(s) (first: {int(dup[0])}); "
                "deduplicate before writing"
            )
    step = _grid_ms(dataset)
    if step is not None:
        off = ts % step != 0
        if off.any():
            raise DataQualityError(
                f"{where}: {int(off.sum())} ts value(s) off the {step} ms grid (first: {int(ts[off][0])})"
            )
    for name in layout(dataset).required:
        values = columns[name]
        if values.dtype.kind == "f" and np.isnan(values).any():
            first = int(ts[np.isnan(values)][0])
            raise DataQualityError(
                f"{where}: column {name} has {int(np.isnan(values).sum())} NaN value(s) (first at ts {first})"
            )
    return columns


def _grid_ms(dataset: str) -> int | None:
    suffix = dataset.rsplit("_", 1)[-1]
    return INTERVAL_MS.get(suffix) if "_" in dataset else None


#: Partition of a dataset's files: numpy datetime unit, and the file-name pattern of one partition.
_Unit = Literal["M", "Y"]
_PERIOD_NAMES: dict[_Unit, re.Pattern[str]] = {"M": re.compile(r"\d{4}-\d{2}"), "Y": re.compile(r"\d{4}")}


def _period_unit(dataset: str) -> _Unit:
    return "Y" if dataset.startswith(_LABELS) else "M"


def _period_numbers(ts_ms: np.ndarray, unit: _Unit) -> np.ndarray:
    """Months (or years) since 1970 of epoch-ms timestamps."""
    return ts_ms.astype("datetime64[ms]").astype(f"datetime64[{unit}]").astype(np.int64)


def _period_slices(ts_ms: np.ndarray, unit: _Unit) -> list[tuple[str, int, int]]:
    """(partition name, first row, end row) of each month (or year) of ascending ``ts_ms``: a binary
    search per partition boundary rather than a calendar conversion per row."""
    first, last = _period_numbers(ts_ms[[0, -1]], unit)
    periods = np.arange(first, last + 2)
    starts_ms = periods.astype(f"datetime64[{unit}]").astype("datetime64[ms]").astype(np.int64)
    bounds = np.searchsorted(ts_ms, starts_ms)
    return [
        (_period_name(m, unit), int(lo), int(hi))
        for m, lo, hi in zip(periods[:-1], bounds[:-1], bounds[1:], strict=True)
        if hi > lo
    ]


def _period_name(number: np.integer | int, unit: _Unit) -> str:
    return str(np.datetime64(int(number), unit))


def _schema(dataset: str, names: Iterable[str]) -> pa.Schema:
    lay = layout(dataset)
    present = set(names)
    dtypes = {**lay.required, **lay.optional}
    return pa.schema(
        [(name, pa.from_numpy_dtype(np.dtype(dtypes[name]))) for name in lay.columns if name in present]
    )


def _without_needless_nulls(table: pa.Table) -> pa.Table:
    """Mark the columns without nulls not nullable: parquet then skips definition levels on write and
    read. Nulls only arise in an optional column that some merged rows lacked (NaN is not null)."""
    schema = pa.schema([f.with_nullable(table.column(f.name).null_count > 0) for f in table.schema])
    return table if schema.equals(table.schema) else table.cast(schema)


def _to_table(dataset: str, columns: Mapping[str, np.ndarray]) -> pa.Table:
    # From numpy: no nulls (a missing value is NaN), so no column is nullable.
    schema = pa.schema([f.with_nullable(False) for f in _schema(dataset, columns)])
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


def _read_file(path: Path, columns: list[str] | None = None) -> tuple[pa.Table, dict[bytes, bytes]]:
    table = pq.ParquetFile(path).read(columns=columns)
    meta = dict(table.schema.metadata or {})
    return table.replace_schema_metadata(None), meta


def _sources_of(meta: Mapping[bytes, bytes]) -> list[str]:
    raw = meta.get(META_SOURCES)
    return list(json.loads(raw)) if raw else []


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="default")


def _merge_tables(dataset: str, old: pa.Table, new: pa.Table) -> pa.Table:
    old_ts = old.column("ts").to_numpy()
    new_ts = new.column("ts").to_numpy()
    keep_old = old.filter(pa.array(~np.isin(old_ts, new_ts)))
    combined = _concat([keep_old, new])
    schema = _schema(dataset, combined.column_names)
    combined = combined.select(schema.names).cast(schema)
    order = np.argsort(combined.column("ts").to_numpy(), kind="stable")
    return _without_needless_nulls(combined.take(pa.array(order)))


def _ts_bound(path: Path, first: bool) -> int:
    metadata = pq.ParquetFile(path).metadata
    index = metadata.schema.to_arrow_schema().get_field_index("ts")
    groups = range(metadata.num_row_groups) if first else range(metadata.num_row_groups - 1, -1, -1)
    for g in groups:
        stats = metadata.row_group(g).column(index).statistics
        if stats is not None and stats.has_min_max and metadata.row_group(g).num_rows:
            return int(stats.min if first else stats.max)
    ts = pq.read_table(path, columns=["ts"]).column("ts").to_numpy()
    return int(ts[0] if first else ts[-1])
