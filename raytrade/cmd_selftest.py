"""``raytrade selftest``."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from raytrade.options import settings_or_exit
from raytrade.selftest import (
    CHECKS,
    DEFAULT_TIMEOUT_S,
    NODE_CHECKS,
    RAY_TIMEOUT_S,
    NodeCheck,
    run_node_selftest,
    run_selftest,
)
from raytrade.settings import redact_url


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
    all_nodes: bool = typer.Option(
        False,
        "--all-nodes",
        help=f"also run the service checks ({', '.join(NODE_CHECKS)}) in a task pinned to every alive "
        "Ray node (the cluster of RAYTRADE_RAY_ADDRESS, else local Ray), one row per node and check",
    ),
) -> None:
    """Check configuration, database (migrations current), bus, MLflow store, Ray and lake; exit 1 naming failures.

    With --all-nodes the service checks also run on every node of the Ray cluster: each node must
    reach the database, the bus and MLflow and write the lake with this machine's settings."""
    settings = settings_or_exit()
    unknown = set(only) - {n for n, _ in CHECKS}
    if unknown:
        raise typer.BadParameter(f"unknown check(s): {', '.join(sorted(unknown))}", param_hint="--only")
    node_rows: list[NodeCheck] = []
    if all_nodes:
        import ray

        from raytrade.rayinit import start_ray
        from storage.jobs import error_text

        started_here = not ray.is_initialized()
        try:  # kept up for the driver's ray check and the node tasks
            start_ray(settings, progress=False)
        except Exception as e:  # reported as a row; the driver's ray check says more
            node_rows = [NodeCheck("-", "-", "ray", False, redact_url(error_text(e)), 0.0)]
        try:
            results = run_selftest(settings, tuple(only), timeout_s=timeout_s)
            node_only = tuple(n for n in NODE_CHECKS if not only or n in only)
            if node_only and ray.is_initialized():
                node_rows = run_node_selftest(settings, node_only, timeout_s=timeout_s)
        finally:
            if started_here and ray.is_initialized():
                ray.shutdown()
    else:
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
    console = Console(width=140)
    console.print(table)
    failed = [r.component for r in results if not r.ok]
    if all_nodes:
        nodes = Table(title=f"raytrade selftest on every node ({len({r.node for r in node_rows})} alive)")
        nodes.add_column("node")
        nodes.add_column("ip")
        nodes.add_column("component")
        nodes.add_column("result")
        nodes.add_column("seconds", justify="right")
        nodes.add_column("detail", overflow="fold")
        for n in node_rows:
            ok = "[green]ok[/green]" if n.ok else "[red]FAILED[/red]"
            nodes.add_row(n.node, n.ip, n.component, ok, f"{n.seconds:.2f}", n.detail)
        console.print(nodes)
        failed += [f"{n.component}@{n.node}" for n in node_rows if not n.ok]
    if failed:
        Console(stderr=True).print(f"[red]selftest failed: {', '.join(failed)}[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("selftest")(selftest)
