"""``raytrade drift``: feature drift and data quality into ``drift_metrics`` (spec 001 §17), once or on a schedule.

Also ``ops_handlers``: the ``drift`` and ``bootstrap_history`` job handlers of this installation,
for the batch worker, and ``drift_schedule``: the drift job ``raytrade worker`` queues every
``drift_every_s``.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from core.symbols import SymbolError, parse_universe
from core.time import ms_to_text
from raytrade.options import settings_or_exit, time_option_ms
from raytrade.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

    from tune.jobs_types import JobHandler
    from tune.worker import Schedule

console = Console(stderr=True, soft_wrap=True)

_EVERY = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """Return the seconds of ``30s``, ``15m``, ``1h``, ``1d``; raise ValueError for anything else."""
    m = _EVERY.match(text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"expected a positive interval such as 15m or 1h, got {text!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def ops_handlers(settings: Settings, engine: sa.Engine) -> dict[str, JobHandler]:
    """The ``drift`` and ``bootstrap_history`` handlers over the installation's lake and database."""
    from raytrade.history_job import bootstrap_history_handler
    from tune.jobs_drift import drift_handler

    reports = (settings.data_dir / "reports" / "jobs").resolve()
    return {
        "drift": drift_handler(engine, settings.lake_root, reports),
        "bootstrap_history": bootstrap_history_handler(settings),
    }


def drift_schedule(settings: Settings) -> Schedule | None:
    """The drift job every ``settings.drift_every_s`` (None when 0): default windows, over the universe's
    symbols that have features in the lake at that time (no job while none has)."""
    from storage.lake import Lake
    from tune.worker import Schedule

    if settings.drift_every_s <= 0:
        return None

    def config() -> dict[str, object] | None:
        with_features = set(Lake(settings.lake_root).symbols("features_1m"))
        symbols = [s for s in settings.universe if s in with_features]
        return {"symbols": symbols} if symbols else None

    return Schedule("drift", settings.drift_every_s, config)


def _status(psi: float) -> str:
    from core.drift import psi_status

    return psi_status(psi)


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"


def drift(
    symbols: str | None = typer.Option(
        None,
        "--symbols",
        help="comma-separated symbols; default: the universe's symbols with features in the lake",
    ),
    reference_days: float = typer.Option(7.0, "--reference-days", min=0.001, help="reference window, days"),
    current_hours: float = typer.Option(24.0, "--current-hours", min=0.001, help="current window, hours"),
    end: str | None = typer.Option(
        None, "--end", help="ISO date/time, UTC: end of the current window; default: each symbol's newest bar"
    ),
    features: str | None = typer.Option(
        None,
        "--features",
        help="comma-separated feature names; default: all but the calendar ones (core.drift.DRIFT_FEATURES)",
    ),
    every: str | None = typer.Option(
        None, "--every", help="run a pass every interval (15m, 1h …) until Ctrl-C"
    ),
) -> None:
    """Compute feature drift (PSI), missing and outlier rates and message latency into drift_metrics.

    One pass per symbol: the current window against the reference window before it. A feature at
    PSI ≥ 0.25 (alarm) records a drift.alarm event when it crosses. A feature with too few
    independent values in the current window (a 60-hour volatility over 24 h) is "insufficient",
    not scored. With --every, repeats until Ctrl-C. Exits 1 when a symbol has no features in the lake.
    """
    from core.features_schema import FEATURE_NAMES
    from pipelines.drift import drift_pass
    from storage import db
    from storage.lake import Lake

    settings = settings_or_exit()
    try:
        chosen = parse_universe(symbols) if symbols else settings.universe
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    names = [n.strip() for n in features.split(",") if n.strip()] if features else None
    unknown = [n for n in names or () if n not in FEATURE_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown feature(s) {unknown}", param_hint="--features")
    end_ms = time_option_ms(end, "--end")
    try:
        interval_s = None if every is None else parse_every(every)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--every") from None
    engine = db.make_engine(settings.database_url)
    stop = threading.Event()
    try:
        if not db.is_current(engine):
            console.print(
                "[red]the database is not at the current schema: run `raytrade db upgrade` first[/red]"
            )
            raise typer.Exit(2)
        lake = Lake(settings.lake_root)
        if not symbols:  # the universe's symbols that have features (after `make demo`: its 6)
            with_features = set(lake.symbols("features_1m"))
            chosen = tuple(s for s in chosen if s in with_features) or chosen  # none: the error names one
        while True:
            try:
                results = drift_pass(
                    engine, lake, chosen, reference_ms=round(reference_days * 86_400_000),
                    current_ms=round(current_hours * 3_600_000), end_ms=end_ms, features=names,
                )  # fmt: skip
            except FileNotFoundError as e:
                console.print(f"[red]{e}[/red]", highlight=False)
                raise typer.Exit(1) from None
            table = Table(title="drift")
            for column in (
                "symbol",
                "as of",
                "PSI (max)",
                "status",
                "alarms",
                "too few values",
                "missing",
                "outliers",
                "latency ms",
            ):
                table.add_column(column, no_wrap=column in ("symbol", "status"))
            for r in results:
                table.add_row(
                    r.symbol, ms_to_text(r.end_ms), f"{r.psi:.3f}", _status(r.psi),
                    ", ".join(f.name for f in r.alarms[:3]) + (" …" if len(r.alarms) > 3 else ""),
                    f"{len(r.insufficient)}/{len(r.features)}",
                    _pct(r.missing_rate), _pct(r.outlier_rate), "-" if r.latency_ms != r.latency_ms else f"{r.latency_ms:.0f}",
                )  # fmt: skip
            console.print(table)
            if interval_s is None or stop.wait(interval_s):
                break
    except KeyboardInterrupt:
        console.print("drift stopped")
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    """Add ``drift`` to the CLI."""
    app.command("drift")(drift)
