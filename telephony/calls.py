"""Calls: incoming call → attribution → call row → TwiML, then the call's lifecycle callbacks.

Every carrier callback is stored in `carrier_events` before it is applied, so nothing the
carrier sent is lost: a callback that arrives before its call exists (carriers do not promise
any order between webhooks) stays pending and is applied when the call is created.

Webhook parameters use Twilio's names (https://www.twilio.com/docs/voice/twiml#request-parameters,
https://www.twilio.com/docs/voice/api/call-resource#statuscallback); the simulated carrier sends
the same ones.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from aiohttp import web
from sqlalchemy import bindparam, case, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from telephony import twiml
from telephony.attribution import Attribution, attribute_call, unattributed
from telephony.signature import (
    DIAL_PATH,
    RECORDING_PATH,
    STATUS_PATH,
    WHISPER_PATH,
    public_url_for,
)
from tracker import appkeys
from tracker.clock import Clock
from tracker.db import Database
from tracker.errors import ApiError
from tracker.models import BusinessNumber, Call, CarrierEvent, Site, TrackingNumber
from tracker.phones import InvalidPhoneNumber, caller_location, to_e164
from tracker.privacy.exclusion import is_excluded_callback, is_excluded_caller
from tracker.web import is_digits

log = logging.getLogger("calltrack.calls")

CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}\Z")
RECORDING_SID = re.compile(r"^RE[0-9a-fA-F]{32}\Z")
MAX_PARAM = 1000
# Order of a call's statuses: a callback never moves a call back to an earlier one, and the
# final statuses never change into a non-final one. Within one rank, SequenceNumber decides.
STATUS_RANK = {
    "queued": 0,
    "initiated": 0,
    "ringing": 1,
    "in-progress": 2,
    "completed": 3,
    "busy": 3,
    "no-answer": 3,
    "failed": 3,
    "canceled": 3,
}
FINAL_STATUSES = frozenset(s for s, rank in STATUS_RANK.items() if rank == 3)
# <Dial> action DialCallStatus → what happened for the merchant
# (https://www.twilio.com/docs/voice/twiml/dial#dialcallstatus-values).
DIAL_OUTCOMES = {
    "completed": "answered",
    "answered": "answered",
    "no-answer": "missed",
    "canceled": "missed",
    "busy": "busy",
    "failed": "failed",
}
# Twilio's stand-ins for a withheld caller id (https://www.twilio.com/docs/voice/twiml#from).
ANONYMOUS_CALLERS = frozenset(
    {"anonymous", "restricted", "unknown", "+266696687", "+7378742833", "+2562533", "+86282452253"}
)
_LANGUAGE_BY_REGION = {
    "FR": "fr", "BE": "fr", "LU": "fr", "MC": "fr", "CH": "fr",
    "DE": "de", "AT": "de", "ES": "es", "IT": "it", "NL": "nl",
}  # fmt: skip

VOICE = "voice"
STATUS = "status"
DIAL = "dial"
RECORDING = "recording"
UNKNOWN_NUMBER = "unknown-number"
Params = Mapping[str, str]


def _bad(message: str) -> ApiError:
    return ApiError("invalid_parameters", message, status=400)


def _text(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _bad(f"{name} is required")
        return None
    if len(value) > MAX_PARAM:
        raise _bad(f"{name} is longer than {MAX_PARAM} characters")
    return value


def _call_sid(params: Params, name: str = "CallSid", *, required: bool = True) -> str | None:
    value = _text(params, name, required=required)
    if value is not None and not CALL_SID.match(value):
        raise _bad(f"{name} must be CA followed by 32 hexadecimal digits")
    return value


def _int(params: Params, name: str) -> int | None:
    value = _text(params, name)
    if value is None:
        return None
    if not is_digits(value) or len(value) > 9:
        raise _bad(f"{name} must be a non-negative integer")
    return int(value)


def _timestamp(params: Params, name: str = "Timestamp") -> dt.datetime | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise _bad(f"{name} must be an RFC 2822 date") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as exc:  # "Fri, 31 Dec 9999 23:59:59 -0100" is past year 9999 in UTC
        raise _bad(f"{name} is out of range") from exc


@dataclass(frozen=True)
class VoiceRequest:
    """The voice webhook: a call to a tracking number (or the advisor leg of a callback)."""

    call_sid: str
    to: str
    from_: str | None
    call_status: str | None
    direction: str | None

    @classmethod
    def parse(cls, params: Params) -> VoiceRequest:
        return cls(
            call_sid=str(_call_sid(params)),
            to=str(_text(params, "To", required=True)),
            from_=_text(params, "From"),
            call_status=_text(params, "CallStatus"),
            direction=_text(params, "Direction"),
        )


@dataclass(frozen=True)
class StatusCallback:
    """A call status callback, of the caller's leg or of a `<Number>` leg (ParentCallSid)."""

    call_sid: str
    parent_call_sid: str | None
    call_status: str
    sequence_number: int | None
    timestamp: dt.datetime | None
    call_duration: int | None

    @property
    def key(self) -> str:
        """Name the call this callback belongs to: the parent of a `<Dial>`ed leg."""
        return self.parent_call_sid or self.call_sid

    @classmethod
    def parse(cls, params: Params) -> StatusCallback:
        status = str(_text(params, "CallStatus", required=True))
        if status == "answered":
            # Some integrations report the "answered" event's name instead of its status.
            status = "in-progress"
        if status not in STATUS_RANK:
            raise _bad(f"CallStatus {status[:40]!r} is not a call status")
        return cls(
            call_sid=str(_call_sid(params)),
            parent_call_sid=_call_sid(params, "ParentCallSid", required=False),
            call_status=status,
            sequence_number=_int(params, "SequenceNumber"),
            timestamp=_timestamp(params),
            call_duration=_int(params, "CallDuration"),
        )


