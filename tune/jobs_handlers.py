"""The batch worker's ``label``, ``train`` and ``backtest`` jobs (spec 001 §18): configs and handlers.

Each kind has a pydantic config model (``LabelJobConfig``, ``TrainJobConfig``, ``BacktestJobConfig``)
that ``tune.worker.enqueue_job`` checks when a job is queued and the handler checks again when it
runs. Handlers are built by the composition root from one ``JobEnvironment`` (lake, label spec,
policy, risk, simulator, registry, reports folder, how to start Ray), so this module reads no
settings and imports nothing above ``tune``.

- ``label``: labels the symbols with the environment's label spec, one Ray task per symbol, into the
  spec's label lake; progress as symbols finish. Report URI: the label lake's folder.
- ``train``: walk-forward training of one LightGBM configuration. Features are (re)computed for symbols
  whose ``features_1m`` lag their candles; labels must exist (a ``label`` job makes them). For every
  fold the model is fitted on train ∪ validation and backtested with the policy on the fold's test
  window (out of sample), the baselines on the same windows; progress as folds finish. The model of
  the last fold is registered with its per-fold metrics and gate inputs (``gates_input.json``), so a
  ``promote`` job can judge it. Report URI: ``models:/<name>/<version>``.
- ``backtest``: the baselines (and, given ``model``, that registered model's policy) over one period;
  progress per strategy. The metrics go to ``report.json`` beside an HTML report in
  ``<reports>/<job_id>/``. Report URI: that ``report.json``.

A handler raises on anything wrong (missing candles, features, labels, an unknown model); the worker
records the error on the job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.errors import ConfigError
from core.sim import SimConfig, run_backtest
from core.strategies import BASELINES
from core.symbols import SymbolError, validate_internal
from core.time import parse_utc
from storage.lake import Lake
from storage.registry import ModelRegistry

if TYPE_CHECKING:
    from tune.worker import JobContext, JobHandler

DEFAULT_MODEL_NAME = "raytrade-lgbm"
DEFAULT_EXPERIMENT = "raytrade-jobs"
#: Walk-forward metrics stored per fold on the registered version's run (``fold<i>_<metric>``).
FOLD_METRICS = ("trades", "profit_factor", "sharpe", "total_return", "max_drawdown", "score")

_CONFIG = ConfigDict(extra="forbid", frozen=True)


# --- configs ---------------------------------------------------------------------------------------


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
    num_boost_round: int = Field(30, ge=1, le=10_000)
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


# --- environment ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobEnvironment:
    """What the handlers work with; built once by the composition root (``raytrade.cmd_models``).

    ``start_ray`` connects to or starts Ray (label jobs run Ray tasks); ``reports_dir`` holds one
    folder per backtest job.
    """

    lake_root: Path
    label_spec: LabelSpec
    policy: PolicyConfig
    risk: RiskConfig
    sim: SimConfig
    registry: ModelRegistry
    reports_dir: Path
    start_ray: Callable[[], None]


def _require_candles(lake: Lake, symbols: Sequence[str]) -> None:
    missing = [s for s in symbols if lake.coverage("candles_1m", s) is None]
    if missing:
        raise FileNotFoundError(f"no candles_1m in the lake at {lake.root} for {', '.join(missing)}")


# --- label ----------------------------------------------------------------------------------------


def label_handler(env: JobEnvironment) -> JobHandler:
    """Return the ``label`` handler: one Ray task per symbol, progress as symbols finish."""

    def handle(ctx: JobContext) -> str | None:
        import ray

        from pipelines.labels import label_symbol, labels_lake

        cfg = LabelJobConfig.model_validate(dict(ctx.config))
        _require_candles(Lake(env.lake_root), cfg.symbols)
        env.start_ray()
        store = labels_lake(env.lake_root, env.label_spec)
        spec_json = env.label_spec.model_dump_json()
        task = ray.remote(num_cpus=1)(label_symbol)
        pending = {task.remote(str(env.lake_root), s, spec_json): s for s in cfg.symbols}
        counts: dict[str, dict[str, int]] = {}
        ctx.progress(0.05, f"labelling {len(pending)} symbol(s) with spec {env.label_spec.spec_hash()}")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            symbol = pending.pop(done[0])
            counts[symbol] = ray.get(done[0])
            ctx.progress(
                0.05 + 0.95 * len(counts) / len(cfg.symbols),
                f"{symbol}: {counts[symbol]['labelled']:,} labelled",
            )
        (store.root / "last_job.json").write_text(
            json.dumps({"job_id": ctx.job.job_id, "symbols": counts}, indent=1)
        )
        return store.root.resolve().as_uri()

    return handle


# --- train ----------------------------------------------------------------------------------------


def _fresh_features(lake: Lake, symbols: Sequence[str]) -> list[str]:
    """Symbols whose features_1m are missing or end before their candles do."""
    stale = []
    for s in symbols:
        candles, features = lake.coverage("candles_1m", s), lake.coverage("features_1m", s)
        if candles is not None and (features is None or features.last_ts < candles.last_ts):
            stale.append(s)
    return stale


def train_handler(env: JobEnvironment) -> JobHandler:
    """Return the ``train`` handler: walk-forward folds out of sample, progress per fold, registration."""

    def handle(ctx: JobContext) -> str | None:
        from pipelines.features import features_for_group
        from pipelines.labels import labels_lake
        from pipelines.walkforward import FoldWindow, walk_forward_baselines
        from tune.dataset import load_training_set
        from tune.gates import FoldMetrics, GatesInput, StrategyResult
        from tune.splits import WalkForwardConfig, walk_forward_folds
        from tune.train import fit_multi_target
        from tune.trainable import EvalConfig, refit_fold, walk_forward_candidate

        cfg = TrainJobConfig.model_validate(dict(ctx.config))
        lake = Lake(env.lake_root)
        _require_candles(lake, cfg.symbols)
        stale = _fresh_features(lake, cfg.symbols)
        if stale:
            ctx.progress(0.02, f"computing features of {', '.join(stale)}")
            features_for_group(str(env.lake_root), stale)
        labels = labels_lake(env.lake_root, env.label_spec)
        unlabelled = [s for s in cfg.symbols if labels.coverage("labels_1m", s) is None]
        if unlabelled:
            raise FileNotFoundError(
                f"no labels of spec {env.label_spec.spec_hash()} for {', '.join(unlabelled)}: queue a label job first"
            )
        data = load_training_set(env.lake_root, cfg.symbols, env.label_spec, cfg.start_ms, cfg.end_ms)
        h = env.label_spec.h_bars
        wf = WalkForwardConfig(
            length_unit=cfg.folds.unit, train_length=cfg.folds.train, val_length=cfg.folds.val,
            test_length=cfg.folds.test, embargo_bars=h, horizon_bars=h, max_folds=cfg.folds.folds,
        )  # fmt: skip
        folds = walk_forward_folds(data.ts_ms, data.exit_ts_ms, wf)
        if not folds:
            raise ConfigError(
                f"no walk-forward fold of train {cfg.folds.train:g} / val {cfg.folds.val:g} / test "
                f"{cfg.folds.test:g} {cfg.folds.unit} fits the {len(data):,} rows: shorten the windows"
            )
        ctx.progress(0.05, f"{len(data):,} rows, {len(folds)} fold(s)")
        eval_cfg = EvalConfig(num_boost_round=cfg.num_boost_round, seed=cfg.seed, policy=env.policy,
                              risk=env.risk, sim=env.sim)  # fmt: skip
        candidate, rows = walk_forward_candidate(
            cfg.model_name, cfg.params, data, folds, eval_cfg, Lake(env.lake_root),
            on_fold=lambda k: ctx.progress(0.05 + 0.75 * (k + 1) / len(folds), f"fold {k + 1}/{len(folds)} done"),
        )  # fmt: skip
        windows = [FoldWindow(f.index, f.test_start_ms, f.test_end_ms) for f in folds]
        base = walk_forward_baselines(
            env.lake_root, cfg.symbols, windows, list(BASELINES), sim=env.sim, risk=env.risk,
            policy=env.policy, label_spec=env.label_spec, use_ray=False,
        )  # fmt: skip
        baselines = [
            StrategyResult(
                name=n, folds=[FoldMetrics.from_summary(int(r["fold"]), r) for r in g.to_dict("records")]
            )
            for n, g in base.groupby("strategy", sort=True)
        ]
        ctx.progress(0.85, "baselines done; fitting the last fold's model")
        last = refit_fold(folds[-1])
        model = fit_multi_target(
            data.X[last.train], data.labels.iloc[last.train].reset_index(drop=True),
            label_spec_hash=data.label_spec_hash, params=dict(cfg.params), num_boost_round=cfg.num_boost_round,
            seed=cfg.seed, num_threads=1, feature_schema_version=data.feature_schema_version,
            feature_schema_hash=data.feature_schema_hash,
        )  # fmt: skip
        metrics = {
            f"fold{int(r['fold'])}_{k}": float(r[k])
            for r in rows
            for k in FOLD_METRICS
            if math.isfinite(float(r[k]))
        }
        info = env.registry.log_model(
            model, registered_name=cfg.model_name, experiment=cfg.experiment, metrics=metrics,
            params={**cfg.params, "num_boost_round": cfg.num_boost_round, "seed": cfg.seed,
                    "symbols": ",".join(cfg.symbols), "job_id": ctx.job.job_id},
            gates_input=GatesInput(candidate=candidate, baselines=baselines).model_dump(mode="json"),
            train_start_ms=last.train_start_ms, train_end_ms=last.test_start_ms,
        )  # fmt: skip
        return info.uri

    return handle


# --- backtest -------------------------------------------------------------------------------------


def backtest_handler(env: JobEnvironment) -> JobHandler:
    """Return the ``backtest`` handler: baselines (and a model's policy) over one period, metrics stored."""

    def handle(ctx: JobContext) -> str | None:
        from pipelines.backtest import load_panel, policy_signals
        from pipelines.baselines import run_baselines
        from pipelines.report import Report, backtest_section
        from tune.dataset import load_training_set
        from tune.trainable import btc_regime_on_panel, predictions_on_panel

        cfg = BacktestJobConfig.model_validate(dict(ctx.config))
        lake = Lake(env.lake_root)
        _require_candles(lake, cfg.symbols)
        panel = load_panel(lake, cfg.symbols, cfg.start_ms, cfg.end_ms)
        steps = len(cfg.strategies) + (1 if cfg.model else 0)
        ctx.progress(0.1, f"{len(panel.ts):,} bars × {len(cfg.symbols)} symbols")
        results: dict[str, Any] = {}
        if cfg.model is not None:
            model = env.registry.load_model(cfg.model)
            start, end = int(panel.ts[0]), int(panel.ts[-1]) + panel.bar_ms
            data = load_training_set(env.lake_root, cfg.symbols, env.label_spec, start, end)
            predicted = model.predict(data.X, data.feature_schema_version, data.feature_schema_hash)
            grid = predictions_on_panel(panel, data.ts_ms, data.symbol, predicted)
            signals = policy_signals(
                panel, grid, btc_regime_on_panel(data, panel, "BTCUSDT"), env.policy, env.label_spec
            )
            results["model"] = run_backtest(panel, signals, env.sim, env.risk)
            ctx.progress(0.1 + 0.8 / steps, f"{cfg.model} done")
        for name in cfg.strategies:
            results.update(run_baselines(lake, panel, [name], sim=env.sim, risk=env.risk, policy=env.policy,
                                         label_spec=env.label_spec))  # fmt: skip
            ctx.progress(0.1 + 0.8 * len(results) / steps, f"{name} done")
        out_dir = (env.reports_dir / ctx.job.job_id).resolve()
        report = Report(f"backtest job {ctx.job.job_id}", out_dir)
        report.notes.append(
            f"{len(cfg.symbols)} symbols ({', '.join(cfg.symbols)}), {len(panel.ts):,} 1m bars from the lake "
            f"at {env.lake_root}" + (f"; model {cfg.model}" if cfg.model else "")
        )
        summaries = backtest_section(report, results, label="backtest")
        report.write({"job_id": ctx.job.job_id, "config": cfg.model_dump(mode="json"), "summaries": summaries,
                      "start_ms": int(panel.ts[0]), "end_ms": int(panel.ts[-1]) + panel.bar_ms})  # fmt: skip
        return (out_dir / "report.json").as_uri()

    return handle


def job_handlers(env: JobEnvironment) -> dict[str, JobHandler]:
    """The ``label``, ``train`` and ``backtest`` handlers over one environment."""
    return {"label": label_handler(env), "train": train_handler(env), "backtest": backtest_handler(env)}


__all__ = [
    "JOB_CONFIGS",
    "BacktestJobConfig",
    "FoldsConfig",
    "JobEnvironment",
    "LabelJobConfig",
    "TrainJobConfig",
    "backtest_handler",
    "job_handlers",
    "label_handler",
    "train_handler",
]
