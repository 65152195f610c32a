"""The ``raytrade`` command. Settings are loaded once here and passed down."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from core.errors import ConfigError, RaytradeError
from core.time import parse_utc
from raytrade.settings import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="raytrade: research and trading on Ray.")
console = Console(stderr=True)


def settings_or_exit() -> Settings:
    """Load settings, or print what is wrong and exit 2."""
    try:
        return load_settings()
    except ConfigError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def time_option_ms(text: str | None, option: str) -> int | None:
    """Parse a time option: epoch milliseconds or an ISO date/time (UTC); a bad value names the option."""
    if text is None:
        return None
    if text.strip().isdigit():
        return int(text)
    try:
        return parse_utc(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON, secrets masked."""
    print(json.dumps(settings_or_exit().redacted(), indent=2, default=str))


def _register_commands() -> None:
    # Each module adds its commands to ``app``; imported here so ``--help`` lists them all.
    from raytrade import commands

    commands.register(app)


def main() -> None:
    _register_commands()
    try:
        app()
    except RaytradeError as e:
        console.print(f"[red]{type(e).__name__}: {e}[/red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
