"""Carrier webhooks and the callback API: thin handlers around `telephony.calls`.

Every webhook checks the carrier's signature first (403 otherwise), then validates its
parameters (400), then calls one service. Answers to Twilio are TwiML (`text/xml`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import MultiDict

from telephony import twiml
from telephony.callback import CallbackRequest, bridge_twiml, place_callback, user_from_basic_auth
from telephony.calls import (
    CALL_SID,
    DIAL,
    RECORDING,
    STATUS,
    VoiceRequest,
    call_for_whisper,
    drain_call_listeners,
    notify_call_listeners,
    params_dict,
    receive_incoming_call,
    record_callback,
    whisper_twiml,
)
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.carriers.base import CarrierError
from telephony.signature import (
    BRIDGE_PATH,
    DIAL_PATH,
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
from tracker.errors import ApiError
from tracker.web import parse_id, read_form, read_json

log = logging.getLogger("calltrack.telephony")
# Webhook bodies are a few dozen short parameters; anything larger is not from a carrier.
MAX_WEBHOOK_BYTES = 32 * 1024


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


async def _lifecycle(request: web.Request, kind: str) -> None:
    provider, params = await verified_params(request)
    app = request.app
    async with app[appkeys.DATABASE].begin() as db:
        call = await record_callback(
            db,
            provider,
            kind,
            params_dict(params),
            app[appkeys.CLOCK].now(),
            secret_key=app[appkeys.SETTINGS].secret_key,
        )
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
    async with request.app[appkeys.DATABASE].sessions() as db:
        found = await call_for_whisper(db, provider, call_sid)
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


def setup(app: web.Application) -> None:
    """Add the carrier webhooks, the callback API and the carrier's lifetime."""
    app.cleanup_ctx.append(_carrier_ctx)
    # Before the database, Redis and the hub close: the listeners of answered calls finish.
    app.on_shutdown.append(drain_call_listeners)
    app.router.add_post(VOICE_PATH, voice)
    app.router.add_post(STATUS_PATH, status)
    app.router.add_post(DIAL_PATH, dial)
    app.router.add_post(RECORDING_PATH, recording)
    app.router.add_post(WHISPER_PATH, whisper)
    app.router.add_post(BRIDGE_PATH, bridge)
    app.router.add_post("/api/calls/callback", request_callback)
