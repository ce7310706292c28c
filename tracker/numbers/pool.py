"""The number pool: which session holds which pool number, in process or in Redis.

A pool is one business number's set of pool numbers (`pool_key(site_id, business_number_id)`).
Both implementations share these semantics, and one parametrised test suite checks them:

- A session that holds a number keeps it; each acquisition refreshes its hold
  (`hold_until = now + hold`, never moved backwards).
- Otherwise it gets the free number released longest ago ("least recently released first"), so
  a late caller's number is reused as late as possible; never-used numbers score 0 and go first.
- A lease whose `hold_until` has passed (strictly: `hold_until < now`) expires; the number
  becomes free with its release time set to `hold_until`.
- When no number is free, `overflow=True` takes the number of the least recently active holder
  (smallest `hold_until`) and reports the displaced session; `overflow=False` grants nothing,
  and the site shows its business number.
- Numbers join and leave a loaded pool with `sync`: added ones are free, retired ones are
  removed and their holder reported.
- Time is the caller's clock, passed in: never Redis `TIME`, so tests move time freely.
- A pool must be loaded (from the database, by the service) before use: `acquire` raises
  `PoolNotLoaded` until `load` succeeds. Redis remembers which server life loaded a pool (its
  `run_id`), so a restarted Redis, even one that reloaded an old snapshot, is rebuilt too.
"""

from __future__ import annotations

import abc
import datetime as dt
import heapq
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

if TYPE_CHECKING:
    from redis.asyncio import Redis

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
# The service writes a lease's last_seen_at/hold_until to the database at most this often per
# lease: the snippet pings every 30 s while the page is visible, and one UPDATE per ping per
# visitor would double the write load of collect for a precision nobody needs on a 30-minute
# hold. The database's hold_until is therefore at most this much behind the pool's.
RECORD_INTERVAL = dt.timedelta(seconds=60)
# Leases expired per call: expiry happens lazily on acquisition, and each expiry costs the
# caller a database update, so a pool idle all night does not land on one visitor's request.
REAP_LIMIT = 20

Outcome = Literal["held", "new", "overflow"]


def to_ms(when: dt.datetime) -> int:
    """Convert an aware datetime to integer epoch milliseconds (exactly, no float)."""
    return (when - EPOCH) // _MS


def from_ms(ms: int) -> dt.datetime:
    """Convert epoch milliseconds to an aware UTC datetime."""
    return EPOCH + ms * _MS


def pool_key(site_id: int, business_number_id: int) -> str:
    """Name the pool of one business number of a site."""
    return f"{site_id}:{business_number_id}"


class PoolNotLoaded(Exception):
    """The pool has no state (first use, process or Redis restart): load it, then retry."""


class Expired(NamedTuple):
    """A lease the pool ended because its hold passed."""

    number: int
    session_id: str
    hold_until: dt.datetime


class Grant(NamedTuple):
    """The number a session holds after an acquisition."""

    number: int
    session_id: str
    outcome: Outcome
    hold_until: dt.datetime
    # The database row of this lease is due for a write (new lease, or RECORD_INTERVAL passed).
    record_due: bool
    # For "overflow": the session that lost the number, and when its hold would have ended.
    displaced_session: str | None = None
    displaced_hold_until: dt.datetime | None = None


# Named tuples, not dataclasses: one is made per collect event, and per simulated ping.
class AcquireResult(NamedTuple):
    """A grant (None: exhausted, show the business number) and the leases expired meanwhile."""

    grant: Grant | None
    expired: tuple[Expired, ...] = ()


@dataclass(frozen=True)
class HeldLease:
    number: int
    session_id: str
    hold_until: dt.datetime


@dataclass(frozen=True)
class PoolSnapshot:
    """A pool's state rebuilt from the database: free numbers with their release time."""

    free: Mapping[int, dt.datetime | None]
    held: Sequence[HeldLease] = ()


@dataclass(frozen=True)
class SyncResult:
    added: tuple[int, ...] = ()
    # Numbers taken out of the pool, with the session that held them (if any).
    removed: tuple[tuple[int, str | None], ...] = ()


