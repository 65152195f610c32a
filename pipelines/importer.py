"""``raytrade import PATH``: load local parquet/feather market data into the lake, validated.

Understands a folder laid out by dataset (``klines_1m/<SYMBOL>.parquet``, ``mark_8h/…``,
``funding/…``, ``long/klines_1h/…``, ``long/mark_1h/…``, ``long/funding/…``; lake names such as
``candles_1m/`` work too) and single files given with a dataset and symbol. Column names are mapped
from the common spellings (``open_time``, ``funding_time``, ``fundingRate`` …).

Every row passes the data-quality door of every market write (pipelines.door, core.quality:
finite, positive prices; high ≥ max(open, close); low ≤ min(open, close); volume ≥ 0; ts on the
interval grid; a ts repeated with other values refuses all its rows). Rejected rows are not
stored: they are reported, per file, with their reason codes and the first examples, and handed to
``on_rejected`` as ``events`` rows with their raw values, never dropped silently. Rows whose ts the
lake holds with other values are refused and reported unless ``replace``. CSV files are refused
with a message saying so.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

from core.errors import DataQualityError
from core.frames import LAYOUTS, check_columns, layout
from core.quality import Rejection, check_rows
from core.symbols import SymbolError, validate_internal
from core.time import INTERVAL_MS
from pipelines.door import write_through_door
from storage.lake import Lake

#: Folder names of known layouts → lake dataset. Lake dataset names map to themselves.
FOLDER_DATASETS: dict[str, str] = {
    "klines_1m": "candles_1m",
    "klines_15m": "candles_15m",
    "klines_1h": "candles_1h",
    "mark_1m": "mark_1m",
    "mark_1h": "mark_1h",
    "mark_8h": "mark_8h",
    "premium_1m": "premium_1m",
    "funding": "funding",
    **{name: name for name in LAYOUTS},
}

#: Accepted spellings of each lake column, first match wins.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "open_time", "funding_time", "fundingTime", "calc_time", "timestamp", "time"),
    "funding_rate": ("funding_rate", "fundingRate", "last_funding_rate"),
    "mark_price": ("mark_price", "markPrice"),
    "trade_count": ("trade_count", "count", "trades", "number_of_trades"),
    "quote_volume": ("quote_volume", "quote_asset_volume"),
    "taker_buy_volume": ("taker_buy_volume", "taker_buy_base_volume", "taker_buy_base_asset_volume"),
}

_SUFFIXES = (".parquet", ".feather", ".arrow")
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class FileImport:
    """Outcome of one file: rows read, rows stored, rejected rows by reason and the first examples."""

    path: str
    dataset: str
    symbol: str
    rows_read: int
    rows_written: int
    rejected: dict[str, int]
    examples: tuple[str, ...]
    notes: tuple[str, ...] = ()
    conflicts: int = 0  # rows refused: the lake holds their ts with other values
    conflict_message: str = ""
    replaced: int = 0  # rows that replaced stored rows (``replace``)
    events: tuple[dict[str, Any], ...] = ()  # ``events`` rows of the rejected rows

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Outcome of an import: one entry per file, and what was skipped and why."""

    files: tuple[FileImport, ...]
    skipped: tuple[str, ...]

    @property
    def conflicts(self) -> int:
        return sum(f.conflicts for f in self.files)

    def rows(self) -> dict[tuple[str, str], int]:
        """Return rows stored per (dataset, symbol)."""
        out: Counter[tuple[str, str]] = Counter()
        for f in self.files:
            out[(f.dataset, f.symbol)] += f.rows_written
        return dict(out)

    @property
    def rows_rejected(self) -> int:
        return sum(f.rows_rejected for f in self.files)

    def summary(self) -> str:
        """Return a readable summary: rows per dataset, rejected rows with reasons, skipped items."""
        per_dataset: Counter[str] = Counter()
        symbols: dict[str, set[str]] = {}
        for f in self.files:
            per_dataset[f.dataset] += f.rows_written
            symbols.setdefault(f.dataset, set()).add(f.symbol)
        lines = [f"import: {len(self.files)} file(s), {sum(per_dataset.values()):,} row(s) stored"]
        for dataset in sorted(per_dataset):
            lines.append(f"  {dataset}: {per_dataset[dataset]:,} row(s), {len(symbols[dataset])} symbol(s)")
        for f in self.files:
            if f.rows_rejected:
                reasons = ", ".join(f"{k} {v}" for k, v in sorted(f.rejected.items()))
                lines.append(f"  rejected {f.rows_rejected} row(s) of {f.path} ({reasons})")
                lines += [f"    e.g. {e}" for e in f.examples]
            if f.conflicts:
                lines.append(f"  refused {f.conflicts} conflicting row(s) of {f.path}: {f.conflict_message}")
            if f.replaced:
                lines.append(f"  replaced {f.replaced} stored row(s) with rows of {f.path} (--replace)")
            lines += [f"  note: {f.path}: {n}" for n in f.notes]
        lines += [f"  skipped {s}" for s in self.skipped]
        return "\n".join(lines)


