"""Config models of the batch worker's ``label``, ``train`` and ``backtest`` jobs (spec 001 §18).

``tune.worker.enqueue_job`` checks a job's config against its model when the job is queued, and the
handler (``tune.jobs_handlers``) checks it again when it runs. Pure pydantic: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


#: Config models of the kinds defined here (``tune.worker.JOB_CONFIG_MODELS`` adds ``promote``).
JOB_CONFIGS: Mapping[str, type[BaseModel]] = {
    "label": LabelJobConfig,
    "train": TrainJobConfig,
    "backtest": BacktestJobConfig,
}
