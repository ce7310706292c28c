"""Every worker drops its cached configuration soon after a change made anywhere else.

Workers cache sites, their numbers and each account's exclusions for 30 s (read on every
collect request). A change made in this worker invalidates its own caches at once; a change
made by the command line (`calltrack numbers add` while the service runs) or by another
worker would wait for those 30 s. Every ORM flush that adds, changes or deletes one of those
rows counts one in the `config_generation` row (in tracker.models, so that every process
counts); each worker reads that row every second and drops its caches when it has moved. One
indexed read per worker per second, whatever the number of sites; nothing on the collect path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import select

from tracker.db import Database
from tracker.models import ConfigGeneration
from tracker.web import log_background_failure

log = logging.getLogger("calltrack.confwatch")
POLL_SECONDS = 1.0


async def current_generation(database: Database) -> int | None:
    async with database.begin() as db:
        return await db.scalar(select(ConfigGeneration.value).where(ConfigGeneration.id == 1))


async def watch(database: Database, on_change: Callable[[], None]) -> None:
    """Call `on_change` whenever the generation moves; runs until cancelled."""
    last: int | None = None
    failing = False
    while True:
        try:
            value = await current_generation(database)
            if last is not None and value != last:
                on_change()
            last, failing = value, False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An outage (or a schema not migrated yet): try again every second, and say so
            # once, not once a second. The 30-second caches still expire meanwhile.
            if not failing:
                log_background_failure(log, "reading the configuration generation failed", exc)
            failing = True
        await asyncio.sleep(POLL_SECONDS)
