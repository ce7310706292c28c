"""The configuration watcher: one line in the log for a failure that lasts, not one a second."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tracker import confwatch
from tracker.db import Database


async def test_a_lasting_failure_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: Any, tmp_path: Any
) -> None:
    monkeypatch.setattr(confwatch, "POLL_SECONDS", 0.01)
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    changes: list[int] = []
    caplog.set_level(logging.WARNING, logger="calltrack.confwatch")
    task = asyncio.create_task(confwatch.watch(database, lambda: changes.append(1)))
    try:
        await asyncio.sleep(0.3)  # about 30 rounds, each failing: no such table
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await database.close()
    records = [r for r in caplog.records if r.name == "calltrack.confwatch"]
    assert len(records) == 1 and "configuration generation" in records[0].getMessage()
    assert changes == []


async def test_adding_and_removing_an_exclusion_moves_the_generation(database: Any) -> None:
    """A flush adds, a bulk delete removes: both reach the other workers' caches."""
    from tracker.clock import FrozenClock
    from tracker.privacy.exclusion import add_exclusion, remove_exclusion_of
    from tracker.privacy.find import parse_subject
    from tracker.sites import get_or_create_account

    query = parse_subject("phone", "+33 6 12 34 56 78")
    async with database.begin() as db:
        account = await get_or_create_account(db, "confwatch-exclusions", FrozenClock())
    before = await confwatch.current_generation(database)
    async with database.begin() as db:
        await add_exclusion(
            db,
            account.id,
            query,
            secret_key="k" * 40,
            actor="dpo@shop.test",
            now=FrozenClock().now(),
        )
    added = await confwatch.current_generation(database)
    async with database.begin() as db:
        assert await remove_exclusion_of(db, account.id, query, "k" * 40) == 1
    removed = await confwatch.current_generation(database)
    assert before is not None and added is not None and removed is not None
    assert before < added < removed
