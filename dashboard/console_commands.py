"""The console's hub commands `claim`, `callback` and `tag`, and the contact-request publisher.

Each command re-reads the advisor from the database (a disabled user or a changed phone
counts at once), runs one service in its own transaction, writes the audit entry in that
transaction, and publishes the resulting event after the commit, so a console that reacts to
the event reads committed data.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from sqlalchemy import select

from dashboard.hub import CommandContext, publish_site_event, register_command
from telephony.callback import CallbackRequest, place_callback
from telephony.calls import notify_call_listeners
from tracker import appkeys
from tracker.audit import audit
from tracker.contacts import (
    CLOSED,
    attach_call,
    claim_request,
    describe_request,
    request_of_user,
    tag_call,
    tag_request,
)
from tracker.errors import ApiError, Conflict
from tracker.models import ContactRequest, Site, User
from tracker.privacy.restrict import contact_request_visible

log = logging.getLogger("calltrack.console")


async def _fresh_user(app: web.Application, user_id: int) -> User:
    async with app[appkeys.DATABASE].sessions() as db:
        user = await db.get(User, user_id)
        if user is None or user.disabled_at is not None:
            raise ApiError("forbidden", "this account is disabled", status=403)
        db.expunge(user)
        return user


async def claim(ctx: CommandContext, message: dict[str, Any]) -> dict[str, Any]:
    """Claim a request for this advisor alone; `already_claimed` when someone was faster."""
    app = ctx.app
    user = await _fresh_user(app, ctx.user.id)
    now = app[appkeys.CLOCK].now()
    async with app[appkeys.DATABASE].begin() as db:
        request = await claim_request(
            db, message.get("request_id"), user, now, ctx.connection.ip_truncated
        )
        summary = await describe_request(db, request)
        site_id = request.site_id
    await publish_site_event(app, site_id, "contact.claimed", {"request": summary})
    return {"request": summary}


async def _claim_for_callback(
    app: web.Application, user: User, request_id: Any, ip: str | None
) -> None:
    """Hold the request before calling: a callback is a claim (one advisor per visitor)."""
    now = app[appkeys.CLOCK].now()
    try:
        async with app[appkeys.DATABASE].begin() as db:
            request = await claim_request(db, request_id, user, now, ip)
            summary = await describe_request(db, request)
            newly = request.claimed_at == now
            site_id = request.site_id
    except Conflict:
        # Calling again after tagging (e.g. "no answer") is allowed to whoever closed it.
        async with app[appkeys.DATABASE].sessions() as db:
            request, _ = await request_of_user(db, request_id, user)
            if not (request.status == CLOSED and request.claimed_by_user_id == user.id):
                raise
        return
    if newly:
        await publish_site_event(app, site_id, "contact.claimed", {"request": summary})


async def callback(ctx: CommandContext, message: dict[str, Any]) -> dict[str, Any]:
    """Place the bridged call: the advisor's phone rings, then the visitor's."""
    app = ctx.app
    user = await _fresh_user(app, ctx.user.id)
    carrier = app[appkeys.CARRIER]
    if carrier is None:
        raise ApiError("carrier_unavailable", "no carrier is configured for calls", status=503)
    if not user.phone_e164:
        # Checked before claiming: a claim the advisor cannot follow up would block colleagues.
        raise ApiError(
            "no_advisor_phone", "add your phone number to your profile to place callbacks"
        )
    request_id = message.get("request_id")
    site_key: str | None = None
    if request_id is not None:
        await _claim_for_callback(app, user, request_id, ctx.connection.ip_truncated)
        async with app[appkeys.DATABASE].sessions() as db:
            request, site = await request_of_user(db, request_id, user)
            visitor_phone, session_id, site_key = (
                request.phone_e164,
                request.session_id,
                site.site_key,
            )
    else:
        phone, session_id = message.get("phone"), message.get("session_id")
        if not isinstance(phone, str) or not isinstance(session_id, str):
            raise ApiError("invalid_request", "request_id, or session_id and phone, are required")
        visitor_phone = phone
    settings = app[appkeys.SETTINGS]
    call = await place_callback(
        app[appkeys.DATABASE],
        carrier,
        user,
        CallbackRequest(
            visitor_phone=visitor_phone,
            session_id=session_id,
            site_key=None if session_id else site_key,
        ),
        public_url=settings.public_url,
        clock=app[appkeys.CLOCK],
    )
    now = app[appkeys.CLOCK].now()
    summary: dict[str, Any] | None = None
    async with app[appkeys.DATABASE].begin() as db:
        if request_id is not None:
            request, _ = await request_of_user(db, request_id, user)
            await attach_call(db, request.id, call.id)
            await db.refresh(request)
            summary = await describe_request(db, request)
        await audit(
            db,
            action="call.callback_placed",
            at=now,
            user=user,
            target=f"call:{call.id}",
            ip_truncated=ctx.connection.ip_truncated,
            site_id=call.site_id,
            request_id=request_id,
        )
    notify_call_listeners(app, call)
    if summary is not None:
        await publish_site_event(app, call.site_id, "contact.claimed", {"request": summary})
    return {"call_id": call.id}


async def tag(ctx: CommandContext, message: dict[str, Any]) -> dict[str, Any]:
    """Record an outcome (sale, lead, no_answer, spam) on a request or a call."""
    app = ctx.app
    user = await _fresh_user(app, ctx.user.id)
    target, target_id, outcome = message.get("target"), message.get("target_id"), message.get("tag")
    now = app[appkeys.CLOCK].now()
    if target == "request":
        async with app[appkeys.DATABASE].begin() as db:
            request = await tag_request(
                db, target_id, user, outcome, now, ctx.connection.ip_truncated
            )
            summary = await describe_request(db, request)
            site_id, key = request.site_id, request.id
        await publish_site_event(app, site_id, "contact.closed", {"request": summary})
        await publish_site_event(app, site_id, "contact.tagged", {"target_id": key, "tag": outcome})
    elif target == "call":
        async with app[appkeys.DATABASE].begin() as db:
            call = await tag_call(db, target_id, user, outcome, now, ctx.connection.ip_truncated)
            site_id, key = call.site_id, call.id
        await publish_site_event(app, site_id, "call.tagged", {"target_id": key, "tag": outcome})
    else:
        raise ApiError("invalid_request", 'target must be "request" or "call"')
    return {"ok": True}


async def publish_contact_requested(
    app: web.Application, site: Site, request: dict[str, Any]
) -> None:
    """Tell the site's advisors about a new request (a `contact_listeners` entry); not one of
    a restricted number or visit (kept, not shown), as the console's queue leaves them out."""
    async with app[appkeys.DATABASE].sessions() as db:
        visible = await db.scalar(
            select(ContactRequest.id).where(
                ContactRequest.id == request["id"], contact_request_visible(site.account_id)
            )
        )
    if visible is not None:
        await publish_site_event(app, site.id, "contact.requested", {"request": request})


def setup(app: web.Application) -> None:
    """Register the commands with the hub and the publisher with the contact endpoint."""
    listeners = app[appkeys.EXTRAS].setdefault("contact_listeners", [])
    if publish_contact_requested not in listeners:
        listeners.append(publish_contact_requested)
    for name, handler in (("claim", claim), ("callback", callback), ("tag", tag)):
        register_command(name, handler)
