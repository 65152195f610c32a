"""Fit the multi-target LightGBM model of ``core.model`` (plain functions: the Tune trainable calls them).

Deterministic: every Booster is trained with ``seed``, ``deterministic = true``, ``force_row_wise``
and a fixed ``num_threads``, so identical inputs and arguments give identical model strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.errors import SchemaMismatchError
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, require_schema
from core.model import (
    OPTIONAL_TARGETS,
    REQUIRED_TARGETS,
    TARGET_SPECS,
    MultiTargetModel,
    feature_matrix,
    target_values,
)

#: Hyperparameters every target starts from; ``params`` overrides them.
BASE_PARAMS: Mapping[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 255,
}
#: Set per target or for determinism: refused in ``params``.
RESERVED_PARAMS = frozenset(
    {
        "objective",
        "alpha",
        "metric",
        "seed",
        "deterministic",
        "num_threads",
        "force_row_wise",
        "force_col_wise",
    }
)
_METRIC = {"regression": "l2", "quantile": "quantile", "binary": "binary_logloss"}


def target_params(
    target: str, params: Mapping[str, Any] | None = None, *, seed: int = 0, num_threads: int = 1
) -> dict[str, Any]:
    """Return the LightGBM parameters of one output: BASE_PARAMS, then ``params``, then its objective and
    the determinism settings."""
    bad = RESERVED_PARAMS.intersection(params or {})
    if bad:
        raise ValueError(f"params may not set {sorted(bad)}: objectives and determinism are fixed per target")
    spec = TARGET_SPECS[target]
    out = {**BASE_PARAMS, **(params or {})}
    out.update(
        objective=spec.objective,
        metric=_METRIC[spec.objective],
        seed=seed,
        deterministic=True,
        force_row_wise=True,
        num_threads=num_threads,
        verbose=-1,
    )
    if spec.alpha is not None:
        out["alpha"] = spec.alpha
    return out


def join_features_labels(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Inner-join ``features_1m`` and ``labels_1m`` rows on (symbol, ts), or on ts when either lacks symbol;
    sorted by the keys. The result serves as both ``X`` and ``labels`` of ``fit_multi_target``."""
    keys = ["symbol", "ts"] if "symbol" in features.columns and "symbol" in labels.columns else ["ts"]
    overlap = (set(features.columns) & set(labels.columns)) - set(keys)
    if overlap:
        raise ValueError(f"features and labels share columns {sorted(overlap)} besides {keys}")
    return features.merge(labels, on=keys, how="inner", validate="one_to_one").sort_values(
        keys, ignore_index=True
    )


def _rows(labels: pd.DataFrame, target: str) -> np.ndarray:
    if "status" not in labels.columns:
        raise ValueError("labels need the status column of labels_1m (only status 0 rows train)")
    y = target_values(target, labels)
    return (labels["status"].to_numpy() == 0) & np.isfinite(y)


def _dataset_for(
    cache: dict[Any, lgb.Dataset],
    key: Any,
    matrix: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    **kwargs: Any,
) -> lgb.Dataset:
    """The Dataset of ``matrix[rows]`` labelled ``y``: made on first use of ``key``, else the cached one relabelled."""
    dataset = cache.get(key)
    if dataset is None:
        dataset = cache[key] = lgb.Dataset(matrix[rows], label=y, **kwargs)
    else:
        dataset.set_label(y)
    return dataset


