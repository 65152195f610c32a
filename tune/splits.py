"""Walk-forward folds and combinatorial purged cross-validation (spec 001 §9.1; López de Prado, AFML ch. 7, 12).

Exact semantics (tests/unit/test_splits.py checks each sentence on hand-built timelines):

Samples. Sample i has the open time ``ts_i`` of its decision bar and the exit time ``exit_i`` of its
label (epoch ms). For ``labels_1m``, ``exit = ts + (1 + time_to_event_min)·1m``, the close of the exit
bar (``label_exit_ts_ms``). Its label interval is the half-open ``[ts_i, exit_i)``: the bars, by open
time, from its decision bar to its exit bar; a sample always holds at least its decision bar
(``exit_i`` is raised to ``ts_i + bar_ms``). Its features also use bars before ``ts_i``: that past is
known at the decision and is no leak.

Windows. A window is a half-open interval ``[start, end)`` of decision times; sample i is in it when
``start ≤ ts_i < end``. An evaluation window's extent is ``[start, info_end)`` with
``info_end = max(end, max exit_j of its samples)``: every bar its samples' labels use.

Fitting and evaluation. In a walk-forward fold the training set is fitted and evaluated on the
validation and test windows, and the validation set (early stopping, model selection) is evaluated on
the test window. In CPCV the training set is evaluated on each test group.

Purge. A fitting sample is dropped when its label interval overlaps the extent of a window it is
evaluated on: ``ts_i < info_end and exit_i > start``.

Embargo E (whole bars, in ms). A fitting sample is also dropped when it comes within E of such an
extent: its label ends less than E before the window starts (``exit_i > start − E``) or it starts less
than E after the window's labels end (``ts_i < info_end + E``). Purge and embargo together: a fitting
sample is kept for a window iff ``exit_i ≤ start − E or ts_i ≥ info_end + E``. The after side is
López de Prado's embargo (training that resumes after a test window: CPCV); the before side is the
gap at the forward boundaries of a walk-forward fold (train → validation, validation → test, spec
§9.1), where nothing is fitted after an evaluation window. With contiguous 1m bars and full-horizon
labels (``exit = ts + (H + 1)·1m``) the last ``H + E`` training bars before a boundary are dropped.
Test samples are never dropped, so consecutive test windows (step = test length) tile the history
into one continuous out-of-sample backtest.

Inputs need not be sorted (several symbols may be stacked); folds hold positions into them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS


class WalkForwardConfig(BaseModel):
    """Walk-forward folds: window lengths, step, rolling or expanding training window, embargo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    length_unit: Literal["days", "bars"] = Field(
        "days", description="unit of train/val/test/step lengths: days, or bars of bar_ms"
    )
    train_length: float = Field(180, gt=0, description="training window, in length_unit")
    val_length: float = Field(30, ge=0, description="validation window, in length_unit (0: none)")
    test_length: float = Field(30, gt=0, description="test window, in length_unit")
    step_length: float | None = Field(
        None, gt=0, description="shift between folds, in length_unit (default: test_length)"
    )
    mode: Literal["rolling", "expanding"] = Field(
        "rolling",
        description="rolling: fixed training length; expanding: training starts at the history's start",
    )
    anchor: Literal["start", "end"] = Field(
        "end",
        description="end: the last test window ends with the history (the oldest remainder is unused); "
        "start: the first training window starts with it",
    )
    embargo_bars: int = Field(0, ge=0, description="embargo, in bars")
    embargo_fraction: float = Field(
        0.0, ge=0, lt=1, description="embargo as a fraction of the test window, rounded up to whole bars"
    )
    horizon_bars: int | None = Field(
        None,
        ge=1,
        description="label horizon in bars: exits default to ts + (horizon_bars + 1)·bar_ms, and given exits "
        "beyond that are refused",
    )
    bar_ms: int = Field(MINUTE_MS, gt=0, description="bar length, in ms")
    max_folds: int | None = Field(None, ge=1, description="keep only the most recent folds")

    @model_validator(mode="after")
    def _consistent(self) -> WalkForwardConfig:
        if self.embargo_bars and self.embargo_fraction:
            raise ValueError("give embargo_bars or embargo_fraction, not both")
        unit_ms = DAY_MS if self.length_unit == "days" else self.bar_ms
        for name in ("train_length", "val_length", "test_length", "step_length"):
            value = getattr(self, name)
            if value is None:
                continue
            length_ms = value * unit_ms
            if abs(length_ms - round(length_ms)) > 1e-3 or round(length_ms) % self.bar_ms:
                raise ValueError(
                    f"{name} = {value} {self.length_unit} is not a whole number of {self.bar_ms} ms bars"
                )
        return self

    def lengths_ms(self) -> tuple[int, int, int, int]:
        """Return (train, val, test, step) in ms."""
        unit_ms = DAY_MS if self.length_unit == "days" else self.bar_ms
        step = self.test_length if self.step_length is None else self.step_length
        train, val, test, step_ms = (
            round(x * unit_ms) for x in (self.train_length, self.val_length, self.test_length, step)
        )
        return train, val, test, step_ms

    def embargo_ms(self) -> int:
        """Return the embargo in ms (whole bars)."""
        if self.embargo_fraction:
            test_bars = self.lengths_ms()[2] // self.bar_ms
            return math.ceil(self.embargo_fraction * test_bars - 1e-9) * self.bar_ms
        return self.embargo_bars * self.bar_ms


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: positions (ascending) of its samples and its windows ``[start, end)`` in epoch ms."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_start_ms: int
    train_end_ms: int
    val_start_ms: int
    val_end_ms: int
    test_start_ms: int
    test_end_ms: int


