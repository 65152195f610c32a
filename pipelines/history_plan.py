"""Planning and reporting of ``raytrade history``: which dumps, which REST gaps, what failed. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from core.errors import RaytradeError
from core.frames import layout
from core.time import DAY_MS, interval_ms, ms_to_datetime, parse_utc
from exchange.dumps import KINDS, DumpFile, daily_file, lake_dataset, monthly_file

DEFAULT_DATASETS: tuple[str, ...] = (
    "klines/1m",
    "markPriceKlines/1m",
    "premiumIndexKlines/1m",
    "fundingRate",
)
_LAKE_TO_SPEC = {"candles": "klines", "mark": "markPriceKlines", "premium": "premiumIndexKlines"}


@dataclass(frozen=True, slots=True)
class HistoryDataset:
    """A downloadable dataset: dump kind and interval (None for fundingRate)."""

    kind: str
    interval: str | None

    @property
    def name(self) -> str:
        """Return the CLI name: ``klines/1m`` or ``fundingRate``."""
        return self.kind if self.interval is None else f"{self.kind}/{self.interval}"

    @property
    def lake_dataset(self) -> str:
        """Return the lake dataset it is stored as (``candles_1m``, ``funding`` …)."""
        return lake_dataset(self.kind, self.interval)


def parse_datasets(items: str | Sequence[str]) -> tuple[HistoryDataset, ...]:
    """Parse ``klines/1m,markPriceKlines/1m,fundingRate`` (or lake names such as ``candles_1m``).

    Raise ValueError naming a dataset that is unknown or has no lake layout.
    """
    names = [s.strip() for s in items.split(",")] if isinstance(items, str) else [s.strip() for s in items]
    out: list[HistoryDataset] = []
    for name in filter(None, names):
        if name == "funding":
            name = "fundingRate"
        prefix, _, suffix = name.replace(":", "/").partition("/")
        if not suffix and "_" in name and name.split("_", 1)[0] in _LAKE_TO_SPEC:
            prefix, suffix = _LAKE_TO_SPEC[name.split("_", 1)[0]], name.split("_", 1)[1]
        if prefix not in KINDS:
            raise ValueError(f"unknown dataset {name!r}; expected e.g. {', '.join(DEFAULT_DATASETS)}")
        spec = HistoryDataset(prefix, None if prefix == "fundingRate" else (suffix or None))
        if spec.kind != "fundingRate":
            if spec.interval is None:
                raise ValueError(f"{name!r} needs an interval, e.g. {prefix}/1m")
            interval_ms(spec.interval)
        try:
            layout(spec.lake_dataset)
        except RaytradeError:
            raise ValueError(
                f"{name!r} has no lake dataset ({spec.lake_dataset} is not a known layout)"
            ) from None
        if spec not in out:
            out.append(spec)
    if not out:
        raise ValueError("no datasets given")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Failure:
    """Something that could not be fetched: symbol, dataset name, what (file or range) and why."""

    symbol: str
    dataset: str
    what: str
    reason: str
    unreachable: bool
    stored: bool = False  # the lake took rows of it before it failed


@dataclass(frozen=True, slots=True)
class HistoryReport:
    """Outcome of a history run. ``ok`` is False if anything could not be fetched."""

    downloaded: int
    skipped: int
    absent: tuple[str, ...]
    rest_ranges: int
    rows: dict[tuple[str, str], int]
    failures: tuple[Failure, ...]
    notes: tuple[str, ...] = ()
    rejected: dict[str, int] = field(default_factory=dict)  # rows refused by the door, by reason

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """Return a short human summary of what was fetched."""
        total = sum(self.rows.values())
        lines = [
            f"history: {self.downloaded} dump file(s) downloaded, {self.skipped} already done, "
            f"{len(self.absent)} not published, {self.rest_ranges} REST range(s); {total:,} row(s) stored in the lake"
        ]
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
            lines.append(
                f"  refused {sum(self.rejected.values()):,} row(s) at the data-quality door ({reasons})"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def failure_message(self) -> str:
        """Return what could not be fetched, grouped by symbol and dataset, and how to proceed."""
        if self.ok:
            return ""
        grouped: dict[tuple[str, str], list[Failure]] = defaultdict(list)
        for f in self.failures:
            grouped[(f.symbol, f.dataset)].append(f)
        reasons = sorted({f.reason for f in self.failures})
        unreachable = any(f.unreachable for f in self.failures)
        lines = [f"Could not fetch {len(self.failures)} file(s) or range(s):"]
        for (symbol, dataset), items in sorted(grouped.items()):
            lines.append(f"  {symbol} {dataset}: {_compact([f.what for f in items])}")
        lines.append("Because:")
        lines += [f"  - {r}" for r in reasons[:10]]
        if len(reasons) > 10:
            lines.append(f"  - … and {len(reasons) - 10} more")
        stored = [f for f in self.failures if f.stored]
        if not stored:
            lines.append("Nothing partial was kept for these. To proceed:")
        else:
            lines.append(
                f"The lake kept the rows stored before {len(stored)} of these failed (see above); "
                "they are not marked finished. To proceed:"
            )
        lines.append(
            "  - rerun the same command later: finished files are skipped, it resumes where it stopped;"
        )
        lines.append("  - or load local parquet/feather files with `raytrade import PATH`;")
        if unreachable:
            lines.append(
                "  - or point at a reachable mirror: RAYTRADE_HISTORY_BASE_URL (dumps), RAYTRADE_FAPI_URL (REST)."
            )
        else:
            lines.append("  - or set RAYTRADE_HISTORY_BASE_URL / RAYTRADE_FAPI_URL to another server.")
        return "\n".join(lines)


# Planning (pure) ----------------------------------------------------------------------------------
def month_starts(start_ms: int, end_ms: int) -> list[str]:
    """Return the months (``YYYY-MM``) that intersect [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return []
    first, last = ms_to_datetime(start_ms), ms_to_datetime(end_ms - 1)
    out = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def plan_monthly(
    spec: HistoryDataset, symbol: str, start_ms: int, end_ms: int, now_ms: int
) -> list[DumpFile]:
    """Return the monthly dumps of whole past months (before ``now_ms``'s month) within [start_ms, end_ms)."""
    this_month = parse_utc(ms_to_datetime(now_ms).strftime("%Y-%m-01"))
    stop = min(end_ms, now_ms)
    files = [monthly_file(spec.kind, symbol, m, spec.interval) for m in month_starts(start_ms, stop)]
    return [f for f in files if f.end_ms <= this_month]


def plan_daily(
    spec: HistoryDataset, symbol: str, start_ms: int, end_ms: int, now_ms: int, month: str | None = None
) -> list[DumpFile]:
    """Return the daily dumps of whole past days (before today) within [start_ms, end_ms).

    ``month`` None: the days of the current month; else the days of that month (a monthly fallback).
    fundingRate has no daily dumps.
    """
    if spec.kind == "fundingRate":
        return []
    today = now_ms - now_ms % DAY_MS
    if month is None:
        lo = parse_utc(ms_to_datetime(now_ms).strftime("%Y-%m-01"))
        hi = today
    else:
        period = monthly_file(spec.kind, symbol, month, spec.interval)
        lo, hi = period.start_ms, min(period.end_ms, today)
    lo, hi = max(lo, start_ms - start_ms % DAY_MS), min(hi, min(end_ms, now_ms))
    out = []
    day = lo - lo % DAY_MS
    while day < hi:
        if day + DAY_MS <= today:
            name = ms_to_datetime(day).strftime("%Y-%m-%d")
            out.append(daily_file(spec.kind, symbol, name, spec.interval or ""))
        day += DAY_MS
    return out


def uncovered(start_ms: int, end_ms: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the parts of [start_ms, end_ms) that no range in ``covered`` covers, merged and sorted."""
    gaps = []
    cursor = start_ms
    for lo, hi in sorted(covered):
        if hi <= cursor:
            continue
        if lo >= end_ms:
            break
        if lo > cursor:
            gaps.append((cursor, min(lo, end_ms)))
        cursor = max(cursor, hi)
        if cursor >= end_ms:
            break
    if cursor < end_ms:
        gaps.append((cursor, end_ms))
    return gaps


def _compact(items: list[str]) -> str:
    """Join failure items, folding runs of consecutive daily dates into ``first … last (n days)``."""
    monthly = [i.split(" ", 1)[1] for i in items if i.startswith("monthly ")]
    daily = sorted(i.split(" ", 1)[1] for i in items if i.startswith("daily "))
    other = [i for i in items if not i.startswith(("monthly ", "daily "))]
    parts = []
    if monthly:
        parts.append("monthly " + ", ".join(sorted(monthly)))
    if daily:
        runs: list[list[str]] = []
        for day in daily:
            if runs and parse_utc(day) - parse_utc(runs[-1][-1]) == DAY_MS:
                runs[-1].append(day)
            else:
                runs.append([day])
        text = ", ".join(r[0] if len(r) == 1 else f"{r[0]} … {r[-1]} ({len(r)} days)" for r in runs)
        parts.append("daily " + text)
    parts += other
    return "; ".join(parts)
