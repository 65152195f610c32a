"""Backtest and research reports: metrics tables, equity curves and cost breakdowns as HTML + PNG."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas as pd

from core.jsonsafe import dumps_json
from core.metrics import cost_breakdown, per_symbol_table, summarize

#: Metrics shown in the headline table, in order, with their display format.
HEADLINE = (
    ("trades", "{:,.0f}"), ("total_return", "{:+.2%}"), ("profit_factor", "{:.3f}"), ("win_rate", "{:.1%}"),
    ("expectancy", "{:+,.2f}"), ("tail_loss", "{:+.3%}"), ("max_drawdown", "{:.2%}"), ("sharpe", "{:.2f}"),
    ("sortino", "{:.2f}"), ("exposure", "{:.1%}"), ("turnover_per_day", "{:.2f}"), ("fees", "{:,.2f}"),
    ("slippage", "{:,.2f}"), ("funding", "{:,.2f}"),
)  # fmt: skip


@dataclass
class Report:
    """An HTML report being assembled: sections of text, tables and images, written by ``write``."""

    title: str
    out_dir: Path
    notes: list[str] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self._parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str) -> None:
        self._parts.append(f"<p>{html.escape(text)}</p>")

    def table(self, frame: pd.DataFrame, caption: str | None = None) -> None:
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        body = frame.to_html(border=0, classes="t", na_rep="–", escape=True)
        self._parts.append(
            body.replace('<table border="0" class="dataframe t">', f'<table class="t">{cap}', 1)
        )

    def image(self, name: str, figure: plt.Figure, alt: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / name
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        self._parts.append(f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">')
        return path

    def write(self, data: Mapping[str, object] | None = None) -> Path:
        """Write ``report.html`` (and ``report.json`` with ``data``); return the HTML path."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>"
            + (f"<ul class='notes'>{notes}</ul>" if notes else "")
            + "".join(self._parts)
            + "</body></html>"
        )
        path = self.out_dir / "report.html"
        path.write_text(page, encoding="utf-8")
        if data is not None:
            (self.out_dir / "report.json").write_text(dumps_json(data, indent=1, default=_json_default))
        return path


#: How a table shows an infinite profit factor: gross profit over no gross loss.
NO_LOSING_TRADE = "∞ (no losing trade)"


def profit_factor_text(value: object, pattern: str = "{:.4f}") -> str:
    """A profit factor for reading: ``NO_LOSING_TRADE`` when infinite, "–" when undefined (no trades)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return NO_LOSING_TRADE
    return pattern.format(value)


def with_profit_factor_text(
    frame: pd.DataFrame, columns: tuple[str, ...] = ("profit_factor",)
) -> pd.DataFrame:
    """``frame`` with its profit-factor ``columns`` as text (``profit_factor_text``), for display."""
    out = frame.copy()
    for c in columns:
        if c in out:
            out[c] = [profit_factor_text(v) for v in out[c]]
    return out


def metrics_table(summaries: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per strategy, the headline metrics formatted for reading."""
    rows = {}
    for name, m in summaries.items():
        rows[name] = {
            k: profit_factor_text(m.get(k, math.nan), f)
            if k == "profit_factor"
            else _fmt(m.get(k, math.nan), f)
            for k, f in HEADLINE
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def equity_figure(curves: Mapping[str, pd.DataFrame], title: str) -> plt.Figure:
    """Equity curves (USDT) of several strategies on one time axis."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, eq in curves.items():
        if len(eq):
            ax.plot(pd.to_datetime(eq["ts"], unit="ms", utc=True), eq["equity"], label=name, linewidth=1.1)
    ax.set_title(title)
    ax.set_ylabel("equity (USDT)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return fig


def cost_figure(costs: Mapping[str, Mapping[str, float]], title: str) -> plt.Figure:
    """Stacked bars of fees, slippage and funding (USDT) per strategy."""
    names = list(costs)
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(names)
    for part in ("fees", "slippage", "funding"):
        values = [costs[n].get(part, 0.0) for n in names]
        ax.bar(names, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(title)
    ax.set_ylabel("USDT")
    ax.legend()
    ax.tick_params(axis="x", labelrotation=15)
    return fig


def backtest_section(
    report: Report, results: Mapping[str, object], *, label: str, per_symbol_of: str | None = None
) -> dict[str, dict[str, float]]:
    """Add metrics, equity curves, cost breakdown (and one per-symbol table) of backtest results."""
    summaries = {name: summarize(r.trades, r.equity) for name, r in results.items()}  # type: ignore[attr-defined]
    report.heading(f"{label}: metrics")
    report.table(metrics_table(summaries))
    curves = {name: r.equity for name, r in results.items()}  # type: ignore[attr-defined]
    report.image(
        f"equity_{_slug(label)}.png", equity_figure(curves, f"{label}: equity"), f"{label} equity curves"
    )
    costs = {name: cost_breakdown(r.trades) for name, r in results.items()}  # type: ignore[attr-defined]
    report.heading(f"{label}: costs (USDT)")
    report.table(pd.DataFrame.from_dict(costs, orient="index").round(2))
    report.image(
        f"costs_{_slug(label)}.png", cost_figure(costs, f"{label}: cost breakdown"), f"{label} costs"
    )
    if per_symbol_of is not None and len(results[per_symbol_of].trades):  # type: ignore[attr-defined]
        report.heading(f"{label}: per symbol ({per_symbol_of})")
        table = per_symbol_table(results[per_symbol_of].trades).round(4)  # type: ignore[attr-defined]
        report.table(with_profit_factor_text(table))
    return summaries


def _fmt(value: float, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return pattern.format(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def _json_default(value: object) -> object:
    # numbers, NaN and numpy values are json_safe's; these are the report's other types
    if isinstance(value, (pd.Timestamp, Path)):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0}
table.t td,table.t th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f6f6f6}caption{text-align:left;font-weight:600}
img{max-width:100%;margin:.5em 0}ul.notes{background:#fff8e1;padding:.6em 1.6em;border-radius:4px}
"""
