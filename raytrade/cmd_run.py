"""``raytrade run``: the realtime system (shadow mode) on local Ray, on the replay venue or Binance."""

from __future__ import annotations

import json
import signal
from typing import Any

import typer
from rich.console import Console

from core.errors import ConfigError
from core.symbols import SymbolError, parse_universe
from raytrade.defaults import MODEL_NAME
from raytrade.options import settings_or_exit, time_option_ms

console = Console(stderr=True)


def run(
    mode: str = typer.Option(
        "shadow",
        "--mode",
        help="shadow (paper exchange) | live (orders to the venue: the replay venue's paper broker, or "
        "Binance after `raytrade live-confirm`)",
    ),
    venue: str = typer.Option(
        "replay",
        "--venue",
        help="replay (the lake on loopback) | binance (public streams; live: real orders) | binance-testnet",
    ),
    symbols: str | None = typer.Option(None, "--symbols", help="comma-separated; default: the universe"),
    group_size: int = typer.Option(25, "--group-size", min=1, help="symbols per ingest actor"),
    model: str = typer.Option(MODEL_NAME, "--model", help="registered model; serves its production alias"),
    start: str | None = typer.Option(None, "--start", help="replay: first minute (ISO UTC or epoch ms)"),
    end: str | None = typer.Option(None, "--end", help="replay: end (ISO UTC or epoch ms, exclusive)"),
    minutes: int = typer.Option(
        60, "--minutes", min=1, help="replay without --start/--end: the lake's last N minutes"
    ),
    speed: float = typer.Option(60.0, "--speed", min=1.0, max=1000.0, help="replay speed (1 = real time)"),
    mark_ticks: int = typer.Option(
        60, "--mark-ticks", min=1, max=60, help="replay: markPrice ticks per minute"
    ),
    mark_fallback: str = typer.Option(
        "none",
        "--mark-fallback",
        help="replay without 1m mark prices (mark_1m): none = refuse; last = last price as a derived mark",
    ),
    keep_open: bool = typer.Option(
        False, "--keep-open", help="do not close positions at the end of a replay"
    ),
    api: bool = typer.Option(
        True, "--api/--no-api", help="serve the API and dashboard on 127.0.0.1 (RAYTRADE_API_PORT)"
    ),
    session: str | None = typer.Option(
        None,
        "--session",
        help="session id; an existing one resumes its book from the database (default: new)",
    ),
    policy: str = typer.Option(
        "supervised",
        "--policy",
        help="supervised (the policy on the model's outputs) | rl (the hybrid RL agent of <model>-rl@production "
        "decides on them; every decision in rl_decisions)",
    ),
) -> None:
    """Run the realtime system: ingest actors, Serve Predictor, policy, risk/execution actor (shadow)."""
    from raytrade.realtime import ShadowOptions, ShadowSession, default_replay_window

    settings = settings_or_exit()
    if mode not in ("shadow", "live"):
        raise typer.BadParameter("shadow or live", param_hint="--mode")
    if venue not in ("replay", "binance", "binance-testnet"):
        raise typer.BadParameter("replay, binance or binance-testnet", param_hint="--venue")
    if mode == "live" and venue == "binance":
        approve_live(settings, model)
    if mark_fallback not in ("none", "last"):
        raise typer.BadParameter("none or last", param_hint="--mark-fallback")
    if policy not in ("supervised", "rl"):
        raise typer.BadParameter("supervised or rl", param_hint="--policy")
    try:
        chosen = parse_universe(symbols) if symbols else tuple(settings.universe)
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    options = ShadowOptions(symbols=tuple(chosen), model_name=model, venue=venue, group_size=group_size,  # type: ignore[arg-type]
                            speed=speed, mark_ticks_per_minute=mark_ticks, flatten_at_end=not keep_open,
                            mark_fallback=mark_fallback, mode=mode, api=api, policy=policy)  # type: ignore[arg-type]  # fmt: skip
    if session:
        options.session_id = session
    # before the session starts: a signal while it comes up stops it as cleanly once it is up (start_ray
    # keeps these handlers through ray.init, whose own SIGTERM handler would abort the process)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # stop cleanly, report, release Ray
    try:
        if venue == "replay":
            if start and end:
                options.start_ms, options.end_ms = (
                    time_option_ms(start, "--start"),
                    time_option_ms(end, "--end"),
                )
            else:
                options.start_ms, options.end_ms = default_replay_window(settings.lake_root, chosen, minutes)
        session = ShadowSession(settings, options)
        console.print(f"{mode} session {options.session_id}: {len(chosen)} symbols on the {venue} venue")
        session.start()
        if session.api_url:
            console.print(
                f"dashboard: {session.api_url}/dashboard (token in {settings.data_dir.resolve() / 'api_token'})"
            )
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    # SIGUSR1: the kill switch (no new entries; the book keeps its protections), as `raytrade kill` does
    signal.signal(signal.SIGUSR1, lambda *_: session.execution.kill_switch.remote(False, "signal SIGUSR1"))
    try:
        if venue == "replay":
            while not stop["now"] and not session.wait(timeout_s=1.0):
                pass
        else:
            console.print(f"streaming {venue}'s public market data; Ctrl-C stops, SIGUSR1 is the kill switch")
            while not stop["now"]:
                session.wait(timeout_s=1.0)
    finally:
        report = session.stop()
    ex = report.get("execution", {})
    console.print(
        f"closes {report['closes']}, signals {report['signals']}, entries {ex.get('entries')}, exits {ex.get('exits')}, "
        f"realized PnL {ex.get('realized_pnl', float('nan')):.2f} USDT; close→signal p50 "
        f"{report['close_to_signal_p50_ms']:.0f} ms, p99 {report['close_to_signal_p99_ms']:.0f} ms; "
        f"{report['messages_per_s']:.0f} msgs/s"
    )
    for line in summary_notes(report):
        console.print(line)
    print(json.dumps({k: v for k, v in report.items() if k in
                      ("session_id", "closes", "signals", "messages", "skip_reasons", "mark")}))  # fmt: skip


