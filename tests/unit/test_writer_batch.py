"""Normalization of rows for the writer (storage.batch): clear errors at submit time, null rules,
in-batch deduplication. No database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from storage import schema
from storage.batch import concat, dedupe_last, to_batch

CANDLE: dict[str, list[Any]] = {
    "symbol": ["BTCUSDT", "ETHUSDT"],
    "ts": [60_000, 120_000],
    "open": [1.0, 2.0],
    "high": [1.0, 2.0],
    "low": [1.0, 2.0],
    "close": [1.0, 2.0],
    "volume": [0.0, 1.0],
}


def test_unknown_column_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown column.*colour"):
        to_batch(schema.candles_1m, {**CANDLE, "colour": [1, 2]})


def test_missing_primary_key_column_is_refused_for_upsert_tables() -> None:
    rows = {k: v for k, v in CANDLE.items() if k != "ts"}
    with pytest.raises(ValueError, match="primary-key column.*ts"):
        to_batch(schema.candles_1m, rows)


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        to_batch(schema.candles_1m, {**CANDLE, "open": [1.0]})


def test_text_column_refuses_numbers() -> None:
    with pytest.raises(ValueError, match=r"candles_1m\.symbol: expected str"):
        to_batch(schema.candles_1m, {**CANDLE, "symbol": ["BTCUSDT", 5]})


def test_smallint_out_of_range_is_refused_not_wrapped() -> None:
    rows = {"symbol": ["A"], "ts": [0], "spec_hash": ["h"], "y": [40_000], "ret_net": [0.0]}
    rows |= {"mae": [0.0], "mfe": [0.0], "time_to_event_min": [1]}
    with pytest.raises(ValueError, match="labels_long_1m.y: value out of int2 range"):
        to_batch(schema.labels_long_1m, rows)


def test_fractional_float_into_integer_column_is_refused() -> None:
    with pytest.raises(ValueError, match="trade_count: float values that are not whole numbers"):
        to_batch(schema.candles_1m, {**CANDLE, "trade_count": [1.5, 2.0]})


def test_none_and_nan_are_null_and_whole_floats_fill_integer_columns() -> None:
    batch = to_batch(schema.candles_1m, {**CANDLE, "trade_count": [np.nan, 3.0], "quote_volume": [None, 2.5]})
    rows = batch.rows()
    assert rows[0]["trade_count"] is None and rows[1]["trade_count"] == 3
    assert rows[0]["quote_volume"] is None and rows[1]["quote_volume"] == 2.5


def test_rows_as_list_of_dicts_must_share_keys() -> None:
    first = {k: v[0] for k, v in CANDLE.items()}
    second = {k: v[1] for k, v in CANDLE.items() if k != "volume"}
    with pytest.raises(ValueError, match="row 1 has keys"):
        to_batch(schema.candles_1m, [first, second])


def test_dataframe_and_datetime_timestamps_are_accepted() -> None:
    frame = pd.DataFrame(
        {**CANDLE, "ts": [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 1, tzinfo=UTC)]}
    )
    batch = to_batch(schema.candles_1m, frame)
    assert batch.columns["ts"].values.tolist() == [1_704_067_200_000, 1_704_067_260_000]


def test_json_list_values_stay_one_value_per_row() -> None:
    rows = {"ts": [1, 2], "event_type": ["a", "b"], "severity": [1, 1], "message": ["m", "m"]}
    batch = to_batch(schema.risk_events, {**rows, "details": [[1, 2], None]}, require_pk=False)
    assert batch.columns["details"].to_python() == ["[1,2]", None]


def test_dedupe_keeps_the_last_row_of_each_key_in_order() -> None:
    rows = {k: v * 2 for k, v in CANDLE.items()}
    rows["close"] = [1.0, 2.0, 3.0, 4.0]
    batch = dedupe_last(to_batch(schema.candles_1m, rows), ["symbol", "ts"])
    assert [r["close"] for r in batch.rows()] == [3.0, 4.0]


def test_dedupe_treats_null_keys_as_equal_and_distinct_from_values() -> None:
    rows = {"symbol": ["A", "A", "A"], "ts": [1, 1, 1], "schema_version": [1, 1, 2]}
    batch = dedupe_last(
        to_batch(schema.drift_metrics, {**rows, "psi": [0.1, 0.2, 0.3]}), ["symbol", "ts", "schema_version"]
    )
    assert [r["psi"] for r in batch.rows()] == [0.2, 0.3]


def test_concat_keeps_order_and_null_masks() -> None:
    a = to_batch(schema.candles_1m, {**CANDLE, "trade_count": [1, None]})
    b = to_batch(schema.candles_1m, {**CANDLE, "trade_count": [3, 4]})
    assert [r["trade_count"] for r in concat([a, b]).rows()] == [1, None, 3, 4]
