"""train-rl trains in the environment the evaluation (and the backtest) uses: the installation's
simulator, risk guards, policy and label settings reach ``make_env`` through the PPO config's
``env_config`` (picklable, for RLlib's env runners)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from core.config import RiskConfig
from core.rl_obs import MARKET_DIMS
from raytrade.cmd_backtest import sim_config
from raytrade.cmd_rl import rl_env_kwargs
from raytrade.settings import Settings
from rl.env import TradingEnv
from rl.episodes import EpisodeData
from rl.train import RLTrainConfig, make_env, ppo_config

T0 = 1_735_689_600_000


def episodes(n: int = 120) -> list[EpisodeData]:
    ts = T0 + 60_000 * np.arange(n, dtype=np.int64)
    close = 30_000 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.002, n)))
    cols = {"open": close, "close": close, "mark_open": close, "mark_high": close * 1.001,
            "mark_low": close * 0.999, "mark_close": close, "quote_volume": np.full(n, 1e7),
            "funding_rate": np.zeros(n), "atr": close * 0.003}  # fmt: skip
    return [EpisodeData.from_columns("BTCUSDT", ts, cols, np.zeros((n, MARKET_DIMS), np.float32))]


def test_make_env_carries_the_installations_risk_policy_label_and_simulator(tmp_path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        risk=RiskConfig(max_positions=2, daily_loss_limit_pct=0.013),
    )
    kwargs = rl_env_kwargs(settings)
    cfg = ppo_config(None, RLTrainConfig(decision_every=3), kwargs)
    env_config = dict(cfg.env_config)
    assert pickle.loads(pickle.dumps(env_config["env_kwargs"])) == env_config["env_kwargs"]
    env_config["episodes"] = episodes()
    env = make_env(env_config).unwrapped
    assert isinstance(env, TradingEnv)
    assert env.risk is not None and env.risk.max_positions == 2 and env.risk.daily_loss_limit_pct == 0.013
    assert env.risk == settings.risk and env.policy == settings.policy and env.label == settings.label
    assert env.config == sim_config(settings)
    # the defaults differ, so the test would fail if make_env dropped them
    assert RiskConfig().max_positions != 2
    # and a training without settings keeps TradingEnv's defaults
    plain = make_env({**env_config, "env_kwargs": {}}).unwrapped
    assert plain.risk == RiskConfig()
    with pytest.raises(ValueError, match="unknown env_kwargs"):
        make_env({**env_config, "env_kwargs": {"rules": None}})
    assert np.isfinite(env.reset(seed=0)[0]).all()
