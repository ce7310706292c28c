"""Attribution accuracy of a number pool: synthetic traffic replayed through the real pool.

Visits arrive as a Poisson process with a daily profile; each visit is active from its first to
its last activity (a pageview or a 30 s visibility ping), and some visitors call: during the
visit, shortly after, or hours later. Every activity goes through `MemoryNumberPool.acquire`
with a simulated clock, exactly as collect does, and the lease history is kept as the service
keeps it. Each call is then attributed from that history:

- `lease_at`: the lease holding the dialled number at the call instant
  (`tracker.numbers.service.lease_at`, what attribution reads);
- `last_holder`: that, else the last session given the number before the call
  (`last_lease_before`): a caller after the hold still counts if nobody got the number since.

The oracle knows the future under the same display rules: every visitor is shown a number if
one is not displayed to another active visitor; it keeps a number exactly until its caller
calls and frees it at once otherwise; when it must take a number back it takes the one whose
call is furthest away (Bélády's rule). It bounds what any hold or reuse policy could achieve
with that many numbers.

Between the two, `foresight_free_bound` caps what a policy that does not know who will call can
reach once the pool is large enough never to overflow (see its docstring): the oracle's margin
over it is the price of not knowing the future, which no reuse order can recover.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tracker.numbers.pool import MemoryNumberPool, PoolSnapshot

# Visits per hour of the (local) day, relative: e-commerce traffic is low at night, climbs in
# the morning and peaks in the evening (the shape of the hourly reports of most shops).
DAILY_PROFILE: tuple[float, ...] = (
    0.9, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 2.0, 2.6, 3.0, 3.2,
    3.4, 3.2, 3.2, 3.2, 3.3, 3.5, 3.8, 4.2, 4.6, 4.5, 3.4, 1.9,
)  # fmt: skip
# CallTrackingMetrics' rule of thumb for session-level pools.
VISITORS_PER_NUMBER = 20
POOL = "sim"
Exhaustion = Literal["overflow", "business"]
Outcome = Literal["correct", "wrong", "unattributed"]


@dataclass(frozen=True)
class TrafficModel:
    """Synthetic traffic; every number here is an assumption, change it with the bench flags."""

    days: int = 28
    # Visits that get pool numbers (with consent) per day.
    daily_sessions: float = 1500.0
    # Visit length, log-normal: median 4 minutes, mean about 6.6 minutes.
    session_median_minutes: float = 4.0
    session_sigma: float = 1.0
    max_session_minutes: float = 240.0
    # The snippet pings every 30 s while the page is visible; the simulation samples activity
    # every 60 s (the lease write interval), plus the exact last activity, so holds end exactly
    # and only the order of overflow victims is coarser. It keeps a run to seconds.
    activity_seconds: int = 60
    # Share of visits that lead to a call.
    call_share: float = 0.05
    # Of those calls: during the visit, shortly after (exponential, mean below), hours later
    # (log-uniform between the bounds below). The rest is "shortly after".
    during_visit_share: float = 0.55
    late_share: float = 0.03
    soon_mean_minutes: float = 6.0
    late_min_hours: float = 1.0
    late_max_hours: float = 26.0
    seed: int = 1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SimSession:
    id: str
    start: int  # seconds from the start of the simulation
    end: int
    call: int | None = None
    # (instant, pool number or None) each time what the visitor sees changes.
    shown: list[tuple[int, int | None]] = field(default_factory=list)

    def shown_at(self, instant: int) -> int | None:
        """Return the number the visitor had on screen at `instant` (or last, after the visit)."""
        moment = min(instant, self.end)
        index = bisect.bisect_right(self.shown, moment, key=lambda item: item[0]) - 1
        return self.shown[index][1] if index >= 0 else None


@dataclass
class Shares:
    calls: int = 0
    correct: int = 0
    wrong: int = 0
    unattributed: int = 0

    def add(self, outcome: Outcome) -> None:
        self.calls += 1
        setattr(self, outcome, getattr(self, outcome) + 1)

    def share(self, name: str) -> float:
        return getattr(self, name) / self.calls if self.calls else 0.0

    def as_json(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "correct": round(self.share("correct"), 5),
            "wrong": round(self.share("wrong"), 5),
            "unattributed": round(self.share("unattributed"), 5),
        }


@dataclass
class PolicyResult:
    lease_at: Shares
    last_holder: Shares
    # lease_at, counting only calls within the hold after the last activity: the calls a pool
    # can attribute at all, which is what its size decides.
    in_hold: Shares
    overflows: int
    exhausted: int


@dataclass
class OracleResult:
    all: Shares
    in_hold: Shares


def generate_sessions(model: TrafficModel) -> list[SimSession]:
    """Draw visits and calls for the model (deterministic for a seed)."""
    rng = random.Random(model.seed)
    total = sum(DAILY_PROFILE)
    sessions: list[SimSession] = []
    for day in range(model.days):
        for hour, weight in enumerate(DAILY_PROFILE):
            rate = model.daily_sessions * weight / total / 3600  # arrivals per second
            instant = rng.expovariate(rate) if rate > 0 else 3600.0
            while instant < 3600:
                start = day * 86400 + hour * 3600 + int(instant)
                minutes = min(
                    model.max_session_minutes,
                    rng.lognormvariate(math.log(model.session_median_minutes), model.session_sigma),
                )
                end = start + max(0, int(minutes * 60))
                sessions.append(
                    SimSession(f"s{len(sessions)}", start, end, _call_time(rng, model, start, end))
                )
                instant += rng.expovariate(rate)
    return sessions


def _call_time(rng: random.Random, model: TrafficModel, start: int, end: int) -> int | None:
    if rng.random() >= model.call_share:
        return None
    kind = rng.random()
    if kind < model.during_visit_share:
        return rng.randint(start, end)
    if kind < model.during_visit_share + model.late_share:
        low, high = math.log(model.late_min_hours * 3600), math.log(model.late_max_hours * 3600)
        return end + int(math.exp(rng.uniform(low, high)))
    return end + 1 + int(rng.expovariate(1 / (model.soon_mean_minutes * 60)))


def sessions_from_intervals(
    intervals: Sequence[tuple[int, int]], model: TrafficModel
) -> list[SimSession]:
    """Turn real visits (start, end in seconds) into simulated ones with drawn calls."""
    rng = random.Random(model.seed)
    ordered = sorted(intervals)
    return [
        SimSession(f"s{i}", s, max(s, e), _call_time(rng, model, s, max(s, e)))
        for i, (s, e) in enumerate(ordered)
    ]


def peak_concurrency(sessions: Sequence[SimSession], tail_seconds: int) -> int:
    """Return the most visits alive at once, a visit lasting until `tail_seconds` after its end."""
    edges: list[tuple[int, int]] = []
    for session in sessions:
        edges.append((session.start, 1))
        edges.append((session.end + tail_seconds + 1, -1))
    edges.sort()
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def foresight_free_bound(
    sessions: Sequence[SimSession], pool_size: int, hold_minutes: float = 30
) -> float | None:
    """Return the most calls any policy that cannot see the future could attribute correctly.

    Only for pools that never have to overflow (None below the peak of concurrent sessions,
    hold included). There, every visit holds its number from its first activity to the end of
    its hold, whatever the policy, so the policy decides one thing only: how long each number
    stays unused after a hold ends (its gap) before it is leased again. A caller after the hold
    is attributed correctly exactly when their delay beyond the hold is shorter than that gap;
    calls within the hold always are. The gaps of all releases add up to at most the pool's
    idle number-time, and a policy that does not know who will call (nor when) can only choose
    gaps independently of it. The expected count of correct late calls is then at most
    N x C(mean gap), where C is the least concave majorant of the share of visits calling
    within a given time past their hold (Jensen's inequality).

    The policies bounded keep a visitor's number through the visit and the hold, as the pool
    promises, but may free it as soon as the visitor has called (the model's visitors call
    once): the idle time counted is the most any such policy could have.
    """
    if not sessions or pool_size < peak_concurrency(sessions, int(hold_minutes * 60)):
        return None
    hold = hold_minutes * 60
    calls = [s for s in sessions if s.call is not None]
    if not calls:
        return None
    late = sorted(
        s.call - s.end - hold for s in calls if s.call is not None and s.call > s.end + hold
    )
    origin = min(s.start for s in sessions)
    horizon = max(
        max(s.call for s in calls if s.call is not None), max(s.end for s in sessions) + hold
    )
    busy = sum(_least_busy(s, hold) for s in sessions)
    mean_gap = max(0.0, pool_size * (horizon - origin) - busy) / len(sessions)
    # Corners of the step function "share of visits calling within x past the hold", with the
    # origin; its concave majorant at `mean_gap` interpolates the best pair around it.
    corners = [(0.0, 0.0)] + [(x, (k + 1) / len(sessions)) for k, x in enumerate(late)]
    if not late or mean_gap >= corners[-1][0]:
        best = corners[-1][1]
    else:
        best = 0.0
        for xa, ya in corners:
            if xa > mean_gap:
                break
            for xb, yb in corners:
                if xb < mean_gap:
                    continue
                value = ya if xb == xa else ya + (yb - ya) * (mean_gap - xa) / (xb - xa)
                best = max(best, value)
    late_correct = min(len(late), best * len(sessions))
    return (len(calls) - len(late) + late_correct) / len(calls)


def _least_busy(session: SimSession, hold: float) -> float:
    """Return how long a visit must keep its number: the visit, then the hold until it calls."""
    if session.call is not None and session.call <= session.end + hold:
        return max(session.end, session.call) - session.start
    return session.end + hold - session.start


@dataclass
class _LeaseRecord:
    session: str
    start: int
    hold_until: float
    ended: float | None = None


async def _run_policy(
    sessions: Sequence[SimSession],
    pool_size: int,
    hold_minutes: float,
    exhaustion: Exhaustion,
    origin: dt.datetime,
    step: int,
) -> tuple[dict[int, list[_LeaseRecord]], int, int]:
    pool = MemoryNumberPool()
    await pool.load(POOL, PoolSnapshot(free=dict.fromkeys(range(pool_size))), origin)
    hold = dt.timedelta(minutes=hold_minutes)
    overflow = exhaustion == "overflow"
    history: dict[int, list[_LeaseRecord]] = {n: [] for n in range(pool_size)}
    overflows = exhausted = 0
    # Visits that lost their number to an overflow do not overflow in turn (as
    # NumberService._acquire: they see the business number until a number is free).
    displaced: set[str] = set()
    # Activities in time order: each session's next activity is pushed when one is handled.
    heap = [(s.start, i) for i, s in enumerate(sessions)]
    heapq.heapify(heap)
    for session in sessions:
        session.shown = []
    while heap:
        instant, index = heapq.heappop(heap)
        session = sessions[index]
        now = origin + dt.timedelta(seconds=instant)
        result = await pool.acquire(
            POOL, session.id, now, hold, overflow=overflow and session.id not in displaced
        )
        grant = result.grant
        number = None
        if grant is None:
            exhausted += 1
        else:
            number = grant.number
            until = instant + hold_minutes * 60
            records = history[number]
            if grant.outcome == "held":
                records[-1].hold_until = until
            else:
                if grant.outcome == "overflow":
                    overflows += 1
                    records[-1].ended = instant
                    if grant.displaced_session is not None:
                        displaced.add(grant.displaced_session)
                records.append(_LeaseRecord(session.id, instant, until))
        if not session.shown or session.shown[-1][1] != number:
            session.shown.append((instant, number))
        if instant < session.end:
            heapq.heappush(heap, (min(instant + step, session.end), index))
    return history, overflows, exhausted


async def simulate_policy(
    sessions: Sequence[SimSession],
    pool_size: int,
    *,
    hold_minutes: float = 30,
    exhaustion: Exhaustion = "overflow",
    activity_seconds: int = 60,
) -> PolicyResult:
    """Replay the visits through the real pool and attribute every call from the history."""
    origin = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    history, overflows, exhausted = await _run_policy(
        sessions, pool_size, hold_minutes, exhaustion, origin, activity_seconds
    )
    starts = {n: [r.start for r in records] for n, records in history.items()}
    tail = int(hold_minutes * 60)
    strict, fallback, in_hold = Shares(), Shares(), Shares()
    for session in sessions:
        if session.call is None:
            continue
        call = session.call
        number = session.shown_at(call)
        index = -1 if number is None else bisect.bisect_right(starts[number], call) - 1
        if number is None or index < 0:
            outcome: Outcome = "unattributed"
            last: Outcome = "unattributed"
        else:
            # Leases of one number never overlap (the pool hands it to one session at a
            # time), so the holder at an instant can only be the last lease started before it.
            record = history[number][index]
            last = "correct" if record.session == session.id else "wrong"
            holds = record.hold_until >= call and (record.ended is None or record.ended > call)
            outcome = last if holds else "unattributed"
        strict.add(outcome)
        fallback.add(last)
        if call <= session.end + tail:
            in_hold.add(outcome)
    return PolicyResult(strict, fallback, in_hold, overflows, exhausted)


def simulate_oracle(
    sessions: Sequence[SimSession],
    pool_size: int,
    *,
    exhaustion: Exhaustion = "overflow",
    hold_minutes: float = 30,
) -> OracleResult:
    """Attribute calls as a clairvoyant policy would, under the same display rules."""
    events: list[tuple[int, int, int]] = []
    for index, session in enumerate(sessions):
        # At one instant: starts, then calls (a call may come at the first instant of its
        # visit), then ends.
        events.append((session.start, 0, index))
        events.append((session.end, 2, index))
        if session.call is not None:
            events.append((session.call, 1, index))
    events.sort()
    free = pool_size
    # Who owns a number, and in which role; heaps are lazy (checked against `role`).
    role: dict[int, str] = {}
    waiting: list[tuple[int, int]] = []  # inactive callers keeping their number: (-call, idx)
    active_callers: list[tuple[int, int]] = []  # active visitors who will still call
    harmless: set[int] = set()  # active visitors who will not call (any more)
    shown: dict[int, bool] = {}
    called: set[int] = set()
    result, in_hold = Shares(), Shares()
    tail = int(hold_minutes * 60)

    def top(heap: list[tuple[int, int]], wanted: str) -> int | None:
        while heap and role.get(heap[0][1]) != wanted:
            heapq.heappop(heap)
        return heap[0][1] if heap else None

    def own(index: int) -> None:
        session = sessions[index]
        if session.call is not None and index not in called:
            role[index] = "active_caller"
            heapq.heappush(active_callers, (-session.call, index))
        else:
            role[index] = "harmless"
            harmless.add(index)

    def lose(index: int) -> None:
        if role.pop(index, None) == "harmless":
            harmless.discard(index)

    for _, kind, index in events:
        session = sessions[index]
        if kind == 0:
            shown[index] = True
            pending = session.call
            if free > 0:
                free -= 1
                own(index)
                continue
            victim = top(waiting, "waiting")
            if victim is not None:
                victim_call = sessions[victim].call or 0
                if exhaustion == "overflow" or (pending is not None and pending < victim_call):
                    lose(victim)
                    own(index)
                else:
                    shown[index] = False
                continue
            if exhaustion == "business":
                shown[index] = False
                continue
            # Every number is on an active visitor's screen: share one.
            if harmless:
                lose(next(iter(harmless)))
                own(index)
                continue
            victim = top(active_callers, "active_caller")
            if pending is not None and victim is not None:
                if pending < (sessions[victim].call or 0):
                    lose(victim)
                    own(index)
            # Otherwise the visitor sees a number it does not own.
        elif kind == 2:
            if index in role:
                if role[index] == "active_caller":
                    role[index] = "waiting"
                    heapq.heappush(waiting, (-(session.call or 0), index))
                else:
                    lose(index)
                    free += 1
        else:
            called.add(index)
            outcome: Outcome = "correct"
            if index in role:
                if role[index] == "waiting":
                    role.pop(index)
                    free += 1
                else:
                    role[index] = "harmless"
                    harmless.add(index)
            else:
                outcome = "wrong" if shown.get(index) else "unattributed"
            result.add(outcome)
            if (session.call or 0) <= session.end + tail:
                in_hold.add(outcome)
    return OracleResult(result, in_hold)


def rule_of_thumb(daily_sessions: float) -> int:
    """Return CallTrackingMetrics' pool size: one number per 20 daily visitors."""
    return max(1, math.ceil(daily_sessions / VISITORS_PER_NUMBER))


@dataclass(frozen=True)
class SizeReport:
    size: int
    label: str
    policy: PolicyResult
    oracle: OracleResult
    # foresight_free_bound: None where the pool is too small never to overflow.
    bound: float | None = None

    def gap_points(self) -> float:
        """Return how far the pool's correct share is below the oracle's, in points.

        The pool is judged by `last_holder`, which is how telephony attributes a call: the
        lease at the call instant, else the number's last holder (telephony/attribution.py).
        """
        return 100 * (self.oracle.all.share("correct") - self.policy.last_holder.share("correct"))

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "label": self.label,
            "lease_at": self.policy.lease_at.as_json(),
            "last_holder": self.policy.last_holder.as_json(),
            "in_hold": self.policy.in_hold.as_json(),
            "oracle": self.oracle.all.as_json(),
            "oracle_in_hold": self.oracle.in_hold.as_json(),
            "gap_points": round(self.gap_points(), 2),
            "gap_points_lease_at_only": round(
                100 * (self.oracle.all.share("correct") - self.policy.lease_at.share("correct")),
                2,
            ),
            "best_without_foresight": None if self.bound is None else round(self.bound, 5),
            "overflow_leases": self.policy.overflows,
            "exhausted_requests": self.policy.exhausted,
        }


async def evaluate(
    sessions: Sequence[SimSession],
    sizes: Sequence[tuple[int, str]],
    *,
    hold_minutes: float = 30,
    exhaustion: Exhaustion = "overflow",
    activity_seconds: int = 60,
) -> list[SizeReport]:
    """Simulate the pool and the oracle at each size."""
    reports = []
    for size, label in sizes:
        policy = await simulate_policy(
            sessions,
            size,
            hold_minutes=hold_minutes,
            exhaustion=exhaustion,
            activity_seconds=activity_seconds,
        )
        oracle = simulate_oracle(sessions, size, exhaustion=exhaustion, hold_minutes=hold_minutes)
        bound = foresight_free_bound(sessions, size, hold_minutes)
        reports.append(SizeReport(size, label, policy, oracle, bound))
    return reports
