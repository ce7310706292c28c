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
