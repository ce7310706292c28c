"""Database engine and sessions: SQLite (aiosqlite) for the embedded default, PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(
    url: str, *, pool_size: int = 10, session_settings: dict[str, str] | None = None
) -> AsyncEngine:
    """Open an async engine with the pragmas and pool settings each backend needs.

    `session_settings` are PostgreSQL settings applied with SET on every new connection of this
    engine (not as startup parameters, which connection poolers such as PgBouncer refuse).
    """
    if url.startswith("sqlite"):
        _prepare_sqlite_path(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the CLI read while the server writes; NORMAL sync is durable in WAL mode
            # against application crashes, which is what the embedded default promises.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # No pre-ping: it costs a round trip on every checkout, on the collect and webhook hot
    # paths. Connections are recycled before typical server/proxy idle timeouts instead, and a
    # connection that died anyway invalidates the pool on its first error.
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=1800
    )
    if session_settings:
        statements = [f"SET {name} = '{value}'" for name, value in session_settings.items()]

        @event.listens_for(engine.sync_engine, "connect")
        def _session_settings(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for statement in statements:
                cursor.execute(statement)
            cursor.close()
            # The driver adapter opened a transaction for them: commit, or the pool's reset
            # on checkin would roll the settings back.
            dbapi_connection.commit()

    return engine


class Database:
    """An engine plus its session factory; one per process."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncSession]:
        """Open a session inside a transaction that commits on success."""
        async with self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.engine.dispose()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate_sync(url: str, revision: str = "head") -> None:
    """Bring the schema up to date (blocking; runs its own event loop in env.py)."""
    from alembic import command

    _prepare_sqlite_path(url) if url.startswith("sqlite") else None
    command.upgrade(_alembic_config(url), revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema up to date from async code."""
    await asyncio.to_thread(migrate_sync, url, revision)


_MIGRATED: set[str] = set()


async def migrated_database(url: str) -> Database:
    """Open a database for a command line, its schema brought up to date first (once per
    process): `calltrack site create` on a fresh machine or a new CALLTRACK_DATABASE_URL works
    without a `calltrack migrate` before it, as `serve` does."""
    if url not in _MIGRATED:
        from alembic.util import CommandError

        try:
            await migrate(url)
        except CommandError as exc:
            # A database migrated by a newer release (this one is older, e.g. rolled back):
            # say so and carry on with the schema as it is.
            print(f"calltrack: schema not migrated: {exc}", file=sys.stderr)
        _MIGRATED.add(url)
    return Database(url)
