"""Callbacks: an advisor calls a visitor back through the carrier, bridged and tracked.

The carrier rings the advisor first (`place_bridged_call`); when the advisor answers, it asks
our bridge webhook what to do and we dial the visitor. The call is stored as an outbound call
linked to the visitor's session, and its status, dial and recording callbacks are the same as
for incoming calls.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telephony import twiml
from telephony.calls import apply_pending
from telephony.carriers.base import Carrier, CarrierError
from telephony.signature import (
    BRIDGE_PATH,
    DIAL_PATH,
    RECORDING_PATH,
    STATUS_PATH,
    WHISPER_PATH,
    public_url_for,
)
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import ApiError, NotFound
from tracker.models import BusinessNumber, Call, Lease, Site, TrackedSession, TrackingNumber, User
from tracker.phones import InvalidPhoneNumber, to_e164
from tracker.users import hash_password, verify_password

CALLBACK_ROLES = ("advisor", "admin")
CALLBACK = "callback"
PENDING_PREFIX = "pending-"


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


async def user_from_basic_auth(db: AsyncSession, authorization: str | None) -> User:
    """Return the active user named by an HTTP Basic `Authorization` header; raise 401."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized(
            "unauthorized", "HTTP Basic credentials (email and password) are required"
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError as exc:  # binascii.Error, bytes not UTF-8, a header not ASCII
        raise Unauthorized("unauthorized", "the Basic credentials are malformed") from exc
    email, _, password = decoded.partition(":")
    if "\x00" in email or len(email) > 320:
        # No email holds these; PostgreSQL's text cannot even compare a NUL.
        raise Unauthorized("unauthorized", "the email or the password is wrong")
    user = await db.scalar(select(User).where(User.email == email.strip().lower()))
    # argon2 costs tens of milliseconds of CPU: verify in a thread, and verify against a dummy
    # hash for unknown users so the answer time does not tell which emails exist.
    stored = user.password_hash if user is not None else _dummy_hash()
    valid = await asyncio.to_thread(verify_password, stored, password)
    if user is None or not valid or user.disabled_at is not None:
        raise Unauthorized("unauthorized", "the email or the password is wrong")
    if user.role not in CALLBACK_ROLES:
        raise Forbidden("forbidden", "only advisors and administrators can place callbacks")
    return user


@dataclass(frozen=True)
class CallbackRequest:
    """`POST /api/calls/callback`: whom to call back, from which advisor phone."""

    visitor_phone: str
    advisor_phone: str | None = None
    session_id: str | None = None
    site_key: str | None = None

    @classmethod
    def parse(cls, body: Any) -> CallbackRequest:
        if not isinstance(body, dict):
            raise ApiError("invalid_request", "a JSON object is expected")
        values: dict[str, str | None] = {}
        for name in ("visitor_phone", "advisor_phone", "session_id", "site_key"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 64):
                raise ApiError(
                    "invalid_request", f"{name} must be a string of at most 64 characters"
                )
            values[name] = value.strip() if value else None
        visitor = values.pop("visitor_phone")
        if not visitor:
            raise ApiError("invalid_request", "visitor_phone is required")
        if not values["session_id"] and not values["site_key"]:
            raise ApiError("invalid_request", "session_id or site_key is required")
        return cls(visitor_phone=visitor, **values)


async def _site_and_session(
    db: AsyncSession, user: User, request: CallbackRequest
) -> tuple[Site, TrackedSession | None]:
    session: TrackedSession | None = None
    if request.session_id:
        session = await db.get(TrackedSession, request.session_id)
        site = await db.get(Site, session.site_id) if session is not None else None
    else:
        site = await db.scalar(select(Site).where(Site.site_key == request.site_key))
    # Another tenant's session or site reads as missing: its existence is not told.
    if site is None or site.account_id != user.account_id:
        if request.session_id:
            raise NotFound("unknown_session", "no such session in your account")
        raise NotFound("unknown_site", "no such site in your account")
    return site, session


async def _caller_id(
    db: AsyncSession, site: Site, session: TrackedSession | None, provider: str
) -> str:
    """Choose the number both parties see: the session's tracking number, else any of the
    site's numbers with this carrier, else the business number (which Twilio accepts only
    once verified as an outgoing caller id)."""
    if session is not None:
        leased = await db.scalar(
            select(TrackingNumber.e164)
            .join(Lease, Lease.tracking_number_id == TrackingNumber.id)
            .where(
                Lease.session_id == session.id,
                TrackingNumber.provider == provider,
                TrackingNumber.state == "active",
            )
            .order_by(Lease.started_at.desc())
            .limit(1)
        )
        if leased:
            return str(leased)
    number = await db.scalar(
        select(TrackingNumber.e164)
        .where(
            TrackingNumber.site_id == site.id,
            TrackingNumber.provider == provider,
            TrackingNumber.state == "active",
        )
        .order_by(TrackingNumber.id)
        .limit(1)
    )
    if number:
        return str(number)
    business = await db.scalar(
        select(BusinessNumber.e164)
        .where(BusinessNumber.site_id == site.id)
        .order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id)
        .limit(1)
    )
    if not business:
        raise ApiError("no_caller_id", "the site has no number to call from", status=409)
    return str(business)


