"""Carrier webhooks and the callback API: thin handlers around `telephony.calls`.

Every webhook checks the carrier's signature first (403 otherwise), then validates its
parameters (400), then calls one service. Answers to Twilio are TwiML (`text/xml`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from multidict import MultiDict

from telephony import spool, twiml
from telephony.callback import CallbackRequest, bridge_twiml, place_callback, user_from_basic_auth
from telephony.calls import (
    CALL_SID,
    DIAL,
    RECORDING,
    STATUS,
    VOICE,
    VoiceRequest,
    answer_without_database,
    call_for_whisper,
    drain_call_listeners,
    notify_call_listeners,
    params_dict,
    parse_callback,
    receive_incoming_call,
    record_callback,
    settle_safely,
    whisper_twiml,
)
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.carriers.base import CarrierError
from telephony.signature import (
    BRIDGE_PATH,
    DIAL_PATH,
    FALLBACK_PATH,
    RECORDING_PATH,
    SIGNATURE_HEADER,
    STATUS_PATH,
    VOICE_PATH,
    WHISPER_PATH,
    identify_signer,
    public_request_url,
    signing_tokens,
)
from tracker import appkeys
from tracker.audit import audit
from tracker.clock import FrozenClock
from tracker.errors import ApiError
from tracker.web import client_address, parse_id, read_form, read_json, unreachable

log = logging.getLogger("calltrack.telephony")
# Webhook bodies are a few dozen short parameters; anything larger is not from a carrier.
MAX_WEBHOOK_BYTES = 32 * 1024
# Twilio waits 15 s for a webhook's answer, then plays an error to the caller (or drops the
# callback). A database that hangs (a network partition, a lock held too long) must not use that
# up: after this many seconds the voice webhook answers 503, so Twilio asks the fallback, which
# rings the business line, and a callback is spooled. (Cancelling a query on a dead connection
# may add up to 2 s.) The webhook's p99 is about 15 ms (`calltrack bench webhook`).
DATABASE_DEADLINE = 3.0


def _twiml(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/xml", charset="utf-8")


async def verified_params(request: web.Request) -> tuple[str, MultiDict[str]]:
    """Return (provider, form parameters) of a carrier request; raise 403 for a bad signature."""
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise ApiError("payload_too_large", "a carrier webhook body is at most 32 KiB", status=413)
    form = await read_form(request)
    # A multipart body with files is never a carrier webhook; only text fields are signed.
    params = MultiDict((name, value) for name, value in form.items() if isinstance(value, str))
    settings = request.app[appkeys.SETTINGS]
    url = public_request_url(settings.public_url, request.raw_path)
    provider = identify_signer(
        signing_tokens(settings), url, params, request.headers.get(SIGNATURE_HEADER)
    )
    if provider is None:
        log.warning("rejected %s: missing or invalid %s", request.path, SIGNATURE_HEADER)
        raise ApiError(
            "invalid_signature",
            f"the {SIGNATURE_HEADER} header is missing or does not match this request",
            status=403,
        )
    return provider, params


async def voice(request: web.Request) -> web.Response:
    """Answer an incoming call with TwiML (forward, whisper, record)."""
    provider, params = await verified_params(request)
    call_request = VoiceRequest.parse(params)
    app = request.app
    async with asyncio.timeout(DATABASE_DEADLINE):
        outcome = await receive_incoming_call(
            app[appkeys.DATABASE],
            call_request,
            provider,
            public_url=app[appkeys.SETTINGS].public_url,
            clock=app[appkeys.CLOCK],
            secret_key=app[appkeys.SETTINGS].secret_key,
        )
    if outcome.created and outcome.call is not None:
        notify_call_listeners(app, outcome.call)
    return _twiml(outcome.twiml)


async def fallback(request: web.Request) -> web.Response:
    """Twilio's voice fallback: ring the business line the URL names, without the database.

    Twilio asks here when the voice webhook failed or timed out (the number's VoiceFallbackUrl,
    set when it was bought). The call is spooled and stored once the database answers again.
    """
    provider, params = await verified_params(request)
    call_request = VoiceRequest.parse(params)
    app = request.app
    settings = app[appkeys.SETTINGS]
    answer = answer_without_database(request.query.get("to"), call_request, settings.public_url)
    entry = spool.SpooledWebhook(VOICE, provider, params_dict(params), app[appkeys.CLOCK].now())
    try:
        await spool.spool(settings.spool_dir, entry)
    except OSError:
        # The caller must reach the merchant even if the call cannot be kept.
        log.exception("call %s could not be spooled; it rings unrecorded", call_request.call_sid)
    return _twiml(answer)


async def _lifecycle(request: web.Request, kind: str) -> None:
    provider, params = await verified_params(request)
    app = request.app
    settings = app[appkeys.SETTINGS]
    received = params_dict(params)
    now = app[appkeys.CLOCK].now()
    try:
        async with asyncio.timeout(DATABASE_DEADLINE), app[appkeys.DATABASE].begin() as db:
            call = await record_callback(
                db, provider, kind, received, now, secret_key=settings.secret_key
            )
    except Exception as exc:
        if not unreachable(exc):
            raise
        # The carrier sends this callback once: keep it until the database answers again.
        parse_callback(kind, received)  # a malformed callback is still refused (400)
        entry = spool.SpooledWebhook(kind, provider, received, now)
        try:
            await spool.spool(settings.spool_dir, entry)
        except OSError:
            log.exception("%s callback could not be spooled", kind)
            raise exc from None  # still the outage: 503
        return
    if call is None:
        # Kept pending (no call yet): the voice webhook may have been committing meanwhile.
        key = parse_callback(kind, received).key
        async with asyncio.timeout(DATABASE_DEADLINE):
            call = await settle_safely(app[appkeys.DATABASE], provider, key, now)
    if call is not None:
        notify_call_listeners(app, call)


async def replay_spooled(app: web.Application, entry: spool.SpooledWebhook) -> None:
    """Store a webhook kept during an outage as if it had just arrived at its time."""
    async with asyncio.timeout(DATABASE_DEADLINE * 2):  # a hung database: retried next round
        await _replay_spooled(app, entry)


async def _replay_spooled(app: web.Application, entry: spool.SpooledWebhook) -> None:
    database, settings = app[appkeys.DATABASE], app[appkeys.SETTINGS]
    if entry.kind == VOICE:
        outcome = await receive_incoming_call(
            database,
            VoiceRequest.parse(entry.params),
            entry.provider,
            public_url=settings.public_url,
            clock=FrozenClock(entry.received_at),
            secret_key=settings.secret_key,
        )
        call = outcome.call if outcome.created else None
    else:
        async with database.begin() as db:
            call = await record_callback(
                db,
                entry.provider,
                entry.kind,
                entry.params,
                entry.received_at,
                secret_key=settings.secret_key,
            )
        if call is None:  # as for a callback received live (see `_lifecycle`)
            key = parse_callback(entry.kind, entry.params).key
            call = await settle_safely(database, entry.provider, key, entry.received_at)
    if call is not None:
        notify_call_listeners(app, call)


async def status(request: web.Request) -> web.Response:
    """Record a call status callback (initiated, ringing, in-progress, completed...)."""
    await _lifecycle(request, STATUS)
    return web.Response(status=204)


async def dial(request: web.Request) -> web.Response:
    """Record how the forwarded leg ended, then end the call."""
    await _lifecycle(request, DIAL)
    return _twiml(twiml.hang_up())


async def recording(request: web.Request) -> web.Response:
    """Record where the carrier keeps a call recording."""
    await _lifecycle(request, RECORDING)
    return web.Response(status=204)


async def whisper(request: web.Request) -> web.Response:
    """Speak the call's channel to whoever answers (or the recording notice to a visitor)."""
    provider, _ = await verified_params(request)
    call_sid = request.query.get("call", "")
    if not CALL_SID.match(call_sid):
        raise ApiError("invalid_parameters", "call must be a call sid", status=400)
    try:
        async with (
            asyncio.timeout(DATABASE_DEADLINE),
            request.app[appkeys.DATABASE].sessions() as db,
        ):
            found = await call_for_whisper(db, provider, call_sid)
    except Exception as exc:
        if not unreachable(exc):
            raise
        found = None
    if found is None:
        # Connect the parties anyway: a missing whisper must not drop a customer's call.
        return _twiml(twiml.empty())
    return _twiml(whisper_twiml(*found))


