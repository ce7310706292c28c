"""The core store: SQLAlchemy 2 models shared by every domain.

Times are stored as timezone-aware UTC. Public identifiers (site keys, session ids) are random
strings so they can travel to browsers without exposing row counts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    event,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite has no 64-bit autoincrement type distinct from INTEGER; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Store aware datetimes; SQLite drops the zone, so re-attach UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(8), default="en")
    phone_e164: Mapped[str | None] = mapped_column(String(20), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    site_key: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str] = mapped_column(String(253))
    country: Mapped[str] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    language: Mapped[str] = mapped_column(String(8), default="en")
    # "required": nothing on the device and no visitor id before consent (the default).
    consent_mode: Mapped[str] = mapped_column(String(16), default="required")
    # Minutes a pool number stays with a session after its last activity.
    lease_hold_minutes: Mapped[int] = mapped_column(Integer, default=30)
    # What to show when every pool number is held: "overflow" reuses the least recently
    # active lease, "business" shows the business number.
    pool_exhaustion: Mapped[str] = mapped_column(String(16), default="overflow")
    record_calls: Mapped[bool] = mapped_column(Boolean, default=False)
    recording_notice: Mapped[bool] = mapped_column(Boolean, default=True)
    whisper: Mapped[bool] = mapped_column(Boolean, default=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class BusinessNumber(Base):
    """A number the merchant publishes (sales, after-sales...); each has its own pool."""

    __tablename__ = "business_numbers"
    __table_args__ = (UniqueConstraint("site_id", "e164"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    e164: Mapped[str] = mapped_column(String(20))
    label: Mapped[str] = mapped_column(String(100), default="main")
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)


class TrackedSession(Base):
    """One visit: 30 minutes of inactivity starts a new one."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_site_started", "site_id", "started_at"),
        Index("ix_sessions_site_last_seen", "site_id", "last_seen_at"),
        Index("ix_sessions_site_anon", "site_id", "anon_key", "last_seen_at"),
        Index("ix_sessions_site_visitor", "site_id", "visitor_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    # First-party visitor id: only ever set after consent (or in consent_mode=not_required).
    visitor_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # Keyed, daily-rotating hash of (site, IP, user agent) that stitches the pages of a
    # visit without storing anything on the device; the raw inputs are never stored.
    anon_key: Mapped[str | None] = mapped_column(String(64), default=None)
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    landing_url: Mapped[str] = mapped_column(Text)
    referrer: Mapped[str | None] = mapped_column(Text, default=None)
    channel: Mapped[str] = mapped_column(String(40))
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    medium: Mapped[str | None] = mapped_column(String(200), default=None)
    campaign: Mapped[str | None] = mapped_column(String(300), default=None)
    term: Mapped[str | None] = mapped_column(String(300), default=None)
    content: Mapped[str | None] = mapped_column(String(300), default=None)
    click_ids: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    gclid: Mapped[str | None] = mapped_column(String(300), default=None)
    ip_truncated: Mapped[str | None] = mapped_column(String(64), default=None)
    country: Mapped[str | None] = mapped_column(String(2), default=None)
    region: Mapped[str | None] = mapped_column(String(100), default=None)
    city: Mapped[str | None] = mapped_column(String(100), default=None)
    browser: Mapped[str | None] = mapped_column(String(64), default=None)
    os: Mapped[str | None] = mapped_column(String(64), default=None)
    device: Mapped[str | None] = mapped_column(String(16), default=None)
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    pageview_count: Mapped[int] = mapped_column(Integer, default=0)
    current_url: Mapped[str | None] = mapped_column(Text, default=None)
    current_title: Mapped[str | None] = mapped_column(String(500), default=None)


class Pageview(Base):
    __tablename__ = "pageviews"
    __table_args__ = (
        Index("ix_pageviews_site_viewed", "site_id", "viewed_at"),
        Index("ix_pageviews_session", "session_id", "viewed_at"),
        # A retried beacon of the same page load is stored once (ON CONFLICT DO NOTHING).
        UniqueConstraint("session_id", "page_id", name="uq_pageviews_session_page"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    # Client-generated id of the page load: a retried beacon does not count twice.
    page_id: Mapped[str | None] = mapped_column(String(32), default=None)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(String(500), default=None)
    viewed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Time on page, from the snippet's heartbeats and its last beacon when the page is hidden.
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class Cart(Base):
    """The latest cart snapshot of a session."""

    __tablename__ = "carts"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    total: Mapped[Decimal | None] = mapped_column(Numeric(14, 2), default=None)
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class TrackingNumber(Base):
    __tablename__ = "tracking_numbers"
    __table_args__ = (
        UniqueConstraint("e164", "provider", name="uq_tracking_numbers_e164_provider"),
        Index("ix_tracking_numbers_site", "site_id", "kind", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    business_number_id: Mapped[int | None] = mapped_column(
        ForeignKey("business_numbers.id", ondelete="SET NULL"), default=None
    )
    e164: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(20), default="simulated")
    provider_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    # "pool" (leased per session) or "source" (static, shown to everyone matching the rule).
    kind: Mapped[str] = mapped_column(String(10))
    # For source numbers: "landing_param", "referrer_domain", "utm_source" or "channel".
    rule_type: Mapped[str | None] = mapped_column(String(20), default=None)
    rule_value: Mapped[str | None] = mapped_column(String(300), default=None)
    state: Mapped[str] = mapped_column(String(10), default="active")
    voice_url: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_released_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class Lease(Base):
    """A tracking number held by a session; kept forever as attribution history."""

    __tablename__ = "leases"
    __table_args__ = (
        Index("ix_leases_number_started", "tracking_number_id", "started_at"),
        # "Who held this number at that instant" (tracker.numbers.service.leases_at) bounds
        # hold_until from below: for a recent instant this reads only the last lease or two,
        # where the started_at index would walk the number's whole history.
        Index("ix_leases_number_hold", "tracking_number_id", "hold_until"),
        Index("ix_leases_session", "session_id"),
        Index("ix_leases_site_started", "site_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    tracking_number_id: Mapped[int] = mapped_column(
        ForeignKey("tracking_numbers.id", ondelete="CASCADE")
    )
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The number is held until `hold_until` unless the session is seen again.
    hold_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Set when the number was given to another session (overflow) or released.
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    overflow: Mapped[bool] = mapped_column(Boolean, default=False)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("provider", "provider_call_id", name="uq_calls_provider_call"),
        Index("ix_calls_site_started", "site_id", "started_at"),
        Index("ix_calls_site_caller", "site_id", "caller_e164"),
        Index("ix_calls_session", "session_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))
    provider_call_id: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(10), default="inbound")
    caller_e164: Mapped[str | None] = mapped_column(String(20), default=None)
    caller_country: Mapped[str | None] = mapped_column(String(2), default=None)
    caller_region: Mapped[str | None] = mapped_column(String(100), default=None)
    first_time_caller: Mapped[bool] = mapped_column(Boolean, default=True)
    tracking_number_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_numbers.id", ondelete="SET NULL"), default=None
    )
    tracking_e164: Mapped[str] = mapped_column(String(20))
    forwarded_to_e164: Mapped[str | None] = mapped_column(String(20), default=None)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Carrier call status (queued, ringing, in-progress, completed, busy, no-answer, ...).
    status: Mapped[str] = mapped_column(String(20), default="ringing")
    # answered, missed, busy, failed: from the <Dial> action callback.
    outcome: Mapped[str | None] = mapped_column(String(20), default=None)
    duration_s: Mapped[int | None] = mapped_column(Integer, default=None)
    last_sequence: Mapped[int] = mapped_column(Integer, default=-1)
    recording_sid: Mapped[str | None] = mapped_column(String(64), default=None)
    recording_url: Mapped[str | None] = mapped_column(Text, default=None)
    recording_duration_s: Mapped[int | None] = mapped_column(Integer, default=None)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), default=None
    )
    lease_id: Mapped[int | None] = mapped_column(
        ForeignKey("leases.id", ondelete="SET NULL"), default=None
    )
    channel: Mapped[str | None] = mapped_column(String(40), default=None)
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    medium: Mapped[str | None] = mapped_column(String(200), default=None)
    campaign: Mapped[str | None] = mapped_column(String(300), default=None)
    term: Mapped[str | None] = mapped_column(String(300), default=None)
    # pool-session, source-number, overflow or unattributed.
    method: Mapped[str] = mapped_column(String(20), default="unattributed")
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    unattributed_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    twiml: Mapped[str | None] = mapped_column(Text, default=None)
    outcome_tag: Mapped[str | None] = mapped_column(String(20), default=None)


class CarrierEvent(Base):
    """Every carrier callback as received, so nothing is lost, even before its call exists."""

    __tablename__ = "carrier_events"
    __table_args__ = (Index("ix_carrier_events_call", "provider", "provider_call_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_call_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[dict[str, str]] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class AuditEntry(Base):
    """Append-only record of user actions that read or change personal data."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int | None] = mapped_column(Integer, default=None)
    user_id: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip_truncated: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class LoginSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its hash."""

    __tablename__ = "login_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ip_truncated: Mapped[str | None] = mapped_column(String(64), default=None)


class ContactRequest(Base):
    """A visitor's request to be called back, queued for the advisors of the site."""

    __tablename__ = "contact_requests"
    __table_args__ = (
        # The console's queue: a site's open requests, oldest first.
        Index("ix_contact_requests_site_status", "site_id", "status", "created_at"),
        Index("ix_contact_requests_session", "session_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), default=None
    )
    phone_e164: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text, default=None)
    language: Mapped[str] = mapped_column(String(8), default="en")
    kind: Mapped[str] = mapped_column(String(16), default="callback")
    # open → claimed (one advisor holds it) → closed (tagged with an outcome).
    status: Mapped[str] = mapped_column(String(10), default="open")
    claimed_by_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    outcome_tag: Mapped[str | None] = mapped_column(String(20), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), default=None
    )
    # Asked outside the site's opening hours: the visitor was told when we call back.
    outside_hours: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A REST API bearer token of an account: only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, shown in lists so a token can be recognised.
    prefix: Mapped[str] = mapped_column(String(16))
    # "read" or "write" (write includes read).
    scope: Mapped[str] = mapped_column(String(10))
    # Full caller numbers in API answers; without it they are masked like for a marketer.
    caller_numbers: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class WebhookEndpoint(Base):
    """A URL of the merchant that receives signed event notifications."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(80))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one endpoint, with its retry state: the worker's queue and the log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One delivery per event and endpoint, however often telephony reports the call.
        UniqueConstraint("endpoint_id", "dedupe_key", name="uq_webhook_deliveries_dedupe"),
        # The worker's poll: pending deliveries whose next attempt is due.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(40))
    dedupe_key: Mapped[str] = mapped_column(String(100))
    # The exact bytes sent (and signed), so every retry sends the same body.
    body: Mapped[str] = mapped_column(Text)
    # pending, delivered or failed (gave up).
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    first_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # A worker that claimed the row holds it until then (a crashed worker's claim expires).
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(300), default=None)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class AdCost(Base):
    """Ad spend imported from CSV: one day, one channel or source/medium, one campaign."""

    __tablename__ = "ad_costs"
    __table_args__ = (Index("ix_ad_costs_account_day", "account_id", "day"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # None: the spend is for the whole account (shown when all sites are selected).
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), default=None
    )
    day: Mapped[dt.date] = mapped_column(Date)
    channel: Mapped[str] = mapped_column(String(40))
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    medium: Mapped[str | None] = mapped_column(String(200), default=None)
    campaign: Mapped[str | None] = mapped_column(String(300), default=None)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    import_id: Mapped[str] = mapped_column(String(32))
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ReportSessionDay(Base):
    """Pre-aggregated sessions: one site, one local day, one dimension value."""

    __tablename__ = "report_session_days"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    value: Mapped[str] = mapped_column(String(300), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger, default=0)


class ReportCallDay(Base):
    """Pre-aggregated call credit in milli-calls: site, local day, model, dimension value."""

    __tablename__ = "report_call_days"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(20), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    value: Mapped[str] = mapped_column(String(300), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    answered: Mapped[int] = mapped_column(BigInteger, default=0)
    missed: Mapped[int] = mapped_column(BigInteger, default=0)
    first_time: Mapped[int] = mapped_column(BigInteger, default=0)
    # Milli-calls times seconds of talk time of answered calls.
    talk: Mapped[int] = mapped_column(BigInteger, default=0)
    sales: Mapped[int] = mapped_column(BigInteger, default=0)
    leads: Mapped[int] = mapped_column(BigInteger, default=0)


class ReportDirtyDay(Base):
    """A site's local day whose call rollup must be recomputed."""

    __tablename__ = "report_dirty_days"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    marked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ReportRollupState(Base):
    """How far a site's session rollup is known to be complete."""

    __tablename__ = "report_rollup_state"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    sessions_through: Mapped[dt.date | None] = mapped_column(Date, default=None)
    refreshed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ExclusionEntry(Base):
    """A phone number or visitor id the account must never track, kept only as a keyed hash."""

    __tablename__ = "privacy_exclusions"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "key_hash", name="uq_privacy_exclusions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # "phone" (E.164) or "visitor" (the snippet's visitor id).
    kind: Mapped[str] = mapped_column(String(10))
    # HMAC-SHA256 keyed with CALLTRACK_SECRET_KEY (tracker.privacy.hashing): never the value.
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))


class Restriction(Base):
    """A person whose data is kept but withheld from reports, exports and the console."""

    __tablename__ = "privacy_restrictions"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "value", name="uq_privacy_restrictions_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # "phone", "visitor" or "session"; the value is kept in clear so reports can filter in SQL
    # (the data it points at is stored anyway) and is deleted when the person is erased.
    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))


