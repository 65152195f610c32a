"""Alembic environment: the URL comes from the caller (storage.db.upgrade) or RAYTRADE settings."""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

config = context.config


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Our portable types render as themselves so migrations stay dialect-neutral.
    if type_ == "type" and type(obj).__module__ == "storage.types":
        autogen_context.imports.add("import storage.types")  # type: ignore[attr-defined]
        return f"storage.types.{type(obj).__name__}()"
    return False


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from sqlalchemy import create_engine

        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
    else:
        _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        render_item=_render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
