"""Walk-forward backtests: the same strategy on consecutive out-of-sample windows, folds in parallel.

Each fold is independent (own panel, own account), so folds run as Ray tasks when Ray is up and
one after another otherwise; both give identical numbers. Fold windows come from the caller
(``tune.splits`` builds them from the walk-forward configuration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.metrics import summarize
from core.sim import SimConfig
from pipelines.backtest import load_panel
from pipelines.baselines import run_baselines
from storage.lake import Lake


@dataclass(frozen=True, slots=True)
class FoldWindow:
    """One out-of-sample window [start_ms, end_ms) of a walk-forward run."""

    fold: int
    start_ms: int
    end_ms: int


def baseline_fold(
    lake_root: str,
    symbols: Sequence[str],
    window: FoldWindow,
    strategies: Sequence[str],
    sim: SimConfig,
    risk: RiskConfig,
    policy: PolicyConfig,
    label_spec: LabelSpec,
) -> list[dict[str, float | int | str]]:
    """Backtest the baselines on one window; one metrics row per strategy (a Ray task's body)."""
    lake = Lake(Path(lake_root))
    panel = load_panel(lake, symbols, window.start_ms, window.end_ms)
    results = run_baselines(lake, panel, strategies, sim=sim, risk=risk, policy=policy, label_spec=label_spec)
    return [
        {"fold": window.fold, "strategy": name, "start_ms": window.start_ms, "end_ms": window.end_ms,
         **summarize(r.trades, r.equity)}
        for name, r in results.items()
    ]  # fmt: skip


def run_folds(
    fold_fn: Callable[..., list[dict[str, float | int | str]]],
    windows: Sequence[FoldWindow],
    *args: object,
    use_ray: bool | None = None,
) -> pd.DataFrame:
    """Run ``fold_fn(window=…, *args)`` for every window — as Ray tasks when Ray is initialised
    (or ``use_ray``) — and return the rows sorted by fold and strategy."""
    import ray

    parallel = ray.is_initialized() if use_ray is None else use_ray
    if parallel:
        remote = ray.remote(num_cpus=1)(fold_fn)
        chunks = ray.get([remote.remote(args[0], args[1], w, *args[2:]) for w in windows])
    else:
        chunks = [fold_fn(args[0], args[1], w, *args[2:]) for w in windows]
    rows = [row for chunk in chunks for row in chunk]
    return pd.DataFrame(rows).sort_values(["fold", "strategy"], kind="stable").reset_index(drop=True)


def walk_forward_baselines(
    lake_root: Path,
    symbols: Sequence[str],
    windows: Sequence[FoldWindow],
    strategies: Sequence[str],
    *,
    sim: SimConfig,
    risk: RiskConfig,
    policy: PolicyConfig,
    label_spec: LabelSpec,
    use_ray: bool | None = None,
) -> pd.DataFrame:
    """Per-fold metrics of each baseline over the walk-forward windows."""
    return run_folds(
        baseline_fold, windows, str(lake_root), list(symbols), list(strategies), sim, risk, policy, label_spec,
        use_ray=use_ray,
    )  # fmt: skip
