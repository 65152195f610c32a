"""PostgreSQL binary COPY encoding with numpy, a whole batch at a time.

Stream layout (PostgreSQL docs, "COPY … BINARY"): the 19-byte header ``PGCOPY\\n\\377\\r\\n\\0`` +
int32 flags + int32 extension length; per row an int16 field count, then per field an int32 byte
length (-1 = NULL) and the big-endian payload; an int16 -1 trailer.

Rows whose fields have the same byte lengths and NULL pattern (for candles: all rows of symbols
of one name length) form a *group* and are written as one numpy structured array with big-endian
fields, so a group costs a handful of vectorized assignments whatever its size. When a batch
would split into too many groups (JSON of varying length per row) the encoder declines and the
caller streams rows through psycopg's ``write_row`` instead (``copy_rows``), with wire-identical
types: timestamptz as int8 microseconds, jsonb as bytea ``\\x01`` + JSON text.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from storage.batch import (
    BOOL,
    FLOAT8,
    INT2,
    INT4,
    INT8,
    JSONB,
    NUMERIC,
    TEXT,
    TIMESTAMPTZ,
    UUID,
    Column,
    ColumnBatch,
)

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01 (UTC), in ms.
PG_EPOCH_MS = 946_684_800_000
JSONB_VERSION = 1
_FIXED = {FLOAT8: ">f8", INT8: ">i8", INT4: ">i4", INT2: ">i2", BOOL: "u1", TIMESTAMPTZ: ">i8", UUID: "S16"}
_WIDTH = {k: np.dtype(v).itemsize for k, v in _FIXED.items()}
#: Type names for the write_row fallback: the binary payloads equal the ones the numpy path sends.
COPY_TYPES = {
    FLOAT8: "float8",
    INT8: "int8",
    INT4: "int4",
    INT2: "int2",
    BOOL: "bool",
    TIMESTAMPTZ: "int8",
    TEXT: "text",
    JSONB: "bytea",
    UUID: "uuid",
    NUMERIC: "numeric",
}


@dataclass(slots=True)
class _Prepared:
    """A column ready to encode: per-row byte lengths (-1 = NULL) and how to fetch payloads."""

    kind: str
    lengths: np.ndarray | int  # an int when every row has the same length
    fixed: np.ndarray | None = None  # fixed-width values (native dtype) for every row
    codes: np.ndarray | None = None  # variable width: row → index into ``payloads``
    payloads: np.ndarray | None = None  # variable width: 'S' array of distinct payloads


def default_max_groups(n: int) -> int:
    """Return the most groups worth encoding with numpy for ``n`` rows (else use write_row)."""
    return max(16, n // 48)


def encode_binary(
    batch: ColumnBatch, max_groups: int | None = None, keep_order: bool = False
) -> list[memoryview] | None:
    """Return the binary COPY stream of ``batch`` (header … trailer) as buffers, in row groups.

    Rows come out grouped, not in input order, unless ``keep_order`` (then a group is a run of
    consecutive rows: what append tables need so that their ids follow arrival). Returns None
    when the batch holds a numeric column or would need more than ``max_groups`` groups.
    """
    n = batch.n
    prepared = []
    for col in batch.columns.values():
        p = _prepare(col)
        if p is None:
            return None
        prepared.append(p)
    group_of, n_groups = _group_rows(n, [p.lengths for p in prepared])
    limit = default_max_groups(n) if max_groups is None else max_groups
    if n_groups > limit:
        return None
    if keep_order and group_of is not None:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(group_of)) + 1, [n]])
        if len(starts) - 1 > limit:
            return None
        groups: list[np.ndarray | slice] = [
            slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)
        ]
    else:
        groups = list(_group_indices(group_of, n_groups, n))
    out = [memoryview(HEADER)]
    for rows in groups:
        out.append(_encode_group(prepared, rows, n))
    out.append(memoryview(TRAILER))
    return out


def _prepare(col: Column) -> _Prepared | None:
    kind = col.kind
    if kind == NUMERIC:
        return None
    if kind in _FIXED:
        if kind == UUID:
            mask = col.null_mask()
            fixed = np.array([b"" if v is None else uuid.UUID(v).bytes for v in col.values], dtype="S16")
        else:
            mask = col.null_mask()
            fixed = col.values
            if kind == TIMESTAMPTZ:
                fixed = (fixed - PG_EPOCH_MS) * 1000
        width = _WIDTH[kind]
        lengths: np.ndarray | int = width if mask is None else np.where(mask, -1, width).astype(np.int32)
        return _Prepared(kind, lengths, fixed=fixed)
    # text / jsonb: distinct payloads once, rows refer to them by code
    codes, uniques = pd.factorize(col.values, use_na_sentinel=True)
    if kind == TEXT:
        encoded = [u.encode("utf-8") for u in uniques]
    else:
        encoded = [bytes((JSONB_VERSION,)) + u for u in uniques]
    sizes = np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded))
    payloads = np.array(encoded, dtype=f"S{max(1, int(sizes.max(initial=1)))}")
    codes = codes.astype(np.intp, copy=False)
    row_lengths = np.where(codes < 0, -1, sizes[codes] if len(sizes) else -1).astype(np.int32)
    if row_lengths.size and (row_lengths == row_lengths[0]).all():
        return _Prepared(kind, int(row_lengths[0]), codes=codes, payloads=payloads)
    return _Prepared(kind, row_lengths, codes=codes, payloads=payloads)


def _group_rows(n: int, lengths: list[np.ndarray | int]) -> tuple[np.ndarray | None, int]:
    """Return (group id per row or None for one group, number of groups)."""
    varying = [x for x in lengths if isinstance(x, np.ndarray)]
    if not varying or n == 0:
        return None, 1 if n else 0
    key = np.zeros(n, dtype=np.int64)
    n_keys = 1
    for lens in varying:
        digit, n_digits = _dense_codes(lens)
        key = key * n_digits + digit
        n_keys *= n_digits
        if n_keys > 2**40:  # keep the mixed-radix key small: renumber densely
            key, n_keys = _dense_codes(key)
    return _dense_codes(key)


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 1 << 20:
        present = np.zeros(hi - lo + 1, dtype=np.int64)
        present[values - lo] = 1
        remap = np.cumsum(present) - 1
        return remap[values - lo], int(present.sum())
    uniq, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64), len(uniq)


def _group_indices(group_of: np.ndarray | None, n_groups: int, n: int) -> Iterator[np.ndarray | slice]:
    if group_of is None:
        if n:
            yield slice(None)
        return
    order = np.argsort(group_of, kind="stable")
    bounds = np.cumsum(np.bincount(group_of, minlength=n_groups))
    start = 0
    for end in bounds:
        yield order[start:end]
        start = int(end)


def _encode_group(prepared: list[_Prepared], rows: np.ndarray | slice, n: int) -> memoryview:
    first = (rows.start or 0) if isinstance(rows, slice) else int(rows[0])
    fields: list[tuple[str, Any]] = [("count", ">i2")]
    fills: list[tuple[str, _Prepared, int]] = []
    for j, p in enumerate(prepared):
        length = p.lengths if isinstance(p.lengths, int) else int(p.lengths[first])
        fields.append((f"len{j}", ">i4"))
        fills.append((f"len{j}", p, length))
        if length <= 0:
            continue  # NULL or empty text: no payload bytes
        if p.fixed is not None:
            fields.append((f"val{j}", _FIXED[p.kind]))
        else:
            fields.append((f"val{j}", f"S{length}"))
    size = len(range(*rows.indices(n))) if isinstance(rows, slice) else len(rows)
    arr = np.empty(size, dtype=np.dtype(fields))
    arr["count"] = len(prepared)
    for name, p, length in fills:
        arr[name] = length
        if length <= 0:
            continue
        val = "val" + name[3:]
        if p.fixed is not None:
            arr[val] = p.fixed[rows]
        else:
            assert p.payloads is not None and p.codes is not None
            # the 'S' array is as wide as the longest payload: assignment keeps the first
            # ``length`` bytes, which is the whole payload for every row of this group
            arr[val] = p.payloads[p.codes[rows]]
    return arr.data.cast("B")


def copy_rows(batch: ColumnBatch) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Return (types for ``Copy.set_types``, row tuples) for psycopg's ``write_row`` fallback."""
    types = [COPY_TYPES[c.kind] for c in batch.columns.values()]
    lists = [_copy_values(c) for c in batch.columns.values()]
    return types, zip(*lists, strict=True)


def _copy_values(col: Column) -> list[Any]:
    if col.kind == TIMESTAMPTZ:
        micros = Column(col.kind, (col.values - PG_EPOCH_MS) * 1000, col.nulls)
        return micros.to_python()
    if col.kind == JSONB:
        return [None if v is None else bytes((JSONB_VERSION,)) + v for v in col.values]
    if col.kind == UUID:
        return [None if v is None else uuid.UUID(v) for v in col.values]
    return col.to_python()