def import_path(
    lake: Lake,
    path: Path,
    dataset: str | None = None,
    symbol: str | None = None,
    *,
    replace: bool = False,
    now_ms: int | None = None,
    on_rejected: Callable[[list[dict[str, Any]]], object] | None = None,
) -> ImportReport:
    """Import a file or a folder of market data into ``lake``; return what was stored and rejected.

    A single file needs ``dataset`` unless its folder name says it (``klines_1m/BTCUSDT.parquet``)
    and ``symbol`` unless its stem is one. A folder without ``dataset`` is walked for known layout
    folders; with ``dataset`` its files are all of that dataset. Raise DataQualityError for input
    that cannot be imported at all (unknown dataset, missing columns, no symbol); in a folder, the
    message names the files stored before it. Rows refused by the door go to ``on_rejected`` as
    ``events`` rows stamped ``now_ms`` (default: now); rows that differ from the lake are refused
    and reported unless ``replace``.
    """
    path = Path(path)
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    done: list[FileImport] = []

    def one(p: Path, chosen: str, sym: str | None) -> FileImport:
        try:
            result = import_file(lake, p, chosen, sym, replace=replace, now_ms=stamp)
        except DataQualityError as e:
            if not done:
                raise
            stored = ", ".join(f"{Path(f.path).name} ({f.rows_written:,} rows)" for f in done)
            raise DataQualityError(
                f"{e}\nstopped there; already stored in the lake: {stored}. "
                "Fix or move that file and rerun: stored files are not duplicated."
            ) from None
        if on_rejected is not None and result.events:
            on_rejected(list(result.events))
        done.append(result)
        return result

    if dataset is not None:
        layout(dataset)
    if not path.exists():
        raise DataQualityError(f"{path} does not exist")
    if path.is_file():
        _check_format(path)  # a file we cannot read says so before anything asks for its dataset
        chosen = dataset or FOLDER_DATASETS.get(path.parent.name)
        if chosen is None:
            raise DataQualityError(
                f"{path}: cannot tell the dataset from the folder name {path.parent.name!r}; "
                f"pass --dataset (one of {', '.join(sorted(LAYOUTS))})"
            )
        return ImportReport((one(path, chosen, symbol),), ())
    if dataset is not None:
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
        if symbol is not None and len(files) > 1:
            raise DataQualityError(f"{path}: --symbol names one symbol but the folder has {len(files)} files")
        return ImportReport(tuple(one(p, dataset, symbol) for p in files), _csv_skipped(path))
    imported: list[FileImport] = []
    skipped: list[str] = []
    for folder in sorted(p for p in [path, *path.rglob("*")] if p.is_dir()):
        skipped += _csv_skipped(folder)
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
        if not files:
            continue
        chosen = FOLDER_DATASETS.get(folder.name)
        if chosen is None:
            skipped.append(f"{folder} ({len(files)} file(s)): {_why_skipped(folder.name)}")
            continue
        imported += [one(p, chosen, symbol) for p in files]
    if not imported and not skipped:
        raise DataQualityError(f"{path}: no .parquet or .feather files found")
    return ImportReport(tuple(imported), tuple(skipped))


def import_file(
    lake: Lake,
    path: Path,
    dataset: str,
    symbol: str | None = None,
    *,
    replace: bool = False,
    now_ms: int | None = None,
) -> FileImport:
    """Import one parquet/feather file of ``dataset`` for ``symbol`` (default: the file stem).

    Rows pass the door (pipelines.door); the refused ones are in ``FileImport.events``.
    """
    symbol = symbol or path.stem
    try:
        validate_internal(symbol)
    except SymbolError as e:
        raise DataQualityError(f"{path}: {e}; pass --symbol") from None
    table = _read_table(path)
    columns, notes = _lake_columns(dataset, table, path)
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    source = f"import:{path.resolve()}"
    door = write_through_door(lake, dataset, symbol, columns, source=source, now_ms=stamp, replace=replace)
    return FileImport(
        path=str(path),
        dataset=dataset,
        symbol=symbol,
        rows_read=door.rows_in,
        rows_written=door.rows_stored,
        rejected=door.rejected,
        examples=tuple(_examples(list(door.rejections))),
        notes=tuple(notes),
        conflicts=door.conflicts,
        conflict_message=door.conflict_message(),
        replaced=door.replaced,
        events=door.events,
    )