def fit_multi_target(
    X: np.ndarray | pd.DataFrame,
    labels: pd.DataFrame,
    *,
    label_spec_hash: str,
    params: Mapping[str, Any] | None = None,
    num_boost_round: int = 300,
    valid: tuple[np.ndarray | pd.DataFrame, pd.DataFrame] | None = None,
    early_stopping_rounds: int | None = None,
    targets: Sequence[str] | None = None,
    include_p_tp: bool = False,
    seed: int = 0,
    num_threads: int = 1,
    feature_schema_version: int = FEATURE_SCHEMA_VERSION,
    feature_schema_hash: str = SCHEMA_HASH,
    metadata: Mapping[str, Any] | None = None,
) -> MultiTargetModel:
    """Train one Booster per output on the rows of ``labels`` (``labels_1m`` columns) with status 0.

    ``X`` holds the feature rows aligned with ``labels`` (n × 132 in schema order, or a frame with the
    132 columns, e.g. ``join_features_labels``). ``valid`` = (X, labels) of the validation window, used
    for early stopping when ``early_stopping_rounds`` is set (the model keeps the best iteration).
    ``targets`` defaults to the eight required outputs, plus p_tp_* with ``include_p_tp``. Refuses
    features of another schema than the current one (SchemaMismatchError).
    """
    require_schema(feature_schema_version, feature_schema_hash)
    matrix = feature_matrix(X, feature_schema_version)
    if len(matrix) != len(labels):
        raise SchemaMismatchError(f"{len(matrix)} feature rows for {len(labels)} label rows: join them first")
    if targets is None:
        targets = REQUIRED_TARGETS + (OPTIONAL_TARGETS if include_p_tp else ())
    missing = [t for t in REQUIRED_TARGETS if t not in targets]
    unknown = [t for t in targets if t not in TARGET_SPECS]
    if missing or unknown:
        raise ValueError(
            f"targets: missing {missing}, unknown {unknown}; every model has {list(REQUIRED_TARGETS)}"
        )
    if early_stopping_rounds is not None and valid is None:
        raise ValueError("early_stopping_rounds needs a validation set (valid=)")
    valid_matrix: np.ndarray | None = None
    if valid is not None:
        valid_matrix = feature_matrix(valid[0], feature_schema_version)
        if len(valid_matrix) != len(valid[1]):
            raise SchemaMismatchError(
                f"{len(valid_matrix)} validation feature rows for {len(valid[1])} labels"
            )

    boosters: dict[str, lgb.Booster] = {}
    info: dict[str, dict[str, Any]] = {}
    # Binning the feature matrix is most of a small fit's time and depends on the rows only, not on the
    # target: targets that train on the same rows share one constructed Dataset (its label replaced).
    # The bins, hence the boosters, are the same as with a Dataset per target (tested).
    train_sets: dict[bytes, lgb.Dataset] = {}
    valid_sets_by_rows: dict[tuple[bytes, bytes], lgb.Dataset] = {}
    for target in targets:
        p = target_params(target, params, seed=seed, num_threads=num_threads)
        rows = _rows(labels, target)
        if not rows.any():
            raise ValueError(f"{target}: no labelled rows (status 0 with a finite target) to train on")
        key = np.packbits(rows).tobytes()
        train_set = _dataset_for(
            train_sets, key, matrix, rows, target_values(target, labels)[rows],
            feature_name=list(FEATURE_NAMES), params={"verbose": -1},
        )  # fmt: skip
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Callable[..., Any]] = []
        if valid is not None and valid_matrix is not None:
            vrows = _rows(valid[1], target)
            valid_sets.append(
                _dataset_for(
                    valid_sets_by_rows,
                    (key, np.packbits(vrows).tobytes()),
                    valid_matrix,
                    vrows,
                    target_values(target, valid[1])[vrows],
                    reference=train_set,
                )  # fmt: skip
            )
            if early_stopping_rounds is not None:
                callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
        booster = lgb.train(p, train_set, num_boost_round, valid_sets=valid_sets, callbacks=callbacks)
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        # rebuild from the string: the in-memory model is exactly what to_bytes stores (best iteration only)
        boosters[target] = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        info[target] = {"params": p, "iterations": int(best), "train_rows": int(rows.sum())}
    return MultiTargetModel(
        boosters,
        label_spec_hash=label_spec_hash,
        feature_schema_version=feature_schema_version,
        feature_schema_hash=feature_schema_hash,
        metadata={"num_boost_round": num_boost_round, "seed": seed, "targets": info, **(metadata or {})},
    )
