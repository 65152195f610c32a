"""RL episodes from a fold's frames and a trained LightGBM model: out-of-sample predictions in the
observation, refusal of an in-sample model, no look-ahead through features, predictions and the env."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from model_fixtures import tiny_model

from core.features import build_inputs, compute_features
from core.features_schema import FEATURE_SCHEMA_VERSION, SCHEMA_HASH
from core.rl_obs import build_observations
from core.sim import panel_from_market
from core.synthetic import generate_market
from core.time import DAY_MS, MINUTE_MS, parse_utc
from rl.env import TradingEnv
from rl.episodes import fold_episodes

START = parse_utc("2025-01-06")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
DAYS = 3
TEST_START = START + 2 * DAY_MS  # the fold's test window: the third day
TEST_END = START + DAYS * DAY_MS


@lru_cache(maxsize=1)
def market():
    return generate_market(SYMBOLS, START, DAYS * 1440, seed=11)


def features_until(end_ms: int) -> dict[str, pd.DataFrame]:
    m = market()
    inputs = {
        s: build_inputs(m.candles_1m[s], m.mark_1m[s], m.premium_1m[s], m.funding[s]).until(
            end_ms - MINUTE_MS
        )
        for s in SYMBOLS
    }
    return {s: f.to_pandas() for s, f in compute_features(inputs).items()}


@lru_cache(maxsize=1)
def full_features() -> dict[str, pd.DataFrame]:
    return features_until(TEST_END)


def episodes_until(end_ms: int, features: dict[str, pd.DataFrame]):
    panel = panel_from_market(market(), end_ms=end_ms)
    return fold_episodes(panel, features, tiny_model(), test_start_ms=TEST_START, test_end_ms=end_ms, fold=2)


def test_episodes_hold_the_models_out_of_sample_predictions():
    episodes = episodes_until(TEST_END, full_features())
    assert [e.symbol for e in episodes] == list(SYMBOLS) and all(e.fold == 2 for e in episodes)
    for e in episodes:
        assert len(e) == 1440 and e.ts[0] == TEST_START and e.ts[-1] == TEST_END - MINUTE_MS
        frame = full_features()[e.symbol]
        rows = frame[(frame["ts"] >= TEST_START) & (frame["ts"] < TEST_END)].reset_index(drop=True)
        preds = tiny_model().predict(rows, FEATURE_SCHEMA_VERSION, SCHEMA_HASH)
        assert np.array_equal(e.market_obs, build_observations(preds, rows)[:, :14])
        assert np.isfinite(e.market_obs).all() and np.abs(e.market_obs[:, 0]).max() > 0
        assert np.isfinite(e.atr).all() and np.isfinite(e.close).all()


def test_a_model_trained_into_the_window_is_refused():
    panel = panel_from_market(market())
    with pytest.raises(ValueError, match="in sample"):
        fold_episodes(panel, full_features(), tiny_model(), test_start_ms=TEST_START, test_end_ms=TEST_END,
                      trained_until_ms=TEST_START + MINUTE_MS)  # fmt: skip


def test_env_on_real_episodes_passes_the_checker_and_its_rewards_are_the_net_pnl():
    episodes = episodes_until(TEST_END, full_features())
    check_env(TradingEnv(episodes, episode_bars=200), skip_render_check=True)
    env = TradingEnv(episodes)
    env.reset(seed=0, options={"episode": 1})
    rng = np.random.default_rng(0)
    total, done = 0.0, False
    while not done:
        _, r, terminated, truncated, _ = env.step(int(rng.choice(4, p=[0.8, 0.08, 0.08, 0.04])))
        total += r
        done = terminated or truncated
    assert len(env.sim.trades()) > 5
    assert total * 10_000 == pytest.approx(env.sim.trades()["pnl"].sum(), abs=1e-6)
    assert total * 10_000 == pytest.approx(env.sim.wallet - 10_000, abs=1e-6)


@pytest.mark.parametrize("minutes", [7, 333, 1201])
def test_observation_at_t_is_unchanged_when_history_after_t_is_removed(minutes):
    t_ms = TEST_START + minutes * MINUTE_MS
    actions = np.random.default_rng(minutes).choice(4, size=minutes, p=[0.7, 0.1, 0.1, 0.1])
    observed = []
    for end in (TEST_END, t_ms + MINUTE_MS):  # full history; history truncated after bar t
        episodes = episodes_until(end, full_features() if end == TEST_END else features_until(end))
        env = TradingEnv(episodes, close_at_end=False)
        env.reset(seed=0, options={"episode": 0})
        obs = None
        for a in actions:
            obs, *_ = env.step(int(a))
        observed.append(obs)
    assert np.array_equal(observed[0], observed[1])
