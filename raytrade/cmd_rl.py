"""``raytrade train-rl``: train the hybrid RL agent (RLlib PPO) on lake data, evaluate it beside the supervised
policy, gate, log and register it (spec 001 §25.3–25.4, §25.7; issue #17).

One run:

1. The supervised model: ``<--model>``'s ``production`` version in the registry, with its training end
   (the ``train_end_ms`` tag). Its predictions are observation inputs, so both windows must lie after
   that end: by default the train window starts there (or at the first feature row, if later); an
   explicit ``--start`` before it is refused, naming the training end and the window.
2. Data: ``features_1m`` of the symbols (``pipelines.features.load_features``) and the market panel
   (``pipelines.backtest.load_panel``) over the train window ``[start, start + train_days)`` and the
   eval window that follows ``[.., + eval_days)``; ``rl.episodes.fold_episodes`` makes one episode per
   symbol and window with the model's out-of-sample predictions.
3. ``rl.train.train_ppo`` with one console line per ``train()`` iteration (env steps, episode reward
   mean, steps/s).
4. ``rl.evaluate``: the greedy agent (deciding every ``decision_every`` bars, as trained) and the supervised policy (``core.policy`` on the same model's
   predictions, the installation's simulator and risk preset) on the eval window; the §25.7 gates and
   ``promotion_decision`` (``--override-reason`` / ``--actor`` record an override).
5. MLflow: one run in experiment ``raytrade-rl`` with the parameters, the train/eval metrics, the
   evaluation and gate reports as JSON and the RLModule checkpoint folder (``rl_module/``), registered
   as a new version of ``<model>-rl`` (its training cadence as the param and version tag
   ``decision_every`` / ``rl_decision_every``: serving asks the policy at that cadence) and mirrored into ``rl_models`` (``storage.rl_registry``); that
   version becomes ``production`` only when the gates pass or an override is recorded.

Bad input (unknown symbol, no production model, too little data after the model's training end,
``--timesteps`` ≤ 0, …) is one red line naming what is wrong and exit code 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from core.errors import ConfigError
from core.symbols import SymbolError, parse_universe
from core.time import DAY_MS, MINUTE_MS, ms_to_text
from raytrade.defaults import MODEL_NAME
from raytrade.options import settings_or_exit, time_option_ms

if TYPE_CHECKING:
    from raytrade.settings import Settings

ALGORITHMS = ("PPO",)
DEFAULT_ACTOR = "raytrade-train-rl"
#: Metrics printed for the agent and the supervised policy on the eval window.
PRINTED = (("trades", "{:,.0f}"), ("profit_factor", "{:.3f}"), ("sharpe", "{:.2f}"),
           ("max_drawdown", "{:.2%}"), ("total_return", "{:+.2%}"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrainRLRequest:
    """What ``raytrade train-rl`` was asked to do (validated options)."""

    symbols: tuple[str, ...] | None
    train_days: float
    eval_days: float
    timesteps: int
    algorithm: str = "PPO"
    model_name: str = MODEL_NAME
    start_ms: int | None = None
    seed: int = 0
    train_batch_size: int | None = None
    override_reason: str | None = None
    actor: str = DEFAULT_ACTOR


@dataclass
class TrainRLSummary:
    """What a run produced."""

    run_id: str
    rl_model: str
    version: str
    model_id: str
    promotion_kind: str
    gates: dict[str, Any]
    rl_metrics: dict[str, float]
    supervised_metrics: dict[str, float]
    windows: dict[str, int] = field(default_factory=dict)


def _fmt(value: Any, spec: str) -> str:
    try:
        return "n/a" if value is None or math.isnan(float(value)) else spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def _window_text(start_ms: int, end_ms: int) -> str:
    return f"[{ms_to_text(start_ms)}, {ms_to_text(end_ms)})"


def _batch_size(timesteps: int, given: int | None) -> int:
    """Env steps per ``train()`` iteration: given, else ~ a tenth of the run (64 … 2,000)."""
    return given if given else max(64, min(2_000, timesteps // 10 if timesteps >= 640 else timesteps // 4))


def rl_env_kwargs(settings: Settings, sim: Any = None) -> dict[str, Any]:
    """The environment's simulator and guards for training and evaluation alike: the installation's
    (``sim`` default ``raytrade.cmd_backtest.sim_config(settings)``, ``settings.risk``, ``.policy``,
    ``.label``), as the backtest runs them; picklable for RLlib's env runners."""
    from raytrade.cmd_backtest import sim_config

    return {
        "config": sim if sim is not None else sim_config(settings),
        "risk": settings.risk,
        "policy": settings.policy,
        "label": settings.label,
    }


