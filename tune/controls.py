"""Positive and negative controls of the research flow: does it find a planted edge and refuse noise?

``run_control`` runs the one training flow (``tune.flow.train_evaluate_register``: walk-forward folds,
a Ray Tune sweep, the chosen configuration refitted per fold and backtested on its test window, the
test windows pooled into one out-of-sample backtest, the baselines on the same folds, the promotion
gates) on a synthetic market (``core.synthetic``) written into a fresh lake under ``workdir``, with
its own MLflow store (SQLite) there. The market has a planted lead-lag edge of strength
``edge_strength`` (the positive control) or none (0: the null market, the negative control).
Promotion has no override: ``production`` moves only when every gate passes.

The yardstick is the oracle of the planted edge (``core.synthetic_edge.oracle_backtest``), run with the
same label preset, policy, risk preset and simulator on the pooled out-of-sample span: from the first
test window's first bar to the last one's end. The walk-forward test windows tile that span without
gaps (``tune.splits``), and the pipeline's pooled backtest covers exactly those bars, so both Sharpe
ratios (``core.metrics.summarize``: per-minute equity returns, annualised) measure the same minutes.
``recovery`` is the pipeline's pooled out-of-sample Sharpe ÷ the oracle's. On the null market the
oracle is run with the planted strength (it then trades noise, for reference); recovery is undefined.

Ray must be initialised by the caller (features and labels run on Ray Data, the sweep on Ray Tune).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.sim import sim_config_for
from core.synthetic import PLANTED_EDGE_STRENGTH, SyntheticParams, generate_market
from core.synthetic_edge import oracle_backtest
from core.time import DAY_MS, MINUTE_MS, parse_utc
from pipelines.features import compute_universe_features
from pipelines.labels import label_universe
from pipelines.market import write_synthetic_market
from storage import db
from storage.lake import Lake
from storage.registry import ModelRegistry
from tune.flow import PromotionPlan, SweepPlan, TrainingEnvironment, TrainRequest, train_evaluate_register
from tune.fold_plans import FoldSizing
from tune.gates import GateReport, PromotionConfig

#: The controls' universe: the factor (BTC), two alts that load on it, a metal barely tied to it.
CONTROL_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XAUUSDT")
#: Fixed start of every control market (a Monday), so a seed gives the same market on every run.
CONTROL_START_MS = parse_utc("2025-01-06")
MODEL_NAME = "controls-lgbm"
ACTOR = "controls"


@dataclass(frozen=True, slots=True)
class ControlSize:
    """How big one control run is: market length, walk-forward folds, sweep configurations and LightGBM
    boosting rounds. Folds: ``folds`` rolling folds of ``train_days`` / ``val_days`` / ``test_days``, the
    last test window ending with the market (``tune.fold_plans.FoldSizing``); without lengths, sized to
    the history (test = validation = 1/(folds + 5) of it, train 3/(folds + 5))."""

    days: float = 30.0
    folds: int = 3
    configs: int = 4
    rounds: int = 60
    train_days: float | None = 12.0
    val_days: float | None = 3.0
    test_days: float | None = 5.0
    symbols: tuple[str, ...] = CONTROL_SYMBOLS

    def sizing(self) -> FoldSizing:
        """The fold plan of this size."""
        return FoldSizing(
            folds=self.folds, unit="days", train=self.train_days, val=self.val_days, test=self.test_days
        )


@dataclass(frozen=True, slots=True)
class ControlResult:
    """One control run: the market, the gates' verdict and the out-of-sample evidence beside the oracle's.

    ``promoted``: every gate passed and the version is in ``production`` (no override exists here).
    ``oos_sharpe``, ``oracle_sharpe``: annualised, on the same pooled span ``[oos_start_ms, oos_end_ms)``;
    NaN when undefined (no trades). ``recovery``: their ratio, NaN on the null market or without both.
    """

    seed: int
    edge_strength: float
    gates: GateReport
    promoted: bool
    oos_trades: int
    oos_sharpe: float
    oos_profit_factor: float
    oracle_sharpe: float
    oracle_trades: int
    recovery: float
    oos_start_ms: int
    oos_end_ms: int
    test_windows: tuple[tuple[int, int], ...]
    wall_s: float

    @property
    def market(self) -> str:
        return "planted" if self.edge_strength > 0 else "null"


def run_control(
    workdir: Path,
    *,
    seed: int,
    edge_strength: float,
    size: ControlSize | None = None,
    label: LabelSpec | None = None,
    policy: PolicyConfig | None = None,
    risk: RiskConfig | None = None,
    gates: PromotionConfig | None = None,
) -> ControlResult:
    """Generate the control market of ``seed`` with ``edge_strength`` (0: null), run the research flow on it
    in ``workdir`` (lake, MLflow store, Tune results; created, must not hold a previous run) and return the
    gates' verdict with the pipeline's and the oracle's out-of-sample Sharpe. Deterministic in its
    arguments (LightGBM deterministic, seeded sweep)."""
    started = time.perf_counter()
    size = size or ControlSize()
    label, policy, risk = label or LabelSpec(), policy or PolicyConfig(), risk or RiskConfig()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lake_root = workdir / "lake"
    market = generate_market(
        size.symbols, CONTROL_START_MS, int(size.days * DAY_MS // MINUTE_MS), seed,
        SyntheticParams(edge_strength=edge_strength),
    )  # fmt: skip
    write_synthetic_market(market, Lake(lake_root))
    compute_universe_features(lake_root, list(size.symbols), group_size=8)
    label_universe(lake_root, list(size.symbols), label)
    sizing = size.sizing()
    engine = db.make_engine(f"sqlite:///{workdir / 'raytrade.db'}")
    db.upgrade(engine)  # the registry mirrors versions into `models`, promotions into `events`
    try:
        outcome = train_evaluate_register(
            _environment(workdir, lake_root, label, policy, risk, engine),
            TrainRequest(
                symbols=tuple(size.symbols), folds=lambda data: sizing.cut(data, label.h_bars), seed=seed,
                num_boost_round=size.rounds, model_name=MODEL_NAME, experiment="controls",
                sweep=SweepPlan(size.configs, "controls-sweeps", f"controls_sweep_{seed}"),
                promotion=PromotionPlan(override=_no_override, actor=ACTOR, gates=gates or PromotionConfig()),
            ),
        )  # fmt: skip
    finally:
        engine.dispose()
    assert outcome.promotion is not None  # the request has a promotion plan
    windows = tuple((f.test_start_ms, f.test_end_ms) for f in outcome.folds)
    oos_start, oos_end = pooled_span(outcome.data.ts_ms, [f.test for f in outcome.folds])
    oracle = oracle_backtest(
        market, strength=edge_strength if edge_strength > 0 else PLANTED_EDGE_STRENGTH, label=label,
        policy=policy, risk=risk, start_ms=oos_start, end_ms=oos_end,
    )  # fmt: skip
    oos = outcome.candidate.oos
    assert oos is not None  # walk_forward_candidate always pools the test windows
    promo = outcome.promotion
    promoted = promo.gates.passed and promo.production_version == outcome.version.version
    return ControlResult(
        seed=seed, edge_strength=edge_strength, gates=promo.gates, promoted=promoted, oos_trades=oos.trades,
        oos_sharpe=oos.sharpe, oos_profit_factor=oos.profit_factor, oracle_sharpe=float(oracle.sharpe),
        oracle_trades=oracle.trades,
        recovery=recovery(oos.sharpe, oracle.sharpe) if edge_strength > 0 else math.nan,
        oos_start_ms=oos_start, oos_end_ms=oos_end, test_windows=windows, wall_s=time.perf_counter() - started,
    )  # fmt: skip


def _environment(
    workdir: Path,
    lake_root: Path,
    label: LabelSpec,
    policy: PolicyConfig,
    risk: RiskConfig,
    engine: sa.Engine,
) -> TrainingEnvironment:
    registry = ModelRegistry(
        f"sqlite:///{workdir / 'mlflow.db'}", artifact_root=workdir / "mlflow-artifacts", engine=engine
    )
    return TrainingEnvironment(
        lake_root=lake_root, label_spec=label, policy=policy, risk=risk, sim=sim_config_for(label, policy),
        registry=registry, tune_storage=workdir / "tune",
    )  # fmt: skip


def _no_override(_gates: GateReport) -> None:
    return None


def pooled_span(ts_ms: np.ndarray, tests: Sequence[np.ndarray]) -> tuple[int, int]:
    """The span ``[start, end)`` of the pooled out-of-sample backtest (``tune.trainable.pooled_oos_backtest``):
    from the first decision bar of the test windows to one minute past the last."""
    window = np.concatenate([np.asarray(t) for t in tests])
    if not len(window):
        raise ValueError("the test windows hold no rows")
    return int(ts_ms[window].min()), int(ts_ms[window].max()) + MINUTE_MS


def recovery(pipeline_sharpe: float, oracle_sharpe: float) -> float:
    """The pipeline's Sharpe as a share of the oracle's; NaN unless both are finite and the oracle's > 0.
    A pipeline without trades (undefined Sharpe) recovered nothing: 0."""
    if not (math.isfinite(oracle_sharpe) and oracle_sharpe > 0):
        return math.nan
    return (pipeline_sharpe if math.isfinite(pipeline_sharpe) else 0.0) / oracle_sharpe