@dataclass(frozen=True)
class PoolState:
    """What a pool holds now (for the CLI and tests): free numbers in hand-out order."""

    free: tuple[int, ...]
    held: tuple[HeldLease, ...]


class NumberPool(abc.ABC):
    """Lease pool numbers to sessions, atomically."""

    @abc.abstractmethod
    async def acquire(
        self,
        pool: str,
        session_id: str,
        now: dt.datetime,
        hold: dt.timedelta,
        *,
        overflow: bool,
        record_interval: dt.timedelta = RECORD_INTERVAL,
    ) -> AcquireResult:
        """Give `session_id` its number (kept, free or overflowed); raise PoolNotLoaded."""

    @abc.abstractmethod
    async def release(self, pool: str, session_id: str, now: dt.datetime) -> int | None:
        """Free the session's number now; return it (None: it held none); raise PoolNotLoaded."""

    @abc.abstractmethod
    async def load(self, pool: str, snapshot: PoolSnapshot, now: dt.datetime) -> bool:
        """Install a rebuilt state unless the pool is already loaded; return whether it was."""

    @abc.abstractmethod
    async def sync(
        self,
        pool: str,
        add: Mapping[int, dt.datetime | None],
        remove: Collection[int],
        now: dt.datetime,
    ) -> SyncResult:
        """Add missing numbers (free, by release time), remove retired ones; raise PoolNotLoaded."""

    @abc.abstractmethod
    async def state(self, pool: str) -> PoolState:
        """Describe the pool (empty when not loaded)."""

    @abc.abstractmethod
    async def forget(self, pool: str) -> None:
        """Drop the pool's state, as a restart would (tests, and a pool with no numbers left)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most pools own nothing
        """Release what the pool opened itself."""


# ---------------------------------------------------------------------------------------------
# In process: the embedded default (one process, no Redis).


@dataclass
class _MemoryPoolState:
    free: dict[str, int] = field(default_factory=dict)
    free_heap: list[tuple[int, str]] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)
    held_heap: list[tuple[int, str]] = field(default_factory=list)
    holder: dict[str, str] = field(default_factory=dict)
    by_session: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)

    # Members are strings, ordered as Redis orders equal scores (lexicographically), so the two
    # implementations hand out numbers in the same order.

    def set_free(self, number: str, score: int) -> None:
        self.free[number] = score
        heapq.heappush(self.free_heap, (score, number))

    def pop_free(self) -> str | None:
        while self.free_heap:
            score, number = heapq.heappop(self.free_heap)
            if self.free.get(number) == score:
                del self.free[number]
                return number
        return None

    def set_held(self, number: str, session_id: str, until: int) -> None:
        self.held[number] = until
        self.holder[number] = session_id
        self.by_session[session_id] = number
        heapq.heappush(self.held_heap, (until, number))
        # Expired and released holds leave stale entries; rebuild before they outgrow the pool.
        if len(self.held_heap) > 4 * len(self.held) + 64:
            self.held_heap = [(s, n) for n, s in self.held.items()]
            heapq.heapify(self.held_heap)

    def refresh_held(self, number: str, until: int) -> None:
        # No heap push: the number's entry keeps its older, smaller score and is moved to
        # the right place when it surfaces (see min_held). Heartbeats stay O(1).
        self.held[number] = until

    def min_held(self) -> tuple[int, str] | None:
        while self.held_heap:
            score, number = self.held_heap[0]
            current = self.held.get(number)
            if current == score:
                return score, number
            if current is None:
                heapq.heappop(self.held_heap)
            else:
                heapq.heapreplace(self.held_heap, (current, number))
        return None

    def drop_held(self, number: str) -> str | None:
        self.held.pop(number, None)
        self.recorded.pop(number, None)
        owner = self.holder.pop(number, None)
        if owner is not None and self.by_session.get(owner) == number:
            del self.by_session[owner]
        return owner


class MemoryNumberPool(NumberPool):
    """The pool in this process's memory, for the embedded default (a single worker)."""

    def __init__(self) -> None:
        self._pools: dict[str, _MemoryPoolState] = {}

    def _get(self, pool: str) -> _MemoryPoolState:
        state = self._pools.get(pool)
        if state is None:
            raise PoolNotLoaded(pool)
        return state

    async def acquire(
        self,
        pool: str,
        session_id: str,
        now: dt.datetime,
        hold: dt.timedelta,
        *,
        overflow: bool,
        record_interval: dt.timedelta = RECORD_INTERVAL,
    ) -> AcquireResult:
        state = self._get(pool)
        now_ms = to_ms(now)
        until = to_ms(now + hold)
        expired: list[Expired] = []
        while len(expired) < REAP_LIMIT:
            first = state.min_held()
            if first is None or first[0] >= now_ms:
                break
            score, number = first
            owner = state.drop_held(number)
            state.set_free(number, score)
            if owner is not None:
                expired.append(Expired(int(number), owner, from_ms(score)))

        mine = state.by_session.get(session_id)
        if mine is not None:
            current = state.held[mine]
            if until > current:
                state.refresh_held(mine, until)
                current = until
            due = now_ms - state.recorded.get(mine, 0) >= record_interval // _MS
            if due:
                state.recorded[mine] = now_ms
            grant = Grant(int(mine), session_id, "held", from_ms(current), due)
            return AcquireResult(grant, tuple(expired))

        free = state.pop_free()
        if free is not None:
            state.set_held(free, session_id, until)
            state.recorded[free] = now_ms
            return AcquireResult(
                Grant(int(free), session_id, "new", from_ms(until), True), tuple(expired)
            )

        if overflow:
            first = state.min_held()
            if first is not None:
                victim_until, number = first
                owner = state.drop_held(number)
                state.set_held(number, session_id, until)
                state.recorded[number] = now_ms
                if victim_until < now_ms:
                    # Expired but beyond this call's REAP_LIMIT: an expiry, not an overflow.
                    if owner is not None:
                        expired.append(Expired(int(number), owner, from_ms(victim_until)))
                    grant = Grant(int(number), session_id, "new", from_ms(until), True)
                else:
                    grant = Grant(
                        int(number),
                        session_id,
                        "overflow",
                        from_ms(until),
                        True,
                        displaced_session=owner,
                        displaced_hold_until=from_ms(victim_until),
                    )
                return AcquireResult(grant, tuple(expired))
        return AcquireResult(None, tuple(expired))

    async def release(self, pool: str, session_id: str, now: dt.datetime) -> int | None:
        state = self._get(pool)
        number = state.by_session.get(session_id)
        if number is None:
            return None
        state.drop_held(number)
        state.set_free(number, to_ms(now))
        return int(number)

    async def load(self, pool: str, snapshot: PoolSnapshot, now: dt.datetime) -> bool:
        if pool in self._pools:
            return False
        state = _MemoryPoolState()
        for number, released in snapshot.free.items():
            state.set_free(str(number), 0 if released is None else to_ms(released))
        for lease in snapshot.held:
            state.free.pop(str(lease.number), None)
            state.set_held(str(lease.number), lease.session_id, to_ms(lease.hold_until))
            # Unknown last write: let the first refresh record the lease.
            state.recorded[str(lease.number)] = 0
        self._pools[pool] = state
        return True

    async def sync(
        self,
        pool: str,
        add: Mapping[int, dt.datetime | None],
        remove: Collection[int],
        now: dt.datetime,
    ) -> SyncResult:
        state = self._get(pool)
        added = []
        for number, released in add.items():
            key = str(number)
            if key not in state.free and key not in state.held:
                state.set_free(key, 0 if released is None else to_ms(released))
                added.append(number)
        removed: list[tuple[int, str | None]] = []
        for number in remove:
            key = str(number)
            if key in state.free:
                del state.free[key]
                removed.append((number, None))
            elif key in state.held:
                removed.append((number, state.drop_held(key)))
        return SyncResult(tuple(added), tuple(removed))

    async def state(self, pool: str) -> PoolState:
        state = self._pools.get(pool)
        if state is None:
            return PoolState((), ())
        free = sorted(state.free.items(), key=lambda item: (item[1], item[0]))
        held = sorted(state.held.items(), key=lambda item: (item[1], item[0]))
        return PoolState(
            tuple(int(n) for n, _ in free),
            tuple(HeldLease(int(n), state.holder[n], from_ms(s)) for n, s in held),
        )

    async def forget(self, pool: str) -> None:
        self._pools.pop(pool, None)


