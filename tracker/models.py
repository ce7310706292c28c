"""The core store: SQLAlchemy 2 models shared by every domain.

Times are stored as timezone-aware UTC. Public identifiers (site keys, session ids) are random
strings so they can travel to browsers without exposing row counts.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
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