def run_train_rl(settings: Settings, request: TrainRLRequest, *, console: Console) -> TrainRLSummary:
    """Run ``raytrade train-rl`` (module docstring). ConfigError: bad input, nothing trained."""
    import numpy as np
    import pandas as pd

    from core.errors import DataQualityError, SchemaMismatchError
    from core.features_schema import FEATURE_SCHEMA_VERSION, KEY_COLUMNS, SCHEMA_HASH
    from pipelines.backtest import load_panel
    from pipelines.features import load_features
    from pipelines.model_backtest import BTC_SYMBOL, predictions_on_panel
    from raytrade.cmd_backtest import sim_config
    from rl.episodes import fold_episodes
    from storage import db
    from storage.lake import Lake
    from storage.registry import TAG_TRAIN_END, ModelRegistry

    if request.timesteps <= 0:
        raise ConfigError(f"--timesteps must be > 0, got {request.timesteps}")
    if request.algorithm.upper() not in ALGORITHMS:
        raise ConfigError(
            f"--algorithm {request.algorithm!r} is not supported; known: {', '.join(ALGORITHMS)}"
        )
    if not (request.train_days > 0 and request.eval_days > 0):
        raise ConfigError(
            f"--train-days and --eval-days must be > 0, got {request.train_days} and {request.eval_days}"
        )
    if request.override_reason is not None and not request.override_reason.strip():
        raise ConfigError("--override-reason needs a reason")
    if not request.actor.strip():
        raise ConfigError("--actor must name who promotes")

    lake = Lake(settings.lake_root)
    have = set(lake.symbols("features_1m"))
    symbols = list(request.symbols) if request.symbols else [s for s in settings.universe if s in have]
    unknown = [s for s in symbols if s not in have]
    if unknown or not symbols:
        raise ConfigError(
            f"unknown symbol(s) {', '.join(unknown) or '(none in the universe)'}: no features_1m in the lake at "
            f"{lake.root} (run `raytrade features` after `raytrade import`/`history`/`synth`)"
        )

    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)
        registry = ModelRegistry(
            settings.tracking_uri, artifact_root=settings.mlflow_artifact_root, engine=engine
        )
        names = registry.registered_names()
        info = registry.production_version(request.model_name) if request.model_name in names else None
        if info is None:
            raise ConfigError(
                f"model {request.model_name!r} has no production version: train and promote one first "
                "(`raytrade research` or `raytrade promote`)"
            )
        if TAG_TRAIN_END not in info.tags:
            raise ConfigError(
                f"{request.model_name} version {info.version} does not state its training end ({TAG_TRAIN_END}): "
                "its predictions cannot be shown to be out of sample"
            )
        model_end = int(info.tags[TAG_TRAIN_END])

        covers = [lake.coverage("features_1m", s) for s in symbols]
        first = max(c.first_ts for c in covers if c is not None)
        last_end = min(c.last_ts for c in covers if c is not None) + MINUTE_MS  # exclusive
        train_ms = int(round(request.train_days * DAY_MS / MINUTE_MS)) * MINUTE_MS
        eval_ms = int(round(request.eval_days * DAY_MS / MINUTE_MS)) * MINUTE_MS
        if request.start_ms is not None:
            start = int(request.start_ms)
            if start < model_end:
                raise ConfigError(
                    f"{request.model_name} version {info.version} was trained until {ms_to_text(model_end)}: "
                    f"its predictions on the train window {_window_text(start, start + train_ms)} would be in "
                    f"sample; start at or after {ms_to_text(model_end)} (or leave --start out)"
                )
        else:
            start = -(-max(model_end, first) // MINUTE_MS) * MINUTE_MS
        train_end = start + train_ms
        eval_end = train_end + eval_ms
        if start < first or eval_end > last_end:
            have_days = max(0.0, (last_end - max(start, first)) / DAY_MS)
            raise ConfigError(
                f"too few days of data: {request.train_days:g} train + {request.eval_days:g} eval days from "
                f"{ms_to_text(start)} (after {request.model_name} v{info.version}'s training end "
                f"{ms_to_text(model_end)}) need features until {ms_to_text(eval_end)}, but the lake's "
                f"features of {', '.join(symbols)} cover {_window_text(first, last_end)} ({have_days:.2f} days usable)"
            )
        console.print(
            f"supervised model: {request.model_name} version {info.version} (trained until {ms_to_text(model_end)}); "
            f"symbols: {', '.join(symbols)}"
        )
        console.print(
            f"train window {_window_text(start, train_end)}, eval window {_window_text(train_end, eval_end)}"
        )

        model = registry.load_model(f"models:/{request.model_name}/{info.version}")
        try:
            features = {s: load_features(lake, s, start, eval_end) for s in symbols}
            panel = load_panel(lake, symbols, start, eval_end)
            eval_panel = load_panel(lake, symbols, train_end, eval_end)
        except (SchemaMismatchError, DataQualityError) as e:
            raise ConfigError(str(e)) from None
        train_eps = fold_episodes(panel, features, model, test_start_ms=start, test_end_ms=train_end, fold=0,
                                  trained_until_ms=model_end)  # fmt: skip
        eval_eps = fold_episodes(panel, features, model, test_start_ms=train_end, test_end_ms=eval_end, fold=1,
                                 trained_until_ms=model_end)  # fmt: skip
        console.print(
            f"episodes: {len(train_eps)} train ({sum(map(len, train_eps)):,} bars), "
            f"{len(eval_eps)} eval ({sum(map(len, eval_eps)):,} bars)"
        )

        # the supervised policy on the eval window: the same model's predictions, the same simulator
        rows = pd.concat([features[s].assign(symbol=s) for s in symbols], ignore_index=True)
        rows = rows[(rows["ts"] >= train_end) & (rows["ts"] < eval_end)].reset_index(drop=True)
        preds = model.predict(rows, FEATURE_SCHEMA_VERSION, SCHEMA_HASH, num_threads=1)
        grid = predictions_on_panel(
            eval_panel, rows["ts"].to_numpy(np.int64), rows["symbol"].to_numpy(), preds
        )
        regime = np.full((len(eval_panel.ts), 1), np.nan)  # unknown: the policy's high volatility
        if BTC_SYMBOL in have:
            btc = (
                features[BTC_SYMBOL]
                if BTC_SYMBOL in features
                else load_features(lake, BTC_SYMBOL, train_end, eval_end)
            )
            column = btc[KEY_COLUMNS["btc_regime"]]
            regime = pd.Series(column.to_numpy(np.float64), index=btc["ts"].to_numpy(np.int64)).reindex(
                eval_panel.ts).to_numpy(np.float64).reshape(-1, 1)  # fmt: skip

        return _train_evaluate_register(
            settings, request, console, registry, engine, symbols, train_eps, eval_eps, eval_panel, grid, regime,
            sim_config(settings), info.version, model_end, (start, train_end, eval_end),
        )  # fmt: skip
    finally:
        engine.dispose()


def _train_evaluate_register(
    settings: Settings,
    request: TrainRLRequest,
    console: Console,
    registry: Any,
    engine: Any,
    symbols: Sequence[str],
    train_eps: list[Any],
    eval_eps: list[Any],
    eval_panel: Any,
    grid: dict[str, Any],
    regime: Any,
    sim: Any,
    supervised_version: str,
    model_end: int,
    windows: tuple[int, int, int],
) -> TrainRLSummary:
    import tempfile

    import ray

    from raytrade.rayinit import start_ray
    from rl.evaluate import (
        evaluate_policy,
        evaluate_rl_gates,
        greedy_policy,
        promotion_decision,
        supervised_backtest,
    )
    from rl.train import RLTrainConfig, TrainProgress, load_module, train_ppo
    from storage.registry import PROMOTION_TAG_PREFIX
    from storage.rl_registry import RL_EXPERIMENT, register_rl_checkpoint, rl_model_name, set_rl_production
    from tune.tracking import _log_metrics, _log_params

    start, train_end, eval_end = windows
    n_train = min(len(e) for e in train_eps)
    batch = _batch_size(request.timesteps, request.train_batch_size)
    started_ray = not ray.is_initialized()
    start_ray(settings)
    client = registry.client
    rl_name = rl_model_name(request.model_name)
    run = client.create_run(registry.experiment_id(RL_EXPERIMENT), run_name=f"train-rl-{'-'.join(symbols)}",
                            tags={"raytrade.kind": "train-rl"})  # fmt: skip
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory(prefix="raytrade-train-rl-") as tmp:
            cfg = RLTrainConfig(timesteps=request.timesteps, episode_bars=min(1_440, n_train), seed=request.seed,
                                train_batch_size=batch, minibatch_size=min(128, batch), checkpoint_dir=_path(tmp))  # fmt: skip
            params = {**cfg.params(), "symbols": ",".join(symbols), "train_days": request.train_days,
                      "eval_days": request.eval_days, "train_start_ms": start, "train_end_ms": train_end,
                      "eval_start_ms": train_end, "eval_end_ms": eval_end, "supervised_model": request.model_name,
                      "supervised_version": supervised_version, "supervised_train_end_ms": model_end}  # fmt: skip
            _log_params(client, run_id, params)
            console.print(
                f"PPO: {request.timesteps:,} env steps, {batch:,} per iteration; MLflow run {run_id}"
            )

            def progress(p: TrainProgress) -> None:
                console.print(
                    f"iteration {p.iteration}: {p.env_steps:,}/{p.total_steps:,} steps, reward mean "
                    f"{_fmt(p.episode_return_mean, '{:.4f}')}, {p.steps_per_s:,.0f} steps/s",
                    highlight=False,
                )
                if math.isfinite(p.episode_return_mean):
                    _log_metrics(
                        client, run_id, {"episode_return_mean": p.episode_return_mean}, step=p.env_steps
                    )

            env_kwargs = rl_env_kwargs(settings, sim)  # one environment for training and evaluation
            result = train_ppo(train_eps, cfg, progress=progress, env_kwargs=env_kwargs)
            ev = evaluate_policy(eval_eps, greedy_policy(load_module(result.module_dir)), env_kwargs=env_kwargs,
                                 decision_every=cfg.decision_every)  # fmt: skip
            supervised = supervised_backtest(eval_panel, grid, regime, policy=settings.policy, label=settings.label,
                                             sim=sim, risk=settings.risk)  # fmt: skip
            report = evaluate_rl_gates(ev.metrics, ev.chosen, supervised)
            decision = promotion_decision(report, override=request.override_reason, actor=request.actor)
            metrics = {"train_iterations": float(result.iterations), "train_env_steps": float(result.env_steps),
                       "ppo_env_steps_per_s": result.ppo_env_steps_per_s,
                       "train_episode_return_mean": result.episode_return_mean,
                       **{f"eval_{k}": v for k, v in ev.metrics.items()},
                       **{f"supervised_{k}": float(v) for k, v in supervised.items() if _is_number(v)},
                       **{f"eval_share_{k}": n / max(sum(ev.chosen.values()), 1) for k, n in ev.chosen.items()},
                       "gates_passed": float(report.passed)}  # fmt: skip
            _log_metrics(client, run_id, metrics, step=0)
            client.log_dict(run_id, {"rl": ev.to_dict(), "supervised": supervised,
                                     "decision_every": cfg.decision_every}, "evaluation.json")  # fmt: skip
            client.log_dict(run_id, decision.record, "promotion.json")
            finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
            version = register_rl_checkpoint(
                registry, rl_name, result.module_dir, symbol=_symbol_label(symbols), train_start_ms=start,
                train_end_ms=train_end, algorithm=request.algorithm.upper(), decision_every=cfg.decision_every,
                metrics=finite, run_id=run_id, engine=engine,
            )  # fmt: skip
            tags = {f"{PROMOTION_TAG_PREFIX}{k}": str(decision.record[k]) for k in ("kind", "actor", "ts_ms")}
            tags[f"{PROMOTION_TAG_PREFIX}failed_gates"] = ",".join(report.failed)
            if decision.record["override"]:
                tags[f"{PROMOTION_TAG_PREFIX}override"] = str(decision.record["override"])[:5000]
            for key, value in tags.items():
                client.set_model_version_tag(rl_name, version.version, key, value)
                client.set_tag(run_id, key, value)
            if decision.promote:
                set_rl_production(registry, rl_name, version.version, engine=engine)
        client.set_terminated(run_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    finally:
        if started_ray:
            ray.shutdown()
    _print_result(console, ev.metrics, ev.chosen, supervised, report, decision.kind, rl_name, version.version)
    return TrainRLSummary(run_id, rl_name, version.version, version.model_id, decision.kind, report.to_dict(),
                          dict(ev.metrics), {k: float(v) for k, v in supervised.items() if _is_number(v)},
                          {"train_start_ms": start, "train_end_ms": train_end, "eval_end_ms": eval_end})  # fmt: skip


def _path(text: str) -> Any:
    from pathlib import Path

    return Path(text) / "ppo"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _symbol_label(symbols: Sequence[str]) -> str:
    """``rl_models.symbol`` (20 characters): the symbol, the list when it fits, else how many."""
    joined = ",".join(symbols)
    return joined if len(joined) <= 20 else f"{len(symbols)} symbols"


def _print_result(
    console: Console, rl: dict[str, float], chosen: dict[str, int], supervised: dict[str, Any], report: Any,
    kind: str, rl_name: str, version: str,
) -> None:  # fmt: skip
    console.print("eval window: " + "; ".join(
        f"{who}: " + ", ".join(f"{k} {_fmt(m.get(k), spec)}" for k, spec in PRINTED)
        for who, m in (("RL agent", rl), ("supervised", supervised))
    ), highlight=False)  # fmt: skip
    console.print(f"actions chosen: {chosen}", highlight=False)
    for g in report.gates:
        mark = "[green]PASS[/green]" if g.passed else "[red]FAIL[/red]"
        console.print(f"  gate {g.name}: {mark} {g.reason}")
    if kind == "refused":
        console.print(f"[yellow]{rl_name} version {version} registered, not promoted: gates failed "
                      f"({', '.join(report.failed)}); --override-reason to promote anyway[/yellow]")  # fmt: skip
    else:
        how = "all gates passed" if kind == "promote" else "with override (recorded)"
        console.print(f"[green]{rl_name} version {version} is production ({how})[/green]")


def train_rl(
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated; default: the universe's symbols with features in the lake"
    ),
    train_days: float = typer.Option(3.0, "--train-days", help="days of the training window"),
    eval_days: float = typer.Option(1.0, "--eval-days", help="days of the evaluation window that follows"),
    timesteps: int = typer.Option(20_000, "--timesteps", help="PPO environment steps"),
    algorithm: str = typer.Option("PPO", "--algorithm", help="RL algorithm (PPO)"),
    model: str = typer.Option(
        MODEL_NAME, "--model", help="the supervised model whose production version feeds the agent"
    ),
    start: str | None = typer.Option(
        None, "--start", help="train window start (ISO UTC or epoch ms); default: the model's training end"
    ),
    seed: int = typer.Option(0, "--seed"),
    batch: int | None = typer.Option(None, "--train-batch", min=16, help="env steps per PPO iteration"),
    override_reason: str | None = typer.Option(
        None, "--override-reason", help="promote even though gates fail, for this reason (recorded)"
    ),
    actor: str = typer.Option(DEFAULT_ACTOR, "--actor", help="who promotes (recorded)"),
    verbose: bool = typer.Option(False, "--verbose", help="also show what Ray and MLflow print"),
) -> None:
    """Train the RL agent (PPO) on lake data, evaluate it beside the supervised policy, gate, log and register it."""
    from raytrade.quiet import library_output

    settings = settings_or_exit()
    err = Console(stderr=True)
    try:
        chosen = parse_universe(symbols) if symbols else None
    except SymbolError as e:
        err.print(f"[red]train-rl: --symbols: {e}[/red]", highlight=False)
        raise typer.Exit(2) from None
    request = TrainRLRequest(
        chosen, train_days, eval_days, timesteps, algorithm, model, time_option_ms(start, "--start"), seed,
        batch, override_reason, actor,
    )  # fmt: skip
    console = Console()
    started = time.perf_counter()
    try:
        with library_output(verbose):
            summary = run_train_rl(settings, request, console=console)
    except ConfigError as e:
        err.print(f"train-rl: {e}", style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(
        f"MLflow run {summary.run_id}; rl_models {summary.model_id}; runtime {time.perf_counter() - started:.0f} s"
    )


def register(app: typer.Typer) -> None:
    app.command("train-rl")(train_rl)
