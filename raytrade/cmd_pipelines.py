"""``raytrade features`` and ``raytrade label``: offline batch work on Ray Data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

from core.symbols import SymbolError, parse_universe
from raytrade.options import settings_or_exit
from raytrade.settings import Settings

if TYPE_CHECKING:
    from storage.lake import Lake

console = Console(stderr=True)


def _symbols(settings: Settings, text: str | None, lake: Lake) -> list[str]:
    try:
        wanted = parse_universe(text) if text else settings.universe
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    have = set(lake.symbols("candles_1m"))
    missing = [s for s in wanted if s not in have]
    if missing and text:
        raise typer.BadParameter(
            f"no candles_1m in the lake for {', '.join(missing)}", param_hint="--symbols"
        )
    if missing:
        console.print(f"skipping {len(missing)} symbol(s) without candles in the lake: {', '.join(missing)}")
    chosen = [s for s in wanted if s in have]
    if not chosen:
        raise typer.BadParameter(
            f"the lake at {lake.root} has no candles_1m for these symbols", param_hint="--symbols"
        )
    return chosen


def _to_db(
    settings: Settings, lake: Lake, datasets: tuple[str, ...], symbols: list[str], spec_hash: str | None
) -> None:
    from pipelines.dbsink import DatabaseSink
    from storage import db
    from storage.instruments import active_symbols
    from storage.writer import BatchedWriter

    engine = db.make_engine(settings.database_url)
    if not db.is_current(engine):
        engine.dispose()
        raise typer.BadParameter("run `raytrade db upgrade` first", param_hint="--to-db")
    sink = DatabaseSink(
        BatchedWriter(engine, settings.writer), active_symbols(engine), "pipelines", spec_hash
    )
    try:
        for symbol in symbols:
            for dataset in datasets:
                sink(dataset, symbol, lake.read(dataset, symbol))
    finally:
        stats = sink.close()
        engine.dispose()
    console.print(f"database: {stats.rows_written:,} rows written, {stats.rows_dead_lettered} refused")


def features(
    symbols: str | None = typer.Option(None, "--symbols", help="comma-separated; default: the universe"),
    group_size: int = typer.Option(8, "--group-size", min=1, help="symbols per Ray task"),
    to_db: bool = typer.Option(False, "--to-db", help="also write features_1m rows to the database"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Compute the 132 merged features of every 1m bar in the lake (Ray Data), into the lake."""
    from pipelines.features import compute_universe_features
    from raytrade.rayinit import start_ray
    from storage.lake import Lake

    settings = settings_or_exit()
    lake = Lake(settings.lake_root)
    chosen = _symbols(settings, symbols, lake)
    start_ray(settings, progress=progress)
    report = compute_universe_features(lake.root, chosen, group_size=group_size)
    console.print(
        f"features: {report.total_rows:,} rows for {len(report.rows)} symbols in {report.seconds:.1f} s "
        f"({report.total_rows / max(report.seconds, 1e-9):,.0f} rows/s)"
    )
    if to_db:
        _to_db(settings, lake, ("features_1m",), chosen, None)


def label(
    symbols: str | None = typer.Option(None, "--symbols", help="comma-separated; default: the universe"),
    to_db: bool = typer.Option(
        False, "--to-db", help="also write labelled bars to labels_long_1m and labels_short_1m"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Label every 1m bar of the lake, long and short, with the configured LabelSpec (Ray Data)."""
    from pipelines.labels import label_universe, labels_lake
    from raytrade.rayinit import start_ray
    from storage.lake import Lake

    settings = settings_or_exit()
    lake = Lake(settings.lake_root)
    chosen = _symbols(settings, symbols, lake)
    start_ray(settings, progress=progress)
    spec = settings.label
    report = label_universe(lake.root, chosen, spec)
    out = labels_lake(lake.root, spec)
    console.print(
        f"labels (spec {report.spec_hash}): {report.total_bars:,} bars, {sum(report.labelled.values()):,} labelled, "
        f"{report.seconds:.1f} s ({report.total_bars / max(report.seconds, 1e-9):,.0f} bars/s) → {out.root}; "
        f"barriers on the mark price for {sum(report.mark_bars.values()):,} bars, last price for the rest"
    )
    if to_db:
        _to_db(settings, out, ("labels_1m",), chosen, report.spec_hash)


def register(app: typer.Typer) -> None:
    app.command("features")(features)
    app.command("label")(label)
