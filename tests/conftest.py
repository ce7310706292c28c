"""Shared fixtures: every storage test runs on SQLite and PostgreSQL, Redis is real.

PostgreSQL and Redis must be reachable (`make test` starts them): a fixture that cannot reach
them fails the test instead of skipping it, so a green run always means both were exercised.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.app import BACKENDS, CHROMIUM, in_thread

from dashboard.bench.snippet import CHROMIUM_ARGS
from tracker.db import Database, migrate_sync

PG_ADMIN_URL = os.environ.get(
    "CALLTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CALLTRACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated with Alembic."""
    name = f"calltrack_test_{secrets.token_hex(6)}"
    try:
        in_thread(asyncio.run, _pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc!r}); run `make test`, "
            "which starts it, or set CALLTRACK_TEST_POSTGRES_URL"
        )
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    in_thread(migrate_sync, url)
    yield url
    in_thread(asyncio.run, _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh SQLite file for this test run, migrated with Alembic."""
    path = tmp_path_factory.mktemp("db") / "calltrack.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    in_thread(migrate_sync, url)
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The database URL of each backend in turn."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, pool_size=5)
    yield db
    await db.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis server; fails (not skips) when it is not running."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc!r}); run `make test`, which starts it"
        )
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return f"calltrack-test:{secrets.token_hex(6)}:"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One Debian Chromium for the whole run, driven by Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}; `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    Playwright's sync API keeps an event loop running in the main thread for as long as the
    shared browser lives; pytest-asyncio cannot start its loops after that, so every async
    test must run before the first browser test starts the browser.
    """
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))
