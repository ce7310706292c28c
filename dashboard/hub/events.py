"""Typed models of everything the hub sends (docs/hub-protocol.md), their builders and a checker.

Each event kind has its own envelope with `kind: Literal[...]` (Zulip's `event_types.py`
style); `check_message` validates a received message against these models, so tests assert
the wire format, not just a few fields.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypedDict, Union, get_args, get_origin

from tracker.collect import CartSnapshot
from tracker.models import Call, Cart, Pageview, TrackedSession
from tracker.phones import phone_forms

EventKind = Literal[
    "visitor.pageview",
    "visitor.cart",
    "visitor.consent",
    "contact.requested",
    "contact.claimed",
    "contact.closed",
    "call.ringing",
    "call.updated",
    "call.tagged",
    "contact.tagged",
    "visitor.erased",
    "hub.resync",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


# -- the pieces ----------------------------------------------------------------------------------


class SessionSummary(TypedDict):
    id: str
    started_at: str
    last_seen_at: str
    current_url: str | None
    current_title: str | None
    pageviews: int
    channel: str
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    country: str | None
    region: str | None
    city: str | None
    browser: str | None
    os: str | None
    device: str | None
    # None in `visitor.pageview` (the collect path reads no cart); see the protocol doc.
    cart_total: float | None
    cart_currency: str | None
    consent: bool


class PageInfo(TypedDict):
    url: str
    title: str | None
    at: str


class CartInfo(TypedDict):
    items: list[dict[str, Any]]
    total: float | None
    currency: str | None
    item_count: int
    updated_at: str | None


class CallInfo(TypedDict):
    id: int
    direction: str
    status: str
    outcome: str | None
    caller: str | None
    caller_display: str | None
    caller_country: str | None
    caller_region: str | None
    first_time_caller: bool
    tracking_number: str
    started_at: str
    answered_at: str | None
    ended_at: str | None
    duration_s: int | None
    session_id: str | None
    channel: str | None
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    method: str
    confidence: float
    outcome_tag: str | None
    recorded: bool


# -- event data, one per kind --------------------------------------------------------------------


class VisitorPageviewData(TypedDict):
    session: SessionSummary
    page: PageInfo


class VisitorCartData(TypedDict):
    session_id: str
    cart: CartInfo


class VisitorConsentData(TypedDict):
    session_id: str
    consent: bool


class ContactData(TypedDict):
    # REQUEST is shaped by `tracker.contacts.request_summary` (the contact-request service).
    request: dict[str, Any]


class CallRingingData(TypedDict):
    call: CallInfo
    session: SessionSummary | None
    cart: CartInfo | None
    pages: list[PageInfo]


class CallUpdatedData(TypedDict):
    call: CallInfo


class TaggedData(TypedDict):
    target_id: int
    tag: str


class VisitorErasedData(TypedDict):
    """Empty: a person of the site was erased (GDPR art. 17) and the event must not say who.

    Consoles fetch a fresh `snapshot` (and reload an open visitor panel), which no longer holds
    the person; resuming consoles are replayed this event, not the erased ones.
    """


class HubResyncData(TypedDict):
    """Empty: events of the site were lost (the hub's Redis could not store them).

    What they reported is in the database: consoles fetch a fresh `snapshot` (and reload an
    open visitor panel), and alert for requests and calls they had not heard of.
    """


DATA_MODELS: dict[str, type] = {
    "visitor.pageview": VisitorPageviewData,
    "visitor.cart": VisitorCartData,
    "visitor.consent": VisitorConsentData,
    "contact.requested": ContactData,
    "contact.claimed": ContactData,
    "contact.closed": ContactData,
    "call.ringing": CallRingingData,
    "call.updated": CallUpdatedData,
    "call.tagged": TaggedData,
    "contact.tagged": TaggedData,
    "visitor.erased": VisitorErasedData,
    "hub.resync": HubResyncData,
}


# -- event envelopes -----------------------------------------------------------------------------


class _Envelope(TypedDict):
    id: str
    site: str
    at: str


class VisitorPageviewEvent(_Envelope):
    kind: Literal["visitor.pageview"]
    data: VisitorPageviewData


class VisitorCartEvent(_Envelope):
    kind: Literal["visitor.cart"]
    data: VisitorCartData


class VisitorConsentEvent(_Envelope):
    kind: Literal["visitor.consent"]
    data: VisitorConsentData


class ContactEvent(_Envelope):
    kind: Literal["contact.requested", "contact.claimed", "contact.closed"]
    data: ContactData


class CallRingingEvent(_Envelope):
    kind: Literal["call.ringing"]
    data: CallRingingData


class CallUpdatedEvent(_Envelope):
    kind: Literal["call.updated"]
    data: CallUpdatedData


class TaggedEvent(_Envelope):
    kind: Literal["call.tagged", "contact.tagged"]
    data: TaggedData


class VisitorErasedEvent(_Envelope):
    kind: Literal["visitor.erased"]
    data: VisitorErasedData


class HubResyncEvent(_Envelope):
    kind: Literal["hub.resync"]
    data: HubResyncData


HubEvent = Union[  # noqa: UP007 (a Union reads better than a ten-line `|` chain)
    VisitorPageviewEvent,
    VisitorCartEvent,
    VisitorConsentEvent,
    ContactEvent,
    CallRingingEvent,
    CallUpdatedEvent,
    TaggedEvent,
    VisitorErasedEvent,
    HubResyncEvent,
]


# -- server messages -----------------------------------------------------------------------------


class ErrorInfo(TypedDict):
    code: str
    message: str


class _ResultBase(TypedDict):
    id: int
    type: Literal["result"]
    success: bool


# `total=False` rather than NotRequired: Python 3.11 ignores NotRequired under postponed
# annotations, and exactly one of the two keys is present.
class ResultMessage(_ResultBase, total=False):
    result: dict[str, Any] | None
    error: ErrorInfo


class EventMessage(TypedDict):
    type: Literal["event"]
    event: dict[str, Any]


class PingMessage(TypedDict):
    type: Literal["ping"]
    at: str


class StatusMessage(TypedDict):
    """Whether live events reach this console (false while the hub's Redis is away)."""

    type: Literal["status"]
    live: bool
    at: str


class SubscribeResult(TypedDict):
    sites: list[dict[str, str]]
    replayed: int
    gap: bool
    gap_sites: list[str]


# -- builders ------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(value: Any) -> float | None:
    return float(value) if value is not None else None


def session_summary(session: TrackedSession, cart: Cart | None) -> SessionSummary:
    """Summarise a visit for the console from the loaded session (and its cart, if read)."""
    return {
        "id": session.id,
        "started_at": session.started_at.isoformat(),
        "last_seen_at": session.last_seen_at.isoformat(),
        "current_url": session.current_url,
        "current_title": session.current_title,
        "pageviews": session.pageview_count,
        "channel": session.channel,
        "source": session.source,
        "medium": session.medium,
        "campaign": session.campaign,
        "term": session.term,
        "country": session.country,
        "region": session.region,
        "city": session.city,
        "browser": session.browser,
        "os": session.os,
        "device": session.device,
        "cart_total": _money(cart.total) if cart is not None else None,
        "cart_currency": cart.currency if cart is not None else None,
        "consent": bool(session.consent),
    }


def page_info(pageview: Pageview) -> PageInfo:
    return {"url": pageview.url, "title": pageview.title, "at": pageview.viewed_at.isoformat()}


def page_info_from_row(row: Mapping[str, Any]) -> PageInfo:
    """Shape the pageview row the collector just wrote (`CollectResult.pageview_data`)."""
    viewed_at = row["viewed_at"]
    return {
        "url": row["url"],
        "title": row.get("title"),
        "at": viewed_at.isoformat() if isinstance(viewed_at, dt.datetime) else str(viewed_at),
    }


def cart_info(cart: Cart) -> CartInfo:
    return {
        "items": list(cart.items or []),
        "total": _money(cart.total),
        "currency": cart.currency,
        "item_count": cart.item_count,
        "updated_at": _iso(cart.updated_at),
    }


def cart_info_from_snapshot(snapshot: CartSnapshot, at: dt.datetime) -> CartInfo:
    """Shape the snapshot the snippet just sent (the collect path reads nothing back)."""
    return {
        "items": [item.as_json() for item in snapshot.items],
        "total": _money(snapshot.total),
        "currency": snapshot.currency,
        "item_count": sum(item.qty for item in snapshot.items),
        "updated_at": at.isoformat(),
    }


def _international(e164: str | None) -> str | None:
    """Format a caller for people to read (+33 6 12 34 56 78); None when withheld."""
    if not e164:
        return None
    try:
        return phone_forms(e164).international
    except Exception:
        return e164


def call_info(call: Call) -> CallInfo:
    return {
        "id": call.id,
        "direction": call.direction,
        "status": call.status,
        "outcome": call.outcome,
        "caller": call.caller_e164,
        "caller_display": _international(call.caller_e164),
        "caller_country": call.caller_country,
        "caller_region": call.caller_region,
        "first_time_caller": bool(call.first_time_caller),
        "tracking_number": call.tracking_e164,
        "started_at": call.started_at.isoformat(),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": call.duration_s,
        "session_id": call.session_id,
        "channel": call.channel,
        "source": call.source,
        "medium": call.medium,
        "campaign": call.campaign,
        "term": call.term,
        "method": call.method,
        "confidence": float(call.confidence),
        "outcome_tag": call.outcome_tag,
        "recorded": call.recording_sid is not None,
    }


# -- checking what the server sent ---------------------------------------------------------------


class MessageError(ValueError):
    """A message does not match its model."""


def _check(value: Any, hint: Any, path: str) -> None:
    origin = get_origin(hint)
    if hint is Any:
        return
    if origin is Literal:
        if value not in get_args(hint):
            raise MessageError(f"{path}: {value!r} is not one of {get_args(hint)}")
        return
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(hint):
            try:
                _check(value, option, path)
                return
            except MessageError as exc:
                errors.append(str(exc))
        raise MessageError("; ".join(errors))
    if hint is type(None):
        if value is not None:
            raise MessageError(f"{path}: expected null, got {value!r}")
        return
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            raise MessageError(f"{path}: expected an object, got {value!r}")
        hints = typing.get_type_hints(hint)
        required = hint.__required_keys__
        missing = required - value.keys()
        extra = value.keys() - hints.keys()
        if missing or extra:
            raise MessageError(f"{path}: missing {sorted(missing)}, unexpected {sorted(extra)}")
        for name, value_hint in hints.items():
            if name in value:
                _check(value[name], value_hint, f"{path}.{name}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise MessageError(f"{path}: expected a list, got {value!r}")
        (item_hint,) = get_args(hint)
        for index, item in enumerate(value):
            _check(item, item_hint, f"{path}[{index}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{path}: expected an object, got {value!r}")
        return
    expected = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(hint, (hint,))
    if isinstance(value, bool) and hint is not bool:
        raise MessageError(f"{path}: expected {hint.__name__}, got a boolean")
    if not isinstance(value, expected):
        raise MessageError(f"{path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def check_event(event: Any) -> HubEvent:
    """Validate one event envelope and its data against the model of its kind."""
    if not isinstance(event, dict) or event.get("kind") not in DATA_MODELS:
        raise MessageError(f"not an event of a known kind: {event!r}")
    for name in ("id", "site", "at"):
        if not isinstance(event.get(name), str):
            raise MessageError(f"event.{name} must be a string")
    if event.keys() != {"id", "site", "at", "kind", "data"}:
        raise MessageError(f"event has keys {sorted(event)}")
    _check(event["data"], DATA_MODELS[event["kind"]], f"event[{event['kind']}].data")
    return typing.cast(HubEvent, event)


def check_message(message: Any) -> ResultMessage | EventMessage | PingMessage | StatusMessage:
    """Validate a message the server sent (result, event, ping or status)."""
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "status":
        _check(message, StatusMessage, "message")
        return typing.cast(StatusMessage, message)
    if kind == "event":
        _check(message, EventMessage, "message")
        check_event(message["event"])
        return typing.cast(EventMessage, message)
    if kind == "ping":
        _check(message, PingMessage, "message")
        return typing.cast(PingMessage, message)
    if kind == "result":
        _check(message, ResultMessage, "message")
        if message["success"] == ("error" in message):
            raise MessageError("a result has `result` when it succeeds, `error` when it fails")
        return typing.cast(ResultMessage, message)
    raise MessageError(f"unknown message type: {message!r}")
