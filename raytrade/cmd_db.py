"""``raytrade db``: create and migrate the database."""

from __future__ import annotations

import typer
from rich.console import Console

from raytrade.options import settings_or_exit
from raytrade.settings import redact_url
from storage import db
from storage.instruments import sync_universe

console = Console()
db_app = typer.Typer(no_args_is_help=True, help="Create, migrate and inspect the database.")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Migrate the database to the newest schema and sync the universe into instruments."""
    settings = settings_or_exit()
    engine = db.make_engine(settings.database_url)
    before = db.current_revision(engine)
    db.upgrade(engine, revision)
    counts = sync_universe(engine, settings.universe)
    after = db.current_revision(engine)
    console.print(
        f"database {redact_url(settings.database_url)}: {before or 'empty'} → {after}; "
        f"instruments: {counts['added']} added, {counts['reactivated']} reactivated, "
        f"{counts['deactivated']} deactivated"
    )
    engine.dispose()


@db_app.command("current")
def current() -> None:
    """Print the database's revision and whether it is the newest."""
    settings = settings_or_exit()
    engine = db.make_engine(settings.database_url)
    rev, head = db.current_revision(engine), db.head_revision()
    console.print(f"{redact_url(settings.database_url)}: revision {rev or 'none'} (newest: {head})")
    engine.dispose()
    if rev != head:
        raise typer.Exit(1)


@db_app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(..., help="target revision, or 'base' to drop everything"),
) -> None:
    """Revert migrations down to a revision."""
    settings = settings_or_exit()
    engine = db.make_engine(settings.database_url)
    db.downgrade(engine, revision)
    console.print(f"database at {db.current_revision(engine) or 'base'}")
    engine.dispose()


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