def approve_live(settings: Any, model: str) -> None:
    """Live on Binance needs the two steps of ``raytrade.live_guard`` (token file, typed phrase) and the
    production model's shadow record or a recorded override; exit 2 naming what is missing."""
    import time

    from core.errors import FatalError
    from raytrade.live_guard import check_live_allowed

    try:
        approval = check_live_allowed(settings, confirm=lambda prompt: typer.prompt(prompt), now_ms=int(time.time() * 1000),
                                      model_name=model)  # fmt: skip
    except FatalError as e:
        console.print(f"[red]live trading refused:[/red] {e}")
        raise typer.Exit(2) from None
    console.print(f"live trading approved: {approval}")


def summary_notes(report: dict) -> list[str]:
    """The lines that say where the marks came from and why decisions were skipped (always, when any
    were), and why nothing traded when no entry was made."""
    notes = []
    derived = report.get("mark", {}).get("derived_symbols", [])
    if derived:
        notes.append(f"mark prices DERIVED from the last price (no mark_1m) for {len(derived)} symbol(s): "
                     f"{', '.join(derived)}")  # fmt: skip
    reasons = report.get("skip_reasons", {})
    if reasons:
        notes.append("skipped decisions: " + "; ".join(f"{why}: {n}" for why, n in reasons.items()))
    if not report.get("execution", {}).get("entries"):
        if reasons and not report.get("signals"):
            notes.append("nothing traded: every decision was skipped (see the reasons above)")
        elif not report.get("closes"):
            notes.append("nothing traded: no 1m bar closed during the run")
        elif report.get("signals"):
            notes.append(
                "nothing traded: the policy or the risk guards made no entry (see the signals table)"
            )
    return notes


def register(app: typer.Typer) -> None:
    app.command("run")(run)