@dataclass(frozen=True)
class DialCallback:
    """The `<Dial>` action callback: how the forwarded leg ended."""

    call_sid: str
    dial_call_status: str
    dial_call_duration: int | None
    dial_call_sid: str | None

    @property
    def key(self) -> str:
        return self.call_sid

    @classmethod
    def parse(cls, params: Params) -> DialCallback:
        status = str(_text(params, "DialCallStatus", required=True))
        if status not in DIAL_OUTCOMES:
            raise _bad(f"DialCallStatus {status[:40]!r} is not a dial status")
        return cls(
            call_sid=str(_call_sid(params)),
            dial_call_status=status,
            dial_call_duration=_int(params, "DialCallDuration"),
            dial_call_sid=_call_sid(params, "DialCallSid", required=False),
        )


@dataclass(frozen=True)
class RecordingCallback:
    """A recording status callback: where the carrier keeps the audio."""

    call_sid: str
    recording_sid: str
    recording_url: str | None
    recording_duration: int | None
    recording_status: str | None

    @property
    def key(self) -> str:
        return self.call_sid

    @classmethod
    def parse(cls, params: Params) -> RecordingCallback:
        sid = str(_text(params, "RecordingSid", required=True))
        if not RECORDING_SID.match(sid):
            raise _bad("RecordingSid must be RE followed by 32 hexadecimal digits")
        url = _text(params, "RecordingUrl")
        if url is not None and not url.startswith(("https://", "http://")):
            raise _bad("RecordingUrl must be an http(s) URL")
        return cls(
            call_sid=str(_call_sid(params)),
            recording_sid=sid,
            recording_url=url,
            recording_duration=_int(params, "RecordingDuration"),
            recording_status=_text(params, "RecordingStatus"),
        )


CALLBACK_MODELS: dict[str, type[StatusCallback | DialCallback | RecordingCallback]] = {
    STATUS: StatusCallback,
    DIAL: DialCallback,
    RECORDING: RecordingCallback,
}


def parse_callback(kind: str, params: Params) -> StatusCallback | DialCallback | RecordingCallback:
    """Validate a lifecycle callback; raise ApiError (400) when malformed."""
    return CALLBACK_MODELS[kind].parse(params)


