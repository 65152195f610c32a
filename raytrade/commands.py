"""Registration of the CLI command groups, one module per area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add every command group to ``app``."""
    from raytrade import (
        cmd_backtest,
        cmd_db,
        cmd_demo,
        cmd_history,
        cmd_models,
        cmd_pipelines,
        cmd_research,
        cmd_run,
        cmd_selftest,
        cmd_venue,
    )

    cmd_db.register(app)
    cmd_selftest.register(app)
    cmd_history.register(app)
    cmd_demo.register(app)
    cmd_pipelines.register(app)
    cmd_models.register(app)
    cmd_backtest.register(app)
    cmd_venue.register(app)
    cmd_research.register(app)
    cmd_run.register(app)
