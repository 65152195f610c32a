"""The RL observation (spec 001 §25.2): 17 documented dims, their transforms, finiteness, row-wise causality."""

from __future__ import annotations

import numpy as np
import pytest

import core.rl_obs as rl_obs
from core.features_schema import FEATURE_NAMES
from core.model import REQUIRED_TARGETS
from core.rl_obs import (
    FEATURE_INPUTS,
    MARKET_DIMS,
    OBS_CLIP,
    OBS_DIM,
    OBS_NAMES,
    PREDICTION_INPUTS,
    build_observations,
    position_row,
)

SPEC_NAMES = ("er_long", "q05_long", "e_mae_long", "e_hold_long", "ret_1", "ret_5", "rsi", "macd_z", "bb_z",
              "vol_z", "atr", "adx", "funding_z", "btc_regime", "position", "position_time", "unrealized_pnl")  # fmt: skip


def inputs(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    preds = {k: rng.normal(0.001, 0.003, n) for k in REQUIRED_TARGETS}
    preds["e_hold_long"] = rng.uniform(1, 360, n)
    feats = {c: rng.normal(size=n) for c in FEATURE_INPUTS.values()}
    feats["f_1m_rsi"] = rng.uniform(0, 100, n)
    feats["f_1m_adx"] = rng.uniform(0, 100, n)
    feats["f_15m_btc_regime"] = rng.integers(0, 3, n).astype(float)
    return preds, feats


def test_the_17_dims_are_the_specs_in_order_and_documented():
    assert OBS_NAMES == SPEC_NAMES and OBS_DIM == 17 and MARKET_DIMS == 14
    assert set(PREDICTION_INPUTS) <= set(REQUIRED_TARGETS)
    assert set(FEATURE_INPUTS.values()) <= set(FEATURE_NAMES)
    doc = rl_obs.__doc__ or ""
    for i, name in enumerate(OBS_NAMES):
        assert f"{i:>2}  {name}" in doc, name


def test_transforms():
    preds = {"er_long": 0.002, "q05_long": -0.01, "e_mae_long": 0.004, "e_hold_long": 90.0}
    feats = {"f_1m_ret_1": 0.001, "f_1m_ret_5": -0.003, "f_1m_rsi": 75.0, "f_1m_macd_z": 0.5, "f_1m_bb_z": -1.5,
             "f_1m_vol_z": 2.0, "f_1m_natr": 0.3, "f_1m_adx": 40.0, "f_1m_funding_z": -0.7,
             "f_15m_btc_regime": 2.0}  # fmt: skip
    obs = build_observations(
        preds, feats, side=-1, bars_held=180, unrealized_return=-0.005, hold_norm_min=360
    )
    expected = [0.2, -1.0, 0.4, 0.25, 0.1, -0.3, 0.5, 0.5, -1.5, 2.0, 0.3, 0.4, -0.7, 1.0, -1.0, 0.5, -0.5]
    assert obs.shape == (1, 17) and obs.dtype == np.float32
    assert np.allclose(obs[0], expected, atol=1e-6)


def test_missing_values_are_neutral_and_everything_is_finite_and_clipped():
    preds, feats = inputs(50)
    feats["f_1m_rsi"][:10] = np.nan  # warm-up
    preds["er_long"][5] = np.inf
    feats["f_1m_vol_z"][7] = 1e9
    obs = build_observations(preds, feats)
    assert np.isfinite(obs).all() and np.abs(obs).max() <= OBS_CLIP
    assert (obs[:10, OBS_NAMES.index("rsi")] == 0).all() and obs[5, 0] == 0.0  # not a number: neutral
    assert obs[7, OBS_NAMES.index("vol_z")] == OBS_CLIP
    assert not build_observations(None, feats)[:, :4].any()


def test_position_dims():
    assert position_row(0.0, 50, 0.1) == (0.0, 0.0, 0.0)  # flat: zeros whatever the rest
    assert position_row(1.0, 36, 0.002, 360) == pytest.approx((1.0, 0.1, 0.2))
    assert position_row(-1.0, np.nan, 5.0, 360) == (-1.0, 0.0, OBS_CLIP)
    preds, feats = inputs(4)
    obs = build_observations(preds, feats, side=np.array([0, 1, -1, 1]), bars_held=np.array([9, 36, 72, 0]),
                             unrealized_return=np.array([0.5, 0.01, -0.02, 0.0]))  # fmt: skip
    assert np.allclose(obs[:, 14:], [[0, 0, 0], [1, 0.1, 1.0], [-1, 0.2, -2.0], [1, 0, 0]])


def test_row_t_uses_row_t_only():
    preds, feats = inputs(200, seed=4)
    full = build_observations(preds, feats)
    for t in (0, 17, 120, 199):
        cut = build_observations(
            {k: v[: t + 1] for k, v in preds.items()}, {k: v[: t + 1] for k, v in feats.items()}
        )
        assert np.array_equal(cut[t], full[t])


def test_bad_inputs_name_what_is_wrong():
    preds, feats = inputs(5)
    with pytest.raises(KeyError, match="er_long"):
        build_observations({k: v for k, v in preds.items() if k != "er_long"}, feats)
    with pytest.raises(KeyError, match="f_1m_natr"):
        build_observations(preds, {k: v for k, v in feats.items() if k != "f_1m_natr"})
    with pytest.raises(ValueError, match="different lengths"):
        build_observations({k: v[:3] for k, v in preds.items()}, feats)