# ---------------------------------------------------------------------------------------------
# Incoming call


@dataclass(frozen=True)
class IncomingOutcome:
    twiml: str
    call: Call | None
    created: bool


def _language_for_number(e164: str) -> str:
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return "en"
    return _LANGUAGE_BY_REGION.get(region or "", "en")


def normalise_caller(raw: str | None, country: str) -> str | None:
    """Return the caller's E.164 number, or None when withheld or not a phone number."""
    if raw is None or raw.strip().lower() in ANONYMOUS_CALLERS:
        return None
    try:
        return to_e164(raw, country)
    except InvalidPhoneNumber:
        return None


# The voice webhook's queries are built once: building a statement costs more CPU than
# running it on an indexed row, and Twilio is waiting (see `answer_incoming_call`).
_EXISTING_CALL = select(Call).where(
    Call.provider == bindparam("provider"), Call.provider_call_id == bindparam("sid")
)
# One round trip for the two things a first delivery must know: is the call already stored
# (a retry), and did callbacks arrive before it (carriers promise no order between webhooks).
_CALL_STATE = select(
    select(Call.id)
    .where(Call.provider == bindparam("provider"), Call.provider_call_id == bindparam("sid"))
    .scalar_subquery(),
    exists().where(
        CarrierEvent.provider == bindparam("provider"),
        CarrierEvent.provider_call_id == bindparam("sid"),
        CarrierEvent.applied_at.is_(None),
    ),
)
_NUMBER_BUSINESS = aliased(BusinessNumber)
_PRIMARY_BUSINESS = (
    select(BusinessNumber.e164)
    .where(BusinessNumber.site_id == TrackingNumber.site_id)
    .order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id)
    .limit(1)
    .correlate(TrackingNumber)
    .scalar_subquery()
)
_FIND_NUMBER = (
    # The business line: the number's own, else the site's primary one.
    select(TrackingNumber, Site, func.coalesce(_NUMBER_BUSINESS.e164, _PRIMARY_BUSINESS))
    .join(Site, Site.id == TrackingNumber.site_id)
    .outerjoin(_NUMBER_BUSINESS, _NUMBER_BUSINESS.id == TrackingNumber.business_number_id)
    .where(TrackingNumber.e164 == bindparam("e164"))
    .order_by(
        case((TrackingNumber.provider == bindparam("provider"), 0), else_=1),
        case((TrackingNumber.state == "active", 0), else_=1),
        TrackingNumber.id.desc(),
    )
    .limit(1)
)
_KNOWN_CALLER = select(
    exists().where(Call.site_id == bindparam("site_id"), Call.caller_e164 == bindparam("caller"))
)
_PENDING_EVENTS = (
    select(CarrierEvent)
    .where(
        CarrierEvent.provider == bindparam("provider"),
        CarrierEvent.provider_call_id == bindparam("sid"),
        CarrierEvent.applied_at.is_(None),
    )
    .order_by(CarrierEvent.id)
)


async def _find_number(
    db: AsyncSession, to_e164_: str, provider: str
) -> tuple[TrackingNumber | None, Site | None, str | None]:
    """Find the called number of this provider, its site and the business line to ring.

    The site (and its business line) is found even for a number of another provider, so its
    callers still reach the merchant.
    """
    row = (await db.execute(_FIND_NUMBER, {"e164": to_e164_, "provider": provider})).first()
    if row is None:
        return None, None, None
    number, site, forward_to = row
    return (number if number.provider == provider else None), site, forward_to


def _forward_plan(site: Site, forward_to: str, call_sid: str, public_url: str) -> twiml.ForwardPlan:
    record = bool(site.record_calls)
    return twiml.ForwardPlan(
        forward_to=forward_to,
        language=site.language,
        dial_action_url=public_url_for(public_url, DIAL_PATH),
        status_url=public_url_for(public_url, STATUS_PATH),
        recording_notice=record and bool(site.recording_notice),
        record=record,
        recording_status_url=public_url_for(public_url, RECORDING_PATH) if record else None,
        whisper_url=public_url_for(public_url, WHISPER_PATH, call=call_sid)
        if site.whisper
        else None,
    )


