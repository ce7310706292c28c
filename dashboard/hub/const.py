"""Numbers and codes of the console hub (docs/hub-protocol.md), each with its reason."""

from __future__ import annotations

import datetime as dt
from typing import Final

URL: Final = "/console/ws"
CONSOLE_ROLES: Final = ("advisor", "admin")

# The protocol promises at least 10 minutes of resumable history (a laptop lid closed over a
# coffee break). Keeping 15 leaves 5 minutes of margin for Redis's approximate trimming, which
# drops whole nodes, and for clock skew between the workers that stamp the ids.
GUARANTEED_RETENTION: Final = dt.timedelta(minutes=10)
RETENTION: Final = dt.timedelta(minutes=15)
# The in-process backend also caps each stream by count so one hot site cannot grow memory
# without bound; 50,000 is ~55 events a second for 15 minutes, far above one shop's traffic.
MAX_EVENTS_PER_STREAM: Final = 50_000

# Messages waiting to be written to one console. A replay is paced by the writer, so only live
# events and command results land here: 256 is minutes of a busy shop's events, yet a browser
# that stops reading (a frozen tab, a dead Wi-Fi) costs at most a few hundred KiB before we
# let it go and it resumes from its last ids instead.
SEND_QUEUE_SIZE: Final = 256
# Events are written straight to a socket while its transport buffers less than this (asyncio's
# default high-water mark); beyond it they wait in the queue above, which then fills up if
# the browser stays behind.
WRITE_BUFFER_LIMIT: Final = 64 * 1024
# Browsers cannot see websocket protocol pings, so the hub sends a JSON ping the page can
# watch. 20 s keeps NAT and proxy idle timers (often 30-60 s) from dropping a quiet socket;
# 60 s of silence (three missed pings) means the other end is gone.
HEARTBEAT_INTERVAL: Final = 20.0
IDLE_TIMEOUT: Final = 60.0
# How often each worker checks that its consoles' sign-ins still exist: a sign-out on another
# worker (or a deleted user) closes this worker's sockets within this many seconds. A sign-out
# on the same worker closes them at once.
LOGIN_RECHECK: Final = 15.0
# While the backend (Redis) cannot store events, consoles miss them; this often, a worker that
# lost some tries to tell those sites' consoles to resync from the database (`hub.resync`).
RESYNC_INTERVAL: Final = 1.0
# How often an in-process hub looks in the audit log for erasures made by the CLI, another
# process that cannot reach it (with Redis the CLI tells the consoles itself).
ERASURE_POLL: Final = 5.0
# On shutdown, how long to wait for consoles to answer our close frame: they reconnect to
# another worker anyway, and the process manager's stop timeout is not much longer.
SHUTDOWN_GRACE: Final = 2.0
# A command is a small JSON object; anything bigger is a broken or hostile client.
MAX_MESSAGE_BYTES: Final = 64 * 1024

# Close codes (4000-4999 are for applications, RFC 6455 section 7.4.2).
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_IDLE: Final = 4009
CLOSE_SESSION_EXPIRED: Final = 4001

# Snapshot: a visitor seen within 5 minutes is "live" (the snippet pings every 30 s while the
# page is visible, so a live visitor is seen many times over); 200 fills any console screen.
LIVE_WINDOW: Final = dt.timedelta(minutes=5)
MAX_LIVE_VISITORS: Final = 200
# A call whose status callbacks were lost would ring forever in the console; after 4 hours
# (longer than any real call) it no longer counts as in progress.
MAX_CALL_AGE: Final = dt.timedelta(hours=4)
SCREEN_POP_PAGES: Final = 10
MAX_PANEL_PAGES: Final = 500
MAX_PANEL_CALLS: Final = 50

# Error codes of command results.
ERR_INVALID_MESSAGE: Final = "invalid_message"
ERR_ID_REUSE: Final = "id_reuse"
ERR_UNKNOWN_COMMAND: Final = "unknown_command"
ERR_INVALID_PAYLOAD: Final = "invalid_payload"
ERR_UNKNOWN_SITE: Final = "unknown_site"
ERR_NOT_FOUND: Final = "not_found"
ERR_INTERNAL: Final = "internal_error"
# The database or Redis cannot be reached (as the HTTP API's 503): the command may be retried.
ERR_UNAVAILABLE: Final = "service_unavailable"
