"""Config models of the batch worker's ``label``, ``train``, ``backtest``, ``drift`` and ``bootstrap_history``
jobs (spec 001 §18).

``tune.worker.enqueue_job`` checks a job's config against its model when the job is queued, and the
handler (``tune.jobs_handlers``) checks it again when it runs. Pure pydantic: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.features_schema import FEATURE_NAMES
from core.strategies import BASELINES
from core.symbols import SymbolError, validate_internal
from core.time import parse_utc

DEFAULT_MODEL_NAME = "raytrade-lgbm"
DEFAULT_EXPERIMENT = "raytrade-jobs"

_CONFIG = ConfigDict(extra="forbid", frozen=True)


def _symbols(values: list[str]) -> list[str]:
    problems = []
    for s in values:
        try:
            validate_internal(s)
        except SymbolError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))
    if len(set(values)) != len(values):
        raise ValueError(f"symbols repeat: {values}")
    return values


def _utc(value: str | None) -> str | None:
    if value is not None:
        parse_utc(value)  # raises ValueError naming the text
    return value


class _Period(BaseModel):
    model_config = _CONFIG

    symbols: list[str] = Field(min_length=1, description="internal symbols, e.g. BTCUSDT")
    start: str | None = Field(None, description="ISO date/time, UTC; default: the data's start")
    end: str | None = Field(None, description="ISO date/time, UTC, exclusive; default: the data's end")

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        return _symbols(value)

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> _Period:
        if self.start is not None and self.end is not None and parse_utc(self.start) >= parse_utc(self.end):
            raise ValueError(f"start {self.start} is not before end {self.end}")
        return self

    @property
    def start_ms(self) -> int | None:
        return None if self.start is None else parse_utc(self.start)

    @property
    def end_ms(self) -> int | None:
        return None if self.end is None else parse_utc(self.end)


class LabelJobConfig(BaseModel):
    """Config of a ``label`` job: the symbols to label with the installation's label spec."""

    model_config = _CONFIG

    symbols: list[str] = Field(min_length=1, description="internal symbols with candles_1m in the lake")

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        return _symbols(value)


class FoldsConfig(BaseModel):
    """Walk-forward windows of a ``train`` job (rolling; the last test window ends with the data)."""

    model_config = _CONFIG

    unit: Literal["days", "bars"] = "days"
    train: float = Field(gt=0, description="training window, in unit")
    val: float = Field(0, ge=0, description="validation window, in unit (joins training when refitting)")
    test: float = Field(gt=0, description="test window (out of sample), in unit")
    folds: int = Field(3, ge=1, le=50, description="most recent folds kept")


class TrainJobConfig(_Period):
    """Config of a ``train`` job: data, walk-forward windows, LightGBM settings, where to register."""

    folds: FoldsConfig
    params: dict[str, Any] = Field(default_factory=dict, description="LightGBM overrides of BASE_PARAMS")
    num_boost_round: int = Field(60, ge=1, le=10_000)  # learning rates 0.03-0.1 (default_search_space)
    seed: int = 0
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1, description="registered model name")
    experiment: str = Field(DEFAULT_EXPERIMENT, min_length=1, description="MLflow experiment of the run")

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        from tune.train import RESERVED_PARAMS

        bad = sorted(RESERVED_PARAMS.intersection(value))
        if bad:
            raise ValueError(f"params may not set {bad}: objectives and determinism are fixed per target")
        return value


class BacktestJobConfig(_Period):
    """Config of a ``backtest`` job: data, baselines, optionally a registered model's policy."""

    strategies: list[str] = Field(default_factory=lambda: list(BASELINES), description="baseline names")
    model: str | None = Field(
        None, description="also backtest this model's policy: models:/<name>@production or models:/<name>/<v>"
    )

    @field_validator("strategies")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [n for n in value if n not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
        return value

    @field_validator("model")
    @classmethod
    def _model_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("models:/"):
            raise ValueError(f"model must be a models:/ URI, got {value!r}")
        return value


class DriftJobConfig(BaseModel):
    """Config of a ``drift`` job (``pipelines.drift``): symbols, windows, optionally a feature subset."""

    model_config = _CONFIG

    symbols: list[str] = Field(min_length=1, description="internal symbols with features_1m in the lake")
    reference_days: float = Field(
        7.0, gt=0, le=365, description="reference window before the current one, days"
    )
    current_hours: float = Field(
        24.0, gt=0, le=24 * 30, description="current window, hours (1 h of 1m bars: PSI noise alone ≈ 0.15)"
    )
    end: str | None = Field(
        None,
        description="ISO date/time, UTC, exclusive end of the current window; default: each symbol's newest bar",
    )
    features: list[str] | None = Field(
        None,
        min_length=1,
        description="feature names; default: every feature but the 12 calendar ones (core.drift.DRIFT_FEATURES)",
    )

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        return _symbols(value)

    @field_validator("end")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        return _utc(value)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str] | None) -> list[str] | None:
        unknown = [n for n in value or () if n not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; names look like {FEATURE_NAMES[0]}")
        return value

    @property
    def reference_ms(self) -> int:
        return round(self.reference_days * 86_400_000)

    @property
    def current_ms(self) -> int:
        return round(self.current_hours * 3_600_000)

    @property
    def end_ms(self) -> int | None:
        return None if self.end is None else parse_utc(self.end)


#: History datasets a ``bootstrap_history`` job may name (the full parse is ``pipelines.history_plan``).
_HISTORY_DATASET = re.compile(r"^(?:(?:klines|markPriceKlines|premiumIndexKlines)/\d+[mhdw]|fundingRate)$")


class BootstrapHistoryJobConfig(_Period):
    """Config of a ``bootstrap_history`` job: what ``raytrade history`` downloads, as a job."""

    datasets: list[str] = Field(
        default_factory=lambda: ["klines/1m", "markPriceKlines/1m", "premiumIndexKlines/1m", "fundingRate"],
        min_length=1,
        description="e.g. klines/1m, markPriceKlines/1m, premiumIndexKlines/1m, fundingRate",
    )
    replace: bool = Field(False, description="take new rows whose ts the lake holds with other values")

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if not _HISTORY_DATASET.match(d)]
        if bad:
            raise ValueError(f"unknown dataset(s) {bad}; expected e.g. klines/1m, fundingRate")
        return value


#: Config models of the kinds defined here (``tune.worker.JOB_CONFIG_MODELS`` adds ``promote``).
JOB_CONFIGS: Mapping[str, type[BaseModel]] = {
    "label": LabelJobConfig,
    "train": TrainJobConfig,
    "backtest": BacktestJobConfig,
    "drift": DriftJobConfig,
    "bootstrap_history": BootstrapHistoryJobConfig,
}
