"""Columnar row batches for the bulk writers: normalized, validated, typed by column kind.

A batch is what the writer buffers and what the dialect writers encode. Input is a mapping of
column name → array or list, a pandas DataFrame, or a list of row dicts. Normalization happens
once, in the caller's thread, so a bad value is a clear ``ValueError`` at submit time, not a
failed flush later.

Null conventions: ``None`` (and pandas NA) is SQL NULL; in a float column NaN is NULL too (as in
pandas, and as SQLite stores it). JSON values are serialized here (orjson); a JSON column's
``None`` is SQL NULL, not the JSON ``null``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from storage.types import EpochMs, ms_from_datetime

#: Column kinds, named after the PostgreSQL type they are written as.
FLOAT8, INT8, INT4, INT2, BOOL, TIMESTAMPTZ, TEXT, JSONB, UUID, NUMERIC = (
    "float8",
    "int8",
    "int4",
    "int2",
    "bool",
    "timestamptz",
    "text",
    "jsonb",
    "uuid",
    "numeric",
)
INT_KINDS = (INT8, INT4, INT2, TIMESTAMPTZ)
_INT_RANGE = {INT2: 2**15, INT4: 2**31, INT8: 2**63, TIMESTAMPTZ: 2**63 // 1000}
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def column_kind(column: sa.Column[Any]) -> str:
    """Return the kind of a schema column (how it is normalized and encoded)."""
    t: Any = column.type
    if isinstance(t, EpochMs):
        return TIMESTAMPTZ
    t = getattr(t, "_variant_mapping", {}).get("postgresql", t)
    if isinstance(t, sa.JSON):
        return JSONB
    if isinstance(t, sa.Uuid):
        return UUID
    if isinstance(t, sa.Boolean):
        return BOOL
    if isinstance(t, sa.SmallInteger):
        return INT2
    if isinstance(t, sa.BigInteger):
        return INT8
    if isinstance(t, sa.Integer):
        return INT4
    if isinstance(t, sa.Float):
        return FLOAT8
    if isinstance(t, sa.Numeric):
        return NUMERIC
    if isinstance(t, sa.String):
        return TEXT
    raise TypeError(f"{column.table.name}.{column.name}: column type {t!r} is not supported by the writer")


@dataclass(frozen=True, slots=True)
class Column:
    """One normalized column.

    ``values``: float64 (NaN = NULL) for float8; int64 for integer kinds and timestamptz (epoch ms),
    bool for bool, with ``nulls`` a bool mask or None; object arrays (None = NULL) for text, uuid
    (canonical str), numeric (Decimal) and jsonb (serialized JSON bytes).
    """

    kind: str
    values: np.ndarray
    nulls: np.ndarray | None = None

    def null_mask(self) -> np.ndarray | None:
        """Return a bool mask of NULL rows, or None when there are none."""
        if self.kind == FLOAT8:
            mask = np.isnan(self.values)
        elif self.values.dtype == object:
            mask = pd.isna(self.values)
        else:
            return self.nulls if self.nulls is not None and self.nulls.any() else None
        return mask if mask.any() else None

    def take(self, index: np.ndarray | slice) -> Column:
        nulls = None if self.nulls is None else self.nulls[index]
        return Column(self.kind, self.values[index], nulls)

    def to_python(self) -> list[Any]:
        """Return the values as Python objects, None for NULL (JSON as str, ts as epoch ms)."""
        if self.kind == JSONB:
            return [None if v is None else v.decode() for v in self.values]
        out: list[Any] = self.values.tolist()
        mask = self.null_mask()
        if mask is not None:
            for i in np.flatnonzero(mask):
                out[i] = None
        return out


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """Normalized rows of one table: columns in table order, all of length ``n``."""

    table: str
    columns: dict[str, Column]
    n: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def take(self, index: np.ndarray | slice) -> ColumnBatch:
        """Return the rows at ``index`` (an index array or a slice), in that order."""
        cols = {k: c.take(index) for k, c in self.columns.items()}
        n = len(next(iter(cols.values())).values) if cols else 0
        return ColumnBatch(self.table, cols, n)

    def rows(self) -> list[dict[str, Any]]:
        """Return the rows as dicts of Python values (for dead letters and debugging)."""
        lists = {k: c.to_python() for k, c in self.columns.items()}
        return [dict(zip(lists, vals, strict=True)) for vals in zip(*lists.values(), strict=True)]


def to_batch(table: sa.Table, rows: Any, *, require_pk: bool = True) -> ColumnBatch:
    """Normalize ``rows`` (mapping of columns, DataFrame, or list of row dicts) for ``table``.

    Raises ValueError naming the column and the problem: unknown column, missing primary-key
    column, ragged lengths, a value of the wrong type or out of range.
    """
    raw = _as_columns(table.name, rows)
    unknown = [k for k in raw if k not in table.c]
    if unknown:
        raise ValueError(
            f"{table.name}: unknown column(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(table.c.keys())}"
        )
    if require_pk:
        missing = [c.name for c in table.primary_key.columns if c.name not in raw]
        if missing:
            raise ValueError(f"{table.name}: primary-key column(s) {', '.join(missing)} missing")
    lengths = {k: len(v) for k, v in raw.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{table.name}: columns of different lengths {lengths}")
    n = next(iter(lengths.values()), 0)
    cols = {c.name: _normalize(table.name, c, raw[c.name]) for c in table.columns if c.name in raw}
    return ColumnBatch(table.name, cols, n)


def concat(batches: Sequence[ColumnBatch]) -> ColumnBatch:
    """Concatenate batches of the same table and columns, in order."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    cols: dict[str, Column] = {}
    for name, col in first.columns.items():
        parts = [b.columns[name] for b in batches]
        values = np.concatenate([p.values for p in parts])
        nulls = None
        if any(p.nulls is not None for p in parts):
            nulls = np.concatenate(
                [p.nulls if p.nulls is not None else np.zeros(len(p.values), bool) for p in parts]
            )
        cols[name] = Column(col.kind, values, nulls)
    return ColumnBatch(first.table, cols, sum(b.n for b in batches))


