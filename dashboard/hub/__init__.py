"""The console hub: live site events for advisors over one websocket (docs/hub-protocol.md).

Other domains publish with `publish_site_event` and add console commands with
`register_command`; `dashboard.hub.http.setup` mounts the endpoint and the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from dashboard.hub.commands import CommandContext, CommandHandler, register_command
from dashboard.hub.events import EventKind
from tracker import appkeys
from tracker.web import log_background_failure

__all__ = [
    "CommandContext",
    "CommandHandler",
    "publish_site_event",
    "register_command",
]

log = logging.getLogger("calltrack.hub")


async def publish_site_event(
    app: web.Application, site_id: int, kind: EventKind, data: Mapping[str, Any]
) -> str | None:
    """Append an event to the site's stream; return its id, or None if the hub failed (logged)."""
    # Never raises: the visitor's or the carrier's request that caused the event must succeed
    # even when Redis is down; the hub then tells the site's consoles to resync (`hub.resync`).
    hub = app.get(appkeys.HUB)
    if hub is None or hub.backend is None:
        log.warning("no hub running; %s event for site %s dropped", kind, site_id)
        return None
    try:
        event = await hub.publish(site_id, kind, data)
    except Exception as exc:
        # An outage: one line per event, no traceback; the consoles resync after it.
        log_background_failure(log, f"could not publish a {kind} event for site {site_id}", exc)
        return None
    return event.id
