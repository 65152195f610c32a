"""``raytrade history`` (Binance dumps + REST tail into the lake) and ``raytrade import PATH``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from core.errors import DataQualityError, RaytradeError
from core.symbols import SymbolError, parse_universe
from core.time import DAY_MS, ms_to_text
from pipelines.history_plan import DEFAULT_DATASETS
from raytrade.options import settings_or_exit, time_option_ms
from raytrade.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from exchange.binance.rest import BinanceRest
    from pipelines.history import OnFrame

console = Console(stderr=True, soft_wrap=True)

#: ``factory(settings) -> on_frame``; the sink may have a ``close()`` called when the run ends.
SinkFactory = Callable[[Settings], "OnFrame"]


def _db_sink(settings: Settings) -> OnFrame:
    """Return an ``on_frame`` that also writes candles, funding and mark prices to the database (``--to-db``).

    Candles of symbols that are not active instruments are refused as data-quality events. The
    database must be migrated (``raytrade db upgrade``).
    """
    from pipelines.dbsink import DatabaseSink
    from storage import db
    from storage.instruments import active_symbols
    from storage.writer import BatchedWriter

    engine = db.make_engine(settings.database_url)
    if not db.is_current(engine):
        engine.dispose()
        raise typer.BadParameter(
            "the database is not at the newest schema: run `raytrade db upgrade` first", param_hint="--to-db"
        )
    return _ClosingSink(
        DatabaseSink(BatchedWriter(engine, settings.writer), active_symbols(engine), "history"), engine
    )


class _ClosingSink:
    """A DatabaseSink that reports its counts and releases the engine when the run ends."""

    def __init__(self, sink: Any, engine: Any) -> None:
        self._sink = sink
        self._engine = engine

    def __call__(self, dataset: str, symbol: str, frame: pd.DataFrame) -> None:
        self._sink(dataset, symbol, frame)

    @property
    def engine(self) -> Any:
        return self._engine

    def close(self) -> None:
        try:
            stats = self._sink.close()
            by_table = stats.rows_written_by_table
            candles = sum(n for t, n in by_table.items() if t.startswith("candles_"))
            others = sum(n for t, n in by_table.items() if not t.startswith("candles_") and t != "events")
            fresh = stats.rows_rejected - stats.rows_rejected_before
            console.print(
                f"database: {candles:,} candle row(s) and {others:,} other row(s) written; "
                f"{stats.rows_rejected:,} candle row(s) refused as data-quality events "
                f"({fresh:,} recorded now, {stats.rows_rejected_before:,} recorded before); "
                f"{stats.rows_dead_lettered} refused (dead letters)"
            )
        finally:
            self._engine.dispose()


class RejectionRecorder:
    """``on_rejected(events)``: records the door's rejection events in the database's ``events``.

    Opens the database only when there is something to record, so a run without rejections never
    creates one. Uses ``engine`` when given (``--to-db``), else the configured database if it is
    migrated; otherwise counts what it could not record and says so in ``summary``.
    """

    def __init__(self, settings: Settings, engine: Any | None = None) -> None:
        self._settings = settings
        self._engine = engine
        self._owned: Any | None = None
        self._log: Any | None = None
        self.unrecorded = 0
        self.reason = ""

    def __call__(self, events: list[dict[str, Any]]) -> None:
        from storage import db
        from storage.candle_door import RejectionLog

        if self._log is None and not self.reason:
            engine = self._engine
            if engine is None:
                engine = self._owned = db.make_engine(self._settings.database_url)
            try:
                if db.is_current(engine):
                    self._log = RejectionLog(engine)
                else:
                    self.reason = "the database is not migrated: run `raytrade db upgrade`"
            except Exception as e:
                self.reason = f"the database is unavailable ({type(e).__name__})"
        if self._log is None:
            self.unrecorded += len(events)
            return
        self._log.record(events)

    def summary(self) -> str:
        """Return one line on what was recorded ('' when nothing was refused)."""
        if self._log is None and not self.unrecorded:
            return ""
        parts = []
        if self._log is not None:
            parts.append(
                f"events: {self._log.recorded:,} refused row(s) recorded as data-quality events, "
                f"{self._log.already:,} recorded before"
            )
        if self.unrecorded:
            parts.append(f"{self.unrecorded:,} refused row(s) not recorded as events: {self.reason}")
        return "; ".join(parts)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()


def history(
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated symbols; default: the universe"
    ),
    datasets: str = typer.Option(
        ",".join(DEFAULT_DATASETS), "--datasets", help="comma-separated: klines/1m, markPriceKlines/1m, …"
    ),
    start: str | None = typer.Option(
        None, "--start", help="ISO date/time, UTC; default: 30 days before --end"
    ),
    end: str | None = typer.Option(None, "--end", help="ISO date/time, UTC, exclusive; default: now"),
    to_db: bool = typer.Option(False, "--to-db", help="also write candles and funding to the database"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    workers: int = typer.Option(4, "--workers", min=1, max=16, help="parallel dump downloads"),
    replace: bool = typer.Option(
        False, "--replace", help="take new rows whose ts the lake holds with other values (default: refuse)"
    ),
) -> None:
    """Download Binance USDⓈ-M history into the lake: monthly/daily dumps, then REST for the recent tail.

    Resumable: finished files are skipped on a rerun. Every row passes the data-quality door
    before the lake; refused rows are recorded as events. Rows that differ from the lake are
    refused unless --replace. Exits 1 listing what could not be fetched or stored.
    """
    run_history(
        settings_or_exit(),
        symbols,
        datasets,
        start,
        end,
        to_db=to_db,
        progress=progress,
        workers=workers,
        replace=replace,
    )


def run_history(
    settings: Settings,
    symbols: str | None,
    datasets: str,
    start: str | None,
    end: str | None,
    *,
    to_db: bool = False,
    progress: bool = True,
    workers: int = 4,
    sink_factory: SinkFactory | None = None,
    now_ms: int | None = None,
    replace: bool = False,
) -> None:
    """Run ``raytrade history`` with loaded settings; ``sink_factory`` replaces ``_db_sink`` for ``--to-db``."""
    from exchange.binance.rest import FAPI_MAINNET, BinanceRest
    from exchange.dump_client import DumpClient
    from pipelines.history import download_history, parse_datasets
    from storage.lake import Lake

    try:
        chosen_symbols = parse_universe(symbols) if symbols else settings.universe
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    try:
        specs = parse_datasets(datasets)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--datasets") from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    end_ms = time_option_ms(end, "--end") or now
    start_ms = time_option_ms(start, "--start") or end_ms - 30 * DAY_MS
    if start_ms >= end_ms:
        raise typer.BadParameter(
            f"--start ({start}) must be before --end ({end or 'now'})", param_hint="--start"
        )
    rest = BinanceRest(settings.fapi_url or FAPI_MAINNET, max_attempts=3)
    try:
        _check_listed(rest, chosen_symbols)
    except BaseException:
        rest.close()
        raise
    on_frame = (sink_factory or _db_sink)(settings) if to_db else None
    recorder = RejectionRecorder(settings, getattr(on_frame, "engine", None))
    lake = Lake(settings.lake_root)
    dumps = DumpClient(settings.history_base_url)
    console.print(
        f"history: {len(chosen_symbols)} symbol(s) × {', '.join(s.name for s in specs)}, "
        f"{ms_to_text(start_ms)} → {ms_to_text(end_ms)} into {lake.root}"
    )
    try:
        report = download_history(
            lake,
            chosen_symbols,
            specs,
            start_ms,
            end_ms,
            now,
            dumps=dumps,
            rest=rest,
            on_frame=on_frame,
            progress=progress,
            max_workers=workers,
            console=console,
            replace=replace,
            on_rejected=recorder,
        )
    finally:
        rest.close()
        dumps.close()
        close = getattr(on_frame, "close", None)
        if callable(close):
            close()
        recorder.close()
    console.print(report.summary(), highlight=False)
    if recorder.summary():
        console.print(recorder.summary(), highlight=False)
    if not report.ok:
        console.print(f"[red]{report.failure_message()}[/red]", highlight=False)
        raise typer.Exit(1)


def _check_listed(rest: BinanceRest, symbols: Sequence[str]) -> None:
    """Refuse symbols Binance does not list (exchangeInfo); say so when the list cannot be read."""
    from storage.instruments import check_listed, listed_symbols

    try:
        listed = listed_symbols(rest.exchange_info())
    except RaytradeError as e:
        console.print(f"note: symbols not checked against Binance's instrument list: {e}", highlight=False)
        return
    try:
        check_listed(symbols, listed)
    except DataQualityError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None


def import_command(
    path: Path = typer.Argument(..., help="a .parquet/.feather file or a folder laid out by dataset"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="lake dataset of a single file, e.g. candles_1m"
    ),
    symbol: str | None = typer.Option(None, "--symbol", help="symbol of a single file (default: its name)"),
    replace: bool = typer.Option(
        False, "--replace", help="take rows whose ts the lake holds with other values (default: refuse)"
    ),
) -> None:
    """Import local parquet/feather market data into the lake, validating every row.

    Rejected rows are not stored; they are reported with their reasons and recorded as
    data-quality events. Rows that differ from what the lake holds are refused unless --replace.
    """
    from pipelines.importer import import_path
    from storage.lake import Lake

    settings = settings_or_exit()
    lake = Lake(settings.lake_root)
    recorder = RejectionRecorder(settings)
    try:
        report = import_path(
            lake, path, dataset=dataset, symbol=symbol, replace=replace, on_rejected=recorder
        )
    except DataQualityError as e:
        console.print(f"[red]import failed: {e}[/red]", highlight=False)
        if recorder.summary():
            console.print(recorder.summary(), highlight=False)
        raise typer.Exit(1) from None
    finally:
        recorder.close()
    console.print(report.summary(), highlight=False)
    if recorder.summary():
        console.print(recorder.summary(), highlight=False)
    console.print(f"lake: {lake.root}")
    if report.conflicts:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``history`` and ``import`` to the CLI."""
    app.command("history")(history)
    app.command("import")(import_command)
