"""Pool sizing: how busy a site's pools were, and how many numbers a target accuracy needs.

Demand is the site's own traffic: every visit with consent wants a number from its first
activity until `lease_hold_minutes` after its last one, so the peak of those overlapping
intervals is the pool that never runs out. The needed size replays the real visits of the
period through the real pool (`simulator.simulate_policy`) and draws calls from the simulator's
call model, since calls and their timing are not known before the telephony issue records them.

The accuracy asked for counts the calls made within the hold: a call three hours later is lost
to the hold time, not to the pool size, and no number of numbers changes that.

Each pool is sized on its own demand: a visit that one of the business number's source rules
catches (a `Paid Social` number, a `promo=tv` landing) sees that static number and never takes
one from the pool, so it is left out (with today's rules: a rule added last week is applied to
the whole period, as it will be to the visits to come). The site-level figures are the primary
business number's pool.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.models import BusinessNumber, Lease, Site, TrackedSession, TrackingNumber
from tracker.numbers.rules import SourceRule, VisitFacts, best_match
from tracker.numbers.simulator import (
    SimSession,
    TrafficModel,
    rule_of_thumb,
    sessions_from_intervals,
    simulate_policy,
)

# What the replay draws calls with (the model's traffic fields play no part: the visits are
# the site's own), as the report shows it.
CALL_FIELDS = (
    "call_share",
    "during_visit_share",
    "late_share",
    "soon_mean_minutes",
    "late_min_hours",
    "late_max_hours",
    "seed",
)

# Real visits only say when they started and were last seen: sample activity every 5 minutes
# between the two, which orders overflow victims finely enough for a 30-minute hold.
ACTIVITY_SECONDS = 300


def _peak_at(intervals: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Return (peak overlap, instant of the peak) of half-open [start, end) intervals."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    instant = 0
    for at, step in edges:
        current += step
        if current > peak:
            peak, instant = current, at
    return peak, instant


async def _accuracy(
    sessions: Sequence[SimSession], size: int, hold_minutes: int, site: Site
) -> float:
    result = await simulate_policy(
        sessions,
        size,
        hold_minutes=hold_minutes,
        exhaustion="overflow" if site.pool_exhaustion == "overflow" else "business",
        activity_seconds=ACTIVITY_SECONDS,
    )
    return result.in_hold.share("correct")


async def _sizing(
    visits: Sequence[tuple[int, int]],
    since: dt.datetime,
    site: Site,
    current: int,
    target: float,
    model: TrafficModel | None,
) -> dict[str, Any]:
    """Demand of one pool's visits, and the size `target` needs, replayed through the pool."""
    hold = site.lease_hold_minutes
    peak, peak_offset = _peak_at([(s, e + hold * 60 + 1) for s, e in visits])
    visible, _ = _peak_at([(s, e + 1) for s, e in visits])
    # Every visit calls once in the replay: calls do not change what the pool does, so this
    # measures the accuracy for a random caller with far less noise than a 5% sample would.
    replay = dataclasses.replace(model or TrafficModel(), call_share=1.0)
    sessions = sessions_from_intervals(visits, replay)
    replayed: dict[int, float] = {}

    async def accuracy(size: int) -> float:
        # Each size replayed once: the search's last size is often the answer, or today's.
        if size not in replayed:
            replayed[size] = await _accuracy(sessions, size, hold, site)
        return replayed[size]

    recommended: int | None = None
    best: tuple[int, float] | None = None
    if sessions:
        low, high = 1, max(2, 2 * peak)
        top = await accuracy(high)
        best = (high, top)
        if top >= target:
            # Accuracy grows with the pool size: the smallest size reaching the target.
            while low < high:
                middle = (low + high) // 2
                if await accuracy(middle) >= target:
                    high = middle
                else:
                    low = middle + 1
            recommended = high
    return {
        "sessions_wanting_a_number": len(visits),
        "peak_concurrent_sessions": peak,
        "peak_at": (since + dt.timedelta(seconds=peak_offset)).isoformat() if visits else None,
        "peak_visible_sessions": visible,
        "utilisation": round(peak / current, 3) if current else None,
        "recommended_pool_size": recommended,
        "accuracy_at_recommended": round(await accuracy(recommended), 4) if recommended else None,
        "accuracy_at_current_size": (
            round(await accuracy(current), 4) if sessions and current else None
        ),
        "best_checked": {"size": best[0], "accuracy": round(best[1], 4)} if best else None,
        "call_model": {k: v for k, v in replay.as_json().items() if k in CALL_FIELDS},
    }