@dataclass(frozen=True, slots=True)
class CPCVSplit:
    """One combinatorial purged split: the test groups, and positions (ascending) of train and test samples.

    ``test_group_of[k]`` is the group of ``test[k]``.
    """

    index: int
    test_groups: tuple[int, ...]
    train: np.ndarray
    test: np.ndarray
    test_group_of: np.ndarray


def label_exit_ts_ms(
    ts_ms: np.ndarray, time_to_event_min: np.ndarray, h_bars: int | None = None
) -> np.ndarray:
    """Return label exit times ``ts + (1 + time_to_event_min)·1m`` (epoch ms) of ``labels_1m`` rows.

    Rows without a label (time −1) get the full horizon ``ts + (h_bars + 1)·1m`` when ``h_bars`` is
    given (conservative), else ``ts + 1m`` (the decision bar only).
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    tte = np.asarray(time_to_event_min)
    if tte.shape != ts.shape:
        raise ValueError(f"time_to_event_min has shape {tte.shape}, ts has {ts.shape}")
    labelled = np.isfinite(tte) & (tte >= 0)
    minutes = np.where(labelled, np.nan_to_num(tte, nan=0.0), 0.0 if h_bars is None else float(h_bars))
    return ts + ((1 + minutes) * MINUTE_MS).astype(np.int64)


def labels_exit_ts_ms(labels: pd.DataFrame, h_bars: int | None = None) -> np.ndarray:
    """Return the exit time of each ``labels_1m`` row over both directions (the later of long and short).

    A row trains the long and the short models, so its label interval is the union of the two.
    """
    ts = labels["ts"].to_numpy(np.int64)
    return np.maximum(
        label_exit_ts_ms(ts, labels["long_time_to_event_min"].to_numpy(np.float64), h_bars),
        label_exit_ts_ms(ts, labels["short_time_to_event_min"].to_numpy(np.float64), h_bars),
    )


def _sample_times(
    ts_ms: np.ndarray, exit_ts_ms: np.ndarray | None, horizon_bars: int | None, bar_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    ts = np.asarray(ts_ms)
    if ts.ndim != 1 or len(ts) == 0:
        raise ValueError(f"ts_ms must be a non-empty 1-D array, got shape {ts.shape}")
    ts = ts.astype(np.int64)
    if exit_ts_ms is None:
        if horizon_bars is None:
            raise ValueError("give exit_ts_ms or horizon_bars: purging needs each label's end")
        return ts, ts + (horizon_bars + 1) * bar_ms
    exit_ts = np.asarray(exit_ts_ms).astype(np.int64)
    if exit_ts.shape != ts.shape:
        raise ValueError(f"exit_ts_ms has shape {exit_ts.shape}, ts_ms has {ts.shape}")
    if (exit_ts < ts).any():
        i = int(np.argmax(exit_ts < ts))
        raise ValueError(f"sample {i}: exit {exit_ts[i]} is before its decision time {ts[i]}")
    if horizon_bars is not None and (exit_ts > ts + (horizon_bars + 1) * bar_ms).any():
        i = int(np.argmax(exit_ts > ts + (horizon_bars + 1) * bar_ms))
        raise ValueError(f"sample {i}: exit {exit_ts[i]} is beyond ts + (horizon_bars + 1)·bar_ms")
    return ts, np.maximum(exit_ts, ts + bar_ms)


def _in_window(ts: np.ndarray, start_ms: int, end_ms: int) -> np.ndarray:
    return (ts >= start_ms) & (ts < end_ms)


def purge_mask(
    ts_ms: np.ndarray,
    exit_ts_ms: np.ndarray,
    windows: Sequence[tuple[int, int]],
    embargo_ms: int = 0,
) -> np.ndarray:
    """Return True for the samples that may be fitted next to the evaluation ``windows`` ``[start, end)``.

    A sample is kept iff for every window ``exit ≤ start − embargo_ms`` or ``ts ≥ info_end + embargo_ms``,
    ``info_end`` being the later of the window's end and its samples' latest exit (module docstring).
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    exit_ts = np.asarray(exit_ts_ms, dtype=np.int64)
    keep = np.ones(len(ts), dtype=bool)
    for start, end in windows:
        if end <= start:
            continue
        members = _in_window(ts, start, end)
        info_end = max(int(end), int(exit_ts[members].max())) if members.any() else int(end)
        keep &= (exit_ts <= start - embargo_ms) | (ts >= info_end + embargo_ms)
    return keep


