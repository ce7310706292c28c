"""The simulated carrier's call side: it plays calls against our webhooks exactly as Twilio does.

Requests carry Twilio's parameter names and an `X-Twilio-Signature` computed with twilio's own
`RequestValidator` and the simulated carrier's auth token (derived from `CALLTRACK_SECRET_KEY`),
so they go through the very code that serves Twilio: signature check, attribution, TwiML,
status, dial and recording callbacks. The simulation follows the TwiML we answer: it dials
the `<Number>`, fetches its whisper URL, reports the leg's events to its `statusCallback`,
calls the `<Dial>` action and, when recording, the recording callback.

Sequence of a forwarded call (Twilio's, https://www.twilio.com/docs/voice/twiml/dial):
voice webhook → <Number> leg initiated, ringing, answered → whisper → leg completed →
<Dial> action → recording status → the caller's leg completed (the number's status callback).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
import phonenumbers

from telephony.carriers.base import PlacedCall
from telephony.signature import SIGNATURE_HEADER, SIMULATED, sign, simulated_auth_token

log = logging.getLogger("calltrack.simulate")
# A syntactically valid account sid that no Twilio account has (AC + 32 hex digits).
SIMULATED_ACCOUNT_SID = "AC" + "5" * 32
RECORDINGS_BASE = "https://simulated.calltrack.invalid/2010-04-01/Accounts"

Answer = Literal["completed", "no-answer", "busy", "failed"]
# Posts a form body to an absolute public URL and returns (HTTP status, body text).
Poster = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, str]]]


def new_call_sid() -> str:
    """Make a call sid shaped like Twilio's (CA + 32 hex digits)."""
    return "CA" + secrets.token_hex(16)


def new_recording_sid() -> str:
    return "RE" + secrets.token_hex(16)


