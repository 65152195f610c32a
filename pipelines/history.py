"""The ``raytrade history`` engine: Binance USDⓈ-M history into the lake, resumable and idempotent.

For every symbol × dataset × [start, end) it takes, in order:

1. monthly dumps for whole past months (a month just ended and not published yet falls back to
   its daily dumps),
2. daily dumps for the days of the current month before today,
3. REST (``exchange.binance.rest``) for whatever no dump covers: today, a day not published yet,
   a month the dump server does not have (funding has no daily dumps).

Finished dump files and REST ranges are recorded in ``<lake>/_downloads/manifest.jsonl`` and
skipped on a rerun; downloads go through ``.part`` files and are checksum-verified before parsing.
Whole dump files are stored even where they reach past [start, end). A 404 is normal; every other
failure is collected and reported with what could not be fetched and how to proceed, never
raised as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import RaytradeError, UnreachableError
from core.time import DAY_MS, interval_ms, ms_to_text
from exchange.binance.rest import BinanceRest
from exchange.dump_client import Downloaded, DumpClient
from exchange.dumps import DumpFile
from pipelines.door import write_through_door
from pipelines.history_plan import (
    DEFAULT_DATASETS,
    Failure,
    HistoryDataset,
    HistoryReport,
    month_starts,
    parse_datasets,
    plan_daily,
    plan_monthly,
    uncovered,
)
from storage.lake import Lake

__all__ = [
    "DEFAULT_DATASETS",
    "DownloadManifest",
    "Failure",
    "HistoryDataset",
    "HistoryReport",
    "OnFrame",
    "download_history",
    "month_starts",
    "parse_datasets",
    "plan_daily",
    "plan_monthly",
    "uncovered",
]

SOURCE_DUMP = "binance-dump"
SOURCE_REST = "binance-rest"
MANIFEST_PATH = Path("_downloads") / "manifest.jsonl"
#: A monthly dump missing this soon after its month ended may just be unpublished: try the daily
#: dumps. Older missing months had no trading (not listed yet, delisted): REST alone settles them.
MONTHLY_DUMP_LAG_MS = 10 * DAY_MS

#: ``on_frame(dataset, symbol, frame)``: called after each frame is in the lake (e.g. a database sink).
OnFrame = Callable[[str, str, pd.DataFrame], None]
#: ``on_rejected(events)``: called with the ``events`` rows of rows the door refused (e.g. a RejectionLog).
OnRejected = Callable[[list[dict[str, Any]]], object]


class _StoredThenFailed(RaytradeError):
    """The lake took (some of) an item's rows, then something failed: the item is not finished."""


class _Conflict(_StoredThenFailed):
    """Rows of an item differ from what the lake holds: the rest was stored, the item is not finished."""


