"""No look-ahead: features at t depend on data known at t's close only, on every timeframe."""

from __future__ import annotations

import numpy as np
import pytest
from feature_samples import higher_timeframe_inputs, run_timeframe, synthetic_group
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.features import INPUT_COLUMNS, SymbolInputs, compute_features
from core.features_kernel import CROSS_TF_LEN, X_TS
from core.features_schema import FEATURE_NAMES
from core.ta import last_closed_index
from core.time import HOUR_MS, MINUTE_MS


@pytest.fixture(scope="module")
def group():
    return synthetic_group(days=25)


@pytest.fixture(scope="module")
def batch(group):
    return compute_features(group)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0.0, 1.0))
def test_features_on_history_truncated_at_t_equal_full_history_features_at_t(group, batch, frac):
    n = len(group["BTCUSDT"])
    t = int(group["BTCUSDT"].ts_ms[int(frac * (n - 1))])
    truncated = compute_features({s: x.until(t) for s, x in group.items()})
    for s, x in group.items():
        i = int(np.searchsorted(x.ts_ms, t))
        assert np.array_equal(truncated[s].values[-1], batch[s].values[i], equal_nan=True), s


def test_perturbing_future_bars_changes_nothing_up_to_t(group, batch):
    rng = np.random.default_rng(3)
    for t_idx in (20 * 1440 + 3, 22 * 1440 + 14, 23 * 1440 + 59):  # inside a 15m and a 1h bucket
        spoiled = {}
        for s, x in group.items():
            v = x.values.copy()
            v[t_idx + 1 :, :5] *= 1 + 0.05 * rng.standard_normal((len(v) - t_idx - 1, 1))
            v[t_idx + 1 :, INPUT_COLUMNS.index("high")] = v[t_idx + 1 :, :4].max(axis=1)
            v[t_idx + 1 :, INPUT_COLUMNS.index("low")] = v[t_idx + 1 :, :4].min(axis=1)
            v[t_idx + 1 :, INPUT_COLUMNS.index("funding_rate")] = 0.01
            spoiled[s] = SymbolInputs(x.ts_ms, v)
        out = compute_features(spoiled)
        for s in group:
            assert np.array_equal(out[s].values[: t_idx + 1], batch[s].values[: t_idx + 1], equal_nan=True)
            assert not np.array_equal(
                out[s].values[t_idx + 1 :], batch[s].values[t_idx + 1 :], equal_nan=True
            )


@pytest.mark.parametrize(("tf", "interval_ms"), [("15m", 15 * MINUTE_MS), ("1h", HOUR_MS)])
def test_higher_timeframe_features_change_only_at_their_closes(batch, tf, interval_ms):
    frame = batch["ETHUSDT"]
    cols = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(f"f_{tf}_")]
    v = frame.values[:, cols]
    changed = np.flatnonzero(~((v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1]))).all(axis=1)) + 1
    closes = (frame.ts_ms + MINUTE_MS) % interval_ms == 0
    assert changed.size and closes[changed].all()


@pytest.mark.parametrize(("tf", "interval_ms"), [("15m", 15 * MINUTE_MS), ("1h", HOUR_MS)])
def test_higher_timeframe_features_equal_the_kernel_on_resampled_bars_aligned_causally(
    group, batch, tf, interval_ms
):
    """The kernel's own 15m/1h accumulation equals core.resample + core.ta.last_closed_index."""
    btc_bars = higher_timeframe_inputs(group["BTCUSDT"], interval_ms)
    btc_feats, btc_ctx = run_timeframe(btc_bars, is_btc=True)
    for s in ("BTCUSDT", "ETHUSDT"):
        bars = higher_timeframe_inputs(group[s], interval_ms)
        if s == "BTCUSDT":
            feats = btc_feats
        else:  # BTC context of each coarse bar: BTC's last coarse bar closed by that bar's close
            j = last_closed_index(bars.ts_ms, interval_ms, btc_bars.ts_ms, interval_ms)
            ctx = np.vstack([btc_ctx, np.full((1, CROSS_TF_LEN), np.nan)])[j]
            assert (ctx[j >= 0, X_TS] <= bars.ts_ms[j >= 0]).all()
            feats, _ = run_timeframe(bars, ctx)
        frame = batch[s]
        idx = last_closed_index(frame.ts_ms, MINUTE_MS, bars.ts_ms, interval_ms)
        expected = np.where((idx >= 0)[:, None], feats[np.maximum(idx, 0)], np.nan)
        cols = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(f"f_{tf}_")]
        got = frame.values[:, cols]
        nan_got, nan_exp = np.isnan(got), np.isnan(expected)
        assert np.array_equal(nan_got, nan_exp), s
        ok = ~nan_got
        # sums differ in order (numpy reduceat vs running accumulation): agree to 1e-9 relative
        np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-9, atol=1e-12)
