"""Walk-forward folds and CPCV on hand-built timelines: purge, embargo, window sizes, counts, paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS
from tune.splits import (
    WalkForwardConfig,
    assemble_paths,
    cpcv_group_bounds,
    cpcv_paths,
    cpcv_splits,
    label_exit_ts_ms,
    labels_exit_ts_ms,
    purge_mask,
    walk_forward_folds,
)

T0 = 28_333_440 * MINUTE_MS  # 2023-11-15 00:00 UTC, on the minute grid


def bars(n: int, start: int = T0) -> np.ndarray:
    return start + np.arange(n, dtype=np.int64) * MINUTE_MS


def full_horizon(ts: np.ndarray, h: int) -> np.ndarray:
    return ts + (h + 1) * MINUTE_MS


def bar_set(start_ms: int, end_ms: int) -> set[int]:
    """Open times of the bars in [start, end)."""
    return set(range(start_ms, end_ms, MINUTE_MS))


def label_bars(ts: np.ndarray, exit_ts: np.ndarray, idx: np.ndarray) -> set[int]:
    out: set[int] = set()
    for i in idx:
        out |= bar_set(int(ts[i]), int(exit_ts[i]))
    return out


def cfg_bars(**kw) -> WalkForwardConfig:
    base = dict(length_unit="bars", train_length=40, val_length=10, test_length=10, anchor="start")
    return WalkForwardConfig(**(base | kw))


# --- walk-forward -------------------------------------------------------------------------------------


def test_walk_forward_rolling_windows_in_bars_tile_the_history():
    ts = bars(100)
    folds = walk_forward_folds(ts, full_horizon(ts, 3), cfg_bars())
    assert len(folds) == 5  # 40 + 10 + 10 + k·10 ≤ 100 for k = 0..4
    for k, f in enumerate(folds):
        assert f.index == k
        assert f.train_start_ms == T0 + 10 * k * MINUTE_MS
        assert f.train_end_ms == f.val_start_ms == f.train_start_ms + 40 * MINUTE_MS
        assert f.val_end_ms == f.test_start_ms == f.val_start_ms + 10 * MINUTE_MS
        assert f.test_end_ms == f.test_start_ms + 10 * MINUTE_MS
        np.testing.assert_array_equal(f.test, np.arange(50 + 10 * k, 60 + 10 * k))  # test never loses a bar
    # consecutive test windows tile [50, 100): one continuous out-of-sample backtest
    np.testing.assert_array_equal(np.concatenate([f.test for f in folds]), np.arange(50, 100))


def test_purge_drops_exactly_the_last_h_training_bars_and_no_label_overlaps_val_or_test():
    h = 3
    ts = bars(100)
    exit_ts = full_horizon(ts, h)
    for f in walk_forward_folds(ts, exit_ts, cfg_bars()):
        start = (f.train_start_ms - T0) // MINUTE_MS
        # bar b − H − 1 exits at the close of bar b − 1 = val start: kept; the H bars after it: purged
        np.testing.assert_array_equal(f.train, np.arange(start, start + 40 - h))
        np.testing.assert_array_equal(f.val, np.arange(start + 40, start + 50 - h))
        eval_bars = label_bars(ts, exit_ts, np.concatenate([f.val, f.test])) | bar_set(
            f.val_start_ms, f.test_end_ms
        )
        assert not label_bars(ts, exit_ts, f.train) & eval_bars
        assert not label_bars(ts, exit_ts, f.val) & (
            label_bars(ts, exit_ts, f.test) | bar_set(f.test_start_ms, f.test_end_ms)
        )


@pytest.mark.parametrize("embargo", [1, 2, 5])
def test_embargo_gap_is_exact_in_bars(embargo):
    h = 3
    ts = bars(100)
    exit_ts = full_horizon(ts, h)
    for f in walk_forward_folds(ts, exit_ts, cfg_bars(embargo_bars=embargo)):
        # gap between the last bar a training label uses and the first validation bar: exactly E bars
        last_train_label_bar = max(label_bars(ts, exit_ts, f.train))
        assert (f.val_start_ms - last_train_label_bar) // MINUTE_MS - 1 == embargo
        last_val_label_bar = max(label_bars(ts, exit_ts, f.val))
        assert (f.test_start_ms - last_val_label_bar) // MINUTE_MS - 1 == embargo
        assert len(f.train) == 40 - h - embargo
        assert len(f.val) == 10 - h - embargo
        assert len(f.test) == 10


def test_embargo_fraction_is_of_the_test_window_rounded_up_to_bars():
    cfg = cfg_bars(embargo_fraction=0.15)  # 1.5 of 10 test bars → 2
    assert cfg.embargo_ms() == 2 * MINUTE_MS
    ts = bars(100)
    f = walk_forward_folds(ts, full_horizon(ts, 3), cfg)[0]
    assert len(f.train) == 40 - 3 - 2
    with pytest.raises(ValueError, match="not both"):
        cfg_bars(embargo_bars=1, embargo_fraction=0.1)


def test_purge_uses_each_labels_own_exit():
    # 20 bars, train [0, 12), val [12, 16), test [16, 20); hand-set exits (in bars after ts, ≥ 1)
    ts = bars(20)
    steps = np.array([2, 14, 2, 2, 2, 2, 2, 2, 2, 5, 3, 1, 9, 5, 1, 4, 1, 1, 1, 1])
    exit_ts = ts + steps * MINUTE_MS
    cfg = cfg_bars(train_length=12, val_length=4, test_length=4)
    (f,) = walk_forward_folds(ts, exit_ts, cfg)
    # train i kept iff i + steps[i] ≤ 12: bar 1 reaches bar 14, bar 9 → 14, bar 10 → 13, bar 11 → 12 (kept)
    np.testing.assert_array_equal(f.train, [0, 2, 3, 4, 5, 6, 7, 8, 11])
    # val j kept iff j + steps[j] ≤ 16: 12 → 21 no, 13 → 18 no, 14 → 15 yes, 15 → 19 no
    np.testing.assert_array_equal(f.val, [14])
    np.testing.assert_array_equal(f.test, [16, 17, 18, 19])


def test_expanding_training_starts_at_the_history_start_and_grows_by_the_step():
    ts = bars(100)
    folds = walk_forward_folds(ts, full_horizon(ts, 2), cfg_bars(mode="expanding", step_length=20))
    assert [f.train_start_ms for f in folds] == [T0] * 3
    assert [(f.train_end_ms - f.train_start_ms) // MINUTE_MS for f in folds] == [40, 60, 80]
    assert [len(f.train) for f in folds] == [38, 58, 78]
    rolling = walk_forward_folds(ts, full_horizon(ts, 2), cfg_bars(step_length=20))
    assert [(f.train_end_ms - f.train_start_ms) // MINUTE_MS for f in rolling] == [40, 40, 40]
    assert [len(f.train) for f in rolling] == [38, 38, 38]


def test_anchor_end_puts_the_last_test_window_on_the_latest_bars():
    ts = bars(105)
    folds = walk_forward_folds(ts, full_horizon(ts, 1), cfg_bars(anchor="end"))
    assert len(folds) == 5
    assert folds[-1].test_end_ms == T0 + 105 * MINUTE_MS
    np.testing.assert_array_equal(folds[-1].test, np.arange(95, 105))
    assert folds[0].train_start_ms == T0 + 5 * MINUTE_MS  # the oldest 5 bars are the unused remainder
    assert [f.index for f in folds] == list(range(5))
    assert [f.test_start_ms for f in folds] == sorted(f.test_start_ms for f in folds)


def test_short_history_in_bars_and_too_short_history_error():
    ts = bars(30)
    cfg = WalkForwardConfig(length_unit="bars", train_length=12, val_length=4, test_length=4, step_length=5,
                            horizon_bars=2, anchor="start")  # fmt: skip
    folds = walk_forward_folds(ts, None, cfg)  # exits default to the full horizon
    assert [(int(f.train[0]), int(f.train[-1]), int(f.test[0])) for f in folds] == [
        (0, 9, 16),
        (5, 14, 21),
        (10, 19, 26),
    ]
    with pytest.raises(ConfigError, match="history spans"):
        walk_forward_folds(bars(19), None, cfg)


def test_default_config_is_the_spec_180_30_30_days_and_days_windows_are_exact():
    assert WalkForwardConfig().lengths_ms() == (180 * DAY_MS, 30 * DAY_MS, 30 * DAY_MS, 30 * DAY_MS)
    ts = bars(10 * 1440)
    cfg = WalkForwardConfig(train_length=6, val_length=1, test_length=1, horizon_bars=60, anchor="start")
    folds = walk_forward_folds(ts, None, cfg)
    assert len(folds) == 3
    assert folds[0].val_start_ms == T0 + 6 * DAY_MS
    assert len(folds[0].train) == 6 * 1440 - 60
    assert len(folds[0].val) == 1440 - 60
    assert len(folds[0].test) == 1440


def test_fractional_days_of_whole_bars_are_accepted_and_fractional_bars_refused():
    cfg = WalkForwardConfig(train_length=2.7, val_length=0.7, test_length=1.1)
    assert cfg.lengths_ms() == (3888 * MINUTE_MS, 1008 * MINUTE_MS, 1584 * MINUTE_MS, 1584 * MINUTE_MS)
    with pytest.raises(ValueError, match="whole number"):
        WalkForwardConfig(train_length=0.0001)
    with pytest.raises(ValueError, match="whole number"):
        WalkForwardConfig(length_unit="bars", train_length=10.5)
    with pytest.raises(ValueError, match="extra"):
        WalkForwardConfig(train_days=10)


def test_stacked_symbols_in_any_order_fold_by_time():
    ts = np.concatenate([bars(60), bars(60)])
    exit_ts = full_horizon(ts, 2)
    order = np.random.default_rng(1).permutation(len(ts))
    cfg = cfg_bars(train_length=30, val_length=10, test_length=10)
    ref = walk_forward_folds(ts, exit_ts, cfg)
    got = walk_forward_folds(ts[order], exit_ts[order], cfg)
    assert len(ref) == len(got) == 2
    for a, b in zip(ref, got, strict=True):
        for name in ("train", "val", "test"):
            assert sorted(ts[getattr(a, name)]) == sorted(ts[order][getattr(b, name)])
        assert len(a.train) == 2 * 28


def test_exits_before_ts_or_beyond_the_horizon_are_refused():
    ts = bars(10)
    with pytest.raises(ValueError, match="before its decision time"):
        walk_forward_folds(ts, ts - 1, cfg_bars(train_length=4, val_length=2, test_length=2))
    with pytest.raises(ValueError, match="beyond"):
        walk_forward_folds(
            ts, full_horizon(ts, 5), cfg_bars(train_length=4, val_length=2, test_length=2, horizon_bars=3)
        )


def test_max_folds_keeps_the_most_recent():
    ts = bars(100)
    folds = walk_forward_folds(ts, full_horizon(ts, 1), cfg_bars(max_folds=2))
    assert [f.index for f in folds] == [0, 1]
    assert folds[-1].test_end_ms == T0 + 100 * MINUTE_MS


def test_label_exit_times_from_labels_frame():
    ts = bars(4)
    np.testing.assert_array_equal(
        label_exit_ts_ms(ts, np.array([1.0, 5.0, -1.0, np.nan]), h_bars=10),
        ts + np.array([2, 6, 11, 11]) * MINUTE_MS,
    )
    np.testing.assert_array_equal(
        label_exit_ts_ms(ts, np.array([3, 3, -1, -1])), ts + np.array([4, 4, 1, 1]) * MINUTE_MS
    )
    frame = pd.DataFrame(
        {"ts": ts, "long_time_to_event_min": [1, 7, -1, 2], "short_time_to_event_min": [4, 2, -1, 2]}
    )
    np.testing.assert_array_equal(
        labels_exit_ts_ms(frame, h_bars=9), ts + np.array([5, 8, 10, 3]) * MINUTE_MS
    )


# --- the shared purge/embargo rule: training after an evaluation window (AFML's embargo) --------------


def test_embargo_after_an_evaluation_window_starts_after_its_labels_end():
    h, e = 3, 4
    ts = bars(60)
    exit_ts = full_horizon(ts, h)
    window = (T0 + 20 * MINUTE_MS, T0 + 30 * MINUTE_MS)  # bars 20..29; bar 29's label ends at bar 33's close
    keep = purge_mask(ts, exit_ts, [window], e * MINUTE_MS)
    kept = np.flatnonzero(keep)
    assert kept[kept < 20].max() == 20 - h - 1 - e  # before: label ends E bars before the window
    assert kept[kept >= 20].min() == 30 + h + e  # after: starts E bars after the window's labels end
    assert keep.sum() == 60 - (10 + 2 * h + 2 * e)


# --- CPCV ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(6, 2), (5, 1), (7, 3), (4, 2)])
def test_cpcv_counts_split_membership_and_paths(n, k):
    ts = bars(140)
    splits = cpcv_splits(ts, full_horizon(ts, 2), n, k)
    assert len(splits) == math.comb(n, k)
    appearances = np.zeros(n, int)
    for s in splits:
        for g in s.test_groups:
            appearances[g] += 1
        assert set(np.unique(s.test_group_of)) == set(s.test_groups)
        assert not set(s.train) & set(s.test)
    assert (appearances == math.comb(n - 1, k - 1)).all()
    paths = cpcv_paths(n, k)
    assert paths.shape == (k * math.comb(n, k) // n, n)
    for g in range(n):  # every (split, group) test pair is used by exactly one path
        assert sorted(paths[:, g]) == [s.index for s in splits if g in s.test_groups]


def test_cpcv_train_never_overlaps_a_test_group_and_the_embargo_is_exact():
    h, e = 2, 3
    ts = bars(60)
    exit_ts = full_horizon(ts, h)
    bounds = cpcv_group_bounds(ts, 6)
    assert [(b - T0) // MINUTE_MS for b, _ in bounds] == [0, 10, 20, 30, 40, 50]
    splits = cpcv_splits(ts, exit_ts, 6, 2, embargo_bars=e)
    for s in splits:
        test_bars = label_bars(ts, exit_ts, s.test)
        assert not label_bars(ts, exit_ts, s.train) & test_bars
    # test groups 1 and 4: train bars 0..(10 − h − 1 − e), after group 1: from 20 + h + e, etc.
    s = next(s for s in splits if s.test_groups == (1, 4))
    expected = [
        i for i in range(60) if i <= 10 - h - 1 - e or 20 + h + e <= i <= 40 - h - 1 - e or i >= 50 + h + e
    ]
    np.testing.assert_array_equal(s.train, expected)
    # adjacent test groups 2, 3 act as one block
    s = next(s for s in splits if s.test_groups == (2, 3))
    np.testing.assert_array_equal(s.test, np.arange(20, 40))
    assert s.train.max() == 59 and 40 + h + e in s.train and 40 + h + e - 1 not in s.train


def test_cpcv_paths_assemble_every_sample_once_per_path():
    ts = bars(36)
    splits = cpcv_splits(ts, full_horizon(ts, 1), 6, 2)
    paths = cpcv_paths(6, 2)
    # value = 1000·split + sample: the path tells which split predicted each sample
    values = [1000.0 * s.index + s.test for s in splits]
    out = assemble_paths(splits, paths, values)
    assert out.shape == (5, 36)
    assert np.isfinite(out).all()
    for p in range(5):
        for g, (start, end) in enumerate(cpcv_group_bounds(ts, 6)):
            members = np.flatnonzero((ts >= start) & (ts < end))
            np.testing.assert_array_equal(out[p, members], 1000.0 * paths[p, g] + members)


def test_cpcv_embargo_fraction_is_of_the_whole_timeline():
    ts = bars(100)
    a = cpcv_splits(ts, full_horizon(ts, 1), 5, 1, embargo_fraction=0.03)
    b = cpcv_splits(ts, full_horizon(ts, 1), 5, 1, embargo_bars=3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train, y.train)


# --- property: random exits and windows ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(40, 160),
    h=st.integers(1, 8),
    e=st.integers(0, 5),
    lengths=st.tuples(st.integers(5, 30), st.integers(0, 10), st.integers(1, 10)),
    mode=st.sampled_from(["rolling", "expanding"]),
    anchor=st.sampled_from(["start", "end"]),
    seed=st.integers(0, 2**31),
)
def test_no_training_or_validation_label_reaches_into_later_windows(n, h, e, lengths, mode, anchor, seed):
    train, val, test = lengths
    if train + val + test > n:
        return
    ts = bars(n)
    exit_ts = ts + np.random.default_rng(seed).integers(1, h + 2, n) * MINUTE_MS
    cfg = WalkForwardConfig(length_unit="bars", train_length=train, val_length=val, test_length=test,
                            mode=mode, anchor=anchor, embargo_bars=e, horizon_bars=h)  # fmt: skip
    for f in walk_forward_folds(ts, exit_ts, cfg):
        assert (exit_ts[f.train] <= f.val_start_ms - e * MINUTE_MS).all()
        assert (exit_ts[f.val] <= f.test_start_ms - e * MINUTE_MS).all()
        assert (ts[f.train] >= f.train_start_ms).all() and (ts[f.train] < f.train_end_ms).all()
        np.testing.assert_array_equal(ts[f.test], np.arange(f.test_start_ms, f.test_end_ms, MINUTE_MS))
        # a sample of the window is dropped only for a reason
        window = np.flatnonzero((ts >= f.train_start_ms) & (ts < f.train_end_ms))
        dropped = np.setdiff1d(window, f.train)
        assert (exit_ts[dropped] > f.val_start_ms - e * MINUTE_MS).all()
