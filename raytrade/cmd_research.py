"""``raytrade research``: the training flow of ``raytrade demo`` on real history in the lake.

Import or download the history first (``raytrade import ../shared/data/binance_um`` or ``raytrade
history``). Gates are reported and ``production`` moves only when they all pass, or with
``--override "reason"`` (recorded); by default a failed gate leaves ``production`` untouched.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError
from core.symbols import SymbolError, parse_universe
from pipelines.selection import MIN_DAYS
from raytrade.defaults import DEMO_ROUNDS, MODEL_NAME
from raytrade.options import settings_or_exit, time_option_ms

#: Headline metrics printed per strategy after the run (``core.metrics.summarize`` keys).
PRINTED = (("trades", "{:,.0f}"), ("total_return", "{:+.2%}"), ("profit_factor", "{:.3f}"),
           ("max_drawdown", "{:.2%}"), ("sharpe", "{:.2f}"), ("fees", "{:,.2f}"), ("slippage", "{:,.2f}"),
           ("funding", "{:,.2f}"))  # fmt: skip


def research(
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated; default: every lake symbol spanning the period"
    ),
    start: str | None = typer.Option(None, "--start", help="ISO date/time, UTC; default: the data's start"),
    end: str | None = typer.Option(
        None, "--end", help="ISO date/time, UTC, exclusive; default: the data's end"
    ),
    folds: int = typer.Option(3, "--folds", min=1, max=50, help="walk-forward folds"),
    unit: str = typer.Option("days", "--fold-unit", help="unit of --train/--val/--test: days | bars"),
    train: float | None = typer.Option(
        None, "--train", help="training window (default: sized to the history)"
    ),
    val: float | None = typer.Option(None, "--val", help="validation window (default: sized to the history)"),
    test: float | None = typer.Option(None, "--test", help="test window (default: sized to the history)"),
    configs: int = typer.Option(4, "--configs", min=1, help="configurations tried by the Tune sweep"),
    rounds: int = typer.Option(DEMO_ROUNDS, "--rounds", min=1, help="LightGBM boosting rounds per output"),
    seed: int = typer.Option(7, "--seed", help="seed of the sweep and LightGBM"),
    override: str | None = typer.Option(
        None, "--override", help="promote even though gates fail, for this reason (recorded)"
    ),
    model: str = typer.Option(MODEL_NAME, "--model", help="registered model name (the strategy)"),
    min_days: float = typer.Option(MIN_DAYS, "--min-days", min=0.1, help="shortest common history accepted"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    verbose: bool = typer.Option(False, "--verbose", help="also show what Ray, Tune and MLflow print"),
) -> None:
    """Train, gate and report on real history in the lake: folds, Tune sweep, registration, backtest, report."""
    from raytrade.cmd_models import print_report
    from raytrade.quiet import library_output
    from raytrade.research import run_research
    from tune.fold_plans import FoldSizing
    from tune.training_report import production_sentence, sweep_sentence

    settings = settings_or_exit()
    try:
        chosen = list(parse_universe(symbols)) if symbols else None
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    if unit not in ("days", "bars"):
        raise typer.BadParameter("days or bars", param_hint="--fold-unit")
    try:
        sizing = FoldSizing(folds=folds, unit=unit, train=train, val=val, test=test)
    except ValueError as e:
        raise typer.BadParameter(str(e).splitlines()[-1], param_hint="--train/--val/--test") from None
    console = Console()
    try:
        with library_output(verbose):
            summary = run_research(
                settings, console=console, symbols=chosen, start_ms=time_option_ms(start, "--start"),
                end_ms=time_option_ms(end, "--end"), sizing=sizing, seed=seed, num_samples=configs,
                num_boost_round=rounds, override=override, model_name=model, min_days=min_days, progress=progress,
            )  # fmt: skip
    except ConfigError as e:
        console.print(f"[red]research: {e}[/red]")
        raise typer.Exit(2) from None
    t = summary.training
    console.print(f"REAL DATA: {summary.selection.describe()}")
    console.print(f"walk-forward: {t.n_folds} folds")
    console.print(summary.fold_windows.to_string())
    console.print(f"sweep: {configs} configuration(s) × {rounds} rounds; {sweep_sentence(t)}")
    print_report(t.gates)
    table = Table(title="last fold test window: model vs baselines (after costs)")
    table.add_column("strategy")
    for name, _ in PRINTED:
        table.add_column(name, justify="right")
    for name, m in summary.summaries.items():
        table.add_row(name, *(fmt.format(m[k]) for k, fmt in PRINTED))
    console.print(table)
    for sentence in summary.findings:
        console.print(f"- {sentence}")
    style = "green" if t.promotion_kind in ("promote", "unchanged") else "bold red"
    console.print(f"[{style}]{production_sentence(t)}[/{style}]")
    console.print(f"report: {summary.report_path}")
    console.print(f"runtime: {summary.runtime_s:.0f} s")
    console.print(
        "MLflow UI: mlflow ui --backend-store-uri "
        f"{settings.tracking_uri} --default-artifact-root {settings.mlflow_artifact_root}"
    )


def register(app: typer.Typer) -> None:
    app.command("research")(research)
