"""The numpy binary COPY encoder, decoded back by a small reference parser and checked field by
field against psycopg's own binary dumpers. No database."""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from psycopg import postgres
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from storage.batch import to_batch
from storage.pgcopy import HEADER, PG_EPOCH_MS, TRAILER, copy_rows, encode_binary
from storage.types import EpochMs, Json, Uuid

meta = sa.MetaData()
every_kind = sa.Table(
    "every_kind",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("f8", sa.Float(precision=53)),
    sa.Column("i8", sa.BigInteger),
    sa.Column("i2", sa.SmallInteger),
    sa.Column("flag", sa.Boolean),
    sa.Column("ts", EpochMs),
    sa.Column("name", sa.Text),
    sa.Column("doc", Json),
    sa.Column("uid", Uuid),
)
KINDS = ["int4", "float8", "int8", "int2", "bool", "timestamptz", "text", "jsonb", "uuid"]


def parse_copy(stream: bytes) -> list[list[bytes | None]]:
    """Reference parser of PostgreSQL's binary COPY format: rows of raw field bytes."""
    assert stream[: len(HEADER)] == HEADER, "bad header"
    assert stream[-2:] == TRAILER, "bad trailer"
    pos = len(HEADER)
    rows: list[list[bytes | None]] = []
    while True:
        (count,) = struct.unpack_from(">h", stream, pos)
        pos += 2
        if count == -1:
            assert pos == len(stream), "bytes after the trailer"
            return rows
        fields: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", stream, pos)
            pos += 4
            if length == -1:
                fields.append(None)
            else:
                fields.append(stream[pos : pos + length])
                pos += length
        rows.append(fields)


def psycopg_dump(kind: str, value: Any) -> bytes:
    """psycopg's own binary encoding of a Python value as PostgreSQL type ``kind``."""
    if kind == "timestamptz":
        value = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    elif kind == "uuid" and isinstance(value, str):
        value = uuid.UUID(value)
    elif kind == "jsonb":
        value = Jsonb(value)
    cls = postgres.adapters.get_dumper_by_oid(postgres.types[kind].oid, Format.BINARY)
    dumped = cls(type(value)).dump(value)
    assert dumped is not None
    return bytes(dumped)


def encode_to_bytes(rows: Any, max_groups: int | None = None) -> bytes:
    buffers = encode_binary(to_batch(every_kind, rows), max_groups=max_groups)
    assert buffers is not None
    return b"".join(bytes(b) for b in buffers)


ROWS: dict[str, list[Any]] = {
    "id": [1, 2, 3, 4, 5, 6],
    "f8": [0.1 + 0.2, -0.0, float("inf"), float("-inf"), 5e-324, None],
    "i8": [2**63 - 1, -(2**63), 0, None, 7, -1],
    "i2": [32767, -32768, None, 0, 1, -1],
    "flag": [True, False, None, True, False, True],
    "ts": [0, 946_684_800_000, 1_700_000_000_123, -86_400_001, None, 4_102_444_800_999],
    "name": ["BTCUSDT", "", "héllo wörld ✓", None, "1000PEPEUSDT", "ETHUSDT"],
    "doc": [{"a": 1.5, "b": [1, 2]}, None, {"k": "ü"}, [1, "x"], {}, "plain"],
    "uid": [str(uuid.UUID(int=i * 7919)) if i != 3 else None for i in range(6)],
}


def test_encoded_stream_parses_back_to_every_value_and_null() -> None:
    rows = parse_copy(encode_to_bytes(ROWS))
    assert len(rows) == 6
    by_id = {struct.unpack(">i", r[0])[0]: r for r in rows}  # type: ignore[arg-type]
    for i, ident in enumerate(ROWS["id"]):
        fields = by_id[ident]
        assert len(fields) == len(KINDS)
        for (name, values), kind, raw in zip(ROWS.items(), KINDS, fields, strict=True):
            value = values[i]
            if value is None:
                assert raw is None, f"{name} row {ident}: expected NULL"
            elif kind == "jsonb":
                assert raw is not None and raw[0] == 1, "jsonb version byte"
                assert json.loads(raw[1:]) == value
            else:
                assert raw == psycopg_dump(kind, value), f"{name} row {ident}: {raw!r}"