def _country(e164: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""
    except phonenumbers.NumberParseException:
        return ""


def _rfc2822(at: dt.datetime) -> str:
    return email.utils.format_datetime(at.astimezone(dt.UTC), usegmt=False)


class SimulatedCarrierClient:
    """Sign requests with the simulated carrier's token and post them like Twilio."""

    def __init__(self, secret_key: str, poster: Poster) -> None:
        self.token = simulated_auth_token(secret_key)
        self.poster = poster
        self.sent: list[tuple[str, dict[str, str], int]] = []

    async def post(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        """POST `params` to the absolute URL, signed over that exact URL."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            SIGNATURE_HEADER: sign(self.token, url, params),
            "User-Agent": "TwilioProxy/1.1 (Calltrack simulated carrier)",
        }
        status, text = await self.poster(url, urlencode(params).encode(), headers)
        self.sent.append((url, params, status))
        if status >= 400:
            log.warning("simulated carrier: %s answered %s: %s", url, status, text[:200])
        return status, text


def http_poster(
    session: aiohttp.ClientSession, server_url: str | None = None, public_url: str | None = None
) -> Poster:
    """Post over HTTP, to the public URL itself or to `server_url` standing in for its base.

    A public URL with a path (`https://pub.example/ct`, a proxy that serves Calltrack under
    /ct and strips it) names paths the worker itself does not have: posting to the worker, the
    prefix goes (it was a 404)."""
    prefix = urlsplit(public_url).path.rstrip("/") if public_url else ""

    async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        target = url
        if server_url:
            parts = urlsplit(url)
            path = parts.path
            if prefix and path.startswith(prefix + "/"):
                path = path[len(prefix) :]
            target = server_url.rstrip("/") + path + (f"?{parts.query}" if parts.query else "")
        async with session.post(target, data=body, headers=headers) as response:
            return response.status, await response.text()

    return post


@dataclass(frozen=True)
class CallScript:
    """How the simulated far end behaves."""

    answer: Answer = "completed"
    talk_seconds: int = 42
    ring_seconds: int = 6


@dataclass
class SimulatedCall:
    call_sid: str
    voice_status: int
    twiml: str
    dialed: str | None = None
    dial_sid: str | None = None
    recording_sid: str | None = None
    whisper: str | None = None
    statuses: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Dial:
    number: str
    action: str | None
    record: bool
    recording_callback: str | None
    status_callback: str | None
    events: tuple[str, ...]
    whisper_url: str | None


def parse_dial(answer: str) -> _Dial | None:
    """Read the `<Dial><Number>` of a TwiML answer (None when it does not dial)."""
    try:
        root = ET.fromstring(answer)
    except ET.ParseError:
        return None
    dial = root.find("Dial")
    if dial is None:
        return None
    number = dial.find("Number")
    target = (number.text if number is not None else dial.text) or ""
    attributes = number.attrib if number is not None else {}
    return _Dial(
        number=target.strip(),
        action=dial.get("action"),
        record=dial.get("record", "do-not-record") != "do-not-record",
        recording_callback=dial.get("recordingStatusCallback"),
        status_callback=attributes.get("statusCallback"),
        events=tuple(attributes.get("statusCallbackEvent", "completed").split()),
        whisper_url=attributes.get("url"),
    )


async def _play_dial(
    client: SimulatedCarrierClient,
    parent_sid: str,
    parent_from: str,
    dial: _Dial,
    script: CallScript,
    started: dt.datetime,
    result: SimulatedCall,
) -> None:
    """Play the `<Dial>`ed leg: its status events, the whisper, the action and the recording."""
    child = new_call_sid()
    result.dialed, result.dial_sid = dial.number, child
    answered_at = started + dt.timedelta(seconds=script.ring_seconds)
    ended_at = answered_at + dt.timedelta(seconds=script.talk_seconds)
    answered = script.answer == "completed"
    leg = {
        "AccountSid": SIMULATED_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": child,
        "ParentCallSid": parent_sid,
        "From": parent_from,
        "To": dial.number,
        "Direction": "outbound-dial",
        "CallbackSource": "call-progress-events",
    }
    events: list[tuple[str, str, dt.datetime, dict[str, str]]] = [
        ("initiated", "initiated", started, {}),
        ("ringing", "ringing", started + dt.timedelta(seconds=1), {}),
    ]
    if answered:
        events.append(("answered", "in-progress", answered_at, {}))
    final_extra = {"CallDuration": str(script.talk_seconds if answered else 0)}
    events.append(("completed", script.answer, ended_at if answered else answered_at, final_extra))
    sequence = 0
    for event, status, at, extra in events:
        if dial.status_callback and event in dial.events:
            params = {
                **leg,
                "CallStatus": status,
                "SequenceNumber": str(sequence),
                "Timestamp": _rfc2822(at),
                **extra,
            }
            sequence += 1
            code, _ = await client.post(dial.status_callback, params)
            result.statuses.append(code)
        if event == "answered" and dial.whisper_url:
            _, result.whisper = await client.post(
                dial.whisper_url, {**leg, "CallStatus": "in-progress"}
            )
    if dial.action:
        await client.post(
            dial.action,
            {
                "AccountSid": SIMULATED_ACCOUNT_SID,
                "CallSid": parent_sid,
                "DialCallSid": child,
                "DialCallStatus": script.answer,
                "DialCallDuration": str(script.talk_seconds if answered else 0),
                "CallStatus": "in-progress",
            },
        )
    if answered and dial.record and dial.recording_callback:
        recording = new_recording_sid()
        result.recording_sid = recording
        await client.post(
            dial.recording_callback,
            {
                "AccountSid": SIMULATED_ACCOUNT_SID,
                "CallSid": parent_sid,
                "RecordingSid": recording,
                "RecordingUrl": f"{RECORDINGS_BASE}/{SIMULATED_ACCOUNT_SID}/Recordings/{recording}",
                "RecordingStatus": "completed",
                "RecordingDuration": str(script.talk_seconds),
                "RecordingChannels": "2",
                "RecordingSource": "DialVerb",
                "RecordingStartTime": _rfc2822(answered_at),
            },
        )


async def ring(
    client: SimulatedCarrierClient,
    *,
    voice_url: str,
    status_url: str | None,
    to: str,
    from_: str,
    script: CallScript = CallScript(),
    call_sid: str | None = None,
    now: dt.datetime | None = None,
    fallback_url: str | None = None,
) -> SimulatedCall:
    """Call a tracking number: the voice webhook (its fallback if it fails), then the TwiML."""
    sid = call_sid or new_call_sid()
    started = now or dt.datetime.now(dt.UTC)
    params = {
        "AccountSid": SIMULATED_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": from_,
        "Caller": from_,
        "FromCountry": _country(from_),
        "To": to,
        "Called": to,
        "ToCountry": _country(to),
    }
    status, answer = await client.post(voice_url, params)
    if status != 200 and fallback_url:
        # As Twilio does: the voice webhook failed, ask the number's fallback, saying why
        # (https://www.twilio.com/docs/usage/webhooks/voice-webhooks#fallback-url).
        status, answer = await client.post(
            fallback_url, {**params, "ErrorCode": "11200", "ErrorUrl": voice_url}
        )
    result = SimulatedCall(call_sid=sid, voice_status=status, twiml=answer)
    dial = parse_dial(answer) if status == 200 else None
    if dial is not None:
        await _play_dial(client, sid, from_, dial, script, started, result)
    if status_url and status == 200:
        total = script.ring_seconds + (script.talk_seconds if script.answer == "completed" else 0)
        code, _ = await client.post(
            status_url,
            {
                **params,
                "CallStatus": "completed",
                "CallDuration": str(total),
                "Timestamp": _rfc2822(started + dt.timedelta(seconds=total)),
            },
        )
        result.statuses.append(code)
    return result


async def play_bridged_call(
    client: SimulatedCarrierClient,
    *,
    call_sid: str,
    first_e164: str,
    caller_id: str,
    url: str,
    status_url: str,
    script: CallScript = CallScript(),
    now: dt.datetime | None = None,
) -> SimulatedCall:
    """Play a callback: ring the advisor, fetch the bridge TwiML, dial the visitor."""
    started = now or dt.datetime.now(dt.UTC)
    leg = {
        "AccountSid": SIMULATED_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "From": caller_id,
        "To": first_e164,
        "Direction": "outbound-api",
    }
    result = SimulatedCall(call_sid=call_sid, voice_status=0, twiml="")
    for sequence, status in enumerate(("initiated", "ringing", "in-progress")):
        code, _ = await client.post(
            status_url,
            {
                **leg,
                "CallStatus": status,
                "SequenceNumber": str(sequence),
                "Timestamp": _rfc2822(started + dt.timedelta(seconds=sequence * 2)),
            },
        )
        result.statuses.append(code)
    result.voice_status, result.twiml = await client.post(url, {**leg, "CallStatus": "in-progress"})
    dial = parse_dial(result.twiml) if result.voice_status == 200 else None
    if dial is not None:
        await _play_dial(client, call_sid, caller_id, dial, script, started, result)
    talk = script.talk_seconds if script.answer == "completed" else 0
    code, _ = await client.post(
        status_url,
        {
            **leg,
            "CallStatus": "completed",
            "SequenceNumber": "3",
            "CallDuration": str(script.ring_seconds + talk),
            "Timestamp": _rfc2822(started + dt.timedelta(seconds=script.ring_seconds + talk)),
        },
    )
    result.statuses.append(code)
    return result


class SimulatedCalls:
    """The simulated carrier's outbound calls: placed at once, then played in the background.

    The legs are posted to our own public URL over HTTP, as the carrier would; in the embedded
    demo that is the server itself. A failure is logged: the call then stays "queued".
    """

    name = SIMULATED

    def __init__(
        self, secret_key: str, *, script: CallScript = CallScript(), delay_s: float = 0.2
    ) -> None:
        self.secret_key = secret_key
        self.script = script
        self.delay_s = delay_s
        self.placed: list[dict[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def place_bridged_call(
        self, *, first_e164: str, then_e164: str, caller_id: str, url: str, status_url: str
    ) -> PlacedCall:
        """Accept the call and play its legs against our webhooks in the background."""
        sid = new_call_sid()
        self.placed.append(
            {"sid": sid, "first": first_e164, "then": then_e164, "caller_id": caller_id, "url": url}
        )
        task = asyncio.create_task(self._play(sid, first_e164, caller_id, url, status_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return PlacedCall(provider=SIMULATED, provider_call_id=sid, status="queued")

    async def _play(
        self, sid: str, first_e164: str, caller_id: str, url: str, status_url: str
    ) -> None:
        # Let the request that placed the call finish first, as a real carrier's latency would.
        await asyncio.sleep(self.delay_s)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        client = SimulatedCarrierClient(self.secret_key, http_poster(self._session))
        try:
            await play_bridged_call(
                client,
                call_sid=sid,
                first_e164=first_e164,
                caller_id=caller_id,
                url=url,
                status_url=status_url,
                script=self.script,
            )
        except (aiohttp.ClientError, TimeoutError):
            log.exception("simulated callback %s could not reach our webhooks", sid)

    async def wait(self) -> None:
        """Wait until every call placed so far has been played (tests, CLI)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop the calls still playing and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
