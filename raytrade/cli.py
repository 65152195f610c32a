"""The ``raytrade`` command. Settings are loaded once here and passed down.

Importing this module imports no command module: ``raytrade.commands.LazyGroup`` imports the one
that registers a command when it runs (or shows its own help), so ``raytrade --help`` starts in a
fraction of a second instead of importing Ray, MLflow and LightGBM first.
"""

from __future__ import annotations

import sys

import typer

from core.errors import RaytradeError
from raytrade.commands import LazyGroup

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="raytrade: research and trading on Ray.", cls=LazyGroup
)


@app.callback()
def _root() -> None:
    """Run before any command: nothing to do (Typer builds a group only around a callback or commands)."""


def _register_commands() -> None:
    """Kept for callers of the eager registration: the commands now come from ``LazyGroup``."""


def main() -> None:
    try:
        app()
    except RaytradeError as e:
        from raytrade.options import console

        console.print(f"[red]{type(e).__name__}: {e}[/red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
