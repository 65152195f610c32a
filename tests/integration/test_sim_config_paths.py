"""Backtest ↔ shadow ↔ training parity starts with one simulator: the three paths that build a
``SimConfig`` from the settings (the backtest command, the shadow session's execution actor, the
training flow's evaluation) get the identical config, and it carries the settings' presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import LabelSpec, PolicyConfig, RiskConfig
from core.sim import SimConfig, sim_config_for
from raytrade.cmd_backtest import sim_config
from raytrade.demo_train import training_environment
from raytrade.realtime import ShadowOptions, ShadowSession
from raytrade.settings import Settings
from tune.flow import TrainRequest, eval_config
from tune.trainable import EvalConfig


@pytest.mark.parametrize(
    ("label", "policy"),
    [
        (LabelSpec(), PolicyConfig()),
        (LabelSpec(fee_rate=0.0005, slippage_k=0.3, h_bars=120), PolicyConfig(leverage=4)),
    ],
)
def test_backtest_shadow_and_training_get_the_identical_simulator(
    tmp_path: Path, label: LabelSpec, policy: PolicyConfig
) -> None:
    settings = Settings(data_dir=tmp_path / "data", label=label, policy=policy, risk=RiskConfig())
    backtest = sim_config(settings)
    shadow = ShadowSession(settings, ShadowOptions(symbols=("BTCUSDT",))).execution_config().sim
    request = TrainRequest(
        symbols=("BTCUSDT",),
        folds=lambda _data: [],
        seed=0,
        num_boost_round=1,
        model_name="m",
        experiment="e",
    )
    with training_environment(settings) as env:
        training = eval_config(env, request).simulator(settings.label)
    # an evaluation given no simulator (bench, tests) falls back to the same builder
    default_eval = EvalConfig(policy=settings.policy).simulator(settings.label)

    assert backtest == shadow == training == default_eval
    assert backtest == sim_config_for(label, policy)
    assert (backtest.fee_rate, backtest.slippage_k, backtest.max_hold_bars, backtest.default_leverage) == (
        label.fee_rate,
        label.slippage_k,
        label.h_bars,
        policy.leverage,
    )
    assert backtest.impact_k == SimConfig().impact_k  # no preset for impact: the simulator's own default


def test_the_backtest_command_can_shorten_the_time_limit_and_nothing_else() -> None:
    settings = Settings(label=LabelSpec(h_bars=240), policy=PolicyConfig(leverage=2))
    short = sim_config(settings, max_hold_bars=30)
    assert short == sim_config(settings).model_copy(update={"max_hold_bars": 30})
