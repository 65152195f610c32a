"""Which lake data a research run uses: ``select_data`` chooses the symbols and the period [start, end).

Symbols are chosen by coverage: the share of the period's minutes that have a 1m candle must reach
``MIN_COVERAGE``, whatever the first and last candles are. The period is a stretch of the lake
without a gap, a run of at least ``GAP_MS`` in which no candidate symbol has a candle: by default
the longest such stretch, the gaps it leaves out named in ``ResearchSelection.warnings``; a period
given with --start/--end that holds a gap is refused, naming the gap's dates and length. The period
is then narrowed to what every chosen symbol covers, so each fold's panel has every symbol. A lake
month holding synthetic rows is refused: research reports on real data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import ConfigError
from core.time import DAY_MS, MINUTE_MS, ms_to_text
from storage.lake import Lake

#: Shortest period research runs on, days.
MIN_DAYS = 3.0
#: A run of missing 1m candles at least this long is a gap: research does not run across one where no
#: symbol has candles, and a chosen symbol's own gaps are named. Shorter holes (exchange maintenance,
#: a late dump) only lower the symbol's coverage.
GAP_MS = DAY_MS
#: Share of the period's minutes a symbol needs candles for to be chosen. 0.95 lets a month lose a
#: day and a half to outages; two months a year apart cover 17% of the year and are refused.
MIN_COVERAGE = 0.95
SYNTHETIC_SOURCE = "synthetic"

Span = tuple[int, int]


@dataclass(frozen=True)
class ResearchSelection:
    """The data a research run uses: symbols, the period [start_ms, end_ms), what was left out and why,
    each chosen symbol's coverage (share of the period's minutes with a candle) and warnings about
    gaps in the lake."""

    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    bars: dict[str, int]
    sources: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    coverage: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / DAY_MS

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS

    def describe(self) -> str:
        """One line: symbols and period, in UTC, and the share of symbol-minutes with a candle."""
        bars = sum(self.bars.values())
        share = bars / max(1, self.minutes * len(self.symbols))
        return (
            f"{len(self.symbols)} symbols ({', '.join(self.symbols)}), {ms_to_text(self.start_ms)} → "
            f"{ms_to_text(self.end_ms)} UTC ({self.days:.1f} days, {bars:,} symbol-bars of 1m, "
            f"{_share(share)} of the period's minutes)"
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

    ``symbols`` None: every lake symbol with candles for at least ``MIN_COVERAGE`` of the period's
    minutes, the period being the longest stretch of the lake (within ``start_ms``/``end_ms`` when
    given) without a gap; given: each must have such coverage, and the period is the longest stretch
    all of them cover. The period is then narrowed to the span every chosen symbol covers. Raises
    ConfigError naming what is missing: no candles, a gap inside a period the caller gave (its dates
    and length), no symbol covering the period, a period shorter than ``min_days``, or synthetic rows.
    """
    have = lake.symbols("candles_1m")
    if not have:
        others = [d for d in lake.datasets() if d.startswith("candles_")]
        found = f" (it has {', '.join(others)}; research needs 1m candles)" if others else ""
        raise ConfigError(
            f"the lake at {lake.root} has no candles_1m{found}: run `raytrade import PATH` or "
            "`raytrade history` first"
        )
    if symbols is not None:
        missing = [s for s in symbols if s not in have]
        if missing:
            raise ConfigError(f"no candles_1m in the lake at {lake.root} for {', '.join(missing)}")
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"symbols repeat: {', '.join(symbols)}")
    candidates = list(symbols) if symbols is not None else have
    lo = _ceil_minute(start_ms) if start_ms is not None else None
    hi = _floor_minute(end_ms) if end_ms is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise ConfigError(f"empty period: {ms_to_text(lo)} → {ms_to_text(hi)} UTC")
    times = {s: _minutes(lake, s, lo, hi) for s in candidates}
    empty = [s for s, ts in times.items() if not len(ts)]
    if len(empty) == len(candidates) or (symbols is not None and empty):
        where = "" if lo is None and hi is None else f" in {_period(lo, hi)}"
        raise ConfigError(f"the lake at {lake.root} has no candle rows{where} for {', '.join(empty)}")
    segments = {s: _segments(ts) for s, ts in times.items() if len(ts)}
    if symbols is None:
        stretches = _union(list(segments.values()))
    else:
        stretches = _intersection(list(segments.values()))
        if not stretches:
            raise ConfigError(
                f"{', '.join(symbols)} have no candles at the same time"
                + ("" if lo is None and hi is None else f" in {_period(lo, hi)}")
                + ": "
                + "; ".join(f"{s}: {_spans_text(segs)}" for s, segs in segments.items())
            )
    gaps = [(a[1], b[0]) for a, b in zip(stretches, stretches[1:], strict=False)]
    if symbols is None:
        who, missing_in = "the lake's 1m candles have", dict.fromkeys(gaps, "")
    else:
        who = f"{', '.join(symbols)} {'has' if len(symbols) == 1 else 'have'}"
        missing_in = {g: _missing_for(times, g) for g in gaps}
    gaps_text = "; ".join(f"no candles{missing_in[g]} {_gap_text(g)}" for g in gaps)
    if gaps and (start_ms is not None or end_ms is not None):
        raise ConfigError(
            f"{who} a gap inside {_period(lo, hi)}: {gaps_text}. Research does not run across a gap: "
            "choose --start/--end on one side of it"
        )
    start, end = max(stretches, key=lambda sp: (sp[1] - sp[0], sp[0]))
    # a bound the caller gave is the period coverage is measured against, even where the data start later
    start, end = lo if lo is not None else start, hi if hi is not None else end
    warnings: list[str] = []
    if gaps:
        left_out = [sp for sp in stretches if sp != (start, end)]
        warnings.append(
            f"{who} {_count(len(gaps), 'gap')}: {gaps_text}. Research uses the longest stretch without "
            f"one, {_span_text((start, end))}, and leaves out "
            + "; ".join(_span_text(sp) for sp in left_out)
            + " (choose another with --start/--end)"
        )
    share = {s: _present(times[s], start, end) / ((end - start) // MINUTE_MS) for s in candidates}
    chosen = [s for s in candidates if share[s] >= MIN_COVERAGE]
    skipped = {s: _why_short(times[s], start, end, share[s]) for s in candidates if share[s] < MIN_COVERAGE}
    if symbols is not None and skipped:
        raise ConfigError(
            f"not every symbol has candles for {MIN_COVERAGE:.0%} of {_period(start, end)}: "
            + "; ".join(f"{s}: {why}" for s, why in skipped.items())
            + " (choose --start/--end inside their common span)"
        )
    if not chosen:
        raise ConfigError(
            f"no symbol of the lake has candles for {MIN_COVERAGE:.0%} of {_period(start, end)}: "
            + "; ".join(f"{s}: {why}" for s, why in skipped.items())
            + "; narrow it with --start/--end"
        )
    start = max(start, *(int(times[s][np.searchsorted(times[s], start)]) for s in chosen))
    end = min(end, *(int(times[s][np.searchsorted(times[s], end) - 1]) + MINUTE_MS for s in chosen))
    if (end - start) / DAY_MS < min_days:
        raise ConfigError(
            f"{(end - start) / DAY_MS:.2f} days of common history ({ms_to_text(start)} → {ms_to_text(end)} UTC) for "
            f"{', '.join(chosen)}: research needs at least {min_days:g}"
        )
    bars = {s: _present(times[s], start, end) for s in chosen}
    minutes = (end - start) // MINUTE_MS
    for s in chosen:
        holes = [g for g in _holes(times[s], start, end) if g[1] - g[0] >= GAP_MS]
        if holes:
            warnings.append(
                f"{s} has no candles {'; '.join(_gap_text(g) for g in holes)} inside the period "
                f"({_share(bars[s] / minutes)} of its minutes covered): features and labels run across the hole"
            )
    sources: set[str] = set()
    months = _months(start, end)
    for s in chosen:
        for month, srcs in lake.sources("candles_1m", s).items():
            if month not in months:
                continue
            if any(src == SYNTHETIC_SOURCE for src in srcs):
                raise ConfigError(
                    f"candles_1m of {s} in {month} hold SYNTHETIC rows: research runs on real data only; "
                    "use a separate RAYTRADE_DATA_DIR (or --start/--end outside the synthetic months)"
                )
            sources.update(srcs)
    coverage = {s: bars[s] / minutes for s in chosen}
    return ResearchSelection(
        tuple(chosen), start, end, bars, tuple(sorted(sources)), skipped, coverage, tuple(warnings)
    )


def _minutes(lake: Lake, symbol: str, lo: int | None, hi: int | None) -> np.ndarray:
    """The symbol's 1m candle times in [lo, hi), ascending, on the minute grid."""
    ts = np.asarray(lake.read("candles_1m", symbol, lo, hi, columns=("ts",))["ts"], dtype=np.int64)
    return ts[ts % MINUTE_MS == 0]


def _segments(ts: np.ndarray) -> list[Span]:
    """The stretches [first, last + 1 minute) of ascending minute times ``ts`` between holes of at least
    ``GAP_MS``."""
    breaks = np.flatnonzero(np.diff(ts) - MINUTE_MS >= GAP_MS)
    firsts = np.concatenate([ts[:1], ts[breaks + 1]])
    lasts = np.concatenate([ts[breaks], ts[-1:]])
    return [(int(a), int(b) + MINUTE_MS) for a, b in zip(firsts, lasts, strict=True)]


def _union(segment_lists: list[list[Span]]) -> list[Span]:
    """The stretches covered by any of the lists, merged across holes shorter than ``GAP_MS``."""
    out: list[Span] = []
    for a, b in sorted(sp for segs in segment_lists for sp in segs):
        if out and a - out[-1][1] < GAP_MS:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _intersection(segment_lists: list[list[Span]]) -> list[Span]:
    """The stretches covered by every list."""
    out = segment_lists[0]
    for segs in segment_lists[1:]:
        out = [(max(a, c), min(b, d)) for a, b in out for c, d in segs if max(a, c) < min(b, d)]
    return sorted(out)


def _present(ts: np.ndarray, start: int, end: int) -> int:
    return int(np.searchsorted(ts, end) - np.searchsorted(ts, start))


def _missing_for(times: dict[str, np.ndarray], gap: Span) -> str:
    """' for SYMBOL, …': the symbols lacking candles somewhere in ``gap``."""
    minutes = (gap[1] - gap[0]) // MINUTE_MS
    return " for " + ", ".join(s for s, ts in times.items() if _present(ts, gap[0], gap[1]) < minutes)


def _holes(ts: np.ndarray, start: int, end: int) -> list[Span]:
    """The runs [from, to) of [start, end) without a candle, longest first."""
    inside = ts[(ts >= start) & (ts < end)]
    if not len(inside):
        return [(start, end)]
    edges = np.concatenate([[start - MINUTE_MS], inside, [end]])
    at = np.flatnonzero(np.diff(edges) > MINUTE_MS)
    holes = [(int(edges[i]) + MINUTE_MS, int(edges[i + 1])) for i in at]
    return sorted(holes, key=lambda h: (h[0] - h[1], h[0]))


def _why_short(ts: np.ndarray, start: int, end: int, share: float) -> str:
    inside = ts[(ts >= start) & (ts < end)]
    if not len(inside):
        return f"no candles in {_period(start, end)}"
    hole = _holes(ts, start, end)[0]
    return (
        f"candles cover {ms_to_text(int(inside[0]))} → {ms_to_text(int(inside[-1]) + MINUTE_MS)} with "
        f"{_share(share)} of the period's minutes (< {MIN_COVERAGE:.0%}); largest hole {_gap_text(hole)}"
    )


def _days(ms: int) -> str:
    days = ms / DAY_MS
    return f"{days:.1f} days" if days >= 1 else f"{ms / 3_600_000:.1f} hours"


def _gap_text(gap: Span) -> str:
    return f"{ms_to_text(gap[0])} → {ms_to_text(gap[1])} UTC ({_days(gap[1] - gap[0])})"


def _span_text(span: Span) -> str:
    return f"{ms_to_text(span[0])} → {ms_to_text(span[1])} ({_days(span[1] - span[0])})"


def _spans_text(spans: list[Span]) -> str:
    return ", ".join(_span_text(sp) for sp in spans)


def _period(lo: int | None, hi: int | None) -> str:
    return (
        f"{'the start' if lo is None else ms_to_text(lo)} → {'the end' if hi is None else ms_to_text(hi)} UTC"
    )


def _share(x: float) -> str:
    return f"{x:.1%}" if x < 0.9995 else "100%"


def _count(n: int, word: str) -> str:
    return f"{'a' if n == 1 else n} {word}{'' if n == 1 else 's'}"


def _ceil_minute(ts_ms: int) -> int:
    return -(-int(ts_ms) // MINUTE_MS) * MINUTE_MS


def _floor_minute(ts_ms: int) -> int:
    return int(ts_ms) // MINUTE_MS * MINUTE_MS


def _months(start_ms: int, end_ms: int) -> set[str]:
    months = pd.period_range(pd.Timestamp(start_ms, unit="ms"), pd.Timestamp(end_ms - 1, unit="ms"), freq="M")
    return {str(m) for m in months}