def test_floats_are_bit_exact_including_negative_zero_and_subnormals() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 1e6, 500), [-0.0, 5e-324, 1.7976931348623157e308, np.pi]])
    stream = encode_to_bytes({"id": np.arange(len(values)), "f8": values})
    decoded = {struct.unpack(">i", r[0])[0]: r[1] for r in parse_copy(stream)}  # type: ignore[arg-type]
    for i, v in enumerate(values):
        assert decoded[i] == struct.pack(">d", v)


def test_timestamps_are_microseconds_since_2000_exactly() -> None:
    ts = np.array([0, PG_EPOCH_MS, PG_EPOCH_MS - 1, 1_735_689_600_001, -1], dtype=np.int64)
    stream = encode_to_bytes({"id": np.arange(len(ts)), "ts": ts})
    for r in parse_copy(stream):
        (ident,) = struct.unpack(">i", r[0])  # type: ignore[arg-type]
        (micros,) = struct.unpack(">q", r[1])  # type: ignore[arg-type]
        assert micros == (int(ts[ident]) - PG_EPOCH_MS) * 1000


def test_rows_of_different_text_lengths_form_groups_and_all_come_back() -> None:
    symbols = np.array(["BTCUSDT", "1000PEPEUSDT", "SOLUSDT", "XRPUSDT", "1000SHIBUSDT"] * 200, dtype=object)
    buffers = encode_binary(to_batch(every_kind, {"id": np.arange(1000), "name": symbols}))
    assert buffers is not None
    assert len(buffers) == 2 + 2  # header, one group per name length (7 and 12), trailer
    rows = parse_copy(b"".join(bytes(b) for b in buffers))
    got = {struct.unpack(">i", r[0])[0]: r[1].decode() for r in rows}  # type: ignore[arg-type, union-attr]
    assert got == {i: s for i, s in enumerate(symbols)}


def test_encoder_declines_when_varying_json_needs_too_many_groups() -> None:
    docs = [{"x": "y" * i} for i in range(100)]
    batch = to_batch(every_kind, {"id": np.arange(100), "doc": docs})
    assert encode_binary(batch, max_groups=10) is None
    assert encode_binary(batch, max_groups=100) is not None


def test_encoder_declines_numeric_columns() -> None:
    table = sa.Table("with_numeric", sa.MetaData(), sa.Column("n", sa.Numeric(36, 18)))
    assert encode_binary(to_batch(table, {"n": ["0.01"]}, require_pk=False)) is None


def test_write_row_fallback_sends_the_same_bytes_as_the_numpy_path() -> None:
    batch = to_batch(every_kind, ROWS)
    types, rows = copy_rows(batch)
    stream = encode_to_bytes(ROWS)
    numpy_rows = {r[0]: r for r in parse_copy(stream)}
    for row in rows:
        fields = [None if v is None else psycopg_dump(t, v) for t, v in zip(types, row, strict=True)]
        assert fields == numpy_rows[fields[0]]


def test_empty_batch_encodes_header_and_trailer_only() -> None:
    stream = encode_to_bytes({"id": np.array([], dtype=np.int64)})
    assert stream == HEADER + TRAILER
    assert parse_copy(stream) == []


@pytest.mark.parametrize("n", [1, 3, 1000])
def test_reference_parser_and_encoder_agree_on_row_count(n: int) -> None:
    stream = encode_to_bytes({"id": np.arange(n), "f8": np.ones(n), "name": ["a"] * n})
    assert len(parse_copy(stream)) == n


def test_keep_order_writes_runs_of_consecutive_rows_in_input_order() -> None:
    names = ["a", "bb", "a", "a", "ccc", None, "bb"]
    batch = to_batch(every_kind, {"id": np.arange(len(names)), "name": names})
    buffers = encode_binary(batch, keep_order=True)
    assert buffers is not None
    assert len(buffers) == 2 + 6  # runs: a | bb | a a | ccc | NULL | bb
    rows = parse_copy(b"".join(bytes(b) for b in buffers))
    assert [struct.unpack(">i", r[0])[0] for r in rows] == list(range(len(names)))  # type: ignore[arg-type]
    assert encode_binary(batch, keep_order=True, max_groups=5) is None
