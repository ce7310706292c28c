"""Workers of a new release start together, and every command line migrates: on PostgreSQL
the migrations take turns (an advisory lock) instead of creating the same tables twice."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys

from conftest import PG_ADMIN_URL, _pg_admin


def test_four_migrations_at_once_on_a_fresh_postgresql_database(postgresql_url: str) -> None:
    name = f"calltrack_together_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        # Processes, as workers and command lines are (Alembic's context is per process).
        code = f"from tracker.db import migrate_sync; migrate_sync({url!r})"
        runs = [
            subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [run.communicate(timeout=120)[1] for run in runs]
        assert [run.returncode for run in runs] == [0] * 4, errors
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
