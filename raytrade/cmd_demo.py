"""``raytrade demo`` and ``raytrade synth``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from core.time import DAY_MS, MINUTE_MS, parse_utc
from raytrade.defaults import DEMO_DAYS, DEMO_ROUNDS, DEMO_SYMBOLS, SHADOW_MINUTES
from raytrade.options import settings_or_exit

if TYPE_CHECKING:
    from raytrade.demo import DemoSummary


def demo(
    days: float = typer.Option(DEMO_DAYS, "--days", min=0.5, max=400, help="days of synthetic 1m history"),
    seed: int = typer.Option(7, "--seed", help="seed of the synthetic market, the sweep and LightGBM"),
    symbols: int = typer.Option(
        DEMO_SYMBOLS, "--symbols", min=0, help="use the first N symbols of the universe (0: all of them)"
    ),
    configs: int = typer.Option(4, "--configs", min=1, help="configurations tried by the Tune sweep"),
    rounds: int = typer.Option(DEMO_ROUNDS, "--rounds", min=1, help="LightGBM boosting rounds per output"),
    train: bool = typer.Option(True, "--train/--no-train", help="run the training half (sweep … report)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    null_market: bool = typer.Option(
        False,
        "--null-market",
        help="negative control: the edge-free market (the gates should refuse every model)",
    ),
    shadow_minutes: int = typer.Option(
        SHADOW_MINUTES,
        "--shadow-minutes",
        min=0,
        help="minutes replayed in shadow after a promotion (0: none)",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="also show what Ray, Tune and MLflow print"),
) -> None:
    """Run the main job offline on the embedded default and print where everything went."""
    from raytrade.demo import run_demo, summary_frame
    from raytrade.quiet import library_output
    from tune.training_report import evidence_sentence, production_sentence

    settings = settings_or_exit()
    if symbols:
        settings = settings.model_copy(update={"universe": settings.universe[:symbols]})
    console = Console()
    with library_output(verbose):
        summary = run_demo(
            settings, days=days, seed=seed, console=console, progress=progress, train=train,
            num_samples=configs, num_boost_round=rounds, null_market=null_market, shadow_minutes=shadow_minutes,
        )  # fmt: skip
    t = summary.training
    if t is not None:  # what a user needs first: promotion, its evidence, the shadow replay
        style = "green" if summary.promoted != summary.null_market else "bold red"
        console.print(f"[{style}]{production_sentence(t)}[/{style}]")
        console.print(evidence_sentence(t.gates))
        if summary.false_promotion:
            console.print(
                "[bold red]FAILED negative control: a model of the edge-free market was promoted[/bold red]"
            )
        elif summary.null_market:
            console.print(
                "[green]negative control: the gates refused the model of the edge-free market[/green]"
            )
        _print_shadow(console, summary)
    table = Table(title="raytrade demo (SYNTHETIC market)")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    for item, value in summary_frame(summary).itertuples(index=False):
        table.add_row(item, value)
    console.print(table)
    console.print(f"lake: {summary.lake_root}\ndatabase: {summary.database}")
    if t is not None:
        console.print(f"report: {t.report_path}")
        console.print(
            "MLflow UI: mlflow ui --backend-store-uri "
            f"{settings.tracking_uri} --default-artifact-root {settings.mlflow_artifact_root}"
        )
    if not summary.ok:
        console.print("[red]demo FAILED (see above)[/red]")
        raise typer.Exit(1)


#: Trades of the shadow comparison shown in the console (differences always shown).
_SHADOW_ROWS = 12


def _print_shadow(console: Console, summary: DemoSummary) -> None:
    from tune.training_report import shadow_sentence

    replay = summary.shadow
    if replay is None:
        console.print(shadow_sentence(None, summary.shadow_skipped))
        return
    trades = replay.parity.table
    if len(trades) > _SHADOW_ROWS:  # every difference, then matched trades up to the limit; all in the report
        differ = trades["verdict"] != "same"
        keep = differ | (trades.index.isin(trades.index[~differ][: max(0, _SHADOW_ROWS - int(differ.sum()))]))
        trades = trades[keep]
    table = Table(
        title=f"shadow replay vs backtest ({len(trades)} of {len(replay.parity.table)} trades; all in the report)"
    )
    columns = [c for c in _SHADOW_COLUMNS if c in trades.columns]  # prices are in the report
    for name in columns:
        table.add_column(name, justify="right" if "bps" in name else "left")
    for row in trades[columns].itertuples(index=False):
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else _short_time(str(v)) for v in row))
    if len(trades):
        console.print(table)
    sentence = f"{shadow_sentence(replay)} ({replay.wall_s:.0f} s)"
    if replay.parity.ok:
        console.print(f"[green]{sentence}[/green]")
    else:
        console.print(f"[bold red]FAILED: {sentence}[/bold red]")


#: The columns of the console's shadow-vs-backtest table (the report has every column, prices included).
_SHADOW_COLUMNS = ("symbol", "side", "entry bar (UTC)", "shadow exit", "backtest exit", "entry Δ bps", "exit Δ bps",
                   "verdict")  # fmt: skip


def _short_time(text: str) -> str:
    """'2025-01-29 00:03:00' → '01-29 00:03' (and 'TP @ 2025-01-29 00:07:00' alike): the console is narrow."""
    return re.sub(r"\b\d{4}-(\d{2}-\d{2}) (\d{2}:\d{2})(?::\d{2})?", r"\1 \2", text)


def synth(
    days: float = typer.Option(30.0, "--days", min=0.01, max=1000, help="days of 1m bars"),
    seed: int = typer.Option(7, "--seed", help="seed"),
    start: str | None = typer.Option(
        None, "--start", help="ISO date of the first bar, UTC (default 2025-01-06)"
    ),
) -> None:
    """Generate a synthetic market for the universe into the lake (labelled source=synthetic)."""
    from core.synthetic import generate_market
    from pipelines.market import write_synthetic_market
    from raytrade.demo import DEMO_START_MS
    from storage.lake import Lake

    settings = settings_or_exit()
    start_ms = parse_utc(start) if start else DEMO_START_MS
    market = generate_market(settings.universe, start_ms, int(days * DAY_MS // MINUTE_MS), seed)
    written = write_synthetic_market(market, Lake(settings.lake_root))
    Console().print(
        f"SYNTHETIC market written to {settings.lake_root}: "
        + ", ".join(f"{k} {v:,}" for k, v in written.rows.items())
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("synth")(synth)
