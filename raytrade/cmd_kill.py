"""``raytrade kill [--close-positions] | resume``: the kill switch from the command line.

``kill`` first creates the kill file ``<data_dir>/KILL`` (a running system stops new entries when it
sees it, even when the database is down), then records the operator's trigger in the ``events``
table (``storage.killswitch_store``) and prints the switch's state. With ``--close-positions`` and
a configured venue it also cancels every open order and algo order and closes every position itself
(``exchange.binance.emergency``), so it works while the trading system is down; it exits 1 when the
account could not be verified flat.

``resume`` refuses (exit 1, saying why) while the stored state shows a condition still holding
(the user stream silent, data stale, the daily loss limit of today …, as the running system last
recorded it); otherwise it removes the kill file and records the resume.

Venue (``trading_config``): the replay venue when ``RAYTRADE_FAPI_URL`` and
``RAYTRADE_VENUE_API_KEY``/``_SECRET`` are set; Binance (``RAYTRADE_TESTNET`` for the testnet, or
``RAYTRADE_FAPI_URL``) when ``RAYTRADE_BINANCE_API_KEY``/``_SECRET`` are set.
"""

from __future__ import annotations

import getpass
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
import typer
from rich.console import Console

from core.errors import RaytradeError
from core.killswitch import KillSwitch, KillSwitchEvent, KillSwitchState
from core.time import ms_to_text
from raytrade.options import settings_or_exit
from raytrade.settings import Settings
from storage import db
from storage import killswitch_store as store

if TYPE_CHECKING:  # the trading client comes with requests: imported where a command uses it
    from exchange.binance.signed import TradingConfig

console = Console(highlight=False)


def trading_config(settings: Settings) -> TradingConfig | None:
    """The configured venue's ``TradingConfig`` (``raytrade.cmd_reconcile.trading_config``), accepting
    any account mode (a flatten must work on whatever account it finds); None when none is configured."""
    from exchange.binance.signed import TradingConfig
    from raytrade.cmd_reconcile import trading_config as configured

    try:
        config = configured(settings)
    except ValueError:
        return None
    modes = {"allow_hedge_mode": True, "allow_multi_assets_mode": True, "margin_type": "CROSSED"}
    return TradingConfig.model_validate(config.model_dump() | modes)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _source() -> str:
    return f"cli:{getpass.getuser()}"


def _engine(settings: Settings) -> sa.Engine:
    engine = db.make_engine(settings.database_url)
    if not db.is_current(engine):
        engine.dispose()
        raise RaytradeError("the database is not at the current schema: run `raytrade db upgrade` first")
    return engine


def _print_state(state: KillSwitchState) -> None:
    if not state.active:
        console.print("kill switch: [green]off[/green] (entries allowed)")
        return
    since = "" if state.since_ms is None else f" since {ms_to_text(state.since_ms, seconds=True)}"
    console.print(f"kill switch: [red]ACTIVE[/red]{since}: no new entries")
    console.print(f"  reason: {state.reason} ({state.detail}); all reasons: {', '.join(state.reasons)}")
    console.print(f"  close positions: {'yes' if state.close_positions else 'no'}")
    for c in state.holding:
        console.print(f"  holding: {c.reason}: {c.detail}")


def _print_events(events: tuple[KillSwitchEvent, ...]) -> None:
    for e in events:
        console.print(f"  event {e.event_kind}: {e.reason or ''} {e.detail}".rstrip(), markup=False)


