"""``raytrade venue``: serve the lake as a local Binance USDⓈ-M replay venue (REST + WebSocket)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from core.symbols import SymbolError, parse_universe
from core.time import MINUTE_MS
from raytrade.options import settings_or_exit, time_option_ms

if TYPE_CHECKING:
    from exchange.venue.replay import VenueUrls
    from storage.lake import Lake

console = Console(stderr=True, soft_wrap=True)


def _span(lake: Lake, symbols: tuple[str, ...]) -> tuple[int, int]:
    """Return the span all ``symbols`` have 1m candles for: (first bar open, last bar close), epoch ms."""
    spans = []
    for symbol in symbols:
        coverage = lake.coverage("candles_1m", symbol)
        if coverage is None:
            raise typer.BadParameter(f"the lake has no candles_1m for {symbol}", param_hint="--symbols")
        spans.append((coverage.first_ts, coverage.last_ts + MINUTE_MS))
    return max(s for s, _ in spans), min(e for _, e in spans)


def venue(
    lake_path: Path | None = typer.Option(None, "--lake", help="lake folder; default: the settings' lake"),
    symbols: str | None = typer.Option(
        None, "--symbols", help="comma-separated symbols; default: all in the lake"
    ),
    start: str | None = typer.Option(
        None, "--start", help="ISO date/time (UTC) or epoch ms; default: first common bar"
    ),
    end: str | None = typer.Option(
        None, "--end", help="ISO date/time (UTC) or epoch ms, exclusive; default: last common bar"
    ),
    speed: str = typer.Option(
        "60", "--speed", help="replay ms per wall ms (1 = real time, 60x …), or 'step'"
    ),
    port: int = typer.Option(
        8765, "--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0: any free port)"
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the book sizes"),
    ticks: int = typer.Option(60, "--ticks", min=1, max=600, help="mark/book ticks per minute"),
    kline_updates: int = typer.Option(
        0, "--kline-updates", min=0, max=240, help="x=false kline_1m updates per minute"
    ),
    exchange_info: Path | None = typer.Option(
        None,
        "--exchange-info",
        help="a Binance exchangeInfo JSON file; default: generated from the price level",
    ),
    paused: bool = typer.Option(
        False, "--paused", help="start with the clock paused (POST /_venue/clock to run it)"
    ),
) -> None:
    """Replay the lake as a local Binance USDⓈ-M venue until the replay ends or Ctrl-C.

    REST market data, exchangeInfo and premiumIndex at the replay clock; WebSocket streams on
    /market (kline_1m/15m/1h, markPrice@1s) and /public (bookTicker); with the settings
    RAYTRADE_VENUE_API_KEY and RAYTRADE_VENUE_API_SECRET (environment or .env, never the command
    line, where `ps` shows them) a paper broker for orders and /private user data. Faults: POST /_venue/faults; counters:
    GET /_venue/stats; clock: GET/POST /_venue/clock.
    """
    from exchange.venue import ReplayVenue
    from exchange.venue.clock import parse_speed
    from storage.lake import Lake

    settings = settings_or_exit()
    root = lake_path.resolve() if lake_path is not None else settings.lake_root
    api_key, api_secret = (
        None if s is None else s.get_secret_value()
        for s in (settings.venue_api_key, settings.venue_api_secret)
    )
    lake = Lake(root)
    try:
        chosen = parse_universe(symbols) if symbols else tuple(lake.symbols("candles_1m"))
    except SymbolError as e:
        raise typer.BadParameter(str(e), param_hint="--symbols") from None
    if not chosen:
        raise typer.BadParameter(
            f"the lake at {root} has no candles_1m: run `raytrade history` or `raytrade import` first"
        )
    first_ms, last_ms = _span(lake, chosen)
    start_ms = time_option_ms(start, "--start") or first_ms
    end_ms = time_option_ms(end, "--end") or last_ms
    try:
        replay_speed = parse_speed(speed)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--speed") from None
    if (api_key is None) != (api_secret is None):
        console.print(
            "[red]set both RAYTRADE_VENUE_API_KEY and RAYTRADE_VENUE_API_SECRET, or neither[/red]",
            highlight=False,
        )
        raise typer.Exit(2)
    info: dict[str, Any] | None = None
    if exchange_info is not None:
        try:
            info = json.loads(exchange_info.read_text())
        except (OSError, ValueError) as e:
            raise typer.BadParameter(
                f"cannot read {exchange_info}: {e}", param_hint="--exchange-info"
            ) from None
    try:
        replay = ReplayVenue(
            lake, chosen, start_ms, end_ms, speed=replay_speed, mark_ticks_per_minute=ticks,
            kline_updates_per_minute=kline_updates, seed=seed, exchange_info=info,
            api_key=api_key, api_secret=api_secret, port=port,
        )  # fmt: skip
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    urls = replay.start(paused=paused or replay_speed == "step")
    _print_urls(urls, chosen, start_ms, end_ms, speed, broker=api_key is not None)
    try:
        _wait(replay.finished)
    except KeyboardInterrupt:
        console.print("interrupted")
    finally:
        stats = replay.stats()
        replay.stop()
    console.print(
        "venue stopped: "
        + ", ".join(
            f"{c} sent {stats[c]['sent']:,} (connections {stats[c]['connections']})"
            for c in ("market", "public", "private")
        )
    )
    if replay.driver.error is not None:
        console.print(f"[red]the replay failed: {replay.driver.error}[/red]", highlight=False)
        raise typer.Exit(1)


def _wait(finished: threading.Event) -> None:
    while not finished.wait(0.5):
        pass


def _print_urls(
    urls: VenueUrls, symbols: tuple[str, ...], start_ms: int, end_ms: int, speed: str, broker: bool
) -> None:
    console.print(
        f"replay venue: {len(symbols)} symbol(s) {', '.join(symbols)}, {start_ms} → {end_ms} at speed {speed}",
        highlight=False,
    )
    console.print(f"REST: {urls.rest_url}   WebSocket: {urls.ws_url}", highlight=False)
    console.print(
        "python-binance:\n"
        f"  client = Client(ping=False); client.FUTURES_URL = {urls.fapi_url!r}\n"
        f"  BinanceSocketManager.FSTREAM_URL = {urls.ws_url!r}  # then futures_multiplex_socket(..., category='market')\n"
        f"raytrade: RAYTRADE_FAPI_URL={urls.rest_url}"
        + (
            ""
            if broker
            else "\n(no paper broker: set RAYTRADE_VENUE_API_KEY and RAYTRADE_VENUE_API_SECRET to trade)"
        ),
        highlight=False,
    )
    # Machine-readable line on stdout for scripts that start the venue and read where it listens.
    print(json.dumps({"rest_url": urls.rest_url, "ws_url": urls.ws_url}), flush=True)


def register(app: typer.Typer) -> None:
    """Add ``venue`` to the CLI."""
    app.command("venue")(venue)
