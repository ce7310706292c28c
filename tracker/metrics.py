"""Prometheus metrics of the tracking path (exposed at /metrics)."""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

COLLECT_EVENTS = Counter(
    "calltrack_collect_events_total",
    "Snippet events accepted, by type",
    ["type"],
    registry=REGISTRY,
)
COLLECT_REJECTED = Counter(
    "calltrack_collect_rejected_total",
    "Snippet events refused, by error code",
    ["code"],
    registry=REGISTRY,
)
BOT_HITS = Counter(
    "calltrack_bot_hits_total", "Collect requests from bots, not recorded", registry=REGISTRY
)
SESSIONS_STARTED = Counter(
    "calltrack_sessions_started_total", "Sessions started", registry=REGISTRY
)
CARRIER_SPOOL = Counter(
    "calltrack_carrier_spool_total",
    "Carrier webhooks kept on disk while the database was unreachable (spooled), then stored "
    "(replayed) or moved to failed.jsonl (set_aside)",
    ["outcome"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "calltrack_http_request_seconds",
    "Server time per request, by route",
    ["route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


# `metric.labels(value)` takes a lock and builds a key on every call; the hot paths (every
# collect request, every request's timing) reuse the child of each label value instead.


@lru_cache(maxsize=256)
def collect_events(kind: str) -> Counter:
    return COLLECT_EVENTS.labels(kind)


@lru_cache(maxsize=1024)
def request_seconds(route: str) -> Histogram:
    return REQUEST_SECONDS.labels(route)