async def answer_incoming_call(
    db: AsyncSession,
    request: VoiceRequest,
    provider: str,
    *,
    public_url: str,
    now: dt.datetime,
    secret_key: str | None = None,
) -> IncomingOutcome:
    """Attribute an incoming call, store it and return the TwiML that forwards it.

    Twilio waits at most 15 seconds for this answer, and the caller hears silence meanwhile
    (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides): one
    transaction, a handful of indexed queries, no call to anything outside the database.
    """
    stored_id, pending = (
        await db.execute(_CALL_STATE, {"provider": provider, "sid": request.call_sid})
    ).one()
    if stored_id is not None:
        # A retried webhook (same CallSid): the same answer, no second call.
        existing = await db.get(Call, stored_id)
        if existing is not None:
            answer = existing.twiml or twiml.empty()
            return IncomingOutcome(twiml=answer, call=existing, created=False)

    try:
        called = to_e164(request.to)
    except InvalidPhoneNumber:
        called = request.to[:20]
    number, site, forward_to = await _find_number(db, called, provider)
    if site is None:
        log.warning("call %s to %s: not a number of any site", request.call_sid, called)
        db.add(
            CarrierEvent(
                provider=provider,
                provider_call_id=request.call_sid,
                kind=UNKNOWN_NUMBER,
                params={"To": request.to, "From": request.from_ or "", "CallSid": request.call_sid},
                received_at=now,
                applied_at=now,
            )
        )
        return IncomingOutcome(
            twiml=twiml.apologise(_language_for_number(called)), call=None, created=False
        )

    caller_e164 = normalise_caller(request.from_, site.country)
    if secret_key and await is_excluded_caller(db, site, caller_e164, secret_key):
        # The caller objected (privacy exclusion list): connect them, record and show nothing.
        answer = twiml.forward_plainly(forward_to) if forward_to else twiml.apologise(site.language)
        return IncomingOutcome(twiml=answer, call=None, created=False)
    attribution: Attribution
    if number is None:
        log.warning(
            "call %s to %s: number not registered with %s", request.call_sid, called, provider
        )
        attribution = unattributed("unknown number")
    else:
        attribution = await attribute_call(db, site, number, now)
    caller = caller_e164
    caller_country, caller_region = (
        caller_location(caller, site.language) if caller else (None, None)
    )
    first_time = False
    if caller is not None:
        first_time = not await db.scalar(_KNOWN_CALLER, {"site_id": site.id, "caller": caller})
    if forward_to is None:
        answer = twiml.apologise(site.language)
    elif number is None:
        answer = twiml.forward_plainly(forward_to)
    else:
        answer = twiml.forward_call(_forward_plan(site, forward_to, request.call_sid, public_url))
    call = Call(
        site_id=site.id,
        provider=provider,
        provider_call_id=request.call_sid,
        direction="inbound",
        caller_e164=caller,
        caller_country=caller_country,
        caller_region=caller_region,
        first_time_caller=first_time,
        tracking_number_id=number.id if number is not None else None,
        tracking_e164=called,
        forwarded_to_e164=forward_to,
        started_at=now,
        status=request.call_status if request.call_status in STATUS_RANK else "ringing",
        last_sequence=-1,
        session_id=attribution.session.id if attribution.session is not None else None,
        lease_id=attribution.lease.id if attribution.lease is not None else None,
        channel=attribution.channel,
        source=attribution.source,
        medium=attribution.medium,
        campaign=attribution.campaign,
        term=attribution.term,
        method=attribution.method,
        confidence=attribution.confidence,
        unattributed_reason=attribution.unattributed_reason,
        twiml=answer,
    )
    db.add(call)
    await db.flush()
    if pending:
        await apply_pending(db, call, now)
    return IncomingOutcome(twiml=answer, call=call, created=True)


