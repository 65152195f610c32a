"""Multi-target LightGBM model: the predictor of spec 001 §9.2 / §12.1 (seed 000 §2).

One LightGBM Booster per output, each trained on the rows of ``labels_1m`` with status 0:

output         label column (side = long | short)   objective                                clipped to
er_<side>      <side>_ret_net                       L2: expected net return (fraction)       —
q05_<side>     <side>_ret_net                       quantile α = 0.05: 5% return quantile    —
e_mae_<side>   <side>_mae                           L2: expected MAE (fraction of entry)     ≥ 0
e_hold_<side>  <side>_time_to_event_min             L2: expected minutes to the exit close   ≥ 1
p_tp_<side>    <side>_y == +1 (optional)            binary: probability that TP is hit       [0, 1]

The model carries the feature schema (version, hash, the 132 names in order) and the label spec hash
it was trained on, and refuses rows of another feature schema. ``to_bytes`` / ``from_bytes`` give a
self-contained blob (JSON: metadata + LightGBM model strings, which hold doubles to 17 digits), so a
round trip predicts bit-identical values. No file I/O here: storage and MLflow handle the blob.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.errors import SchemaMismatchError
from core.features_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION, SCHEMA_HASH

BLOB_FORMAT = "raytrade-multitarget-lgbm"
BLOB_VERSION = 1
Q05_ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """How one output is learned from ``labels_1m``: label column, LightGBM objective, prediction bounds."""

    name: str
    side: str
    label_column: str
    objective: str
    alpha: float | None = None
    lower: float | None = None
    upper: float | None = None


def _specs() -> dict[str, TargetSpec]:
    out: dict[str, TargetSpec] = {}
    for kind in ("er", "q05", "e_mae", "e_hold", "p_tp"):
        for side in ("long", "short"):
            name = f"{kind}_{side}"
            out[name] = {
                "er": TargetSpec(name, side, f"{side}_ret_net", "regression"),
                "q05": TargetSpec(name, side, f"{side}_ret_net", "quantile", alpha=Q05_ALPHA),
                "e_mae": TargetSpec(name, side, f"{side}_mae", "regression", lower=0.0),
                "e_hold": TargetSpec(name, side, f"{side}_time_to_event_min", "regression", lower=1.0),
                "p_tp": TargetSpec(name, side, f"{side}_y", "binary", lower=0.0, upper=1.0),
            }[kind]
    return out


TARGET_SPECS: Mapping[str, TargetSpec] = _specs()
#: The eight outputs every model has, in output order.
REQUIRED_TARGETS: tuple[str, ...] = tuple(n for n in TARGET_SPECS if not n.startswith("p_tp"))
#: The optional TP-probability classifiers.
OPTIONAL_TARGETS: tuple[str, ...] = ("p_tp_long", "p_tp_short")


def target_values(target: str, labels: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
    """Return the training target of ``target`` from ``labels_1m`` columns (float64; p_tp: 1.0 where y = +1)."""
    spec = TARGET_SPECS[target]
    column = np.asarray(labels[spec.label_column], dtype=np.float64)
    if spec.objective == "binary":
        return (column == 1).astype(np.float64)
    return column


def _header_value(model_str: str, key: str) -> str | None:
    for line in model_str.split("\n", 64)[:64]:
        if line.startswith("Tree="):
            break
        if line.startswith(key + "="):
            return line[len(key) + 1 :]
    return None


def _parameter_value(model_str: str, key: str) -> str | None:
    start = model_str.rfind("\nparameters:\n")
    marker = f"\n[{key}: "
    at = model_str.find(marker, max(start, 0))
    if start < 0 or at < 0:
        return None
    return model_str[at + len(marker) : model_str.index("]", at)]


def _check_booster(target: str, model_str: str, booster: lgb.Booster) -> None:
    spec = TARGET_SPECS[target]
    if booster.feature_name() != list(FEATURE_NAMES):
        raise SchemaMismatchError(
            f"{target}: the booster's {booster.num_feature()} feature names are not the "
            f"{len(FEATURE_NAMES)} names of feature schema v{FEATURE_SCHEMA_VERSION} in order"
        )
    objective = (_header_value(model_str, "objective") or "").split(" ")[0]
    if objective != spec.objective:
        raise ValueError(f"{target}: booster objective {objective!r}, expected {spec.objective!r}")
    if spec.alpha is not None:
        alpha = _parameter_value(model_str, "alpha")
        if alpha is None or float(alpha) != spec.alpha:
            raise ValueError(f"{target}: booster quantile alpha {alpha}, expected {spec.alpha}")


def feature_matrix(
    X: np.ndarray | pd.DataFrame, feature_schema_version: int = FEATURE_SCHEMA_VERSION
) -> np.ndarray:
    """Return rows as a float64 matrix n × 132 in schema order.

    ``X`` is such a matrix (one row may be a vector) or a frame with the 132 columns in any order (extra
    columns ignored; a ``schema_version`` column must equal ``feature_schema_version``). Anything else
    raises SchemaMismatchError.
    """
    if isinstance(X, pd.DataFrame):
        if "schema_version" in X.columns and (X["schema_version"].to_numpy() != feature_schema_version).any():
            raise SchemaMismatchError(
                f"rows carry schema_version {sorted(set(X['schema_version'].tolist()))}, "
                f"not the declared v{feature_schema_version}"
            )
        missing = [n for n in FEATURE_NAMES if n not in X.columns]
        if missing:
            raise SchemaMismatchError(
                f"rows lack {len(missing)} feature(s) of schema v{FEATURE_SCHEMA_VERSION}, e.g. {missing[:3]}"
            )
        return X.loc[:, list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    matrix = np.asarray(X, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != len(FEATURE_NAMES):
        raise SchemaMismatchError(
            f"rows have shape {np.shape(X)}; schema v{FEATURE_SCHEMA_VERSION} has {len(FEATURE_NAMES)} features per row"
        )
    return matrix


def _require_current_schema(version: int, hash_: str) -> None:
    if version != FEATURE_SCHEMA_VERSION or hash_ != SCHEMA_HASH:
        raise SchemaMismatchError(
            f"model of feature schema v{version} (hash {hash_}); this build computes "
            f"v{FEATURE_SCHEMA_VERSION} (hash {SCHEMA_HASH}): retrain on current features"
        )


class MultiTargetModel:
    """The eight regression Boosters (and optionally the two TP classifiers) of one trained model.

    Built from Boosters trained on features of the current schema (``FEATURE_NAMES``); anything else is
    refused with SchemaMismatchError. ``metadata`` (JSON-serialisable) records how it was trained.
    """

    __slots__ = ("_boosters", "_metadata", "_model_strings", "feature_schema_hash", "feature_schema_version",
                 "label_spec_hash")  # fmt: skip

    def __init__(
        self,
        boosters: Mapping[str, lgb.Booster],
        *,
        label_spec_hash: str,
        feature_schema_version: int = FEATURE_SCHEMA_VERSION,
        feature_schema_hash: str = SCHEMA_HASH,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        _require_current_schema(feature_schema_version, feature_schema_hash)
        missing = [t for t in REQUIRED_TARGETS if t not in boosters]
        unknown = [t for t in boosters if t not in TARGET_SPECS]
        if missing or unknown:
            raise ValueError(
                f"boosters: missing {missing}, unknown {unknown}; required {list(REQUIRED_TARGETS)}"
            )
        if not label_spec_hash:
            raise ValueError("label_spec_hash is required")
        order = [t for t in TARGET_SPECS if t in boosters]
        strings = {t: boosters[t].model_to_string() for t in order}
        for t in order:
            _check_booster(t, strings[t], boosters[t])
        self._boosters = {t: boosters[t] for t in order}
        self._model_strings = strings
        self._metadata = json.loads(json.dumps(dict(metadata or {}), sort_keys=True))
        self.feature_schema_version = feature_schema_version
        self.feature_schema_hash = feature_schema_hash
        self.label_spec_hash = label_spec_hash

    @property
    def targets(self) -> tuple[str, ...]:
        """Output names, in output order (the eight required, then p_tp_* if present)."""
        return tuple(self._boosters)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the training metadata."""
        return json.loads(json.dumps(self._metadata))

    def booster(self, target: str) -> lgb.Booster:
        """The Booster of one output (e.g. for feature importances)."""
        return self._boosters[target]

    def predict(
        self,
        X: np.ndarray | pd.DataFrame,
        feature_schema_version: int,
        feature_schema_hash: str,
        *,
        num_threads: int = 0,
    ) -> dict[str, np.ndarray]:
        """Predict every output for a batch of feature rows (n × 132, schema order; or a frame with the
        132 columns, in any order, extra columns ignored).

        The caller states the rows' schema; another version or hash than the model's raises
        SchemaMismatchError naming both. Returns float64 arrays of length n keyed by output name, in
        ``targets`` order; e_mae is clipped to ≥ 0 and e_hold to ≥ 1 minute. ``num_threads`` 0 is
        LightGBM's default (all cores); a Ray worker with one CPU should pass 1.
        """
        matrix = self._rows(X, feature_schema_version, feature_schema_hash)
        out: dict[str, np.ndarray] = {}
        for target, booster in self._boosters.items():
            spec = TARGET_SPECS[target]
            values = np.asarray(
                cast(np.ndarray, booster.predict(matrix, num_threads=num_threads)), dtype=np.float64
            )
            if spec.lower is not None or spec.upper is not None:
                values = np.clip(values, spec.lower, spec.upper)
            out[target] = values
        return out

    def _rows(
        self, X: np.ndarray | pd.DataFrame, feature_schema_version: int, feature_schema_hash: str
    ) -> np.ndarray:
        if (
            feature_schema_version != self.feature_schema_version
            or feature_schema_hash != self.feature_schema_hash
        ):
            raise SchemaMismatchError(
                f"features of schema v{feature_schema_version} (hash {feature_schema_hash}) given to a model "
                f"of schema v{self.feature_schema_version} (hash {self.feature_schema_hash})"
            )
        return feature_matrix(X, feature_schema_version)

    def contribution_matrix(
        self,
        X: np.ndarray | pd.DataFrame,
        feature_schema_version: int,
        feature_schema_hash: str,
        *,
        num_threads: int = 0,
    ) -> dict[str, np.ndarray]:
        """LightGBM's own SHAP values (``pred_contrib=True``) per output: n × 133 float64, one column
        per feature in schema order and the base value (expected raw score) last.

        Contributions are in each Booster's *raw score* space, where base + Σ contributions equals
        ``booster.predict(raw_score=True)`` exactly (to float rounding): for the L2 and quantile outputs
        that is the prediction *before* ``predict`` clips e_mae to ≥ 0 and e_hold to ≥ 1 (identical
        unless clipped); for p_tp (binary) it is the log-odds, not the probability. Same schema checks
        as ``predict``.
        """
        matrix = self._rows(X, feature_schema_version, feature_schema_hash)
        return {
            target: np.asarray(
                cast(np.ndarray, booster.predict(matrix, pred_contrib=True, num_threads=num_threads)),
                dtype=np.float64,
            ).reshape(len(matrix), len(FEATURE_NAMES) + 1)
            for target, booster in self._boosters.items()
        }

    def contributions(
        self,
        X: np.ndarray | pd.DataFrame,
        feature_schema_version: int,
        feature_schema_hash: str,
        *,
        top_k: int = 5,
        num_threads: int = 0,
    ) -> list[dict[str, dict[str, Any]]]:
        """Per row, per output: the base value and the ``top_k`` features by |contribution| (largest
        first; ties by schema order) with the row's value of each feature (None when missing/NaN).

        ``[{target: {"base": float, "top": [{"feature": str, "value": float | None,
        "contribution": float}, ...]}}, ...]``, one dict per row, targets in ``targets`` order; the
        space of the numbers is that of ``contribution_matrix`` (raw score: unclipped; p_tp in
        log-odds). Features contributing exactly 0 (unused by the trees) are left out, so ``top``
        may hold fewer than ``top_k`` entries.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {top_k}")
        matrix = self._rows(X, feature_schema_version, feature_schema_hash)
        contrib = self.contribution_matrix(
            matrix, feature_schema_version, feature_schema_hash, num_threads=num_threads
        )
        n_features = len(FEATURE_NAMES)
        k = min(top_k, n_features)
        rows: list[dict[str, dict[str, Any]]] = [{} for _ in range(len(matrix))]
        for target, c in contrib.items():
            parts = c[:, :n_features]
            # stable sort on -|c|: the largest first, ties in schema order
            order = np.argsort(-np.abs(parts), axis=1, kind="stable")[:, :k]
            for i in range(len(matrix)):
                top = []
                for j in order[i]:
                    value = float(parts[i, j])
                    if value == 0.0:
                        break
                    x = float(matrix[i, j])
                    top.append({"feature": FEATURE_NAMES[j], "value": x if np.isfinite(x) else None,
                                "contribution": value})  # fmt: skip
                rows[i][target] = {"base": float(c[i, n_features]), "top": top}
        return rows

    def predict_frame(
        self, X: np.ndarray | pd.DataFrame, feature_schema_version: int, feature_schema_hash: str
    ) -> pd.DataFrame:
        """``predict`` as a frame, one column per output (index of ``X`` when it is a frame)."""
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(self.predict(X, feature_schema_version, feature_schema_hash), index=index)

    def to_bytes(self) -> bytes:
        """Serialise to a self-contained UTF-8 JSON blob (metadata + LightGBM model strings); deterministic."""
        blob = {
            "format": BLOB_FORMAT,
            "format_version": BLOB_VERSION,
            "feature_schema_version": self.feature_schema_version,
            "feature_schema_hash": self.feature_schema_hash,
            "feature_names": list(FEATURE_NAMES),
            "label_spec_hash": self.label_spec_hash,
            "lightgbm_version": lgb.__version__,
            "metadata": self._metadata,
            "targets": list(self._model_strings),
            "models": self._model_strings,
        }
        return json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> MultiTargetModel:
        """Rebuild a model from ``to_bytes``; refuses a blob of another format or feature schema."""
        try:
            blob = json.loads(data)
            fmt = blob.get("format"), blob.get("format_version")
        except (ValueError, AttributeError) as e:
            raise ValueError("not a raytrade multi-target model blob") from e
        if fmt != (BLOB_FORMAT, BLOB_VERSION):
            raise ValueError(f"blob format {fmt}, expected {(BLOB_FORMAT, BLOB_VERSION)}")
        _require_current_schema(blob["feature_schema_version"], blob["feature_schema_hash"])
        if tuple(blob["feature_names"]) != FEATURE_NAMES:
            raise SchemaMismatchError(
                f"model of feature schema v{blob['feature_schema_version']} (hash {blob['feature_schema_hash']}) "
                f"has other feature names than v{FEATURE_SCHEMA_VERSION} (hash {SCHEMA_HASH})"
            )
        boosters = {t: lgb.Booster(model_str=blob["models"][t]) for t in blob["targets"]}
        return cls(
            boosters,
            label_spec_hash=blob["label_spec_hash"],
            feature_schema_version=int(blob["feature_schema_version"]),
            feature_schema_hash=blob["feature_schema_hash"],
            metadata=blob["metadata"],
        )

    def fingerprint(self) -> str:
        """Return the sha256 (hex, 16 digits) of ``to_bytes()``: equal models, equal fingerprints."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def __reduce__(self) -> tuple[Any, ...]:
        return (MultiTargetModel.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return (
            f"MultiTargetModel(targets={list(self.targets)}, feature_schema=v{self.feature_schema_version}/"
            f"{self.feature_schema_hash}, label_spec_hash={self.label_spec_hash})"
        )
