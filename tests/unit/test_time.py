"""``core.time``: epoch-ms text and parsing."""

from __future__ import annotations

import numpy as np
import pytest

from core.time import DAY_MS, MINUTE_MS, ms_to_text, parse_utc


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01 00:00"),
        (1_746_316_800_000, "2025-05-04 00:00"),
        (1_746_316_800_000 + 15 * 60 * MINUTE_MS + 33 * MINUTE_MS, "2025-05-04 15:33"),
        (1_746_316_800_000 + MINUTE_MS - 1, "2025-05-04 00:00"),  # truncated, not rounded
        (1_735_689_599_999, "2024-12-31 23:59"),  # the last millisecond of a year
        (-1, "1969-12-31 23:59"),
        (np.int64(1_709_164_800_000), "2024-02-29 00:00"),  # numpy int; a leap day
    ],
)
def test_ms_to_text_gives_the_utc_minute(ts_ms, text):
    assert ms_to_text(ts_ms) == text


def test_ms_to_text_with_seconds():
    assert ms_to_text(1_746_372_836_999, seconds=True) == "2025-05-04 15:33:56"
    assert ms_to_text(0, seconds=True) == "1970-01-01 00:00:00"


def test_ms_to_text_reads_back_with_parse_utc():
    for ts in range(0, 3 * DAY_MS, 7 * 60 * MINUTE_MS + 13 * MINUTE_MS):
        assert parse_utc(ms_to_text(ts)) == ts - ts % MINUTE_MS