# ---------------------------------------------------------------------------------------------
# Redis: several workers share one pool; every change is one atomic Lua script.
#
# Keys of a pool, under the configured prefix; the {site:business} hash tag keeps them in one
# Redis Cluster slot, as a script touching several keys requires:
#   {P}dni:{S:B}:free   ZSET  number -> release time (ms; 0 = never used)
#   {P}dni:{S:B}:held   ZSET  number -> hold_until (ms); the smallest is least recently active
#   {P}dni:{S:B}:lease  HASH  "ready" -> run_id of the Redis server life that loaded the pool,
#                             "n:<number>" -> session, "s:<session>" -> number,
#                             "r:<number>" -> when the service last wrote the lease row (ms)
# One hash rather than one per field: each acquisition sends three keys, not six, and packing
# arguments is most of what a script call costs the client beyond a plain GET.

# Every script compares the pool's marker with the server's run_id, which changes at each start
# (and on fail-over to a replica): a Redis restored from an RDB/AOF snapshot would otherwise
# keep a stale pool and hand out numbers leased after the snapshot. INFO costs ~5 us of server
# time per call (INFO commandstats), a small part of the script.
_COMMON = """
local function server_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

local function loaded()
  return redis.call('HGET', KEYS[3], 'ready') == server_id()
end

local function drop(number)
  local owner = redis.call('HGET', KEYS[3], 'n:' .. number)
  redis.call('HDEL', KEYS[3], 'n:' .. number, 'r:' .. number)
  redis.call('ZREM', KEYS[2], number)
  if owner and redis.call('HGET', KEYS[3], 's:' .. owner) == number then
    redis.call('HDEL', KEYS[3], 's:' .. owner)
  end
  return owner
end
"""