def _flatten(settings: Settings, state: KillSwitchState, source: str, engine: sa.Engine | None) -> bool:
    """Cancel and flatten on the configured venue; record and print the report; return whether flat."""
    from exchange.binance.emergency import cancel_all_and_flatten
    from exchange.binance.trading import BinanceTrading

    config = trading_config(settings)
    if config is None:
        console.print(
            "[red]positions NOT closed here: no venue configured[/red] (set RAYTRADE_FAPI_URL with "
            "RAYTRADE_VENUE_API_KEY/_SECRET, or RAYTRADE_BINANCE_API_KEY/_SECRET); a running system "
            "flattens when it reads the request"
        )
        return False
    console.print(f"flattening on {config.base_url} …")
    prefix = f"kill-{state.since_ms}"
    try:
        with BinanceTrading(config) as trading:
            trading.start()
            report = cancel_all_and_flatten(trading, client_id_prefix=prefix)
    except RaytradeError as e:  # start-up failed: the venue is unreachable or refuses the keys
        console.print(f"positions NOT closed: {e}", style="red", markup=False)
        lines, clean = [f"error: {e}"], False
    else:
        lines, clean = report.lines(), report.clean
        for line in lines:
            console.print(f"  {line}", markup=False)
    if engine is not None:
        store.record(engine, [store.flatten_row(_now_ms(), source, state, clean=clean, lines=lines)])
    return clean


def kill_cmd(
    close_positions: bool = typer.Option(
        False,
        "--close-positions",
        help="also cancel every open order and algo order and close every position",
    ),
    reason: str = typer.Option("", "--reason", help="why (recorded with the event)"),
) -> None:
    """Stop new entries now (kill file + recorded event); with --close-positions also cancel and flatten."""
    settings = settings_or_exit()
    source, now = _source(), _now_ms()
    path = store.kill_file(settings.data_dir.resolve())
    store.create_kill_file(path, now, source, reason)
    console.print(f"kill file created: {path}")
    engine: sa.Engine | None = None
    try:
        engine = _engine(settings)
        stored = store.latest_state(engine)
        switch = KillSwitch(settings.killswitch, None if stored is None else stored.state)
        events = switch.operator(now, close_positions, source, reason) + switch.file(now, path_present=True)
        store.record(engine, store.event_rows(events, switch.state()))
        state = switch.state()
    except (RaytradeError, sa.exc.SQLAlchemyError) as e:
        console.print(f"the kill was NOT recorded in the database: {e}; the kill file is in place", style="red",
                      markup=False)  # fmt: skip
        switch = KillSwitch(settings.killswitch)
        events = switch.operator(now, close_positions, source, reason)
        state, engine = switch.state(), None
    _print_events(events)
    _print_state(state)
    ok = engine is not None
    if close_positions:
        ok &= _flatten(settings, state, source, engine)
    if engine is not None:
        engine.dispose()
    if not ok:
        raise typer.Exit(1)


def resume_cmd(
    reason: str = typer.Option("", "--reason", help="why (recorded with the event)"),
) -> None:
    """Allow entries again: remove the kill file and record the resume, unless a condition still holds."""
    settings = settings_or_exit()
    source, now = _source(), _now_ms()
    path = store.kill_file(settings.data_dir.resolve())
    try:
        engine = _engine(settings)
    except (RaytradeError, sa.exc.SQLAlchemyError) as e:
        console.print(f"not resumed: the kill-switch state cannot be read: {e}", style="red", markup=False)
        raise typer.Exit(1) from None
    try:
        stored = store.latest_state(engine)
        switch = KillSwitch(settings.killswitch, None if stored is None else stored.state)
        others = [c for c in switch.holding(now) if c.reason != "file"]  # the file goes with this resume
        if others:
            refused = switch.resume(now, source, reason)
            store.record(engine, store.event_rows(refused, switch.state()))
            _print_events(refused)
            why = "; ".join(f"{c.reason}: {c.detail}" for c in others)
            console.print(f"not resumed: a condition still holds: {why}", style="red", markup=False)
            console.print("the kill file stays; the running system clears a condition when it sees it over")
            raise typer.Exit(1)
        removed = store.remove_kill_file(path)
        console.print(f"kill file removed: {path}" if removed else f"no kill file at {path}")
        events = switch.file(now, path_present=False) + switch.resume(now, source, reason)
        store.record(engine, store.event_rows(events, switch.state()))
        _print_events(events)
        _print_state(switch.state())
    finally:
        engine.dispose()


def register(app: typer.Typer) -> None:
    app.command("kill")(kill_cmd)
    app.command("resume")(resume_cmd)
