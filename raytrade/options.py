"""Helpers shared by the CLI command modules: settings loading and option parsing.

They live here, not in ``raytrade.cli``, so the command modules never import the module that
imports them (``cli`` → ``commands`` → ``cmd_*``).
"""

from __future__ import annotations

import typer
from rich.console import Console

from core.errors import ConfigError
from core.time import parse_utc
from raytrade.settings import Settings, load_settings

console = Console(stderr=True)


def settings_or_exit() -> Settings:
    """Load settings, or print what is wrong (one unwrapped line per problem) and exit 2."""
    try:
        return load_settings()
    except ConfigError as e:
        console.print(str(e), style="red", markup=False, highlight=False, soft_wrap=True)
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
