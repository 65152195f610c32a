"""``raytrade selftest``."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from raytrade.options import settings_or_exit
from raytrade.selftest import CHECKS, DEFAULT_TIMEOUT_S, RAY_TIMEOUT_S, run_selftest


def selftest(
    only: list[str] = typer.Option(
        [], "--only", help=f"run only these checks: {', '.join(n for n, _ in CHECKS)}"
    ),
    timeout_s: float = typer.Option(
        DEFAULT_TIMEOUT_S,
        "--timeout-s",
        min=0.1,
        help=f"seconds each check may take (Ray at least {RAY_TIMEOUT_S:g}); a slower one fails as timed out",
    ),
) -> None:
    """Check configuration, database (migrations current), bus, MLflow store, Ray and lake; exit 1 naming failures."""
    settings = settings_or_exit()
    unknown = set(only) - {n for n, _ in CHECKS}
    if unknown:
        raise typer.BadParameter(f"unknown check(s): {', '.join(sorted(unknown))}", param_hint="--only")
    results = run_selftest(settings, tuple(only), timeout_s=timeout_s)
    table = Table(title="raytrade selftest")
    table.add_column("component")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail", overflow="fold")
    for r in results:
        table.add_row(
            r.component, "[green]ok[/green]" if r.ok else "[red]FAILED[/red]", f"{r.seconds:.2f}", r.detail
        )
    Console(width=140).print(table)
    failed = [r.component for r in results if not r.ok]
    if failed:
        Console(stderr=True).print(f"[red]selftest failed: {', '.join(failed)}[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("selftest")(selftest)
