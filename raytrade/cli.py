"""The ``raytrade`` command. Settings are loaded once here and passed down."""

from __future__ import annotations

import json
import sys

import typer

from core.errors import RaytradeError
from raytrade.options import console, settings_or_exit

app = typer.Typer(no_args_is_help=True, add_completion=False, help="raytrade: research and trading on Ray.")


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
