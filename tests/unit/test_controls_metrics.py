"""The controls' yardstick: the pooled out-of-sample span and the recovery ratio (``tune.controls``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.time import MINUTE_MS
from tune.controls import pooled_span, recovery


def test_pooled_span_runs_from_first_test_bar_to_one_minute_past_the_last() -> None:
    ts = np.array([5, 1, 3, 2, 4, 6], dtype=np.int64) * MINUTE_MS  # several symbols stack unsorted rows
    assert pooled_span(ts, [np.array([1, 3]), np.array([4, 0])]) == (1 * MINUTE_MS, 6 * MINUTE_MS)


def test_pooled_span_of_empty_test_windows_is_an_error() -> None:
    with pytest.raises(ValueError, match="no rows"):
        pooled_span(np.arange(3, dtype=np.int64), [np.array([], dtype=np.int64)])


def test_recovery_is_the_share_of_the_oracle_sharpe() -> None:
    assert recovery(20.0, 40.0) == 0.5
    assert recovery(-10.0, 40.0) == -0.25


def test_recovery_of_a_pipeline_that_never_traded_is_zero() -> None:
    assert recovery(math.nan, 40.0) == 0.0


def test_recovery_without_a_positive_oracle_is_undefined() -> None:
    assert math.isnan(recovery(10.0, -5.0))
    assert math.isnan(recovery(10.0, math.nan))