async def bridge(request: web.Request) -> web.Response:
    """Answer the advisor's leg of a callback: dial the visitor."""
    provider, params = await verified_params(request)
    call_id = parse_id(request.query.get("call"))
    if call_id is None:
        raise ApiError("invalid_parameters", "call must be a call id", status=400)
    call_sid = params.get("CallSid", "")
    if not CALL_SID.match(call_sid):
        raise ApiError("invalid_parameters", "CallSid must be a call sid", status=400)
    app = request.app
    async with app[appkeys.DATABASE].begin() as db:
        answer = await bridge_twiml(
            db,
            provider,
            call_id,
            call_sid,
            public_url=app[appkeys.SETTINGS].public_url,
            now=app[appkeys.CLOCK].now(),
        )
    return _twiml(answer)


async def request_callback(request: web.Request) -> web.Response:
    """Place a bridged call: the advisor's phone first, then the visitor's (202)."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    async with app[appkeys.DATABASE].sessions() as db:
        user = await user_from_basic_auth(db, request.headers.get("Authorization"))
    body = CallbackRequest.parse(await read_json(request, settings.max_body_bytes))
    carrier = app[appkeys.CARRIER]
    if carrier is None:
        raise ApiError("carrier_unavailable", "no carrier is configured for calls", status=503)
    call = await place_callback(
        app[appkeys.DATABASE],
        carrier,
        user,
        body,
        public_url=settings.public_url,
        clock=app[appkeys.CLOCK],
    )
    # A visitor's number dialled at a user's request: who did it, and from where, is kept.
    async with app[appkeys.DATABASE].begin() as db:
        await audit(db, action="api.callback_placed", at=app[appkeys.CLOCK].now(), user=user,
                    target=f"call:{call.id}", session_id=call.session_id,
                    ip_truncated=client_address(request))  # fmt: skip
    notify_call_listeners(app, call)
    return web.json_response(
        {
            "call_id": call.id,
            "provider": call.provider,
            "provider_call_id": call.provider_call_id,
            "status": call.status,
            "session_id": call.session_id,
        },
        status=202,
    )


async def _carrier_ctx(app: web.Application) -> AsyncIterator[None]:
    try:
        app[appkeys.CARRIER] = create_carrier(app[appkeys.SETTINGS])
    except CarrierError as exc:
        # Webhooks still work (they need no carrier API); only placing calls is refused.
        log.error("no carrier for outbound calls: %s", exc)
        app[appkeys.CARRIER] = None
    yield
    carrier = app[appkeys.CARRIER]
    if carrier is not None:
        await close_carrier(carrier)


async def _spool_ctx(app: web.Application) -> AsyncIterator[None]:
    if "spool" in app[appkeys.EXTRAS].get("workers_disabled", ()):
        yield
        return
    directory = Path(app[appkeys.SETTINGS].spool_dir)
    apply = functools.partial(replay_spooled, app)
    task = asyncio.create_task(
        spool.replay_forever(directory, apply, unreachable), name="spool-replay"
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    """Add the carrier webhooks, the callback API and the carrier's lifetime."""
    app.cleanup_ctx.append(_carrier_ctx)
    app.cleanup_ctx.append(_spool_ctx)
    # Before the database, Redis and the hub close: the listeners of answered calls finish.
    app.on_shutdown.append(drain_call_listeners)
    app.router.add_post(VOICE_PATH, voice)
    app.router.add_post(FALLBACK_PATH, fallback)
    app.router.add_post(STATUS_PATH, status)
    app.router.add_post(DIAL_PATH, dial)
    app.router.add_post(RECORDING_PATH, recording)
    app.router.add_post(WHISPER_PATH, whisper)
    app.router.add_post(BRIDGE_PATH, bridge)
    app.router.add_post("/api/calls/callback", request_callback)