def dedupe_last(batch: ColumnBatch, key: Sequence[str]) -> ColumnBatch:
    """Keep the last row of each ``key`` (order otherwise unchanged)."""
    if batch.n < 2:
        return batch
    combined = np.zeros(batch.n, dtype=np.int64)
    n_keys = 1
    for name in key:
        codes, uniques = pd.factorize(_hashable(batch.columns[name]), use_na_sentinel=False)
        combined = combined * len(uniques) + codes
        n_keys *= len(uniques)
        if n_keys > 2**31:  # keep the mixed-radix key within int64: renumber densely
            combined, uniques = pd.factorize(combined)
            n_keys = len(uniques)
    dup = pd.Series(combined, copy=False).duplicated(keep="last").to_numpy()
    if not dup.any():
        return batch
    return batch.take(np.flatnonzero(~dup))


def _hashable(col: Column) -> np.ndarray:
    if col.nulls is not None and col.nulls.any():
        out = col.values.astype(object)
        out[col.nulls] = None
        return out
    return col.values


def _as_columns(table: str, rows: Any) -> dict[str, Any]:
    if isinstance(rows, pd.DataFrame):
        return {str(k): rows[k].to_numpy() for k in rows.columns}
    if isinstance(rows, Mapping):
        return {str(k): (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in rows.items()}
    if isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        if not rows:
            return {}
        keys = list(rows[0])
        key_set = set(keys)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or set(row) != key_set:
                raise ValueError(
                    f"{table}: row {i} has keys {sorted(row) if isinstance(row, Mapping) else type(row)}, "
                    f"row 0 has {sorted(keys)}: every row must have the same keys"
                )
        return {k: [row[k] for row in rows] for k in keys}
    raise ValueError(f"{table}: rows must be a mapping of columns, a DataFrame or a list of dicts")


def _normalize(table: str, column: sa.Column[Any], values: Any) -> Column:
    kind = column_kind(column)
    where = f"{table}.{column.name}"
    try:
        if kind == FLOAT8:
            return Column(kind, _floats(values))
        if kind in INT_KINDS or kind == BOOL:
            return _integers(where, kind, values)
        arr = _objects(values)
        if kind == TEXT:
            if pd.api.types.infer_dtype(arr, skipna=True) not in ("string", "empty") and (
                bad := [v for v in arr if v is not None and not isinstance(v, str)]
            ):
                raise ValueError(f"expected str, got {type(bad[0]).__name__} {bad[0]!r}")
            return Column(kind, arr)
        if kind == JSONB:
            out = np.empty(len(arr), dtype=object)
            for i, v in enumerate(arr):
                out[i] = None if v is None else orjson.dumps(v, option=_JSON_OPTIONS)
            return Column(kind, out)
        if kind == UUID:
            return Column(
                kind, np.array([None if v is None else str(uuid.UUID(str(v))) for v in arr], object)
            )
        # NUMERIC
        return Column(
            kind,
            np.array(
                [None if v is None else v if isinstance(v, Decimal) else Decimal(str(v)) for v in arr], object
            ),
        )
    except (TypeError, ValueError, ArithmeticError, orjson.JSONEncodeError) as e:
        raise ValueError(f"{where}: {e}") from None


def _floats(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    obj = _objects(arr)
    out = np.full(len(obj), np.nan)
    mask = np.array([v is not None for v in obj], dtype=bool)
    out[mask] = np.asarray([float(v) for v in obj[mask]], dtype=np.float64)
    return out


def _objects(values: Any) -> np.ndarray:
    """Return an object array with every missing value (None, NaN, NA, NaT) as None."""
    if isinstance(values, np.ndarray):
        arr = values if values.dtype == object else values.astype(object)
    else:
        arr = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):  # element by element: a list value must stay one value
            arr[i] = v
    mask = pd.isna(arr)
    if mask.any():
        arr = arr.copy()
        arr[mask] = None
    return arr


def _integers(where: str, kind: str, values: Any) -> Column:
    arr = np.asarray(values)
    nulls: np.ndarray | None = None
    if arr.dtype.kind == "M":
        nulls = np.isnat(arr)
        ints = arr.astype("datetime64[ms]").astype(np.int64)
    elif arr.dtype.kind in "iub":
        if arr.dtype.kind == "u" and arr.size and arr.max() >= 2**63:
            raise ValueError(f"value {arr.max()} does not fit in int64")
        ints = arr.astype(np.int64)
    elif arr.dtype.kind == "f":
        nulls = np.isnan(arr)
        finite = np.where(nulls, 0.0, arr)
        if not np.array_equal(finite, np.trunc(finite)) or np.isinf(finite).any():
            raise ValueError("float values that are not whole numbers")
        ints = finite.astype(np.int64)
    else:
        obj = _objects(arr)
        nulls = np.array([v is None for v in obj], dtype=bool)
        ints = np.zeros(len(obj), dtype=np.int64)
        for i in np.flatnonzero(~nulls):
            ints[i] = _as_int(obj[i], kind)
    if kind == BOOL:
        if ints.size and ((ints < 0) | (ints > 1)).any():
            raise ValueError("bool column holds values other than 0/1/True/False")
        values_out = ints.astype(bool)
    else:
        limit = _INT_RANGE[kind]
        if ints.size and (ints.min() < -limit or ints.max() >= limit):
            raise ValueError(f"value out of {kind} range: min {ints.min()}, max {ints.max()}")
        values_out = ints
    if nulls is not None and not nulls.any():
        nulls = None
    return Column(kind, values_out, nulls)


def _as_int(v: Any, kind: str) -> int:
    if kind == TIMESTAMPTZ and isinstance(v, datetime):
        return ms_from_datetime(v)
    if isinstance(v, float | np.floating) and not float(v).is_integer():
        raise ValueError(f"{v!r} is not a whole number")
    if isinstance(v, str):
        raise ValueError(f"expected a number, got str {v!r}")
    return int(v)
