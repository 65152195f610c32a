"""``raytrade config``: inspect the effective configuration."""

from __future__ import annotations

import json

import typer

config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")


@config_app.command("show")
def config_show() -> None:
    """Print the effective settings as JSON, secrets masked."""
    from raytrade.options import settings_or_exit

    print(json.dumps(settings_or_exit().redacted(), indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
