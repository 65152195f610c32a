"""storage.audit.AuditLog: one parseable JSON line per record, a file per UTC day, exact Decimals,
no secret written, no interleaving across threads."""

from __future__ import annotations

import json
import os
import stat
import threading
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from storage.audit import AuditLog, audit_file_name

DAY_MS = 86_400_000
TS = 1_736_121_600_000  # 2025-01-06 00:00:00 UTC
SECRET = "PLANTEDsecretA1b2C3d4E5f6"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_records_are_one_json_object_per_line_with_kind_and_ts(tmp_path):
    with AuditLog(tmp_path / "audit") as audit:
        audit.record("decision", TS + 1, symbol="BTCUSDT", side="LONG", reasons=("EV_OK",), ev=0.0012)
        path = audit.record(
            "order", TS + 2, client_order_id="rt-1", qty=Decimal("0.010"), nested={"a": [1, None]}
        )
    assert path == tmp_path / "audit" / "audit-2025-01-06.jsonl"
    assert _lines(path) == [
        {
            "ts_ms": TS + 1,
            "kind": "decision",
            "symbol": "BTCUSDT",
            "side": "LONG",
            "reasons": ["EV_OK"],
            "ev": 0.0012,
        },
        {
            "ts_ms": TS + 2,
            "kind": "order",
            "client_order_id": "rt-1",
            "qty": "0.010",
            "nested": {"a": [1, None]},
        },
    ]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_record_goes_to_the_file_of_its_utc_day(tmp_path):
    audit = AuditLog(tmp_path)
    last_of_day = audit.record("fill", TS - 1, trade_id=1)
    first_of_next = audit.record("fill", TS, trade_id=2)
    back = audit.record("correction", TS - 5, trade_id=3)  # a late record returns to its own day
    audit.close()
    assert last_of_day.name == "audit-2025-01-05.jsonl" == back.name
    assert first_of_next.name == "audit-2025-01-06.jsonl" == audit_file_name(TS + DAY_MS - 1)
    assert [r["trade_id"] for r in _lines(last_of_day)] == [1, 3]
    assert [r["trade_id"] for r in _lines(first_of_next)] == [2]


def test_decimals_are_written_exactly_and_non_finite_floats_as_text(tmp_path):
    price = Decimal("65432.10000000000000000001")
    with AuditLog(tmp_path) as audit:
        path = audit.record("fill", TS, price=price, fee=Decimal("-0.00000001"), nan=float("nan"),
                            inf=float("-inf"), n=np.int64(7), x=np.float64(0.5), ok=True)  # fmt: skip
    (row,) = _lines(path)
    assert Decimal(row["price"]) == price and row["fee"] == "-0.00000001"
    assert (row["nan"], row["inf"], row["n"], row["x"], row["ok"]) == ("NaN", "-Infinity", 7, 0.5, True)


def test_a_secret_given_to_the_log_is_never_written(tmp_path):
    sig = "ab12" * 16
    with AuditLog(tmp_path, secrets=[SECRET, None]) as audit:
        audit.add_secret("PLANTEDlistenKeyZ9y8")
        path = audit.record(
            "order", TS, url=f"/fapi/v1/order?symbol=BTCUSDT&signature={sig}", note=f"key {SECRET}",
            payload={"apiKey": "x", f"k-{SECRET}": ["PLANTEDlistenKeyZ9y8"]}, key=SecretStr("PLANTEDsecretstr"),
            err=RuntimeError(f"failed with {SECRET}"),
        )  # fmt: skip
    text = path.read_text()
    for planted in (SECRET, sig, "PLANTEDlistenKeyZ9y8", "PLANTEDsecretstr"):
        assert planted not in text
    (row,) = _lines(path)
    assert row["url"] == "/fapi/v1/order?symbol=BTCUSDT&signature=***" and row["err"] == "failed with ***"


def test_kind_must_be_a_lowercase_word(tmp_path):
    audit = AuditLog(tmp_path)
    for bad in ("", "Fill", "fill line", 'x"y'):
        with pytest.raises(ValueError, match="audit kind"):
            audit.record(bad, TS)
    audit.record("killswitch", TS, trigger="file")
    audit.record("risk.blocked", TS)
    audit.close()


def test_lines_from_many_threads_never_interleave(tmp_path):
    audit = AuditLog(tmp_path, fsync=True)

    def write(t: int) -> None:
        for i in range(50):
            audit.record("fill", TS + i, thread=t, i=i, pad="x" * 500)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    audit.close()
    rows = _lines(tmp_path / audit_file_name(TS))
    assert len(rows) == 400 and {(r["thread"], r["i"]) for r in rows} == {
        (t, i) for t in range(8) for i in range(50)
    }