# KEYS: free held lease
# ARGV: one string "session|now_ms|hold_until_ms|overflow (1/0)|record_interval_ms".
# Returns one string of '|'-separated fields, short in the common case (a heartbeat):
# "status|number|record_due|hold_until|n|<n values: expired number, session, hold_until
# triples>" and, for an overflow, "|displaced_session|displaced_hold_until" after them.
# Status: -1 not loaded, 0 exhausted, 1 held, 2 new, 3 overflow. One string each way rather
# than arrays: this is the per-request call, and a client spends more time packing arguments
# and parsing array replies than Redis spends running the script (session ids are hex).
_ACQUIRE = (
    _COMMON
    + """
if not loaded() then return '-1' end
local session, now_text, until_text, overflow, interval =
  string.match(ARGV[1], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
local now = tonumber(now_text)
local expired = {}

local function reply(status, number, record, hold, tail)
  local out = {status, number, record, hold, #expired}
  for i = 1, #expired do out[#out + 1] = expired[i] end
  for i = 1, #tail do out[#out + 1] = tail[i] end
  return table.concat(out, '|')
end

local function assign(number)
  redis.call('HSET', KEYS[3], 'n:' .. number, session, 's:' .. session, number,
             'r:' .. number, now_text)
  redis.call('ZADD', KEYS[2], until_text, number)
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now_text, 'WITHSCORES',
                       'LIMIT', 0, REAP_LIMIT)
for i = 1, #due, 2 do
  local owner = drop(due[i])
  redis.call('ZADD', KEYS[1], due[i + 1], due[i])
  if owner then
    expired[#expired + 1] = due[i]
    expired[#expired + 1] = owner
    expired[#expired + 1] = due[i + 1]
  end
end

local mine = redis.call('HGET', KEYS[3], 's:' .. session)
if mine then
  redis.call('ZADD', KEYS[2], 'GT', until_text, mine)
  local recorded = tonumber(redis.call('HGET', KEYS[3], 'r:' .. mine) or '0')
  local record = 0
  if now - recorded >= tonumber(interval) then
    redis.call('HSET', KEYS[3], 'r:' .. mine, now_text)
    record = 1
  end
  return reply(1, mine, record, redis.call('ZSCORE', KEYS[2], mine), {})
end

local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped > 0 then
  assign(popped[1])
  return reply(2, popped[1], 1, until_text, {})
end

if overflow == '1' then
  local victim = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #victim > 0 then
    local owner = drop(victim[1])
    assign(victim[1])
    if tonumber(victim[2]) < now then
      if owner then
        expired[#expired + 1] = victim[1]
        expired[#expired + 1] = owner
        expired[#expired + 1] = victim[2]
      end
      return reply(2, victim[1], 1, until_text, {})
    end
    return reply(3, victim[1], 1, until_text, {owner or '', victim[2]})
  end
end
return reply(0, '', 0, 0, {})
""".replace("REAP_LIMIT", str(REAP_LIMIT))
)

