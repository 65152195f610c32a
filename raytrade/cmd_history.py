"""``raytrade history`` (Binance dumps + REST tail into the lake) and ``raytrade import PATH``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console

from core.errors import DataQualityError
from core.symbols import SymbolError, parse_universe
from core.time import DAY_MS, ms_to_text
from exchange.binance.rest import FAPI_MAINNET, BinanceRest
from exchange.dump_client import DumpClient
from pipelines.history import DEFAULT_DATASETS, OnFrame, download_history, parse_datasets
from pipelines.importer import import_path
from raytrade.options import settings_or_exit, time_option_ms
from raytrade.settings import Settings
from storage.lake import Lake

console = Console(stderr=True, soft_wrap=True)

#: ``factory(settings) -> on_frame``; the sink may have a ``close()`` called when the run ends.
SinkFactory = Callable[[Settings], OnFrame]


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

    def close(self) -> None:
        try:
            stats = self._sink.close()
            console.print(
                f"database: {stats.rows_written:,} row(s) written, {stats.rows_rejected} rejected as "
                f"data-quality events, {stats.rows_dead_lettered} refused (dead letters)"
            )
        finally:
            self._engine.dispose()


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
) -> None:
    """Download Binance USDⓈ-M history into the lake: monthly/daily dumps, then REST for the recent tail.

    Resumable: finished files are skipped on a rerun. Exits 1 listing what could not be fetched.
    """
    run_history(
        settings_or_exit(), symbols, datasets, start, end, to_db=to_db, progress=progress, workers=workers
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
) -> None:
    """Run ``raytrade history`` with loaded settings; ``sink_factory`` replaces ``_db_sink`` for ``--to-db``."""
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
    on_frame = (sink_factory or _db_sink)(settings) if to_db else None
    lake = Lake(settings.lake_root)
    dumps = DumpClient(settings.history_base_url)
    rest = BinanceRest(settings.fapi_url or FAPI_MAINNET, max_attempts=3)
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
        )
    finally:
        rest.close()
        dumps.close()
        close = getattr(on_frame, "close", None)
        if callable(close):
            close()
    console.print(report.summary())
    if not report.ok:
        console.print(f"[red]{report.failure_message()}[/red]", highlight=False)
        raise typer.Exit(1)


def import_command(
    path: Path = typer.Argument(..., help="a .parquet/.feather file or a folder laid out by dataset"),
    dataset: str | None = typer.Option(
        None, "--dataset", help="lake dataset of a single file, e.g. candles_1m"
    ),
    symbol: str | None = typer.Option(None, "--symbol", help="symbol of a single file (default: its name)"),
) -> None:
    """Import local parquet/feather market data into the lake, validating every row.

    Rejected rows are not stored; they are reported with their reasons.
    """
    settings = settings_or_exit()
    lake = Lake(settings.lake_root)
    try:
        report = import_path(lake, path, dataset=dataset, symbol=symbol)
    except DataQualityError as e:
        console.print(f"[red]import failed: {e}[/red]", highlight=False)
        raise typer.Exit(1) from None
    console.print(report.summary(), highlight=False)
    console.print(f"lake: {lake.root}")


def register(app: typer.Typer) -> None:
    """Add ``history`` and ``import`` to the CLI."""
    app.command("history")(history)
    app.command("import")(import_command)
