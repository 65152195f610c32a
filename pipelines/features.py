"""Offline features across the universe on Ray Data: lake → 132 merged features → lake (and database).

One Ray task per symbol group; each group carries BTCUSDT's inputs so the ``btc_*`` cross features
are computed with the same kernels as online. Features land in the lake as ``features_1m`` (``ts``,
``schema_version`` and the 132 columns); ``load_features`` refuses rows of another schema.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import SchemaMismatchError
from core.features import BTC_SYMBOL, FeatureFrame, SymbolInputs, build_inputs, compute_features
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, KEY_COLUMNS
from pipelines.raydata import prepare_symbol_worker
from storage.lake import Lake

SOURCE = "features"


@dataclass(frozen=True, slots=True)
class FeatureReport:
    """Rows written per symbol and the wall time of the Ray stage."""

    rows: dict[str, int]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def symbol_groups(symbols: Sequence[str], group_size: int) -> list[list[str]]:
    """Split symbols into groups of at most ``group_size`` (order kept)."""
    if group_size < 1:
        raise ValueError(f"group_size must be ≥ 1, got {group_size}")
    return [list(symbols[i : i + group_size]) for i in range(0, len(symbols), group_size)]


def lake_inputs(lake: Lake, symbol: str) -> SymbolInputs:
    """Kernel inputs of one symbol from the lake: 1m candles plus mark, premium and funding where present."""

    def cols(dataset: str) -> dict[str, np.ndarray] | None:
        if lake.coverage(dataset, symbol) is None:
            return None
        frame = lake.read(dataset, symbol)
        return {c: frame[c].to_numpy() for c in frame.columns}

    candles = cols("candles_1m")
    if candles is None:
        raise FileNotFoundError(f"no candles_1m for {symbol} in the lake at {lake.root}")
    return build_inputs(candles, mark=cols("mark_1m"), premium=cols("premium_1m"), funding=cols("funding"))


def feature_table(frame: FeatureFrame) -> pd.DataFrame:
    """The lake form of a feature frame: ts, schema_version, then the 132 features."""
    df = frame.to_pandas()
    df.insert(1, "schema_version", np.int64(frame.schema_version))
    return df


def features_for_group(lake_root: str, symbols: list[str], btc_symbol: str = BTC_SYMBOL) -> dict[str, int]:
    """Compute and store the features of ``symbols`` (a Ray task's body; plain function, testable without Ray)."""
    lake = Lake(Path(lake_root))
    inputs = {s: lake_inputs(lake, s) for s in symbols}
    if btc_symbol not in inputs and lake.coverage("candles_1m", btc_symbol) is not None:
        inputs = {btc_symbol: lake_inputs(lake, btc_symbol), **inputs}
    frames = compute_features(inputs, btc_symbol=btc_symbol)
    out = {}
    for symbol in symbols:
        lake.write("features_1m", symbol, feature_table(frames[symbol]), source=SOURCE)
        out[symbol] = len(frames[symbol])
    return out


def compute_universe_features(
    lake_root: Path, symbols: Sequence[str], *, group_size: int = 8
) -> FeatureReport:
    """Run ``features_for_group`` for every group as Ray Data tasks (Ray must be initialised)."""
    import ray

    groups = symbol_groups(list(symbols), group_size)
    started = time.perf_counter()
    ds = ray.data.from_items([{"symbols": g} for g in groups], override_num_blocks=len(groups))

    def task(row: dict) -> dict:
        prepare_symbol_worker()
        counts = features_for_group(str(lake_root), list(row["symbols"]))
        return {"symbols": list(counts), "rows": list(counts.values())}

    results = ds.map(task, num_cpus=1).take_all()
    rows = {s: int(n) for r in results for s, n in zip(r["symbols"], r["rows"], strict=True)}
    return FeatureReport(rows, time.perf_counter() - started)


def load_features(
    lake: Lake, symbol: str, start_ms: int | None = None, end_ms: int | None = None
) -> pd.DataFrame:
    """Read stored features of the current schema; raise SchemaMismatchError for any other."""
    frame = lake.read("features_1m", symbol, start_ms, end_ms)
    names = [c for c in frame.columns if c not in ("ts", "schema_version")]
    if tuple(names) != FEATURE_NAMES:
        raise SchemaMismatchError(
            f"features_1m of {symbol}: stored columns are not schema v{FEATURE_SCHEMA_VERSION}'s "
            f"{len(FEATURE_NAMES)} features ({len(names)} columns)"
        )
    versions = frame["schema_version"].unique()
    if len(frame) and (len(versions) != 1 or int(versions[0]) != FEATURE_SCHEMA_VERSION):
        raise SchemaMismatchError(
            f"features_1m of {symbol}: schema version(s) {sorted(int(v) for v in versions)}, "
            f"this code reads v{FEATURE_SCHEMA_VERSION}"
        )
    return frame


def feature_db_rows(symbol: str, frame: pd.DataFrame) -> list[dict]:
    """Rows of the ``features_1m`` table: JSON features (null for NaN) plus the key columns."""
    values = frame[list(FEATURE_NAMES)].to_numpy()
    as_objects = np.where(np.isnan(values), None, values).tolist()
    key_idx = {k: FEATURE_NAMES.index(n) for k, n in KEY_COLUMNS.items()}
    rows = []
    for ts, version, vals in zip(
        frame["ts"].tolist(), frame["schema_version"].tolist(), as_objects, strict=True
    ):
        regime = vals[key_idx["btc_regime"]]
        rows.append(
            {
                "symbol": symbol,
                "ts": ts,
                "schema_version": version,
                "features": dict(zip(FEATURE_NAMES, vals, strict=True)),
                "atr": vals[key_idx["atr"]],
                "funding_z": vals[key_idx["funding_z"]],
                "btc_regime": None if regime is None else int(regime),
            }
        )
    return rows
