"""Dynamic number insertion: tracking numbers, the pool that leases them, and lease history."""

from tracker.numbers.pool import (
    MemoryNumberPool,
    NumberPool,
    PoolNotLoaded,
    RedisNumberPool,
    pool_key,
)
from tracker.numbers.rules import SourceRule, parse_rule
from tracker.numbers.service import (
    NumberService,
    last_lease_before,
    lease_at,
    leases_at,
    number_service_for,
)

__all__ = [
    "MemoryNumberPool",
    "NumberPool",
    "NumberService",
    "PoolNotLoaded",
    "RedisNumberPool",
    "SourceRule",
    "last_lease_before",
    "lease_at",
    "leases_at",
    "number_service_for",
    "parse_rule",
    "pool_key",
]
