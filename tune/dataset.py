"""Training sets from the lake: ``features_1m`` joined with ``labels_1m`` of a label spec, pooled across symbols.

Every decision bar that has both a feature row and a label row is kept, labelled or not (``status`` ≠ 0
rows are not fitted by ``tune.train`` but are predicted for the backtest and purged by their full
horizon). Rows are pooled across symbols and sorted by ``ts`` with a stable sort, so equal times keep
the order of ``symbols``: the same lake and arguments always give the same arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import LabelSpec
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, KEY_COLUMNS, SCHEMA_HASH
from pipelines.features import load_features
from pipelines.labels import labels_lake
from storage.lake import Lake
from tune.splits import labels_exit_ts_ms
from tune.train import join_features_labels

BTC_REGIME_COLUMN = KEY_COLUMNS["btc_regime"]


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """Pooled rows of several symbols, sorted by decision time (row i of every array is one sample).

    ``X``: float64 n × 132 features in schema order (``FEATURE_NAMES``); ``labels``: the ``labels_1m``
    columns (``ts``, ``status``, ``long_*``, ``short_*``) plus ``symbol``, index 0..n−1; ``ts_ms``: decision
    bar open times (epoch ms); ``symbol``: the row's symbol; ``exit_ts_ms``: label exits over both
    directions (``tune.splits.labels_exit_ts_ms``), for purging.
    """

    X: np.ndarray
    labels: pd.DataFrame
    ts_ms: np.ndarray
    symbol: np.ndarray
    exit_ts_ms: np.ndarray
    symbols: tuple[str, ...]
    label_spec: LabelSpec
    lake_root: str
    feature_schema_version: int = FEATURE_SCHEMA_VERSION
    feature_schema_hash: str = SCHEMA_HASH

    def __len__(self) -> int:
        return len(self.ts_ms)

    @property
    def label_spec_hash(self) -> str:
        return self.label_spec.spec_hash()

    def btc_regime(self, btc_symbol: str = "BTCUSDT") -> pd.Series:
        """BTC volatility regime (0 calm, 1 normal, 2 high) by ``ts`` from ``btc_symbol``'s rows; empty when
        the set has no such rows. Uses each bar's own feature (data up to its close)."""
        rows = self.symbol == btc_symbol
        column = FEATURE_NAMES.index(BTC_REGIME_COLUMN)
        return pd.Series(self.X[rows, column], index=self.ts_ms[rows], name="btc_regime")


def load_training_set(
    lake_root: Path | str,
    symbols: Sequence[str],
    spec: LabelSpec,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> TrainingSet:
    """Join each symbol's ``features_1m`` with its ``labels_1m`` of ``spec`` on ts over [start_ms, end_ms)
    and pool the symbols, sorted by ts (stable: ties keep ``symbols`` order).

    Raises SchemaMismatchError for features of another schema and ValueError when nothing joins.
    """
    if not symbols:
        raise ValueError("load_training_set needs at least one symbol")
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"duplicate symbols in {list(symbols)}")
    lake = Lake(Path(lake_root))
    label_store = labels_lake(Path(lake_root), spec)
    parts: list[pd.DataFrame] = []
    for symbol in symbols:
        features = load_features(lake, symbol, start_ms, end_ms).drop(columns=["schema_version"])
        labels = label_store.read("labels_1m", symbol, start_ms, end_ms)
        joined = join_features_labels(features, labels)
        joined.insert(0, "symbol", symbol)
        parts.append(joined)
    pooled = pd.concat(parts, ignore_index=True)
    if pooled.empty:
        raise ValueError(
            f"no rows where features and labels of spec {spec.spec_hash()} meet for {list(symbols)}"
        )
    order = np.argsort(pooled["ts"].to_numpy(np.int64), kind="stable")
    pooled = pooled.iloc[order].reset_index(drop=True)
    X = np.ascontiguousarray(pooled[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
    label_columns = [c for c in pooled.columns if c not in FEATURE_NAMES]
    labels_frame = pooled[label_columns].copy()
    return TrainingSet(
        X=X,
        labels=labels_frame,
        ts_ms=labels_frame["ts"].to_numpy(np.int64),
        symbol=labels_frame["symbol"].to_numpy(dtype=object),
        exit_ts_ms=labels_exit_ts_ms(labels_frame, spec.h_bars),
        symbols=tuple(symbols),
        label_spec=spec,
        lake_root=str(lake_root),
    )