async def advise(
    db: AsyncSession,
    site: Site,
    now: dt.datetime,
    *,
    days: int = 30,
    target: float = 0.99,
    model: TrafficModel | None = None,
) -> dict[str, Any]:
    """Report utilisation of each pool over `days` and the pool size `target` needs."""
    since = now - dt.timedelta(days=days)
    businesses = list(
        await db.scalars(
            select(BusinessNumber)
            .where(BusinessNumber.site_id == site.id)
            .order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id)
        )
    )
    # Active source numbers' rules by business number (one without goes with the primary, as
    # the number service does).
    rules: dict[int, list[tuple[SourceRule, int, bool]]] = {}
    for number in await db.scalars(
        select(TrackingNumber).where(
            TrackingNumber.site_id == site.id,
            TrackingNumber.kind == "source",
            TrackingNumber.state == "active",
            TrackingNumber.rule_type.is_not(None),
            TrackingNumber.rule_value.is_not(None),
        )
    ):
        owner = number.business_number_id or (businesses[0].id if businesses else 0)
        rule = SourceRule(number.rule_type, number.rule_value)  # type: ignore[arg-type]
        rules.setdefault(owner, []).append((rule, number.id, True))
    # The visits, and for each the business numbers whose source rules catch it (what the
    # rules read is loaded only for a site that has rules: a big site's 30 days are many rows).
    columns: list[Any] = [TrackedSession.started_at, TrackedSession.last_seen_at]
    if rules:
        columns += [TrackedSession.landing_url, TrackedSession.referrer, TrackedSession.channel]
    visits: list[tuple[int, int]] = []
    caught: list[frozenset[int]] = []
    for start, end, *read in await db.execute(
        select(*columns).where(
            TrackedSession.site_id == site.id,
            TrackedSession.consent.is_(True),
            TrackedSession.started_at >= since,
        )
    ):
        visits.append(
            (int((start - since).total_seconds()), int((max(end, start) - since).total_seconds()))
        )
        if rules:
            facts = VisitFacts.read(*read)
            caught.append(frozenset(b for b, own in rules.items() if best_match(own, facts)))

    pools: list[dict[str, Any]] = []
    replays: dict[tuple[int | None, int], dict[str, Any]] = {}
    for business in businesses:
        size = await db.scalar(
            select(func.count()).where(
                TrackingNumber.site_id == site.id,
                TrackingNumber.business_number_id == business.id,
                TrackingNumber.kind == "pool",
                TrackingNumber.state == "active",
            )
        )
        leases = (
            await db.execute(
                select(Lease.started_at, Lease.hold_until, Lease.ended_at, Lease.overflow)
                .join(TrackingNumber, TrackingNumber.id == Lease.tracking_number_id)
                .where(
                    TrackingNumber.business_number_id == business.id,
                    Lease.site_id == site.id,
                    Lease.started_at >= since,
                )
            )
        ).all()
        held = [
            (
                int((start - since).total_seconds()),
                int((min(until, ended or until) - since).total_seconds()) + 1,
            )
            for start, until, ended, _ in leases
        ]
        peak_held, _ = _peak_at(held)
        wanting = (
            [v for v, c in zip(visits, caught, strict=True) if business.id not in c]
            if rules
            else visits
        )
        # Pools without rules of their own see the same demand: one replay for each size.
        key = (business.id if business.id in rules else None, int(size or 0))
        sizing = replays.get(key) or await _sizing(wanting, since, site, key[1], target, model)
        replays[key] = sizing
        pools.append(
            {
                "business_number": {"e164": business.e164, "label": business.label},
                "pool_size": int(size or 0),
                "sessions_on_source_numbers": len(visits) - len(wanting),
                **sizing,
                "peak_numbers_held": peak_held,
                "leases": len(leases),
                "overflow_leases": sum(1 for *_, overflow in leases if overflow),
            }
        )

    # The site's figures: its primary pool's (every visit's, for a site with no number yet).
    main = pools[0] if pools else await _sizing(visits, since, site, 0, target, model)
    daily = len(visits) / days
    return {
        "site_key": site.site_key,
        "days": days,
        "since": since.isoformat(),
        "hold_minutes": site.lease_hold_minutes,
        "exhaustion": site.pool_exhaustion,
        "sessions_with_consent": len(visits),
        "daily_sessions_with_consent": round(daily, 1),
        "sessions_wanting_a_number": main["sessions_wanting_a_number"],
        "peak_concurrent_sessions": main["peak_concurrent_sessions"],
        "peak_at": main["peak_at"],
        "peak_visible_sessions": main["peak_visible_sessions"],
        "pools": pools,
        "target": target,
        "recommended_pool_size": main["recommended_pool_size"],
        "accuracy_at_recommended": main["accuracy_at_recommended"],
        # By business number: pools of the same size may see different demand.
        "accuracy_at_current_sizes": {
            p["business_number"]["e164"]: p["accuracy_at_current_size"]
            for p in pools
            if p["accuracy_at_current_size"] is not None
        },
        "best_checked": main["best_checked"],
        "rule_of_thumb": {
            "source": "CallTrackingMetrics: one number per 20 daily visitors",
            "pool_size": rule_of_thumb(daily) if visits else 0,
        },
        "accuracy_counts": "calls within the hold time, lease_at attribution, simulated calls",
        "call_model": main["call_model"],
    }
