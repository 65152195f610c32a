"""The batch worker's ``label``, ``train`` and ``backtest`` jobs (spec 001 §18): the handlers.

Each kind has a pydantic config model (``tune.job_configs``: ``LabelJobConfig``, ``TrainJobConfig``,
``BacktestJobConfig``, re-exported here) that ``tune.worker.enqueue_job`` checks when a job is queued and the handler checks again when it
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
  ``promote`` job can judge it (the flow of ``tune.flow``, shared with demo and research). Report URI:
  ``models:/<name>/<version>``.
- ``backtest``: the baselines (and, given ``model``, that registered model's policy through
  ``pipelines.model_backtest.backtest_model``) over one period;
  progress per strategy. The metrics go to ``report.json`` beside an HTML report in
  ``<reports>/<job_id>/``. Report URI: that ``report.json``.

A handler raises on anything wrong (missing candles, features, labels, an unknown model); the worker
records the error on the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.errors import ConfigError
from core.sim import SimConfig
from storage.lake import Lake
from storage.registry import ModelRegistry
from tune.job_configs import (
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    JOB_CONFIGS,
    BacktestJobConfig,
    FoldsConfig,
    LabelJobConfig,
    TrainJobConfig,
)
from tune.jobs_types import JobContext, JobHandler

if TYPE_CHECKING:
    from tune.dataset import TrainingSet
    from tune.splits import Fold


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
    """Return the ``train`` handler: walk-forward folds out of sample, progress per fold, registration
    (``tune.flow.train_evaluate_register`` with the job's configuration, no sweep, no promotion)."""

    def handle(ctx: JobContext) -> str | None:
        from pipelines.features import features_for_group
        from pipelines.labels import labels_lake
        from tune.flow import TrainingEnvironment, TrainingProgress, TrainRequest, train_evaluate_register
        from tune.fold_plans import rolling_folds

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
        w = cfg.folds

        def folds(data: TrainingSet) -> list[Fold]:
            cut = rolling_folds(
                data,
                env.label_spec.h_bars,
                unit=w.unit,
                train=w.train,
                val=w.val,
                test=w.test,
                n_folds=w.folds,
            )
            if not cut:
                raise ConfigError(
                    f"no walk-forward fold of train {w.train:g} / val {w.val:g} / test {w.test:g} {w.unit} fits "
                    f"the {len(data):,} rows: shorten the windows"
                )
            return cut

        request = TrainRequest(
            symbols=tuple(cfg.symbols), folds=folds, seed=cfg.seed, num_boost_round=cfg.num_boost_round,
            model_name=cfg.model_name, experiment=cfg.experiment, start_ms=cfg.start_ms, end_ms=cfg.end_ms,
            params=cfg.params, log_params={"symbols": ",".join(cfg.symbols), "job_id": ctx.job.job_id},
            parallel_baselines=False,
        )  # fmt: skip

        def stage(name: str) -> None:
            if name == "fold backtests":
                ctx.progress(0.85, "baselines done; fitting the last fold's model")

        progress = TrainingProgress(
            loaded=lambda rows, n: ctx.progress(0.05, f"{rows:,} rows, {n} fold(s)"),
            fold=lambda k, n: ctx.progress(0.05 + 0.75 * (k + 1) / n, f"fold {k + 1}/{n} done"),
            stage=stage,
        )
        training = TrainingEnvironment(
            lake_root=env.lake_root, label_spec=env.label_spec, policy=env.policy, risk=env.risk, sim=env.sim,
            registry=env.registry,
        )  # fmt: skip
        return train_evaluate_register(training, request, progress).version.uri

    return handle


# --- backtest -------------------------------------------------------------------------------------


def backtest_handler(env: JobEnvironment) -> JobHandler:
    """Return the ``backtest`` handler: baselines (and a model's policy) over one period, metrics stored."""

    def handle(ctx: JobContext) -> str | None:
        from pipelines.backtest import load_panel
        from pipelines.baselines import run_baselines
        from pipelines.model_backtest import backtest_model
        from pipelines.report import Report, backtest_section
        from tune.dataset import load_training_set

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
            results["model"] = backtest_model(
                model, data, panel, policy=env.policy, label_spec=env.label_spec, sim=env.sim, risk=env.risk
            ).result
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
    "DEFAULT_EXPERIMENT",
    "DEFAULT_MODEL_NAME",
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
