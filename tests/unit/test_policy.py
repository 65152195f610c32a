"""Decision policy: every gate's reason code, argmax, regime filter, SL/TP, costs, NaN, scalar == arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import LabelSpec, PolicyConfig
from core.policy import (
    PREDICTION_KEYS,
    Action,
    BlockReason,
    PolicyState,
    RiskPenaltyConfig,
    cost_estimate,
    decide,
    decide_arrays,
    funding_events,
    policy_params,
    reason_names,
)
from core.signals import SIGNAL_DTYPES

CFG = PolicyConfig()
SPEC = LabelSpec()
# price 100, ATR 1 (1% of price): Q05 gate at -0.015 − cost estimate (≈ -0.0188), MAE gate at 0.012.
STATE = PolicyState(price=100.0, atr=1.0, btc_regime=1.0, equity=10_000.0)
GOOD = {
    "er_long": 0.004, "er_short": -0.002, "q05_long": -0.005, "q05_short": -0.02,
    "e_mae_long": 0.005, "e_mae_short": 0.02, "e_hold_long": 60.0, "e_hold_short": 60.0,
}  # fmt: skip
MIRROR = {
    "er_long": -0.002, "er_short": 0.004, "q05_long": -0.02, "q05_short": -0.005,
    "e_mae_long": 0.02, "e_mae_short": 0.005, "e_hold_long": 60.0, "e_hold_short": 60.0,
}  # fmt: skip


def _decide(preds=None, state=STATE, cfg=CFG, **kw):
    return decide("ETHUSDT", GOOD if preds is None else preds, state, cfg, SPEC, **kw)


def _with(**changes):
    return {**GOOD, **changes}


def _state(**changes):
    fields = {f: getattr(STATE, f) for f in STATE.__dataclass_fields__}
    return PolicyState(**{**fields, **changes})


# --- entries, argmax, SL/TP, size --------------------------------------------------------------------


def test_long_entry_when_every_gate_passes():
    d = _decide()
    assert d.action is Action.LONG and d.candidate is Action.LONG
    assert d.reasons == BlockReason(0) and d.block_reasons == ()
    assert d.size_notional == 0.15 * 10_000.0
    assert d.leverage == 3
    assert d.sl_price == 100.0 - 1.0 * 1.0 and d.tp_price == 100.0 + 1.5 * 1.0


def test_argmax_picks_short_when_its_ev_is_higher():
    d = _decide(MIRROR)
    assert d.action is Action.SHORT
    assert d.sl_price == 101.0 and d.tp_price == 98.5
    assert d.ev_short > d.ev_long


def test_argmax_picks_the_better_of_two_positive_sides():
    d = _decide(_with(er_short=0.003, q05_short=-0.005, e_mae_short=0.005))
    assert d.action is Action.LONG and d.ev_long > d.ev_short > 0


def test_sl_tp_use_label_spec_multiples_and_decision_price():
    spec = LabelSpec(k_sl=2.0, k_tp=3.0, risk_mae_atr=3.0)
    cfg = PolicyConfig(q05_min_atr=-2.5)  # the Q05 floor must lie past the wider stop
    d = decide("X", MIRROR, _state(price=2500.0, atr=25.0), cfg, spec)
    assert d.action is Action.SHORT
    assert d.sl_price == 2500.0 + 2.0 * 25.0 and d.tp_price == 2500.0 - 3.0 * 25.0


def test_size_and_leverage_come_from_preset():
    cfg = PolicyConfig(position_notional_pct=0.2, leverage=2, max_leverage=4)
    d = _decide(cfg=cfg, state=_state(equity=5_000.0))
    assert d.size_notional == 0.2 * 5_000.0 and d.leverage == 2


# --- EV, costs, risk penalty -------------------------------------------------------------------------


def test_ev_is_er_minus_risk_penalty_when_er_is_net():
    d = _decide()
    pen = 0.05 * 0.005 + 0.05 * 0.005
    assert d.risk_penalty_long == pytest.approx(pen, abs=1e-15)
    assert d.ev_long == pytest.approx(0.004 - pen, abs=1e-15)
    assert d.risk_penalty_short == pytest.approx(0.05 * 0.02 + 0.05 * 0.02, abs=1e-15)


def test_gross_er_also_pays_cost_estimate():
    d = _decide(er_is_net=False)
    assert d.ev_long == pytest.approx(0.004 - d.cost_long - d.risk_penalty_long, abs=1e-15)


def test_zero_penalty_weights_leave_ev_equal_er():
    d = _decide(penalty=RiskPenaltyConfig(tail_weight=0.0, mae_weight=0.0))
    assert d.ev_long == 0.004 and d.ev_short == -0.002


def test_cost_estimate_by_hand():
    # fee 0.0004 both fills, slippage 0.15·1/100 = 0.0015 per fill, funding 1e-4 once (30 min away, hold 60).
    s = 0.15 * 1.0 / 100.0
    long = cost_estimate(1, 100.0, 1.0, 1e-4, 60.0, 30.0, 480.0, 0.0004, 0.15)
    short = cost_estimate(-1, 100.0, 1.0, 1e-4, 60.0, 30.0, 480.0, 0.0004, 0.15)
    assert long == pytest.approx(0.0008 + 2 * s / (1 + s) + 1e-4, abs=1e-15)
    assert short == pytest.approx(0.0008 + 2 * s / (1 - s) - 1e-4, abs=1e-15)
    # Unknown rate counts as no funding.
    assert cost_estimate(1, 100.0, 1.0, math.nan, 60.0, 30.0, 480.0, 0.0004, 0.15) == pytest.approx(
        0.0008 + 2 * s / (1 + s), abs=1e-15
    )


@pytest.mark.parametrize(
    ("hold", "to_next", "expected"),
    [
        (20.0, 30.0, 0.0),  # ends before the next funding time
        (30.0, 30.0, 1.0),  # ends at it: counted (labels count F ≤ exit)
        (60.0, 30.0, 1.0),
        (509.0, 30.0, 1.0),
        (510.0, 30.0, 2.0),
        (60.0, 0.0, 0.0),  # funding right now is not paid by an entry now
        (480.0, 0.0, 1.0),
        (60.0, math.nan, 60.0 / 480.0),  # next time unknown: pro-rata
        (0.0, 30.0, 0.0),
    ],
)
def test_funding_events_count_like_labels(hold, to_next, expected):
    assert funding_events(hold, to_next, 480.0) == expected


def test_cost_is_reported_in_decision():
    d = _decide(state=_state(funding_rate=1e-4, minutes_to_funding=30.0))
    assert d.cost_long == pytest.approx(cost_estimate(1, 100.0, 1.0, 1e-4, 60.0, 30.0, 480.0, 0.0004, 0.15))
    assert d.explain()["cost_long"] == d.cost_long


# --- gates and their reason codes --------------------------------------------------------------------


def test_ev_below_min_blocks_with_its_reason():
    d = _decide(cfg=PolicyConfig(ev_min=0.01))
    assert d.action is Action.FLAT and d.candidate is Action.LONG
    assert d.reasons == BlockReason.EV_BELOW_MIN
    assert d.size_notional == 0.0 and d.leverage == 0 and d.sl_price is None and d.tp_price is None


def test_no_positive_ev_is_flat():
    d = _decide(_with(er_long=-0.001, er_short=-0.003))
    assert d.action is Action.FLAT
    assert d.reasons == BlockReason.EV_NOT_POSITIVE | BlockReason.EV_BELOW_MIN


def test_flat_wins_argmax_even_with_negative_ev_min():
    d = _decide(_with(er_long=-0.0001, er_short=-0.003), cfg=PolicyConfig(ev_min=-0.01))
    assert d.action is Action.FLAT and d.reasons == BlockReason.EV_NOT_POSITIVE


def test_q05_gate_is_strict_in_atr_units_after_the_cost_estimate():
    cost = _decide().cost_long
    assert cost == pytest.approx(2 * 0.0004 + 2 * 0.0015 / 1.0015, abs=1e-15)
    limit = CFG.q05_min_atr * (1.0 / 100.0) - cost
    assert _decide(_with(q05_long=limit)).reasons == BlockReason.Q05_BELOW_MIN
    assert _decide(_with(q05_long=-0.019)).reasons == BlockReason.Q05_BELOW_MIN
    assert _decide(_with(q05_long=float(np.nextafter(limit, 0.0)))).action is Action.LONG


def test_q05_gate_uses_the_candidate_sides_cost_with_funding():
    # A long pays a positive funding rate once within its hold: its floor drops by that rate.
    state = _state(funding_rate=1e-3, minutes_to_funding=30.0)
    d = _decide(state=state)
    limit = CFG.q05_min_atr * (1.0 / 100.0) - d.cost_long
    assert d.cost_long == pytest.approx(_decide().cost_long + 1e-3, abs=1e-15)
    assert _decide(_with(q05_long=float(np.nextafter(limit, 0.0))), state=state).action is Action.LONG
    assert _decide(_with(q05_long=limit), state=state).reasons == BlockReason.Q05_BELOW_MIN


def test_mae_gate_is_strict_and_in_atr_units():
    limit = CFG.mae_max_atr * (1.0 / 100.0)
    assert _decide(_with(e_mae_long=limit)).reasons == BlockReason.MAE_ABOVE_MAX
    assert _decide(_with(e_mae_long=float(np.nextafter(limit, 0.0)))).action is Action.LONG


def test_gates_scale_with_atr():
    # q05 = -0.012 passes at ATR 1% of price (floor ≈ -0.0188); at ATR 0.5% the floor moves to
    # -0.0075 − (0.0008 + 2·0.00075/1.00075) ≈ -0.0098 and blocks it.
    preds = _with(q05_long=-0.012)
    assert _decide(preds).action is Action.LONG
    d = _decide(preds, state=_state(atr=0.5))
    assert d.reasons == BlockReason.Q05_BELOW_MIN


def test_every_failing_gate_is_reported():
    d = _decide(_with(q05_long=-0.05, e_mae_long=0.05, er_long=0.009), cfg=PolicyConfig(ev_min=0.01))
    assert d.reasons == BlockReason.EV_BELOW_MIN | BlockReason.Q05_BELOW_MIN | BlockReason.MAE_ABOVE_MAX
    assert set(d.block_reasons) == {"EV_BELOW_MIN", "Q05_BELOW_MIN", "MAE_ABOVE_MAX"}


def test_equal_ev_is_ambiguous():
    d = _decide(MIRROR | {"er_long": 0.004, "q05_long": -0.005, "e_mae_long": 0.005})
    assert d.action is Action.FLAT and d.reasons == BlockReason.AMBIGUOUS_SIDE


def test_max_positions_and_open_symbol_block():
    assert _decide(state=_state(open_positions=6)).reasons == BlockReason.MAX_POSITIONS_REACHED
    assert _decide(state=_state(open_positions=5)).action is Action.LONG
    assert _decide(state=_state(has_position=True)).reasons == BlockReason.SYMBOL_POSITION_OPEN


def test_stop_at_or_below_zero_blocks():
    spec = LabelSpec(k_sl=1.0)
    d = decide("X", GOOD, _state(atr=150.0), CFG, spec)  # gates at -1.5·1.5 − costs and 1.2·1.5: pass
    assert d.action is Action.FLAT and d.reasons == BlockReason.STOP_INVALID


# --- BTC regime ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "regime", "size", "reasons"),
    [
        ("size_down", 2.0, 750.0, 0),
        ("size_down", 1.0, 1500.0, 0),
        ("size_down", 0.0, 1500.0, 0),
        ("size_down", math.nan, 750.0, 0),  # unknown regime: treated as high-vol
        ("block", 2.0, 0.0, BlockReason.BTC_HIGH_VOL_BLOCK),
        ("block", 1.0, 1500.0, 0),
        ("block", math.nan, 0.0, BlockReason.BTC_REGIME_UNKNOWN_BLOCK),
        ("block", 7.0, 0.0, BlockReason.BTC_REGIME_UNKNOWN_BLOCK),
        ("none", 2.0, 1500.0, 0),
        ("none", math.nan, 1500.0, 0),
    ],
)
def test_btc_regime_filter(action, regime, size, reasons):
    cfg = PolicyConfig(btc_high_vol_action=action, high_vol_size_mult=0.5)
    d = _decide(cfg=cfg, state=_state(btc_regime=regime))
    assert d.size_notional == size
    assert int(d.reasons) == int(reasons)
    assert d.is_entry == (reasons == 0)


# --- bad inputs never raise ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", PREDICTION_KEYS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, None, "abc", "missing"])
def test_bad_prediction_is_flat_with_reason(key, bad):
    preds = {k: v for k, v in GOOD.items() if k != key} if bad == "missing" else _with(**{key: bad})
    d = _decide(preds)
    assert d.action is Action.FLAT and d.candidate is Action.FLAT
    assert d.reasons == BlockReason.NAN_PREDICTION
    assert d.sl_price is None and d.size_notional == 0.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"price": math.nan}, BlockReason.BAD_PRICE),
        ({"price": 0.0}, BlockReason.BAD_PRICE),
        ({"price": -5.0}, BlockReason.BAD_PRICE),
        ({"price": None}, BlockReason.BAD_PRICE),
        ({"atr": math.nan}, BlockReason.NO_ATR),
        ({"atr": 0.0}, BlockReason.NO_ATR),
        ({"equity": 0.0}, BlockReason.BAD_EQUITY),
        ({"equity": math.inf}, BlockReason.BAD_EQUITY),
        ({"price": math.nan, "atr": math.nan}, BlockReason.BAD_PRICE | BlockReason.NO_ATR),
    ],
)
def test_bad_market_input_is_flat_with_reason(changes, reason):
    d = _decide(state=_state(**changes))
    assert d.action is Action.FLAT and d.reasons == reason


def test_predictions_that_are_not_a_mapping_are_flat():
    assert decide("X", None, STATE, CFG, SPEC).reasons == BlockReason.NAN_PREDICTION  # type: ignore[arg-type]


def test_nan_everywhere_does_not_raise():
    nan = math.nan
    d = _decide(dict.fromkeys(PREDICTION_KEYS, nan), state=PolicyState(nan, nan, nan, nan, nan, nan, nan))
    assert d.action is Action.FLAT
    assert d.reasons == (
        BlockReason.NAN_PREDICTION | BlockReason.BAD_PRICE | BlockReason.NO_ATR | BlockReason.BAD_EQUITY
    )


# --- reason enum, params -------------------------------------------------------------------------------


def test_reason_bits_are_distinct_and_named():
    values = [int(r) for r in BlockReason]
    assert len(set(values)) == len(values) and all(v & (v - 1) == 0 for v in values)
    mask = int(BlockReason.Q05_BELOW_MIN | BlockReason.NO_ATR)
    assert reason_names(mask) == ("NO_ATR", "Q05_BELOW_MIN")
    assert reason_names(0) == ()


def test_policy_params_are_read_only_and_cached():
    p = policy_params(CFG, SPEC)
    assert p is policy_params(CFG, SPEC)
    with pytest.raises(ValueError):
        p[0] = 1.0


# --- vectorized == scalar ------------------------------------------------------------------------------


def _random_inputs(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    def with_nans(x: np.ndarray, p: float = 0.03) -> np.ndarray:
        x = x.copy()
        x[rng.random(len(x)) < p] = np.nan
        return x

    preds = {
        "er_long": with_nans(rng.normal(0.0005, 0.003, n)),
        "er_short": with_nans(rng.normal(0.0005, 0.003, n)),
        "q05_long": with_nans(-np.abs(rng.normal(0.006, 0.004, n))),
        "q05_short": with_nans(-np.abs(rng.normal(0.006, 0.004, n))),
        "e_mae_long": with_nans(np.abs(rng.normal(0.006, 0.004, n))),
        "e_mae_short": with_nans(np.abs(rng.normal(0.006, 0.004, n))),
        "e_hold_long": with_nans(rng.uniform(0, 720, n)),
        "e_hold_short": with_nans(rng.uniform(0, 720, n)),
    }
    price = with_nans(rng.uniform(0.5, 200.0, n), 0.01)
    market = {
        "price": price,
        "atr": with_nans(price * rng.uniform(0.001, 0.02, n), 0.02),
        "btc_regime": with_nans(rng.integers(0, 3, n).astype(float), 0.05),
        "equity": with_nans(rng.uniform(100, 1e5, n), 0.01),
        "funding_rate": with_nans(rng.normal(1e-4, 3e-4, n), 0.1),
        "minutes_to_funding": with_nans(rng.uniform(0, 480, n), 0.1),
        "funding_interval_min": rng.choice([240.0, 480.0], n),
        "open_positions": rng.integers(0, 8, n),
        "has_position": rng.random(n) < 0.1,
    }
    return preds, market


def _assert_same(arrays, i, d):
    assert arrays.direction[i] == int(d.action)
    assert arrays.candidate[i] == int(d.candidate)
    assert arrays.size_notional[i] == d.size_notional
    assert arrays.leverage[i] == d.leverage
    assert arrays.reasons[i] == int(d.reasons)
    for name in ("ev_long", "ev_short", "cost_long", "cost_short", "risk_penalty_long", "risk_penalty_short"):
        np.testing.assert_equal(getattr(arrays, name)[i], getattr(d, name))
    np.testing.assert_equal(arrays.sl_price[i], math.nan if d.sl_price is None else d.sl_price)
    np.testing.assert_equal(arrays.tp_price[i], math.nan if d.tp_price is None else d.tp_price)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    action=st.sampled_from(["size_down", "block", "none"]),
    er_is_net=st.booleans(),
    ev_min=st.sampled_from([0.0, 0.0005, -0.001]),
)
def test_arrays_equal_scalar_path(seed, action, er_is_net, ev_min):
    rng = np.random.default_rng(seed)
    cfg = PolicyConfig(btc_high_vol_action=action, ev_min=ev_min, max_positions=5)
    preds, market = _random_inputs(rng, 60)
    arrays = decide_arrays(
        preds, market["price"], market["atr"], market["btc_regime"], cfg, SPEC,
        equity=market["equity"], funding_rate=market["funding_rate"],
        minutes_to_funding=market["minutes_to_funding"], funding_interval_min=market["funding_interval_min"],
        open_positions=market["open_positions"], has_position=market["has_position"], er_is_net=er_is_net,
    )  # fmt: skip
    for i in range(60):
        state = PolicyState(**{k: v[i].item() for k, v in market.items()})
        d = decide("S", {k: v[i].item() for k, v in preds.items()}, state, cfg, SPEC, er_is_net=er_is_net)
        _assert_same(arrays, i, d)


def test_arrays_take_bars_by_symbols_and_broadcast_the_btc_regime():
    n, m = 4, 3
    preds = {k: np.full((n, m), v) for k, v in GOOD.items()}
    regime = np.array([[0.0], [1.0], [2.0], [np.nan]])
    a = decide_arrays(preds, np.full((n, m), 100.0), 1.0, regime, CFG, SPEC)
    assert a.direction.shape == (n, m) and a.direction.dtype == np.int8
    np.testing.assert_array_equal(a.size_fraction[:, 0], [0.15, 0.15, 0.075, 0.075])
    np.testing.assert_array_equal(a.size_notional, a.size_fraction)  # equity 1: fractions
    sig = a.signals()
    assert sig.shape == (n, m)
    assert {f: getattr(sig, f).dtype for f in SIGNAL_DTYPES} == {
        f: np.dtype(t) for f, t in SIGNAL_DTYPES.items()
    }
    assert not sig.exit_long.any() and not sig.exit_short.any()
    np.testing.assert_array_equal(sig.sl_price, 99.0)


def test_arrays_missing_key_or_bad_shape_raise_value_error():
    preds = {k: np.zeros(3) for k in PREDICTION_KEYS if k != "q05_short"}
    with pytest.raises(ValueError, match="q05_short"):
        decide_arrays(preds, 100.0, 1.0, 1.0, CFG, SPEC)
    preds = {k: np.zeros(3) for k in PREDICTION_KEYS}
    with pytest.raises(ValueError, match="broadcast"):
        decide_arrays(preds, np.ones(4), 1.0, 1.0, CFG, SPEC)
