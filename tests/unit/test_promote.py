"""Promotion gates on hand-built inputs, and what promote / rollback record (fake registry, no I/O)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from model_fixtures import baselines, folds, good_candidate, strong_overfitting

from core.errors import RejectedError
from storage.registry import ModelNotFoundError, ModelVersionInfo
from tune import promote as promote_module
from tune.gates import (
    GATE_NAMES,
    FoldMetrics,
    GatesInput,
    OutOfSampleMetrics,
    OverfittingInput,
    PromotionConfig,
    StrategyResult,
    evaluate_gates,
)
from tune.promote import PromotionRefused, promote, rollback

CFG = PromotionConfig()


def judge(candidate: StrategyResult, bases: list[StrategyResult] | None = None, **cfg: Any):
    return evaluate_gates(candidate, baselines() if bases is None else bases, PromotionConfig(**cfg))


def with_oos(**changes: Any) -> StrategyResult:
    c = good_candidate()
    assert c.oos is not None
    return c.model_copy(update={"oos": c.oos.model_copy(update=changes)})


def with_folds(sharpes: list[float], pf: float = 1.5) -> StrategyResult:
    return good_candidate().model_copy(update={"folds": folds(sharpes, pf=pf)})


# --- every gate passes ----------------------------------------------------------------------------


def test_good_candidate_passes_every_gate_in_the_documented_order():
    report = judge(good_candidate())
    assert [g.name for g in report.gates] == list(GATE_NAMES)
    assert report.passed and report.failed == []
    assert all(g.reason for g in report.gates)
    assert report.gate("oos_profit_factor").value == 1.45
    assert report.gate("oos_profit_factor").threshold == 1.2
    assert report.gate("oos_max_drawdown").threshold == 0.10
    assert report.gate("overfitting").details["method"] == "dsr"


def test_default_thresholds_are_the_documented_ones():
    assert (CFG.min_profit_factor, CFG.max_drawdown, CFG.min_oos_trades, CFG.min_folds) == (1.2, 0.10, 30, 3)
    assert (CFG.min_profitable_fold_fraction, CFG.max_sharpe_cv) == (0.6, 1.0)
    assert (CFG.max_pbo, CFG.min_deflated_sharpe, CFG.baseline_metric) == (0.3, 0.95, "sharpe")


# --- each gate fails alone ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "gate"),
    [
        (with_oos(trades=29), "oos_trades"),
        (with_oos(profit_factor=1.2), "oos_profit_factor"),  # strictly above the threshold
        (with_oos(profit_factor=math.nan), "oos_profit_factor"),
        (with_oos(max_drawdown=0.10), "oos_max_drawdown"),  # strictly below the limit
        (with_folds([2.0, 2.1]), "fold_count"),
        (with_folds([2.0, 2.5, 1.8, 2.2, 2.1], pf=0.9), "stability_profitable_folds"),
        (with_folds([6.0, 0.1, 0.2, 4.0, 0.5]), "stability_sharpe_cv"),
        (good_candidate().model_copy(update={"overfitting": None}), "overfitting"),
    ],
)
def test_a_candidate_failing_one_gate_fails_only_that_gate(candidate, gate):
    report = judge(candidate)
    assert report.failed == [gate], report.failure_text()
    assert not report.passed


def test_max_drawdown_just_below_the_limit_passes():
    assert judge(with_oos(max_drawdown=0.0999)).gate("oos_max_drawdown").passed


def test_missing_out_of_sample_metrics_fail_all_three_oos_gates():
    report = judge(good_candidate().model_copy(update={"oos": None}))
    assert report.failed == ["oos_trades", "oos_profit_factor", "oos_max_drawdown"]
    assert all("no pooled out-of-sample" in report.gate(g).reason for g in report.failed)


def test_undefined_profit_factor_says_so():
    assert "undefined" in judge(with_oos(profit_factor=math.nan)).gate("oos_profit_factor").reason


def test_infinite_profit_factor_passes():
    assert judge(with_oos(profit_factor=math.inf)).gate("oos_profit_factor").passed


# --- baselines ------------------------------------------------------------------------------------


def test_a_baseline_with_a_higher_mean_fold_sharpe_fails_the_gate_and_is_named():
    strong = StrategyResult(name="trend", folds=folds([3.0, 3.0, 3.0, 3.0, 3.0]))
    gate = judge(good_candidate(), [*baselines(), strong]).gate("beats_baselines")
    assert not gate.passed
    assert "trend" in gate.reason and "donchian" not in gate.reason
    assert gate.value == pytest.approx(np.mean([2.0, 2.5, 1.8, 2.2, 2.1]) - 3.0)
    assert gate.details["donchian"]["folds_won"] == 5


def test_beating_every_baseline_reports_the_smallest_margin():
    gate = judge(good_candidate()).gate("beats_baselines")
    cand = np.mean([2.0, 2.5, 1.8, 2.2, 2.1])
    assert gate.passed
    assert gate.value == pytest.approx(min(cand - np.mean([0.5, -0.2, 0.8, 0.1, 0.3]), cand - 0.4))


def test_a_baseline_missing_a_candidate_fold_fails_the_gate():
    partial = StrategyResult(name="donchian", folds=folds([0.1, 0.1, 0.1]))
    gate = judge(good_candidate(), [partial]).gate("beats_baselines")
    assert not gate.passed and "[3, 4]" in gate.reason


def test_no_baselines_fails_the_gate():
    gate = judge(good_candidate(), []).gate("beats_baselines")
    assert not gate.passed and "no baseline" in gate.reason


def test_the_margin_is_configurable():
    assert not judge(good_candidate(), min_baseline_margin=5.0).gate("beats_baselines").passed


def test_undefined_fold_sharpe_counts_as_zero_for_both_sides():
    idle = StrategyResult(name="idle", folds=folds([math.nan] * 5))
    gate = judge(good_candidate(), [idle]).gate("beats_baselines")
    assert gate.passed and gate.details["idle"]["baseline_mean"] == 0.0


def test_total_return_can_be_the_baseline_metric():
    gate = judge(good_candidate(), baseline_metric="total_return").gate("beats_baselines")
    assert gate.passed and gate.details["metric"] == "total_return"


# --- stability ------------------------------------------------------------------------------------


def test_profitable_fold_share_counts_folds_without_trades_as_unprofitable():
    c = good_candidate()
    fs = [
        f.model_copy(update={"profit_factor": pf})
        for f, pf in zip(c.folds, [1.5, math.nan, 0.8, 2.0, 1.1], strict=True)
    ]
    gate = judge(c.model_copy(update={"folds": fs})).gate("stability_profitable_folds")
    assert gate.value == pytest.approx(0.6) and gate.passed
    fs[4] = fs[4].model_copy(update={"profit_factor": 1.0})  # PF exactly 1 is not profitable
    gate = judge(c.model_copy(update={"folds": fs})).gate("stability_profitable_folds")
    assert gate.value == pytest.approx(0.4) and not gate.passed


def test_sharpe_cv_is_std_over_mean_of_fold_sharpes():
    sharpes = [6.0, 0.1, 0.2, 4.0, 0.5]
    gate = judge(with_folds(sharpes)).gate("stability_sharpe_cv")
    assert gate.value == pytest.approx(np.std(sharpes, ddof=1) / np.mean(sharpes))
    assert gate.threshold == 1.0 and not gate.passed


def test_sharpe_cv_fails_when_the_mean_fold_sharpe_is_not_positive():
    gate = judge(with_folds([1.0, -1.5, 0.2, -0.1, 0.3])).gate("stability_sharpe_cv")
    assert not gate.passed and gate.value is None and "≤ 0" in gate.reason


# --- overfitting ----------------------------------------------------------------------------------


def _matrix(skill: float, seed: int = 3, periods: int = 240, configurations: int = 8) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    m = rng.normal(0.0, 0.01, size=(periods, configurations))
    m[:, 0] += skill
    return m.tolist()


def test_pbo_of_a_genuinely_best_configuration_passes():
    c = good_candidate().model_copy(
        update={"overfitting": OverfittingInput(performance_matrix=_matrix(0.01))}
    )
    gate = judge(c).gate("overfitting")
    assert gate.passed and gate.details["method"] == "pbo" and gate.value == 0.0
    assert gate.details["partitions"] == 16


def test_pbo_of_pure_noise_fails():
    c = good_candidate().model_copy(update={"overfitting": OverfittingInput(performance_matrix=_matrix(0.0))})
    gate = judge(c).gate("overfitting")
    assert not gate.passed and gate.value is not None and gate.value > 0.3


def test_pbo_uses_fewer_partitions_when_periods_are_few_and_fails_when_too_few():
    c = good_candidate().model_copy(
        update={"overfitting": OverfittingInput(performance_matrix=_matrix(0.01, periods=20))}
    )
    assert judge(c).gate("overfitting").details["partitions"] == 10
    c = good_candidate().model_copy(
        update={"overfitting": OverfittingInput(performance_matrix=_matrix(0.01, periods=3))}
    )
    gate = judge(c).gate("overfitting")
    assert not gate.passed and "too few" in gate.reason


def test_pbo_takes_precedence_over_deflated_sharpe_inputs():
    o = strong_overfitting().model_copy(update={"performance_matrix": _matrix(0.0)})
    assert (
        judge(good_candidate().model_copy(update={"overfitting": o})).gate("overfitting").details["method"]
        == "pbo"
    )


def test_weak_deflated_sharpe_fails():
    o = OverfittingInput(sharpe_per_obs=0.03, n_obs=500, n_trials=200, trial_sharpe_variance=0.002)
    gate = judge(good_candidate().model_copy(update={"overfitting": o})).gate("overfitting")
    assert not gate.passed and gate.value is not None and gate.value < 0.95


# --- serialisation --------------------------------------------------------------------------------


def test_gates_input_and_report_round_trip_through_json_with_infinite_values():
    c = with_oos(profit_factor=math.inf)
    data = json.loads(json.dumps(GatesInput(candidate=c, baselines=baselines()).model_dump(mode="json")))
    back = GatesInput.model_validate(data)
    assert back.candidate.oos is not None and back.candidate.oos.profit_factor == math.inf
    report = evaluate_gates(back.candidate, back.baselines, CFG)
    text = json.dumps(report.to_dict(), allow_nan=False)  # JSONB takes it
    assert json.loads(text)["gates"][1]["value"] == "inf"


def test_fold_metrics_from_summarize_output():
    summary = {
        "profit_factor": 1.3,
        "max_drawdown": 0.04,
        "sharpe": 1.1,
        "total_return": 0.02,
        "trades": 12.0,
    }
    f = FoldMetrics.from_summary(2, summary)
    assert (f.fold, f.trades, f.sharpe) == (2, 12, 1.1)
    assert OutOfSampleMetrics.from_summary(summary).trades == 12


def test_repeated_fold_indices_are_refused():
    with pytest.raises(ValueError, match="repeat"):
        StrategyResult(name="x", folds=folds([1.0, 1.0])[:1] * 2)


# --- promote and rollback against a fake registry -------------------------------------------------


class FakeRegistry:
    """What promote/rollback use of ModelRegistry, in memory."""

    def __init__(self, versions: tuple[str, ...] = ("1", "2", "3")) -> None:
        self.engine = object()
        self.tags: dict[str, dict[str, str]] = {v: {} for v in versions}
        self.production: str | None = None
        self.moves: list[tuple[str, bool]] = []
        self.json: dict[str, dict] = {}

    def version(self, name: str, version: str) -> ModelVersionInfo:
        if version not in self.tags:
            raise ModelNotFoundError(f"{name} version {version}")
        aliases = ("production",) if version == self.production else ()
        uri, run = f"models:/{name}/{version}", f"run{version}"
        return ModelVersionInfo(name, version, uri, run, None, 0, aliases, dict(self.tags[version]))

    def production_version(self, name: str) -> ModelVersionInfo | None:
        return self.version(name, self.production) if self.production else None

    def previous_production(self, name: str) -> ModelVersionInfo | None:
        prev = self.tags[self.production].get("raytrade.previous_production") if self.production else None
        return self.version(name, prev) if prev else None

    def log_run_json(self, name: str, version: str, filename: str, data: dict) -> str:
        self.json[filename] = data
        return f"runs:/run{version}/{filename}"

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        self.tags[version].update(tags)

    def set_production(self, name: str, version: str, *, record_previous: bool = True) -> ModelVersionInfo:
        if record_previous and self.production and self.production != version:
            self.tags[version]["raytrade.previous_production"] = self.production
        self.production = version
        self.moves.append((version, record_previous))
        return self.version(name, version)


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    events: list[dict] = []

    def append_event(engine, kind, source, payload, **kw):
        assert source == "tune.promote"
        events.append({**payload, "event": kind})

    monkeypatch.setattr(promote_module.model_catalog, "append_event", append_event)
    return events


def failing_report():
    return judge(with_oos(profit_factor=1.05, max_drawdown=0.25))


def test_refusal_names_the_failed_gates_records_it_and_moves_nothing(recorded):
    reg = FakeRegistry()
    with pytest.raises(PromotionRefused) as e:
        promote(reg, "lgbm_multi", "2", failing_report(), actor="alice")
    assert "oos_profit_factor" in str(e.value) and "oos_max_drawdown" in str(e.value)
    assert "beats_baselines" not in str(e.value)
    assert reg.production is None and reg.moves == [] and reg.tags["2"] == {}
    assert [ev["event"] for ev in recorded] == ["model.promotion_refused"]
    assert recorded[0]["gates"]["failed"] == ["oos_profit_factor", "oos_max_drawdown"]


def test_a_blank_override_reason_is_no_override(recorded):
    with pytest.raises(PromotionRefused):
        promote(FakeRegistry(), "lgbm_multi", "2", failing_report(), override="   ", actor="alice")


def test_override_promotes_and_records_reason_actor_and_failed_gates(recorded):
    reg = FakeRegistry()
    reg.production = "1"
    reason = "2 weeks of shadow beat v1"
    result = promote(
        reg, "lgbm_multi", "2", failing_report(), override=reason, actor="alice", now_ms=1_700_000_000_000
    )
    assert (result.kind, result.version, result.replaced) == ("override", "2", "1")
    assert reg.production == "2" and reg.moves == [("2", True)]
    tags = reg.tags["2"]
    assert tags["raytrade.promotion.override"] == "2 weeks of shadow beat v1"
    assert tags["raytrade.promotion.kind"] == "override" and tags["raytrade.promotion.actor"] == "alice"
    assert tags["raytrade.promotion.failed_gates"] == "oos_profit_factor,oos_max_drawdown"
    assert tags["raytrade.promotion.gates_passed"] == "false"
    assert tags["raytrade.promotion.report_uri"] == "runs:/run2/promotion/1700000000000_gate_report.json"
    assert reg.json["promotion/1700000000000_gate_report.json"]["passed"] is False
    (event,) = recorded
    assert event["event"] == "model.promoted" and event["override"] == "2 weeks of shadow beat v1"
    assert event["kind"] == "override"
    assert event["production_before"] == "1" and event["actor"] == "alice"


def test_passing_report_promotes_without_override(recorded):
    reg = FakeRegistry()
    result = promote(reg, "lgbm_multi", "3", judge(good_candidate()), actor="bob")
    assert (result.kind, result.replaced, reg.production) == ("promote", None, "3")
    assert reg.tags["3"]["raytrade.promotion.override"] == ""
    assert recorded[0]["event"] == "model.promoted" and recorded[0]["kind"] == "promote"


def test_promoting_the_production_version_again_changes_and_records_nothing(recorded):
    reg = FakeRegistry()
    reg.production = "2"
    result = promote(reg, "lgbm_multi", "2", failing_report(), actor="bob")
    assert result.kind == "unchanged" and reg.moves == [] and recorded == []


def test_unknown_version_is_refused_before_anything_is_recorded(recorded):
    with pytest.raises(ModelNotFoundError):
        promote(FakeRegistry(), "lgbm_multi", "9", judge(good_candidate()), actor="bob")
    assert recorded == []


def test_rollback_moves_production_back_without_extending_the_chain(recorded):
    reg = FakeRegistry()
    for v in ("1", "2", "3"):
        promote(reg, "lgbm_multi", v, judge(good_candidate()), actor="bob")
    result = rollback(reg, "lgbm_multi", actor="carol", reason="live slippage")
    assert (result.version, result.replaced, reg.production) == ("2", "3", "2")
    assert reg.moves[-1] == ("2", False)
    assert reg.tags["2"]["raytrade.promotion.kind"] == "rollback"
    assert reg.tags["2"]["raytrade.promotion.rolled_back_from"] == "3"
    assert recorded[-1]["event"] == "model.rolled_back" and recorded[-1]["reason"] == "live slippage"
    assert rollback(reg, "lgbm_multi", actor="carol").version == "1"
    with pytest.raises(RejectedError, match="replaced no earlier"):
        rollback(reg, "lgbm_multi", actor="carol")


def test_rollback_without_production_is_refused(recorded):
    with pytest.raises(RejectedError, match="no production version"):
        rollback(FakeRegistry(), "lgbm_multi", actor="carol")


def test_a_candidate_without_varying_oos_returns_fails_overfitting_saying_why():
    flat = OverfittingInput(sharpe_per_obs=None, n_obs=200, n_trials=4, trial_sharpe_variance=0.01)
    gate = judge(good_candidate().model_copy(update={"overfitting": flat})).gate("overfitting")
    assert not gate.passed and "no trades" in gate.reason


# --- a candidate that never traded ---------------------------------------------------------------


def idle_candidate(**update: Any) -> StrategyResult:
    """What the flow reports for a model whose policy never entered: no trades in any test window, flat
    equity (undefined Sharpe and profit factor, zero drawdown), nothing for the deflated Sharpe."""
    fs = [
        FoldMetrics(
            fold=i, profit_factor=math.nan, max_drawdown=0.0, sharpe=math.nan, total_return=0.0, trades=0
        )
        for i in range(5)
    ]
    c = StrategyResult(
        name="idle",
        folds=fs,
        oos=OutOfSampleMetrics(profit_factor=math.nan, max_drawdown=0.0, trades=0, sharpe=math.nan),
        overfitting=OverfittingInput(n_obs=500, n_trials=8, trial_sharpe_variance=0.01),
    )
    return c.model_copy(update=update)


def losing_baselines() -> list[StrategyResult]:
    return [
        StrategyResult(name="donchian", folds=folds([-0.5, -0.2, -0.8, -0.1, -0.3], pf=0.8)),
        StrategyResult(name="bollinger", folds=folds([-1.0, -0.4, -0.5, 0.2, -0.2], pf=0.9)),
    ]


def test_a_candidate_that_never_traded_fails_every_performance_and_stability_gate_saying_why():
    report = judge(idle_candidate(), losing_baselines())
    assert report.failed == [g for g in GATE_NAMES if g != "fold_count"]
    assert report.gate("fold_count").passed  # five folds were run: that much is true
    for name in report.failed:
        assert report.gate(name).reason.startswith("no out-of-sample trades: "), name
    # The two gates a flat equity curve used to pass: zero drawdown, and a Sharpe of 0 above losing baselines.
    assert report.gate("oos_max_drawdown").value == 0.0
    assert report.gate("beats_baselines").value is not None and report.gate("beats_baselines").value > 0
    assert "no out-of-sample trades" in report.failure_text()


def test_a_never_trading_candidate_fails_overfitting_even_with_a_passing_pbo_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.normal(0.0, 1.0, (200, 8))
    matrix[:, 3] += 0.8  # a configuration genuinely better in every period: PBO ≈ 0
    c = idle_candidate(overfitting=OverfittingInput(performance_matrix=matrix.tolist()))
    assert (
        judge(good_candidate().model_copy(update={"overfitting": c.overfitting})).gate("overfitting").passed
    )
    gate = judge(c, losing_baselines()).gate("overfitting")
    assert not gate.passed and gate.reason.startswith("no out-of-sample trades")


def test_without_pooled_metrics_folds_without_any_trade_mean_never_traded():
    report = judge(idle_candidate(oos=None), losing_baselines())
    assert report.failed == [g for g in GATE_NAMES if g != "fold_count"]
    assert report.gate("beats_baselines").reason.startswith("no out-of-sample trades")


def test_a_candidate_with_a_few_trades_is_judged_on_them():
    few = idle_candidate(oos=OutOfSampleMetrics(profit_factor=1.5, max_drawdown=0.01, trades=3, sharpe=0.4))
    report = judge(few, losing_baselines())
    assert not report.gate("oos_trades").passed
    assert report.gate("oos_trades").reason == "3 out-of-sample trades < 30"
    assert report.gate("oos_max_drawdown").passed
    assert not any(g.reason.startswith("no out-of-sample trades") for g in report.gates)