def _phone(raw: str, country: str, name: str) -> str:
    try:
        return to_e164(raw, country)
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", f"{name}: {exc}") from exc


async def prepare_callback(
    db: AsyncSession, user: User, request: CallbackRequest, provider: str, now: dt.datetime
) -> Call:
    """Store the outbound call (before the carrier knows it) linked to the visitor's session."""
    site, session = await _site_and_session(db, user, request)
    advisor_raw = request.advisor_phone or user.phone_e164
    if not advisor_raw:
        raise ApiError("invalid_request", "advisor_phone is required (the user has no phone)")
    advisor = _phone(advisor_raw, site.country, "advisor_phone")
    visitor = _phone(request.visitor_phone, site.country, "visitor_phone")
    call = Call(
        site_id=site.id,
        provider=provider,
        # The carrier's id is known only once it accepted the call; unique until then.
        provider_call_id=PENDING_PREFIX + secrets.token_hex(16),
        direction="outbound",
        caller_e164=visitor,
        tracking_e164=await _caller_id(db, site, session, provider),
        forwarded_to_e164=advisor,
        started_at=now,
        status="queued",
        last_sequence=-1,
        first_time_caller=False,
        session_id=session.id if session is not None else None,
        channel=session.channel if session is not None else None,
        source=session.source if session is not None else None,
        medium=session.medium if session is not None else None,
        campaign=session.campaign if session is not None else None,
        term=session.term if session is not None else None,
        # Not an attribution guess: the advisor chose whom to call back.
        method=CALLBACK,
        confidence=1.0 if session is not None else 0.0,
    )
    db.add(call)
    await db.flush()
    return call


async def place_callback(
    database: Database,
    carrier: Carrier,
    user: User,
    request: CallbackRequest,
    *,
    public_url: str,
    clock: Clock,
) -> Call:
    """Ring the advisor, then the visitor; return the stored outbound call."""
    async with database.begin() as db:
        call = await prepare_callback(db, user, request, carrier.name, clock.now())
    try:
        # Outside any transaction: the carrier's API may take seconds.
        placed = await carrier.place_bridged_call(
            first_e164=str(call.forwarded_to_e164),
            then_e164=str(call.caller_e164),
            caller_id=call.tracking_e164,
            url=public_url_for(public_url, BRIDGE_PATH, call=call.id),
            status_url=public_url_for(public_url, STATUS_PATH),
        )
    except CarrierError as exc:
        async with database.begin() as db:
            failed = await db.get(Call, call.id)
            if failed is not None:
                failed.status = "failed"
                failed.outcome = "failed"
                failed.ended_at = clock.now()
        raise ApiError("carrier_error", str(exc), status=502) from exc
    async with database.begin() as db:
        stored = await db.get(Call, call.id)
        if stored is None:
            raise NotFound("unknown_call", "the call was erased while it was placed")
        if stored.provider_call_id.startswith(PENDING_PREFIX):
            stored.provider_call_id = placed.provider_call_id
            await db.flush()
            await apply_pending(db, stored, clock.now())
        return stored


async def bridge_twiml(
    db: AsyncSession,
    provider: str,
    call_id: int,
    advisor_leg_sid: str,
    *,
    public_url: str,
    now: dt.datetime,
) -> str:
    """Answer the advisor's leg: greet, then dial the visitor with the site's options."""
    row = (
        await db.execute(
            select(Call, Site)
            .join(Site, Site.id == Call.site_id)
            .where(Call.id == call_id, Call.provider == provider, Call.direction == "outbound")
        )
    ).first()
    if row is None or row[0].caller_e164 is None:
        return twiml.hang_up()
    call, site = row
    visitor = str(call.caller_e164)
    if call.provider_call_id.startswith(PENDING_PREFIX):
        # The advisor answered before `place_callback` stored the carrier's id: store it now.
        call.provider_call_id = advisor_leg_sid
        await db.flush()
        await apply_pending(db, call, now)
    record = bool(site.record_calls)
    notice = record and bool(site.recording_notice)
    plan = twiml.ForwardPlan(
        forward_to=visitor,
        language=site.language,
        dial_action_url=public_url_for(public_url, DIAL_PATH),
        status_url=public_url_for(public_url, STATUS_PATH),
        record=record,
        recording_status_url=public_url_for(public_url, RECORDING_PATH) if record else None,
        # The visitor hears the recording notice when they answer.
        whisper_url=public_url_for(public_url, WHISPER_PATH, call=advisor_leg_sid)
        if notice
        else None,
        caller_id=call.tracking_e164,
    )
    answer = twiml.bridge(plan)
    call.twiml = answer
    return answer