# KEYS: free held lease. ARGV: session, now_ms.
# Returns -1 not loaded, '' nothing held, else the number.
_RELEASE = (
    _COMMON
    + """
if not loaded() then return -1 end
local number = redis.call('HGET', KEYS[3], 's:' .. ARGV[1])
if not number then return '' end
drop(number)
redis.call('ZADD', KEYS[1], ARGV[2], number)
return number
"""
)

# KEYS: free held lease. ARGV: free count, held count, then free (number, released_ms) pairs,
# then held (number, session, hold_until_ms) triples. Returns 1 loaded, 0 already loaded.
_LOAD = (
    _COMMON
    + """
if loaded() then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local nfree = tonumber(ARGV[1])
local nheld = tonumber(ARGV[2])
local at = 3
for _ = 1, nfree do
  redis.call('ZADD', KEYS[1], ARGV[at + 1], ARGV[at])
  at = at + 2
end
for _ = 1, nheld do
  redis.call('ZREM', KEYS[1], ARGV[at])
  redis.call('ZADD', KEYS[2], ARGV[at + 2], ARGV[at])
  -- Last write unknown (0): the first refresh records the lease.
  redis.call('HSET', KEYS[3], 'n:' .. ARGV[at], ARGV[at + 1], 's:' .. ARGV[at + 1], ARGV[at],
             'r:' .. ARGV[at], 0)
  at = at + 3
end
redis.call('HSET', KEYS[3], 'ready', server_id())
return 1
"""
)

# KEYS: free held lease. ARGV: count of numbers to add, their (number, released_ms) pairs,
# then the numbers to remove.
# Returns -1 not loaded, else {added numbers, removed (number, session or '') pairs}.
_SYNC = (
    _COMMON
    + """
if not loaded() then return -1 end
local nadd = tonumber(ARGV[1])
local added = {}
for i = 2, 2 * nadd, 2 do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) and not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
    added[#added + 1] = ARGV[i]
  end
end
local removed = {}
for i = 2 * nadd + 2, #ARGV do
  local number = ARGV[i]
  if redis.call('ZREM', KEYS[1], number) == 1 then
    removed[#removed + 1] = number
    removed[#removed + 1] = ''
  elseif redis.call('ZSCORE', KEYS[2], number) then
    removed[#removed + 1] = number
    removed[#removed + 1] = drop(number) or ''
  end
end
return {added, removed}
"""
)

_OUTCOMES: tuple[Outcome, ...] = ("held", "new", "overflow")
_SUFFIXES = ("free", "held", "lease")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(value: Any) -> int:
    return int(float(_text(value)))


