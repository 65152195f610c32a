"""The dashboard: the nine pages of spec 001 §20.1 as plain HTML, one script, one stylesheet.

The pages hold no data: each one is a frame whose script (``static/app.js``) fetches the JSON
endpoints under ``/api`` with the operator's token and refreshes live (over ``/ws`` when the app
has it, else by polling). State comes first on every page: a header with health, the kill switch
and drift, the trading state, and the operator's controls (start, stop entries, stop, kill, kill and close,
resume) always at hand; the overview and models pages warn of a promotion whose gates failed. The
Training & models page also holds the RL agent (spec 001 §25.6): its models with the §25.7 gates and a
Promote button, the action distribution per model and the recent decisions. plotly.js is
served from the installed plotly package, so nothing is fetched from a CDN.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

__all__ = ["PAGES", "pages_router", "plotly_js_path"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,30}$")

#: page name -> (path, title), in the order of the navigation bar.
PAGES: dict[str, tuple[str, str]] = {
    "dashboard": ("/dashboard", "Overview"),
    "signals": ("/signals", "Signals"),
    "positions": ("/positions", "Positions"),
    "orders": ("/orders", "Orders"),
    "training": ("/training", "Training & models"),
    "risk": ("/risk", "Risk"),
    "data-quality": ("/data-quality", "Data quality & drift"),
    "settings": ("/settings", "Settings"),
}

# Each page's sections: (element id, heading). The script fills the elements by id.
_SECTIONS: dict[str, list[tuple[str, str]]] = {
    "dashboard": [
        ("status", "System health"),
        ("account", "Account"),
        ("margin", "Margin overview"),
        ("drift-alerts", "Drift alerts"),
        ("top-signals", "Top signals"),
    ],
    "signals": [
        ("signals-table", "Signals (latest per symbol)"),
        ("signal-drawer", "Why entered / why blocked, and the top features"),
    ],
    "symbol": [
        (
            "price-chart",
            "Price (last or mark) with entry, active stop, SL, TP and liquidation; risk per trade",
        ),
        ("ev-chart", "EV, ER, q05 and expected MAE over time"),
        ("explain", "Explain (top features per target)"),
        ("symbol-positions", "Position"),
        ("symbol-orders", "Orders"),
        ("symbol-fills", "Fills"),
    ],
    "positions": [
        ("positions-table", "Open positions"),
        ("risk-top", "Risk top 5"),
        ("pnl", "PnL and costs"),
    ],
    "orders": [
        ("orders-open", "Open orders (incl. stops)"),
        ("orders-table", "Orders"),
        ("fills-table", "Fills"),
    ],
    "training": [
        ("jobs-table", "Training jobs"),
        ("enqueue", "Enqueue a job"),
        ("models-table", "Models"),
        # §25.6: the RL agent's models (metrics, gates, production, promote), actions and decisions
        ("rl-models", "RL agent: models"),
        ("rl-actions", "RL agent: action distribution per model"),
        ("rl-decisions", "RL agent: recent decisions"),
    ],
    "risk": [("risk-state", "Risk state"), ("safety-events", "Safety / risk event timeline")],
    "data-quality": [("dq-summary", "Data quality by symbol"), ("drift-table", "Drift")],
    "settings": [("settings-view", "Settings")],
}

_FILTERS = (
    '<label>Filter <select id="signal-filter">'
    '<option value="all">all</option><option value="ev">EV top</option>'
    '<option value="funding">funding extreme</option><option value="vol">volatility top</option>'
    '<option value="blocked">blocked only</option></select></label>'
)

_ENQUEUE = (
    '<form id="enqueue-form"><label>Kind <select id="job-kind">'
    + "".join(f'<option value="{k}">{k}</option>' for k in ("train", "label", "backtest"))
    + '</select></label> <button type="submit" id="enqueue-button">Enqueue</button></form>'
)


def plotly_js_path() -> Path:
    """Return the path of the plotly.js bundle shipped inside the installed plotly package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def _nav(current: str) -> str:
    links = []
    for name, (path, title) in PAGES.items():
        mark = ' aria-current="page"' if name == current else ""
        links.append(f'<a href="{path}"{mark}>{html.escape(title)}</a>')
    return "<nav>" + "".join(links) + "</nav>"


def _render(page: str, title: str, *, symbol: str = "") -> str:
    sections = []
    for element_id, heading in _SECTIONS[page]:
        extra = ""
        if element_id == "signals-table":
            extra = _FILTERS
        elif element_id == "enqueue":
            extra = _ENQUEUE
        sections.append(
            f'<section><h2>{html.escape(heading)}</h2>{extra}<div id="{element_id}" class="panel">'
            '<p class="muted">loading…</p></div></section>'
        )
    banner = (
        '<div id="promotion-banner" role="alert" hidden></div>' if page in ("dashboard", "training") else ""
    )
    plotly = (
        '<script src="/static/plotly.min.js"></script>'
        if page in ("symbol", "data-quality", "training")
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>raytrade · {html.escape(title)}</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/app.css">{plotly}
</head>
<body data-page="{page}" data-symbol="{html.escape(symbol)}">
<header id="state-bar">
  <strong class="brand">raytrade</strong>
  <span class="state">health <b id="health-state">…</b></span>
  <span class="state">kill switch <b id="killswitch-state">…</b></span>
  <span class="state">drift <b id="drift-state">…</b></span>
  <span class="state">live <b id="live-state">…</b></span>
  <span class="state">trading <b id="trading-state">…</b></span>
  <span class="controls">
    <button id="start-button">Start</button>
    <button id="stop-entries-button">Stop entries</button>
    <button id="stop-button">Stop</button>
    <button id="kill-button" class="danger">Kill</button>
    <button id="kill-close-button" class="danger">Kill + close</button>
    <button id="resume-button">Resume</button>
  </span>
</header>
<form id="token-form" hidden><label>API token <input id="token-input" type="password"
 autocomplete="off"></label> <button type="submit">Use</button></form>
<div id="action-result" role="status"></div>
{_nav(page)}{banner}
<main><h1>{html.escape(title)}</h1>
{"".join(sections)}
</main>
<script src="/static/app.js"></script>
</body></html>
"""


def _static(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})


def pages_router() -> APIRouter:
    """Return the router of the dashboard pages and their static files (no auth: pages hold no data)."""
    router = APIRouter(include_in_schema=False)

    def add_page(name: str, path: str, title: str) -> None:
        body = _render(name, title)

        async def page() -> HTMLResponse:
            return HTMLResponse(body)

        router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse, name=f"page_{name}")

    for name, (path, title) in PAGES.items():
        add_page(name, path, title)

    @router.get("/", response_class=RedirectResponse)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @router.get("/symbol/{symbol}", response_class=HTMLResponse)
    async def symbol_page(symbol: str) -> HTMLResponse:
        if not SYMBOL_PATTERN.match(symbol):
            raise HTTPException(status_code=404, detail="unknown symbol")
        return HTMLResponse(_render("symbol", symbol, symbol=symbol))

    @router.get("/static/app.js")
    async def app_js() -> FileResponse:
        return _static("app.js", "text/javascript")

    @router.get("/static/app.css")
    async def app_css() -> FileResponse:
        return _static("app.css", "text/css")

    @router.get("/static/plotly.min.js")
    async def plotly_js() -> FileResponse:
        return FileResponse(
            plotly_js_path(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
        )

    return router
