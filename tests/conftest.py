"""Session-wide real services. They start on demand and never skip: a missing server is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import sqlalchemy as sa

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = Path(os.environ.get("RAYTRADE_TEST_SHARED_DATA", SHARED / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Binance data beside the repository (../shared/data). Required: CI always has it."""
    if not SHARED_DATA.exists():
        pytest.fail(f"real data folder {SHARED_DATA} is missing (set RAYTRADE_TEST_SHARED_DATA)")
    return SHARED_DATA


def _xdist_worker() -> int | None:
    """The pytest-xdist worker's number (``gw0`` → 0), None when tests run in one process."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def _worker_database(url: str) -> Iterator[str]:
    """A database of this xdist worker's own on the server of ``url`` (workers share the server),
    created empty and dropped afterwards."""
    import sqlalchemy as sa

    name = f"xdist_gw{_xdist_worker()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{url.rpartition('/')[0]}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a real PostgreSQL: RAYTRADE_TEST_PG_URL, or a temporary server started for the session."""
    from raytrade.devservices import postgres_url

    with postgres_url() as url:
        if _xdist_worker() is None:
            yield url
            return
        yield from _worker_database(url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: RAYTRADE_TEST_REDIS_URL, or a temporary server started for the session."""
    from raytrade.devservices import redis_url as _redis_url

    with _redis_url() as url:
        worker = _xdist_worker()
        # under pytest-xdist each worker gets a Redis database of its own (streams keep the default namespace)
        yield url if worker is None else f"{url.rsplit('/', 1)[0]}/{worker + 1}"


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A new empty database on the session's PostgreSQL server, dropped afterwards."""
    import uuid

    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base, _, _ = pg_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind: an SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'raytrade.db'}"
    return request.getfixturevalue("fresh_pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """An engine on ``db_url`` with every migration applied."""
    from storage import db

    e = db.make_engine(db_url)
    db.upgrade(e)
    yield e
    e.dispose()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session, sized for a 2-core machine, no dashboard."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",  # a new local instance, never a cluster some other process started
            num_cpus=2,
            object_store_memory=256 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    from pipelines.raydata import configure_data_context

    configure_data_context(progress=False)
    yield
    ray.shutdown()