class DownloadManifest:
    """Append-only record of finished dump files and REST ranges under ``<lake>/_downloads``."""

    def __init__(self, lake_root: Path) -> None:
        self.path = Path(lake_root) / MANIFEST_PATH
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that item is simply redone
                if isinstance(entry, dict) and "key" in entry:
                    self._entries[entry["key"]] = entry

    def done(self, key: str) -> bool:
        """Return True if ``key`` (a dump path or REST range key) finished before."""
        return key in self._entries

    def record(self, entry: dict[str, Any]) -> None:
        """Append a finished item (must have ``key``) and make it durable."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")
                out.flush()
                os.fsync(out.fileno())
            self._entries[entry["key"]] = entry

    def rest_ranges(self, dataset: str, symbol: str) -> list[tuple[int, int]]:
        """Return the [start_ms, end_ms) ranges fetched over REST for a lake dataset and symbol."""
        return [
            (int(e["start_ms"]), int(e["end_ms"]))
            for e in self._entries.values()
            if e.get("type") == "rest" and e.get("dataset") == dataset and e.get("symbol") == symbol
        ]


# Execution ----------------------------------------------------------------------------------------
@dataclass
class _Track:
    covered: list[tuple[int, int]] = field(default_factory=list)
    failed: list[tuple[int, int]] = field(default_factory=list)


class _NotAttempted(Exception):
    pass


def download_history(
    lake: Lake,
    symbols: Sequence[str],
    datasets: Sequence[HistoryDataset],
    start_ms: int,
    end_ms: int,
    now_ms: int,
    *,
    dumps: DumpClient,
    rest: BinanceRest | None,
    on_frame: OnFrame | None = None,
    progress: bool = True,
    max_workers: int = 4,
    console: Console | None = None,
    replace: bool = False,
    on_rejected: OnRejected | None = None,
) -> HistoryReport:
    """Fetch ``datasets`` of ``symbols`` over [start_ms, end_ms) (clipped to ``now_ms``) into ``lake``.

    Dumps first, REST for the rest (``rest`` None: no REST, uncovered ranges are reported). Never
    raises for a fetch problem: failures are in the report. Every frame passes the door
    (pipelines.door) before the lake: refused rows go to ``on_rejected`` as events, rows that differ
    from the lake are refused (the item is reported and not finished) unless ``replace``.
    ``on_frame`` runs after each lake write with the rows stored; an item is marked finished only
    after it returns.
    """
    run = _Run(lake, dumps, rest, on_frame, max_workers, now_ms)
    run.replace, run.on_rejected = replace, on_rejected
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=not progress,
        transient=True,
    ) as bar:
        run.execute(symbols, datasets, start_ms, end_ms, bar)
    return run.report()


class _Run:
    def __init__(
        self,
        lake: Lake,
        dumps: DumpClient,
        rest: BinanceRest | None,
        on_frame: OnFrame | None,
        max_workers: int,
        now_ms: int,
    ) -> None:
        self.lake = lake
        self.dumps = dumps
        self.rest = rest
        self.on_frame = on_frame
        self.max_workers = max_workers
        self.now_ms = now_ms
        self.manifest = DownloadManifest(lake.root)
        self.parts_dir = lake.root / MANIFEST_PATH.parent
        self.tracks: dict[tuple[str, HistoryDataset], _Track] = defaultdict(_Track)
        self.failures: list[Failure] = []
        self.absent: list[str] = []
        self.notes: list[str] = []
        self.rows: dict[tuple[str, str], int] = defaultdict(int)
        self.rejected: dict[str, int] = defaultdict(int)
        self.replace = False
        self.on_rejected: OnRejected | None = None
        self.downloaded = self.skipped = self.rest_ranges = 0
        self.dump_host_down = threading.Event()
        self.rest_down: str | None = None

    def execute(
        self,
        symbols: Sequence[str],
        datasets: Sequence[HistoryDataset],
        start_ms: int,
        end_ms: int,
        bar: Progress,
    ) -> None:
        stop_ms = min(end_ms, self.now_ms)
        task = bar.add_task("history", total=0)
        monthly = [
            (s, d, f)
            for s in symbols
            for d in datasets
            for f in plan_monthly(d, s, start_ms, end_ms, self.now_ms)
        ]
        daily = [
            (s, d, f)
            for s in symbols
            for d in datasets
            for f in plan_daily(d, s, start_ms, end_ms, self.now_ms)
        ]
        total = len(monthly) + len(daily)
        bar.update(task, total=total, description="monthly dumps")
        fallback: list[tuple[str, HistoryDataset, DumpFile]] = []
        for symbol, spec, dump, outcome in self._fetch_all(monthly, bar, task):
            recent = self.now_ms - dump.end_ms < MONTHLY_DUMP_LAG_MS
            if outcome is None and spec.kind != "fundingRate" and recent:
                extra = plan_daily(spec, symbol, start_ms, end_ms, self.now_ms, month=dump.date)
                fallback += [(symbol, spec, f) for f in extra]
        total += len(fallback)
        bar.update(task, total=total, description="daily dumps")
        list(self._fetch_all(fallback + daily, bar, task))
        gaps = []
        for symbol in symbols:
            for spec in datasets:
                track = self.tracks[(symbol, spec)]
                done = self.manifest.rest_ranges(spec.lake_dataset, symbol)
                for lo, hi in uncovered(start_ms, stop_ms, track.covered + track.failed + done):
                    gaps.append((symbol, spec, lo, hi))
        bar.update(task, total=total + len(gaps), description="REST tail")
        for symbol, spec, lo, hi in gaps:
            self._fetch_rest(symbol, spec, lo, hi)
            bar.advance(task)
        _remove_empty_dirs(self.parts_dir)

    # Dumps ----------------------------------------------------------------------------------------
    def _fetch_all(
        self, jobs: list[tuple[str, HistoryDataset, DumpFile]], bar: Progress, task: Any
    ) -> Iterable[tuple[str, HistoryDataset, DumpFile, Downloaded | None]]:
        todo = []
        for symbol, spec, dump in jobs:
            if self.manifest.done(dump.path):
                self.tracks[(symbol, spec)].covered.append((dump.start_ms, dump.end_ms))
                self.skipped += 1
                bar.advance(task)
            else:
                todo.append((symbol, spec, dump))
        if not todo:
            return
        # A bounded window of downloads ahead of the (serial) lake writes keeps memory flat.
        window = 2 * self.max_workers
        pending: deque[tuple[str, HistoryDataset, DumpFile, Future[Downloaded | None]]] = deque()
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="history") as pool:
            try:
                for symbol, spec, dump in todo:
                    pending.append((symbol, spec, dump, pool.submit(self._download, dump)))
                    if len(pending) >= window:
                        yield from self._settle_next(pending, bar, task)
                while pending:
                    yield from self._settle_next(pending, bar, task)
            except BaseException:
                for *_, future in pending:
                    future.cancel()
                raise

    def _settle_next(
        self,
        pending: deque[tuple[str, HistoryDataset, DumpFile, Future[Downloaded | None]]],
        bar: Progress,
        task: Any,
    ) -> Iterable[tuple[str, HistoryDataset, DumpFile, Downloaded | None]]:
        symbol, spec, dump, future = pending.popleft()
        settled = self._settle(symbol, spec, dump, future)
        bar.advance(task)
        if settled is not _FAILED:
            yield symbol, spec, dump, settled

    def _download(self, dump: DumpFile) -> Downloaded | None:
        if self.dump_host_down.is_set():
            raise _NotAttempted
        return self.dumps.fetch(dump, self.parts_dir / (dump.path + ".part"))

    def _settle(
        self, symbol: str, spec: HistoryDataset, dump: DumpFile, future: Future[Downloaded | None]
    ) -> Any:
        track = self.tracks[(symbol, spec)]
        period = (dump.start_ms, dump.end_ms)
        what = f"{dump.period} {dump.date}"
        try:
            outcome = future.result()
            if outcome is None:
                self.absent.append(dump.filename)
                return None
            self._store(symbol, spec, outcome.frame, SOURCE_DUMP, dump.filename)
        except _StoredThenFailed as e:
            self._fail(symbol, spec, what, str(e), False, period, stored=True)
            return _FAILED
        except _NotAttempted:
            self._fail(
                symbol, spec, what, f"not attempted: {self.dumps.base_url} is unreachable", True, period
            )
            return _FAILED
        except UnreachableError as e:
            self.dump_host_down.set()
            self._fail(symbol, spec, what, str(e).split(" (", 1)[0], True, period)
            return _FAILED
        except RaytradeError as e:
            self._fail(symbol, spec, what, str(e), False, period)
            return _FAILED
        except Exception as e:  # a sink (on_frame) or parser bug: report it, keep going
            self._fail(symbol, spec, what, f"{type(e).__name__}: {e}", False, period)
            return _FAILED
        self.manifest.record(
            {
                "key": dump.path,
                "type": "dump",
                "dataset": spec.lake_dataset,
                "symbol": symbol,
                "start_ms": dump.start_ms,
                "end_ms": dump.end_ms,
                "rows": len(outcome.frame),
                "sha256": outcome.sha256,
                "fetched_at_ms": self.now_ms,
            }
        )
        self.downloaded += 1
        track.covered.append(period)
        return outcome

    # REST -----------------------------------------------------------------------------------------
    def _fetch_rest(self, symbol: str, spec: HistoryDataset, lo: int, hi: int) -> None:
        what = f"REST {ms_to_text(lo)} → {ms_to_text(hi)}"
        if self.rest is None:
            self._fail(symbol, spec, what, "no REST client configured for the tail", False, (lo, hi))
            return
        if self.rest_down is not None:
            self._fail(symbol, spec, what, f"not attempted: {self.rest_down}", True, (lo, hi))
            return
        try:
            if spec.kind == "fundingRate":
                frame = self.rest.funding_rates(symbol, lo, hi)
            elif spec.kind == "klines":
                frame = self.rest.klines(symbol, spec.interval or "", lo, hi)
            elif spec.kind == "markPriceKlines":
                frame = self.rest.mark_price_klines(symbol, spec.interval or "", lo, hi)
            else:
                frame = self.rest.premium_index_klines(symbol, spec.interval or "", lo, hi)
            if len(frame):
                self._store(symbol, spec, frame, SOURCE_REST, what)
        except _StoredThenFailed as e:
            self._fail(symbol, spec, what, str(e), False, (lo, hi), stored=True)
            return
        except UnreachableError as e:
            self.rest_down = f"{self.rest.base_url} is unreachable"
            self._fail(symbol, spec, what, str(e), True, (lo, hi))
            return
        except RaytradeError as e:
            self._fail(symbol, spec, what, str(e), False, (lo, hi))
            return
        except Exception as e:  # a sink (on_frame) bug: report it, keep going
            self._fail(symbol, spec, what, f"{type(e).__name__}: {e}", False, (lo, hi))
            return
        self.rest_ranges += 1
        if len(frame):
            last = int(frame["ts"].iloc[-1])
            fetched_to = last + (interval_ms(spec.interval) if spec.interval else 1)
            self.manifest.record(
                {
                    "key": f"rest:{spec.lake_dataset}:{symbol}:{lo}-{fetched_to}",
                    "type": "rest",
                    "dataset": spec.lake_dataset,
                    "symbol": symbol,
                    "start_ms": lo,
                    "end_ms": fetched_to,
                    "rows": len(frame),
                    "fetched_at_ms": self.now_ms,
                }
            )

    # Common ---------------------------------------------------------------------------------------
    def _store(self, symbol: str, spec: HistoryDataset, frame: pd.DataFrame, source: str, what: str) -> None:
        dataset = spec.lake_dataset
        door = write_through_door(
            self.lake,
            dataset,
            symbol,
            frame,
            source=source,
            now_ms=self.now_ms,
            replace=self.replace,
            extra_rejections=frame.attrs.get("rejected_lines", ()),
        )
        if door.events:
            for reason, count in door.rejected.items():
                self.rejected[reason] += count
            self.notes.append(
                f"{symbol} {spec.name} {what}: refused {door.rows_rejected} row(s) ("
                + ", ".join(f"{k} {v}" for k, v in sorted(door.rejected.items()))
                + ")"
            )
            if self.on_rejected is not None:
                self.on_rejected(list(door.events))
        if door.replaced:
            self.notes.append(f"{symbol} {spec.name} {what}: replaced {door.replaced} stored row(s)")
        if len(door.frame) and self.on_frame is not None:
            try:
                self.on_frame(dataset, symbol, door.frame)
            except Exception as e:
                raise _StoredThenFailed(
                    f"stored in the lake, not in the database: {type(e).__name__}: {e}"
                ) from e
        self.rows[(dataset, symbol)] += door.rows_stored
        if door.conflicts:
            raise _Conflict(door.conflict_message())

    def _fail(
        self,
        symbol: str,
        spec: HistoryDataset,
        what: str,
        reason: str,
        unreachable: bool,
        period: tuple[int, int],
        *,
        stored: bool = False,
    ) -> None:
        self.failures.append(Failure(symbol, spec.name, what, reason, unreachable, stored))
        self.tracks[(symbol, spec)].failed.append(period)

    def report(self) -> HistoryReport:
        return HistoryReport(
            downloaded=self.downloaded,
            skipped=self.skipped,
            absent=tuple(self.absent),
            rest_ranges=self.rest_ranges,
            rows=dict(self.rows),
            failures=tuple(self.failures),
            notes=tuple(self.notes),
            rejected=dict(self.rejected),
        )


_FAILED = object()


def _remove_empty_dirs(root: Path) -> None:
    """Remove directories left empty below (and including) ``root`` once the .part files are gone."""
    if not root.is_dir():
        return
    for directory, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