def answer_without_database(business: str | None, request: VoiceRequest, public_url: str) -> str:
    """Answer a call from the voice fallback: ring the business line the URL names.

    Nothing is looked up: the fallback is asked when the voice webhook failed, usually because
    the database cannot be reached. The caller reaches the merchant; the call is stored (and
    attributed) when the spooled webhook is replayed. No business line: a polite apology.
    """
    language = _language_for_number(request.to)
    try:
        forward_to = to_e164(business) if business else None
    except InvalidPhoneNumber:
        forward_to = None
    if forward_to is None:
        return twiml.apologise(language)
    plan = twiml.ForwardPlan(
        forward_to=forward_to,
        language=language,
        dial_action_url=public_url_for(public_url, DIAL_PATH),
        status_url=public_url_for(public_url, STATUS_PATH),
    )
    return twiml.forward_call(plan)


async def receive_incoming_call(
    database: Database,
    request: VoiceRequest,
    provider: str,
    *,
    public_url: str,
    clock: Clock,
    secret_key: str | None = None,
) -> IncomingOutcome:
    """Answer an incoming call in one transaction, surviving a concurrent duplicate delivery."""
    try:
        async with database.begin() as db:
            outcome = await answer_incoming_call(
                db, request, provider, public_url=public_url, now=clock.now(), secret_key=secret_key
            )
        if outcome.created and outcome.call is not None:
            settled = await settle_safely(database, provider, request.call_sid, clock.now())
            if settled is not None:
                outcome = IncomingOutcome(outcome.twiml, settled, created=True)
        return outcome
    except IntegrityError:
        # Two first deliveries of the same CallSid raced; the other one stored the call.
        log.info(
            "call %s: concurrent duplicate delivery, answering the stored TwiML", request.call_sid
        )
        async with database.begin() as db:
            existing = await db.scalar(
                _EXISTING_CALL, {"provider": provider, "sid": request.call_sid}
            )
        if existing is None:
            raise
        return IncomingOutcome(twiml=existing.twiml or twiml.empty(), call=existing, created=False)


# ---------------------------------------------------------------------------------------------
# Lifecycle


# A call lasts hours at most (Twilio ends calls after 4 hours unless told otherwise, at most 24).
MAX_CALL = dt.timedelta(days=1)


def _plausible(timestamp: dt.datetime | None, call: Call, now: dt.datetime) -> dt.datetime:
    """The carrier's time of an event, or ours when it cannot be this call's (a day after it
    began, well before it, in the future: a signed "Timestamp: Mon, 01 Jan 0001" ended calls in
    2000), never before the call began (Twilio stamps whole seconds)."""
    started = call.started_at
    if started is not None and started.tzinfo is None:  # SQLite gives naive UTC datetimes
        started = started.replace(tzinfo=dt.UTC)
    if timestamp is None or timestamp > now + dt.timedelta(minutes=5):
        timestamp = now
    if started is None:
        return timestamp
    if not started - dt.timedelta(minutes=1) <= timestamp <= started + MAX_CALL:
        timestamp = now
    return min(max(timestamp, started), started + MAX_CALL)


def apply_status(call: Call, callback: StatusCallback, now: dt.datetime) -> None:
    """Apply a status callback; late or repeated ones never move the call backwards."""
    at = _plausible(callback.timestamp, call, now)
    # A callback is answered when the visitor answers (the dialled leg), not the advisor.
    answering_leg = call.direction != "outbound" or callback.parent_call_sid is not None
    if callback.call_status == "in-progress" and call.answered_at is None and answering_leg:
        call.answered_at = at
    if callback.call_status in FINAL_STATUSES:
        if call.ended_at is None:
            call.ended_at = at
        if call.duration_s is None and callback.call_duration is not None:
            call.duration_s = min(callback.call_duration, int(MAX_CALL.total_seconds()))
    sequence = callback.sequence_number if callback.sequence_number is not None else 0
    current = (STATUS_RANK.get(call.status, 0), call.last_sequence)
    if (STATUS_RANK[callback.call_status], sequence) > current:
        call.status = callback.call_status
        call.last_sequence = sequence


