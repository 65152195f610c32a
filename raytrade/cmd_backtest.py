"""``raytrade backtest``: the baseline strategies on lake data, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from core.strategies import BASELINES
from core.symbols import SymbolError, parse_universe
from core.time import parse_utc
from raytrade.options import settings_or_exit

if TYPE_CHECKING:
    from core.sim import SimConfig
    from raytrade.settings import Settings

console = Console(stderr=True)


def sim_config(settings: Settings, max_hold_bars: int | None = None) -> SimConfig:
    """The installation's fill simulator: ``core.sim.sim_config_for`` of the label preset and the policy.
    The backtest command, the shadow session, the jobs and the training flow all take theirs from here,
    so backtests, labels and shadow price trades alike."""
    from core.sim import sim_config_for

    return sim_config_for(settings.label, settings.policy, max_hold_bars=max_hold_bars)


def backtest(
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated; default: universe symbols in the lake"
    ),
    strategies: str = typer.Option(",".join(BASELINES), "--strategies", help="baselines to run"),
    start: str | None = typer.Option(None, "--start", help="ISO date, UTC; default: the data's start"),
    end: str | None = typer.Option(None, "--end", help="ISO date, UTC, exclusive; default: the data's end"),
    mark_proxy: str = typer.Option(
        "last", "--mark-proxy", help="without 1m mark candles: last | interpolate"
    ),
    out: Path | None = typer.Option(None, "--out", help="report folder; default <data_dir>/reports/backtest"),
) -> None:
    """Backtest the baseline strategies on the lake's 1m data and write a report (HTML, PNG, JSON)."""
    from pipelines.backtest import load_panel
    from pipelines.baselines import run_baselines
    from pipelines.report import Report, backtest_section
    from storage.lake import Lake

    settings = settings_or_exit()
    lake = Lake(settings.lake_root)
    have = set(lake.symbols("candles_1m"))
    try:
        chosen = list(parse_universe(symbols)) if symbols else [s for s in settings.universe if s in have]
        names = [n.strip() for n in strategies.split(",") if n.strip()]
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise typer.BadParameter(
            f"unknown: {', '.join(unknown)}; known: {', '.join(BASELINES)}", param_hint="--strategies"
        )
    missing = [s for s in chosen if s not in have]
    if missing or not chosen:
        raise typer.BadParameter(f"no candles_1m in {lake.root} for {', '.join(missing) or 'the universe'}: "
                                 "run `raytrade import` or `raytrade history` first", param_hint="--symbols")  # fmt: skip
    if mark_proxy not in ("last", "interpolate"):
        raise typer.BadParameter("last or interpolate", param_hint="--mark-proxy")
    start_ms = parse_utc(start) if start else None
    end_ms = parse_utc(end) if end else None
    panel = load_panel(lake, chosen, start_ms, end_ms, mark_proxy=mark_proxy)  # type: ignore[arg-type]
    results = run_baselines(lake, panel, names, sim=sim_config(settings), risk=settings.risk,
                            policy=settings.policy, label_spec=settings.label)  # fmt: skip
    out_dir = out or settings.data_dir / "reports" / "backtest"
    report = Report("raytrade backtest: baseline strategies", out_dir.resolve())
    sources = sorted({src for s in chosen for srcs in lake.sources("candles_1m", s).values() for src in srcs})
    has_mark = [s for s in chosen if lake.coverage("mark_1m", s) is not None]
    report.notes += [
        f"data: {len(chosen)} symbols, {len(panel.ts):,} 1m bars, sources: {', '.join(sources)}",
        f"mark price: 1m mark candles for {len(has_mark)} symbol(s); otherwise '{mark_proxy}' proxy",
        f"costs: taker fee {settings.label.fee_rate:.4%} per fill, slippage_k {settings.label.slippage_k}; "
        f"risk preset max positions {settings.risk.max_positions}, daily loss limit {settings.risk.daily_loss_limit_pct:.1%}",
    ]
    if "synthetic" in sources:
        report.notes.insert(0, "SYNTHETIC market data: these numbers say nothing about real markets")
    summaries = backtest_section(report, results, label="baselines", per_symbol_of=names[0])
    path = report.write({"summaries": summaries, "symbols": chosen, "strategies": names})
    for name, m in summaries.items():
        console.print(f"{name}: {m['trades']:.0f} trades, return {m['total_return']:+.2%}, "
                      f"PF {m['profit_factor']:.2f}, max DD {m['max_drawdown']:.2%}")  # fmt: skip
    print(path)


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest)