def _fold_windows(cfg: WalkForwardConfig, first_ms: int, data_end_ms: int) -> list[tuple[int, int, int, int]]:
    """(train_start, train_end = val_start, val_end = test_start, test_end) of every complete fold, in time order."""
    train, val, test, step = cfg.lengths_ms()
    out: list[tuple[int, int, int, int]] = []
    k = 0
    while True:
        if cfg.anchor == "start":
            train_end = first_ms + train + k * step
            test_end = train_end + val + test
            if test_end > data_end_ms:
                break
        else:
            test_end = data_end_ms - k * step
            train_end = test_end - test - val
            if train_end - train < first_ms:
                break
        train_start = first_ms if cfg.mode == "expanding" else train_end - train
        out.append((train_start, train_end, train_end + val, test_end))
        k += 1
    return out if cfg.anchor == "start" else out[::-1]


def walk_forward_folds(
    ts_ms: np.ndarray, exit_ts_ms: np.ndarray | None = None, cfg: WalkForwardConfig | None = None
) -> list[Fold]:
    """Return the walk-forward folds of samples with decision times ``ts_ms`` and label exits ``exit_ts_ms``.

    Windows are contiguous: train ``[a, b)``, validation ``[b, c)``, test ``[c, d)``. Training samples
    are purged and embargoed against the validation and test windows, validation samples against the
    test window; test samples are all kept (module docstring). Only complete folds are returned (the
    test window ends by the last bar's close); folds whose training or test set is empty are skipped.
    Raises ConfigError when the history is too short for one fold.
    """
    cfg = cfg or WalkForwardConfig()
    ts, exit_ts = _sample_times(ts_ms, exit_ts_ms, cfg.horizon_bars, cfg.bar_ms)
    first_ms, data_end_ms = int(ts.min()), int(ts.max()) + cfg.bar_ms
    windows = _fold_windows(cfg, first_ms, data_end_ms)
    if not windows:
        train, val, test, _ = cfg.lengths_ms()
        raise ConfigError(
            f"walk-forward needs train + val + test = {(train + val + test) / DAY_MS:g} days "
            f"({(train + val + test) // cfg.bar_ms} bars) but the history spans "
            f"{(data_end_ms - first_ms) / DAY_MS:g} days ({(data_end_ms - first_ms) // cfg.bar_ms} bars)"
        )
    embargo = cfg.embargo_ms()
    folds: list[Fold] = []
    for train_start, val_start, test_start, test_end in windows:
        test_mask = _in_window(ts, test_start, test_end)
        val_mask = _in_window(ts, val_start, test_start) & purge_mask(
            ts, exit_ts, [(test_start, test_end)], embargo
        )
        train_mask = _in_window(ts, train_start, val_start) & purge_mask(
            ts, exit_ts, [(val_start, test_start), (test_start, test_end)], embargo
        )
        if not train_mask.any() or not test_mask.any():
            continue
        folds.append(
            Fold(
                index=len(folds),
                train=np.flatnonzero(train_mask),
                val=np.flatnonzero(val_mask),
                test=np.flatnonzero(test_mask),
                train_start_ms=train_start,
                train_end_ms=val_start,
                val_start_ms=val_start,
                val_end_ms=test_start,
                test_start_ms=test_start,
                test_end_ms=test_end,
            )
        )
    if cfg.max_folds is not None and len(folds) > cfg.max_folds:
        folds = [replace(f, index=i) for i, f in enumerate(folds[-cfg.max_folds :])]
    return folds


def cpcv_group_bounds(ts_ms: np.ndarray, n_groups: int, bar_ms: int = MINUTE_MS) -> list[tuple[int, int]]:
    """Split the timeline into ``n_groups`` contiguous windows ``[start, end)`` of (nearly) equal numbers of
    distinct decision times; the last ends one bar after the last decision time."""
    unique = np.unique(np.asarray(ts_ms, dtype=np.int64))
    if n_groups < 2 or n_groups > len(unique):
        raise ValueError(f"n_groups must be in [2, {len(unique)}] (distinct decision times), got {n_groups}")
    chunks = np.array_split(unique, n_groups)
    starts = [int(c[0]) for c in chunks]
    ends = [*starts[1:], int(unique[-1]) + bar_ms]
    return list(zip(starts, ends, strict=True))