def apply_dial(call: Call, callback: DialCallback, now: dt.datetime) -> None:
    """Apply the `<Dial>` result: answered, missed, busy or failed, and the talk time."""
    call.outcome = DIAL_OUTCOMES[callback.dial_call_status]
    if call.outcome == "answered":
        if callback.dial_call_duration is not None:
            call.duration_s = min(callback.dial_call_duration, int(MAX_CALL.total_seconds()))
    else:
        call.duration_s = 0
    if STATUS_RANK.get(call.status, 0) < 3:
        # We answer the action with <Hangup/>: the call ends now even if no status
        # callback is configured on the number (numbers imported with --no-configure).
        call.status = "completed"
    if call.ended_at is None:
        call.ended_at = now


def apply_recording(call: Call, callback: RecordingCallback, now: dt.datetime) -> None:
    """Store where the carrier keeps the recording (fetching the audio comes later)."""
    if callback.recording_status not in (None, "completed"):
        log.info(
            "recording %s of call %s: %s",
            callback.recording_sid,
            call.id,
            callback.recording_status,
        )
        return
    call.recording_sid = callback.recording_sid
    call.recording_url = callback.recording_url
    call.recording_duration_s = callback.recording_duration


def _apply(call: Call, kind: str, params: Params, now: dt.datetime) -> None:
    callback = parse_callback(kind, params)
    if isinstance(callback, StatusCallback):
        apply_status(call, callback, now)
    elif isinstance(callback, DialCallback):
        apply_dial(call, callback, now)
    else:
        apply_recording(call, callback, now)


async def apply_pending(db: AsyncSession, call: Call, now: dt.datetime) -> int:
    """Apply, in arrival order, the callbacks of this call that are not applied yet."""
    events = await db.scalars(
        _PENDING_EVENTS, {"provider": call.provider, "sid": call.provider_call_id}
    )
    applied = 0
    for event in events:
        if event.kind in CALLBACK_MODELS:
            try:
                _apply(call, event.kind, event.params, now)
            except ApiError:
                log.warning("carrier event %s could not be applied", event.id)
        event.applied_at = now
        applied += 1
    return applied


async def settle_pending(
    database: Database, provider: str, call_sid: str, now: dt.datetime
) -> Call | None:
    """Apply callbacks left pending by a race; return the call if any was applied.

    A callback that arrives while the voice webhook's transaction is open finds no call and is
    kept pending, and the voice transaction, which looked for pending callbacks before that
    one was committed, does not see it: it stayed pending for good (found by an audit, with a
    caller hanging up during the answer). Both sides look again once they have committed: the
    one that commits second sees the other's row.
    """
    query = {"provider": provider, "sid": call_sid}
    async with database.begin() as db:
        if not (await db.execute(_CALL_STATE, query)).one()[1]:
            return None
        call = await db.scalar(_EXISTING_CALL.with_for_update(), query)
        if call is None or not await apply_pending(db, call, now):
            return None
        return call


async def settle_safely(
    database: Database, provider: str, call_sid: str, now: dt.datetime
) -> Call | None:
    """`settle_pending` after an answer is already decided: the call is stored, so a failure
    here is logged, never the carrier's error (the callbacks stay pending for the next one)."""
    try:
        return await settle_pending(database, provider, call_sid, now)
    except Exception as exc:
        log.warning("pending callbacks of %s not applied yet: %r", call_sid, exc)
        return None


async def record_callback(
    db: AsyncSession,
    provider: str,
    kind: str,
    params: Params,
    now: dt.datetime,
    secret_key: str | None = None,
) -> Call | None:
    """Store a lifecycle callback, then apply it (and any earlier one) if its call exists."""
    callback = parse_callback(kind, params)
    event = CarrierEvent(
        provider=provider,
        provider_call_id=callback.key,
        kind=kind,
        params=dict(params),
        received_at=now,
    )
    db.add(event)
    # The insert comes first: on SQLite it takes the write lock, and on PostgreSQL the call
    # row is locked below, so two callbacks of one call are applied one after the other.
    await db.flush()
    call = await db.scalar(
        select(Call)
        .where(Call.provider == provider, Call.provider_call_id == callback.key)
        .with_for_update()
    )
    if call is None:
        if secret_key and await is_excluded_callback(db, params, secret_key):
            # The number's status callback of an excluded caller's call: keep no trace either.
            await db.delete(event)
            return None
        log.info("%s callback for %s before its call: kept pending", kind, callback.key)
        return None
    await apply_pending(db, call, now)
    return call


