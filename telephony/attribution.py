"""Which visit made the phone ring: tracking number + call time → lease → session → channel.

Methods and confidence (a number between 0 and 1, stored on the call):

- `pool-session`: a pool number was held by a session when the call came in (`leases_at` of
  tracker.numbers; the pool gives a number to one session at a time). The visitor most likely
  still has the page open during the first minutes after their last activity, so the
  confidence is 1.0 up to `FRESH` (5 minutes) of inactivity, then decreases linearly to 0.6
  at the end of the hold window (`site.lease_hold_minutes`): the longer the number sat on an
  idle page, the likelier it was written down, shared or seen by someone else.
      confidence = 1.0 - 0.4 * clamp((idle - FRESH) / (hold - FRESH), 0, 1)
  In the rare case where n leases held the number at once (a pool rebuilt after a Redis
  failure), the most recently active one is credited with confidence / n.
- `overflow`: every pool number was busy and the number was lent to this session while the
  previous holder may still have it on screen: confidence 0.5 (one of two visitors), times
  the same inactivity decay.
- `source-number`: a static number shown to everyone matching a rule (a landing parameter, a
  referrer, a UTM source, a channel). The channel is known from the rule, not the visit, so
  the session is left empty; confidence 0.9, because a static number is also copied, bookmarked
  and passed on outside the channel it was shown for.
- after the hold (`pool-session`, lower confidence): nobody holds the number at the call
  instant, but its last lease ended at most `LATE_WINDOW` (7 days) before and nobody was given
  the number since. Numbers are handed out least-recently-released first precisely so that a
  visitor who calls back hours later still finds their number unused; the confidence starts at
  the end-of-hold value and halves every 24 hours after the hold:
      confidence = 0.6 * 0.5 ** (hours since hold_until / 24)
  (`calltrack bench dni` measures how often this is right: "last_holder").
- `unattributed`: with `unattributed_reason` "no lease at call time", "number not in pool"
  (the number is inactive or of an unknown kind) or "unknown number"; confidence 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tracker.channels import NOT_SET, channel_group, classify
from tracker.models import Lease, Site, TrackedSession, TrackingNumber
from tracker.numbers.service import last_lease_before, leases_at

POOL_SESSION = "pool-session"
SOURCE_NUMBER = "source-number"
OVERFLOW = "overflow"
UNATTRIBUTED = "unattributed"
FRESH = dt.timedelta(minutes=5)
SOURCE_NUMBER_CONFIDENCE = 0.9
OVERFLOW_CONFIDENCE = 0.5
# The lowest confidence a live, non-overflow lease gets (at the very end of its hold window).
STALE_CONFIDENCE = 0.6
# A call this long after the hold is no longer credited to the number's last holder: by then
# the number was likely written down or passed on (a week covers "I'll call back Monday").
LATE_WINDOW = dt.timedelta(days=7)


@dataclass(frozen=True)
class Attribution:
    method: str
    confidence: float
    session: TrackedSession | None = None
    lease: Lease | None = None
    channel: str | None = None
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    unattributed_reason: str | None = None


def unattributed(reason: str) -> Attribution:
    """Keep a call that no visit can be credited with, and say why."""
    return Attribution(method=UNATTRIBUTED, confidence=0.0, unattributed_reason=reason)


def freshness(idle: dt.timedelta, hold: dt.timedelta) -> float:
    """Return 1.0 for a visitor active a moment ago, down to 0.6 at the end of the hold."""
    if idle <= FRESH or hold <= FRESH:
        return 1.0
    fraction = min(1.0, (idle - FRESH) / (hold - FRESH))
    return round(1.0 - (1.0 - STALE_CONFIDENCE) * fraction, 3)


def source_rule_attribution(site: Site, number: TrackingNumber) -> Attribution:
    """Credit the channel or source named by a static number's rule."""
    channel: str | None = None
    source: str | None = None
    medium: str | None = None
    value = number.rule_value or ""
    if number.rule_type == "channel":
        channel = value
    elif number.rule_type == "utm_source":
        # What GA4 makes of the source alone ("newsletter" is Unassigned, "facebook" Organic
        # Social): reports count the call in a channel, never with the unattributed ones.
        source, medium = value, NOT_SET
        channel = channel_group(value, NOT_SET)
    elif number.rule_type in ("referrer_domain", "landing_param"):
        # Classify a visit that matches the rule, as the tracker classified the real ones.
        landing, referrer = f"https://{site.domain}/", None
        if number.rule_type == "referrer_domain":
            referrer = f"https://{value}/"
        else:
            landing += "?" + value
        visit = classify(landing, referrer, site.domain)
        channel, source, medium = visit.channel, visit.source, visit.medium
        if visit.channel == "Direct":
            # A merchant's own parameter (`promo=tv`): its value names the source.
            source = value.partition("=")[2] or value
    return Attribution(
        method=SOURCE_NUMBER,
        confidence=SOURCE_NUMBER_CONFIDENCE,
        channel=channel,
        source=source,
        medium=medium,
    )


async def attribute_call(
    db: AsyncSession, site: Site, number: TrackingNumber | None, at: dt.datetime
) -> Attribution:
    """Find who the call should be credited to; never fails, at worst "unattributed"."""
    if number is None:
        return unattributed("unknown number")
    if number.state != "active":
        return unattributed("number not in pool")
    if number.kind == "source":
        return source_rule_attribution(site, number)
    if number.kind != "pool":
        return unattributed("number not in pool")
    holders = await leases_at(db, number.id, at)
    late = False
    if not holders:
        previous = await last_lease_before(db, number.id, at)
        if previous is None or at - previous.hold_until > LATE_WINDOW:
            return unattributed("no lease at call time")
        holders, late = [previous], True
    lease = holders[0]
    session = await db.get(TrackedSession, lease.session_id)
    if session is None:
        return unattributed("no lease at call time")
    last_seen = max(lease.last_seen_at, session.last_seen_at)
    idle = max(dt.timedelta(0), at - last_seen)
    confidence = freshness(idle, dt.timedelta(minutes=site.lease_hold_minutes))
    if late:
        hours_after = max(0.0, (at - lease.hold_until).total_seconds() / 3600)
        confidence = round(STALE_CONFIDENCE * 0.5 ** (hours_after / 24), 3)
    method = POOL_SESSION
    if lease.overflow:
        method = OVERFLOW
        confidence = round(confidence * OVERFLOW_CONFIDENCE, 3)
    elif len(holders) > 1:
        # Two sessions held the number (only around a pool rebuild): one of them called.
        confidence = round(confidence / len(holders), 3)
    return Attribution(
        method=method,
        confidence=confidence,
        session=session,
        lease=lease,
        channel=session.channel,
        source=session.source,
        medium=session.medium,
        campaign=session.campaign,
        term=session.term,
    )