def cpcv_splits(
    ts_ms: np.ndarray,
    exit_ts_ms: np.ndarray | None,
    n_groups: int = 6,
    n_test_groups: int = 2,
    *,
    embargo_bars: int = 0,
    embargo_fraction: float = 0.0,
    horizon_bars: int | None = None,
    bar_ms: int = MINUTE_MS,
) -> list[CPCVSplit]:
    """Return the C(n_groups, n_test_groups) combinatorial purged splits (AFML ch. 12).

    The timeline is cut into ``n_groups`` contiguous groups (``cpcv_group_bounds``); each split tests
    ``n_test_groups`` of them and trains on the rest, purged and embargoed against every test group
    (module docstring). ``embargo_fraction`` is a fraction of the whole timeline's bars (AFML), rounded
    up. Splits come in ``itertools.combinations`` order of the test groups.
    """
    if not 1 <= n_test_groups < n_groups:
        raise ValueError(f"n_test_groups must be in [1, n_groups - 1], got {n_test_groups} of {n_groups}")
    if embargo_bars and embargo_fraction:
        raise ValueError("give embargo_bars or embargo_fraction, not both")
    if embargo_bars < 0 or not 0 <= embargo_fraction < 1:
        raise ValueError(
            f"embargo_bars must be ≥ 0 and embargo_fraction in [0, 1), got {embargo_bars}, {embargo_fraction}"
        )
    ts, exit_ts = _sample_times(ts_ms, exit_ts_ms, horizon_bars, bar_ms)
    bounds = cpcv_group_bounds(ts, n_groups, bar_ms)
    if embargo_fraction:
        total_bars = (bounds[-1][1] - bounds[0][0]) // bar_ms
        embargo_ms = math.ceil(embargo_fraction * total_bars - 1e-9) * bar_ms
    else:
        embargo_ms = embargo_bars * bar_ms
    group_of = np.searchsorted(np.array([s for s, _ in bounds]), ts, side="right") - 1
    splits: list[CPCVSplit] = []
    for index, test_groups in enumerate(itertools.combinations(range(n_groups), n_test_groups)):
        test_mask = np.isin(group_of, test_groups)
        train_mask = ~test_mask & purge_mask(ts, exit_ts, [bounds[g] for g in test_groups], embargo_ms)
        test = np.flatnonzero(test_mask)
        splits.append(CPCVSplit(index, test_groups, np.flatnonzero(train_mask), test, group_of[test]))
    return splits


def cpcv_paths(n_groups: int, n_test_groups: int) -> np.ndarray:
    """Return the backtest paths of CPCV: ``paths[p, g]`` is the split whose model predicts group g on path p.

    There are φ = k/N·C(N, k) = C(N − 1, k − 1) paths; path p takes, for each group, the p-th split (in
    ``cpcv_splits`` order) that tests it, so every split's prediction of every test group is used once.
    """
    combos = list(itertools.combinations(range(n_groups), n_test_groups))
    n_paths = math.comb(n_groups - 1, n_test_groups - 1)
    paths = np.empty((n_paths, n_groups), dtype=np.int64)
    for g in range(n_groups):
        paths[:, g] = [i for i, c in enumerate(combos) if g in c]
    return paths


def assemble_paths(
    splits: Sequence[CPCVSplit], paths: np.ndarray, split_values: Sequence[np.ndarray]
) -> np.ndarray:
    """Stitch out-of-sample values into backtest paths: return an array (paths × samples).

    ``split_values[s]`` holds split s's values (predictions, returns) for ``splits[s].test``, in that order.
    Every sample belongs to one group, so every path covers every sample.
    """
    if len(split_values) != len(splits):
        raise ValueError(f"{len(split_values)} value arrays for {len(splits)} splits")
    n_samples = 1 + max(int(s.test.max()) for s in splits if len(s.test))
    out = np.full((paths.shape[0], n_samples), np.nan)
    for p in range(paths.shape[0]):
        for g, s in enumerate(paths[p]):
            split, values = splits[int(s)], np.asarray(split_values[int(s)], dtype=np.float64)
            if values.shape != split.test.shape:
                raise ValueError(f"split {s}: {values.shape[0]} values for {len(split.test)} test samples")
            mine = split.test_group_of == g
            out[p, split.test[mine]] = values[mine]
    return out