def validate_rows(
    dataset: str, symbol: str, columns: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Return (mask of rows to keep, reason code of each rejected row, first example details).

    The door of every market write (core.quality.check_rows): candles and mark prices: finite,
    positive prices, OHLC consistent, volume finite and ≥ 0, ts on the grid. Premium index (may be
    ≤ 0): finite and OHLC consistent. Funding: finite rate. All: plausible epoch-ms ts; a repeated
    ts with the same values keeps its first row, with different values none.
    """
    keep, rejections = check_rows(dataset, symbol, columns, _grid_ms(dataset))
    return keep, [r.reason for r in rejections], _examples(rejections)


def _examples(rejections: list[Rejection]) -> list[str]:
    """The first few rejections of each reason, in row order, as ``reason: detail``."""
    seen: Counter[str] = Counter()
    chosen = []
    for r in rejections:
        seen[r.reason] += 1
        if seen[r.reason] <= _EXAMPLES:
            chosen.append(f"{r.reason}: {r.detail}")
    return chosen[: _EXAMPLES * 2]


def _grid_ms(dataset: str) -> int | None:
    return INTERVAL_MS.get(dataset.rsplit("_", 1)[-1]) if "_" in dataset else None


def _check_format(path: Path) -> None:
    if path.suffix.lower() == ".csv":
        raise DataQualityError(
            f"{path}: CSV files are not imported (only .parquet, .feather, .arrow); convert it first, "
            "e.g. pandas.read_csv(path).to_parquet(...), or fetch Binance dump CSVs with `raytrade history`"
        )
    if path.suffix not in _SUFFIXES:
        raise DataQualityError(f"{path}: not a .parquet, .feather or .arrow file")


def _read_table(path: Path) -> pa.Table:
    _check_format(path)
    try:
        if path.suffix == ".parquet":
            return pq.ParquetFile(path).read()
        return feather.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise DataQualityError(f"{path}: cannot read: {e}") from None


def _lake_columns(dataset: str, table: pa.Table, path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    lay = layout(dataset)
    names = table.column_names
    raw: dict[str, np.ndarray] = {}
    for name in lay.columns:
        source = next((alias for alias in COLUMN_ALIASES.get(name, (name,)) if alias in names), None)
        if source is None:
            continue
        column = table.column(source)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            column = column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        raw[name] = column.to_numpy(zero_copy_only=False)
    missing = [c for c in lay.required if c not in raw]
    if missing:
        wanted = ", ".join(
            f"{c} (or {'/'.join(COLUMN_ALIASES[c][1:])})" if c in COLUMN_ALIASES else c for c in missing
        )
        raise DataQualityError(f"{path}: {dataset} needs column(s) {wanted}; the file has {', '.join(names)}")
    notes: list[str] = []
    ts = raw["ts"]
    if ts.dtype.kind in "iu" and len(ts):
        top = int(ts.max())
        if top < 100_000_000_000:
            raw["ts"] = ts.astype(np.int64) * 1000
            notes.append("ts looked like epoch seconds: multiplied by 1000")
        elif top > 100_000_000_000_000:
            raw["ts"] = ts.astype(np.int64) // 1000
            notes.append("ts looked like epoch microseconds: divided by 1000")
    try:
        return check_columns(dataset, raw), notes
    except DataQualityError as e:
        raise DataQualityError(f"{path}: {e}") from None


def _csv_skipped(folder: Path) -> tuple[str, ...]:
    csvs = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if not csvs:
        return ()
    return (f"{folder} ({len(csvs)} .csv file(s)): CSV is not imported; convert to parquet first",)


def _why_skipped(folder: str) -> str:
    prefix, _, interval = folder.partition("_")
    if prefix in ("klines", "candles", "mark", "premium") and interval in INTERVAL_MS:
        return f"no lake dataset for {interval} bars (derive them from the 1m data instead)"
    return "not a known dataset folder"