async def call_for_whisper(
    db: AsyncSession, provider: str, call_sid: str
) -> tuple[Call, Site] | None:
    """Find the call and site a whisper is about."""
    row = (
        await db.execute(
            select(Call, Site)
            .join(Site, Site.id == Call.site_id)
            .where(Call.provider == provider, Call.provider_call_id == call_sid)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def whisper_twiml(call: Call, site: Site) -> str:
    """Say the call's channel to whoever answers ("Appel Google Ads")."""
    if call.direction == "outbound":
        # The callback's visitor leg: the recording notice, when calls are recorded.
        if site.record_calls and site.recording_notice:
            return twiml.recording_notice(site.language)
        return twiml.empty()
    # A source number's source is the merchant's rule; a visit's, what a link said.
    phrase = twiml.whisper_phrase(
        call.channel, call.source, site.language, say_source=call.method == "source-number"
    )
    return twiml.whisper(phrase, site.language)


class CallListeners:
    """Run the call listeners after the carrier has its answer, in order for any one call.

    The listeners (console screen-pop, outgoing webhooks, report dirty-marking) each wait on
    their own database or Redis round trips. Twilio waits for the webhook's answer while the
    caller hears silence, so the answer does not wait for them: each notification becomes a
    task that first waits for the previous notification of the same call, so a listener
    still sees one call's events in the order the carrier sent them ("ringing" before
    "completed"). Different calls run concurrently. `drain` waits for everything scheduled
    (tests, and the application's shutdown, so no event is dropped on a clean stop).
    """

    def __init__(self) -> None:
        # The last scheduled task of each call; a call's next task waits for it.
        self._tails: dict[int, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def notify(self, app: web.Application, call: Call) -> None:
        previous = self._tails.get(call.id)
        task = asyncio.get_running_loop().create_task(self._run(app, call, previous))
        self._tails[call.id] = task
        self._running.add(task)
        task.add_done_callback(functools.partial(self._finished, call.id))

    def _finished(self, key: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _run(
        self, app: web.Application, call: Call, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            # Whatever became of the previous notification, this one runs after it.
            await asyncio.wait([previous])
        listeners = list(app[appkeys.EXTRAS].setdefault("call_listeners", []))
        results = await asyncio.gather(
            *(listener(app, call) for listener in listeners), return_exceptions=True
        )
        for listener, result in zip(listeners, results, strict=True):
            if isinstance(result, BaseException):
                # The call is stored; a listener's failure never touches the call or the
                # other listeners.
                log.error("call listener %r failed", listener, exc_info=result)

    async def drain(self) -> None:
        """Wait until every notification scheduled so far (and any they schedule) has run."""
        while self._running:
            await asyncio.wait(list(self._running))


def call_listeners(app: web.Application) -> CallListeners:
    """The application's call listener queue (created on first use)."""
    extras = app[appkeys.EXTRAS]
    queue = extras.get("call_listener_queue")
    if queue is None:
        queue = extras["call_listener_queue"] = CallListeners()
    assert isinstance(queue, CallListeners)
    return queue


def notify_call_listeners(app: web.Application, call: Call) -> None:
    """Tell the live console (and other listeners) that a call was created or updated.

    Returns at once: the listeners run in the background, in order for any one call
    (see `CallListeners`).
    """
    call_listeners(app).notify(app, call)


async def drain_call_listeners(app: web.Application) -> None:
    """Wait for every scheduled call listener (used on shutdown and by tests)."""
    await call_listeners(app).drain()


def params_dict(params: Mapping[str, Any]) -> dict[str, str]:
    """Flatten a form body to str → str (the last value of a repeated name)."""
    return {str(k): str(v) for k, v in params.items()}