class PurgeCursor(Base):
    """Where the retention purge of one data class of one site (or account) stands."""

    __tablename__ = "privacy_purge_cursors"
    __table_args__ = (
        UniqueConstraint("scope", "data_class", name="uq_privacy_purge_cursors_scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "site:<id>" or "account:<id>" (the audit log is kept per account).
    scope: Mapped[str] = mapped_column(String(40))
    data_class: Mapped[str] = mapped_column(String(32))
    # Everything older than this is being deleted by the current run.
    cutoff_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The last row deleted (time and key): a resumed run starts there.
    position_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    position_key: Mapped[str | None] = mapped_column(String(64), default=None)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class ExportRecord(Base):
    """A data-subject export written under var/exports, so that erasure can delete it too."""

    __tablename__ = "privacy_exports"
    __table_args__ = (Index("ix_privacy_exports_account", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="SET NULL"), default=None
    )
    filename: Mapped[str] = mapped_column(String(200))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Keyed hashes of the person's identifiers (never the identifiers): erasure matches on them.
    subject_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(320))
    # Exports are copies of personal data: the purge deletes them after a week.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ConfigGeneration(Base):
    """One row counting changes to what workers cache (sites, their numbers, exclusions):
    each worker polls it (tracker.confwatch) and drops its caches when it moves, so a number
    added from the command line or another worker is in use within a second."""

    __tablename__ = "config_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


# What workers cache (tracker.confwatch): a flush that adds, changes or deletes one of these
# counts one in config_generation, in the same transaction. Bulk Core updates (the lease hot
# path) do not count, and need not: nothing cached depends on them.
CACHED_ROWS = (Site, BusinessNumber, TrackingNumber, ExclusionEntry)


def _changes_cached_rows(session: Session) -> bool:
    if any(isinstance(o, CACHED_ROWS) for o in itertools.chain(session.new, session.deleted)):
        return True
    return any(
        isinstance(o, CACHED_ROWS) and session.is_modified(o, include_collections=False)
        for o in session.dirty
    )


def _count(session: Session) -> None:
    session.execute(
        update(ConfigGeneration)
        .where(ConfigGeneration.id == 1)
        .values(value=ConfigGeneration.value + 1)
    )


@event.listens_for(Session, "before_flush")
def _count_config_change(session: Session, flush_context: Any, instances: Any) -> None:
    if _changes_cached_rows(session):
        _count(session)


@event.listens_for(Session, "do_orm_execute")
def _count_config_delete(state: Any) -> None:
    # Bulk deletes (an exclusion removed, a site purged) bypass the flush. Bulk updates are
    # left out: the lease hot path updates tracking numbers that way, and nothing cached
    # depends on what it writes.
    mapper = state.bind_mapper
    if state.is_delete and mapper is not None and issubclass(mapper.class_, CACHED_ROWS):
        _count(state.session)
