"""Feature schema v1: the documented table, merged names, version/hash, and refusal of other schemas."""

from __future__ import annotations

import json

import numpy as np
import pytest
from feature_samples import synthetic_group

from core.errors import SchemaMismatchError
from core.features import FeatureEngine, FeatureFrame, FeatureRow, compute_features
from core.features_schema import (
    DATA_DEPENDENT,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    FEATURE_TABLE,
    KEY_COLUMNS,
    SCHEMA_HASH,
    TIMEFRAMES,
    require_schema,
    schema_hash,
)

SPEC_KEYS = ("ret_1", "ret_5", "ret_15", "atr", "ema_dist_atr", "adx", "bb_z", "vol_z", "funding_rate",
             "funding_z", "basis", "btc_ret_60", "btc_vol_60", "btc_regime", "rsi", "macd_z")  # fmt: skip


def test_schema_has_44_documented_features_per_timeframe_and_132_merged_unique_names():
    assert len(FEATURE_TABLE) == 44
    assert len({f.name for f in FEATURE_TABLE}) == 44
    for f in FEATURE_TABLE:
        assert f.formula.strip() and f.window.strip() and f.units.strip(), f
        assert f.warmup_bars >= 0
    assert TIMEFRAMES == ("1m", "15m", "1h")
    assert len(FEATURE_NAMES) == 132 == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[:44] == tuple(f"f_1m_{f.name}" for f in FEATURE_TABLE)
    assert FEATURE_NAMES[44:88] == tuple(f"f_15m_{f.name}" for f in FEATURE_TABLE)
    assert FEATURE_NAMES[88:] == tuple(f"f_1h_{f.name}" for f in FEATURE_TABLE)
    assert {f.name for f in FEATURE_TABLE} >= DATA_DEPENDENT


def test_schema_contains_every_key_of_the_spec_and_the_rl_state():
    names = {f.name for f in FEATURE_TABLE}
    assert set(SPEC_KEYS) <= names
    assert set(KEY_COLUMNS.values()) <= set(FEATURE_NAMES)
    assert KEY_COLUMNS["atr"] == "f_15m_atr"


def test_schema_hash_is_stable_and_depends_on_names_and_version():
    assert FEATURE_SCHEMA_VERSION == 1
    # pinned: renaming, reordering or adding a feature must come with a new version
    assert SCHEMA_HASH == schema_hash() == "c9998762464ddcb7"
    assert schema_hash(2) != SCHEMA_HASH
    assert schema_hash(1, FEATURE_NAMES[::-1]) != SCHEMA_HASH


def test_require_schema_refuses_another_version_or_hash_naming_both():
    require_schema(FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
    with pytest.raises(SchemaMismatchError) as e:
        require_schema(2, "0123456789abcdef")
    msg = str(e.value)
    assert (
        "v2" in msg
        and "0123456789abcdef" in msg
        and f"v{FEATURE_SCHEMA_VERSION}" in msg
        and SCHEMA_HASH in msg
    )
    with pytest.raises(SchemaMismatchError, match=SCHEMA_HASH):
        require_schema(FEATURE_SCHEMA_VERSION, "ffffffffffffffff")


def test_feature_row_round_trips_through_json_and_a_consumer_refuses_another_schema():
    inputs = synthetic_group(days=2)
    frame = compute_features(inputs)["ETHUSDT"]
    row = frame.row(len(frame) - 1)
    assert row.schema_version == FEATURE_SCHEMA_VERSION and row.schema_hash == SCHEMA_HASH
    assert row.atr == frame.column("f_15m_atr")[-1]
    assert row.btc_regime is None  # BTC's regime warms up over 539 bars of 15m
    text = json.dumps({**row.features})  # None where NaN: valid JSON
    assert np.array_equal(row.vector(), frame.values[-1], equal_nan=True)
    back = FeatureRow(row.symbol, row.ts_ms, json.loads(text), row.atr, row.funding_z, row.btc_regime)
    assert np.array_equal(back.vector(), frame.values[-1], equal_nan=True)
    old = FeatureRow(row.symbol, row.ts_ms, row.features, row.atr, row.funding_z, row.btc_regime,
                     schema_version=0, schema_hash="deadbeefdeadbeef")  # fmt: skip
    with pytest.raises(SchemaMismatchError, match="v0"):
        old.vector()
    with pytest.raises(SchemaMismatchError, match="expected v7"):
        row.vector(expected_version=7, expected_hash="x")


def test_frame_key_columns_and_pandas_carry_the_schema():
    inputs = synthetic_group(days=2)
    frame = compute_features(inputs)["BTCUSDT"]
    assert isinstance(frame, FeatureFrame)
    keys = frame.key_columns()
    assert set(keys) == {"atr", "funding_z", "btc_regime"}
    assert np.array_equal(keys["atr"], frame.column("f_15m_atr"), equal_nan=True)
    df = frame.to_pandas()
    assert list(df.columns) == ["ts", *FEATURE_NAMES]
    assert df.attrs["schema_hash"] == SCHEMA_HASH
    with pytest.raises(SchemaMismatchError, match="no feature"):
        frame.column("f_5m_rsi")


def test_engine_snapshot_of_another_schema_is_refused():
    engine = FeatureEngine(["ETHUSDT"])
    snap = engine.snapshot()
    assert FeatureEngine.restore(snap).symbols == engine.symbols
    with pytest.raises(SchemaMismatchError, match="v1"):
        FeatureEngine.restore({**snap, "schema_hash": "0000000000000000"})
