"""Which lake data a research run uses: ``select_data`` chooses the symbols and the period [start, end).

By default every symbol of the lake whose 1m candles span the whole period, the period being all of the
lake; the period is then narrowed to what every chosen symbol covers, so each fold's panel has every
symbol. A lake month holding synthetic rows is refused: research reports on real data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS, ms_to_text
from storage.lake import Lake

#: Shortest period research runs on, days.
MIN_DAYS = 3.0
#: A symbol whose candles start (end) within this of the period's start (end) counts as spanning it.
COVERAGE_SLACK_MS = DAY_MS
SYNTHETIC_SOURCE = "synthetic"


@dataclass(frozen=True)
class ResearchSelection:
    """The data a research run uses: symbols, the period [start_ms, end_ms) and what was left out."""

    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    bars: dict[str, int]
    sources: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS

    def describe(self) -> str:
        """One line: symbols and period, in UTC."""
        return (
            f"{len(self.symbols)} symbols ({', '.join(self.symbols)}), {ms_to_text(self.start_ms)} → "
            f"{ms_to_text(self.end_ms)} UTC ({self.days:.1f} days, {sum(self.bars.values()):,} symbol-bars of 1m)"
        )


def select_data(
    lake: Lake,
    symbols: Sequence[str] | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    min_days: float = MIN_DAYS,
) -> ResearchSelection:
    """Choose the symbols and the period [start, end) of a research run from the lake's ``candles_1m``.

    ``symbols`` None: every lake symbol whose candles span the period (within ``COVERAGE_SLACK_MS``),
    the period defaulting to all of the lake; given: each must have candles, and the period defaults
    to their common span. The period is then narrowed to the span every chosen symbol covers.
    Raises ConfigError naming what is missing: no candles, no symbol spanning the period, a period
    shorter than ``min_days``, or synthetic rows in the period.
    """
    have = lake.symbols("candles_1m")
    if not have:
        raise ConfigError(
            f"the lake at {lake.root} has no candles_1m: run `raytrade import PATH` or `raytrade history` first"
        )
    if symbols is not None:
        missing = [s for s in symbols if s not in have]
        if missing:
            raise ConfigError(f"no candles_1m in the lake at {lake.root} for {', '.join(missing)}")
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"symbols repeat: {', '.join(symbols)}")
    candidates = list(symbols) if symbols is not None else have
    spans: dict[str, tuple[int, int]] = {}
    for s in candidates:
        cov = lake.coverage("candles_1m", s)
        if cov is not None and cov.rows:
            spans[s] = (cov.first_ts, cov.last_ts + MINUTE_MS)
    if not spans:
        raise ConfigError(f"the lake at {lake.root} has no candle rows for {', '.join(candidates)}")
    if symbols is not None:
        lo, hi = max(a for a, _ in spans.values()), min(b for _, b in spans.values())
    else:
        lo, hi = min(a for a, _ in spans.values()), max(b for _, b in spans.values())
    start = _ceil_minute(start_ms) if start_ms is not None else lo
    end = _floor_minute(end_ms) if end_ms is not None else hi
    if end <= start:
        raise ConfigError(f"empty period: {ms_to_text(start)} → {ms_to_text(end)} UTC")
    chosen: list[str] = []
    skipped: dict[str, str] = {}
    for s in candidates:
        first, stop = spans.get(s, (None, None))
        if first is None or stop is None:
            skipped[s] = "no candle rows"
        elif first > start + COVERAGE_SLACK_MS or stop < end - COVERAGE_SLACK_MS:
            skipped[s] = f"candles cover {ms_to_text(first)} → {ms_to_text(stop)} only"
        else:
            chosen.append(s)
    if symbols is not None and skipped:
        raise ConfigError(
            f"not every symbol spans {ms_to_text(start)} → {ms_to_text(end)} UTC: "
            + "; ".join(f"{s}: {why}" for s, why in skipped.items())
            + " (choose --start/--end inside their common span)"
        )
    if not chosen:
        raise ConfigError(
            f"no symbol of the lake spans {ms_to_text(start)} → {ms_to_text(end)} UTC; narrow it with --start/--end"
        )
    start = max(start, *(spans[s][0] for s in chosen))
    end = min(end, *(spans[s][1] for s in chosen))
    if (end - start) / DAY_MS < min_days:
        raise ConfigError(
            f"{(end - start) / DAY_MS:.2f} days of common history ({ms_to_text(start)} → {ms_to_text(end)} UTC) for "
            f"{', '.join(chosen)}: research needs at least {min_days:g}"
        )
    bars: dict[str, int] = {}
    sources: set[str] = set()
    for s in chosen:
        bars[s] = len(lake.read("candles_1m", s, start, end, columns=("close",)))
        months = _months(start, end)
        for month, srcs in lake.sources("candles_1m", s).items():
            if month not in months:
                continue
            if any(src == SYNTHETIC_SOURCE for src in srcs):
                raise ConfigError(
                    f"candles_1m of {s} in {month} hold SYNTHETIC rows: research runs on real data only; "
                    "use a separate RAYTRADE_DATA_DIR (or --start/--end outside the synthetic months)"
                )
            sources.update(srcs)
    return ResearchSelection(tuple(chosen), start, end, bars, tuple(sorted(sources)), skipped)


def _ceil_minute(ts_ms: int) -> int:
    return -(-int(ts_ms) // MINUTE_MS) * MINUTE_MS


def _floor_minute(ts_ms: int) -> int:
    return int(ts_ms) // MINUTE_MS * MINUTE_MS


def _months(start_ms: int, end_ms: int) -> set[str]:
    months = pd.period_range(pd.Timestamp(start_ms, unit="ms"), pd.Timestamp(end_ms - 1, unit="ms"), freq="M")
    return {str(m) for m in months}