class RedisNumberPool(NumberPool):
    """The pool in Redis, shared by every worker; each operation is one Lua script."""

    def __init__(self, redis: Redis, prefix: str = "calltrack:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._load = redis.register_script(_LOAD)
        self._sync = redis.register_script(_SYNC)
        self._keys: dict[str, list[str]] = {}

    def keys(self, pool: str) -> list[str]:
        """Return the pool's keys in the order the scripts expect."""
        keys = self._keys.get(pool)
        if keys is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            keys = self._keys[pool] = [
                f"{self._prefix}dni:{{{pool}}}:{suffix}" for suffix in _SUFFIXES
            ]
        return keys

    async def acquire(
        self,
        pool: str,
        session_id: str,
        now: dt.datetime,
        hold: dt.timedelta,
        *,
        overflow: bool,
        record_interval: dt.timedelta = RECORD_INTERVAL,
    ) -> AcquireResult:
        if "|" in session_id:
            raise ValueError("a session id cannot contain '|'")
        now_ms = to_ms(now)
        packed = (
            f"{session_id}|{now_ms}|{now_ms + hold // _MS}|{1 if overflow else 0}|"
            f"{record_interval // _MS}"
        )
        fields = _text(await self._acquire(keys=self.keys(pool), args=[packed])).split("|")
        status = int(fields[0])
        if status == -1:
            raise PoolNotLoaded(pool)
        end = 5 + int(fields[4])
        expired = tuple(
            Expired(int(fields[i]), fields[i + 1], from_ms(_ms(fields[i + 2])))
            for i in range(5, end, 3)
        )
        if status == 0:
            return AcquireResult(None, expired)
        overflowed = status == 3
        grant = Grant(
            number=int(fields[1]),
            session_id=session_id,
            outcome=_OUTCOMES[status - 1],
            hold_until=from_ms(_ms(fields[3])),
            record_due=fields[2] == "1",
            displaced_session=(fields[end] or None) if overflowed else None,
            displaced_hold_until=from_ms(_ms(fields[end + 1])) if overflowed else None,
        )
        return AcquireResult(grant, expired)

    async def release(self, pool: str, session_id: str, now: dt.datetime) -> int | None:
        reply = await self._release(keys=self.keys(pool), args=[session_id, to_ms(now)])
        if isinstance(reply, int) and reply == -1:
            raise PoolNotLoaded(pool)
        text = _text(reply)
        return int(text) if text else None

    async def load(self, pool: str, snapshot: PoolSnapshot, now: dt.datetime) -> bool:
        args: list[str | int] = [len(snapshot.free), len(snapshot.held)]
        for number, released in snapshot.free.items():
            args += [number, 0 if released is None else to_ms(released)]
        for lease in snapshot.held:
            args += [lease.number, lease.session_id, to_ms(lease.hold_until)]
        return int(await self._load(keys=self.keys(pool), args=args)) == 1

    async def sync(
        self,
        pool: str,
        add: Mapping[int, dt.datetime | None],
        remove: Collection[int],
        now: dt.datetime,
    ) -> SyncResult:
        args: list[int] = [len(add)]
        for number, released in add.items():
            args += [number, 0 if released is None else to_ms(released)]
        args += list(remove)
        reply = await self._sync(keys=self.keys(pool), args=args)
        if isinstance(reply, int) and reply == -1:
            raise PoolNotLoaded(pool)
        added = tuple(int(_text(n)) for n in reply[0])
        flat = [_text(v) for v in reply[1]]
        removed = tuple((int(flat[i]), flat[i + 1] or None) for i in range(0, len(flat), 2))
        return SyncResult(added, removed)

    async def state(self, pool: str) -> PoolState:
        free_key, held_key, lease_key = self.keys(pool)
        free = await self._redis.zrange(free_key, 0, -1)
        held = cast(
            "list[tuple[Any, float]]", await self._redis.zrange(held_key, 0, -1, withscores=True)
        )
        fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(lease_key)).items()}
        return PoolState(
            tuple(int(_text(n)) for n in free),
            tuple(
                HeldLease(int(_text(n)), fields.get(f"n:{_text(n)}", ""), from_ms(int(score)))
                for n, score in held
            ),
        )

    async def forget(self, pool: str) -> None:
        await self._redis.delete(*self.keys(pool))

    async def aclose(self) -> None:
        """Leave the client to its owner (the app factory closes the shared client)."""
