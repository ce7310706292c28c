"""REST API handlers under /api/v1 and the OpenAPI document at /api/openapi.json.

One route table (`ROUTES`) both registers the handlers and writes the document, so the two
cannot drift apart; the tests validate every answer against the served document. Every
request is confined to the token's account; reads of personal data (calls, sessions, contact
requests) are audited with the token as actor.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Final

from aiohttp import web
from sqlalchemy import and_, or_, select

from dashboard import webhooks
from dashboard.api import schema
from dashboard.api.schema import Param, Route, page_of, ref
from dashboard.api.tokens import TokenAuth, authenticate
from dashboard.reports import costs as cost_import
from dashboard.reports import queries, rollup
from dashboard.reports.models import MODELS, UNITS_PER_CALL
from dashboard.reports.queries import CallFilter, Row, Scope
from tracker import appkeys
from tracker.audit import audit
from tracker.errors import ApiError, NotFound
from tracker.models import (
    Call,
    Cart,
    ContactRequest,
    Pageview,
    Site,
    TrackedSession,
    TrackingNumber,
    WebhookEndpoint,
)
from tracker.phones import mask_e164
from tracker.privacy.restrict import contact_request_visible, session_visible
from tracker.web import client_address, is_digits, parse_id, read_json

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
MAX_BODY: Final = 5 * 1024 * 1024
OUTCOME_TAGS: Final = ("sale", "lead", "no_answer", "spam")
TOKEN_KEY: web.RequestKey[TokenAuth] = web.RequestKey("api_token", TokenAuth)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def _token(request: web.Request) -> TokenAuth:
    return request[TOKEN_KEY]


async def _authorised(request: web.Request, scope: str) -> TokenAuth:
    app = request.app
    async with app[appkeys.DATABASE].begin() as db:
        token = await authenticate(
            db, request.headers.get("Authorization"), app[appkeys.CLOCK].now()
        )
    if token is None:
        raise web.HTTPUnauthorized(
            text='{"error": {"code": "unauthorized", "message": "Send Authorization: Bearer ct_... with a valid token."}}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="calltrack"'},
        )
    if not token.allows(scope):
        raise web.HTTPForbidden(
            text='{"error": {"code": "insufficient_scope", "message": "This token is read-only."}}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="write"'},
        )
    return token


def _guarded(route: Route) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        request[TOKEN_KEY] = await _authorised(request, route.scope)
        result: web.StreamResponse = await route.handler(request)
        return result

    handler.__name__ = route.operation_id
    return handler


async def _audit(
    request: web.Request, action: str, target: str | None = None, **detail: Any
) -> None:
    token = _token(request)
    app = request.app
    async with app[appkeys.DATABASE].begin() as db:
        await audit(
            db,
            action=action,
            at=app[appkeys.CLOCK].now(),
            actor=token.actor,
            account_id=token.account_id,
            target=target,
            ip_truncated=client_address(request),
            **detail,
        )


def _phone(token: TokenAuth, e164: str | None) -> str | None:
    return e164 if token.caller_numbers else mask_e164(e164)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not is_digits(raw) or len(raw) > 6 or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError("invalid_limit", f"limit must be between 1 and {MAX_LIMIT}")
    return int(raw)


def _int_id(raw: str, name: str) -> int:
    value = parse_id(raw)
    if value is None:
        raise NotFound(f"unknown_{name}", f"no such {name} in your account")
    return value


async def _scope(request: web.Request, *, default_days: int = 30) -> Scope:
    token = _token(request)
    query = request.query
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await queries.resolve_sites(db, token.account_id, query.get("site_id"))
        everything = await queries.account_sites(db, token.account_id)
    today = queries.today_for(sites or everything, request.app[appkeys.CLOCK].now())
    period = queries.parse_period(query.get("from"), query.get("to"), today, default_days)
    return Scope(token.account_id, sites, period, queries.parse_model(query.get("model")))


# -- shapes --------------------------------------------------------------------------------------


def site_json(site: Site) -> dict[str, Any]:
    return {
        "id": site.id,
        "name": site.name,
        "domain": site.domain,
        "country": site.country,
        "timezone": site.timezone,
        "language": site.language,
        "site_key": site.site_key,
        "consent_mode": site.consent_mode,
        "record_calls": bool(site.record_calls),
        "created_at": _iso(site.created_at),
    }


def session_json(s: TrackedSession) -> dict[str, Any]:
    return {
        "id": s.id,
        "site_id": s.site_id,
        "started_at": _iso(s.started_at),
        "last_seen_at": _iso(s.last_seen_at),
        "consent": bool(s.consent),
        # The visitor id itself is a pseudonymous identifier: say only whether there is one.
        "returning_visitor": s.visitor_id is not None,
        "landing_url": s.landing_url,
        "referrer": s.referrer,
        "channel": s.channel,
        "source": s.source,
        "medium": s.medium,
        "campaign": s.campaign,
        "term": s.term,
        "gclid": s.gclid,
        "country": s.country,
        "device": s.device,
        "pageview_count": s.pageview_count,
    }


def call_json(call: Call, token: TokenAuth, credit: int = UNITS_PER_CALL) -> dict[str, Any]:
    return {
        "id": call.id,
        "site_id": call.site_id,
        "direction": call.direction,
        "caller": _phone(token, call.caller_e164),
        "first_time_caller": bool(call.first_time_caller),
        "tracking_number": call.tracking_e164,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "status": call.status,
        "outcome": call.outcome,
        "duration_s": call.duration_s,
        "outcome_tag": call.outcome_tag,
        "channel": call.channel,
        "source": call.source,
        "medium": call.medium,
        "campaign": call.campaign,
        "term": call.term,
        "session_id": call.session_id,
        "attribution_method": call.method,
        "confidence": max(0.0, min(1.0, float(call.confidence))),
        "recorded": call.recording_url is not None,
        "credit": credit / UNITS_PER_CALL,
    }


def _money(amounts: dict[str, Decimal]) -> dict[str, str]:
    return {currency: f"{amount:.2f}" for currency, amount in amounts.items()}


def row_json(row: Row, compare: bool) -> dict[str, Any]:
    return {
        "value": row.value,
        "calls_display": row.display_tenths / 10,
        "current": row.current.as_json(),
        "previous": row.previous.as_json() if compare else None,
        "cost": _money(row.costs),
        "cost_per_call": _money(row.cost_per_call()),
    }


def _period(period: queries.Period) -> dict[str, str]:
    return {"from": period.first.isoformat(), "to": period.last.isoformat()}


# -- handlers ------------------------------------------------------------------------------------


async def list_sites(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await queries.account_sites(db, _token(request).account_id)
    return web.json_response({"data": [site_json(s) for s in sites], "next_cursor": None})


async def get_site(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await queries.resolve_sites(
            db, _token(request).account_id, _int_id(request.match_info["site_id"], "site")
        )
    return web.json_response(site_json(sites[0]))


async def list_numbers(request: web.Request) -> web.Response:
    token = _token(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await queries.resolve_sites(db, token.account_id, request.query.get("site_id"))
        after = request.query.get("cursor")
        query = select(TrackingNumber).where(TrackingNumber.site_id.in_([s.id for s in sites]))
        if after:
            query = query.where(TrackingNumber.id > _int_id(after, "cursor"))
        limit = _limit(request)
        numbers = list(await db.scalars(query.order_by(TrackingNumber.id).limit(limit + 1)))
    more = len(numbers) > limit
    numbers = numbers[:limit]
    return web.json_response(
        {
            "data": [
                {
                    "id": n.id,
                    "site_id": n.site_id,
                    "e164": n.e164,
                    "provider": n.provider,
                    "kind": n.kind,
                    "rule_type": n.rule_type,
                    "rule_value": n.rule_value,
                    "state": n.state,
                    "created_at": _iso(n.created_at),
                }
                for n in numbers
            ],
            "next_cursor": str(numbers[-1].id) if more else None,
        }
    )


def _session_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    if not cursor:
        return None
    stamp, _, ident = cursor.partition("_")
    try:
        return dt.datetime.fromtimestamp(float(stamp), dt.UTC), ident[:64]
    except (ValueError, OverflowError) as exc:
        raise ApiError("invalid_cursor", "cursor is not one this API returned") from exc


async def list_sessions(request: web.Request) -> web.Response:
    scope = await _scope(request)
    limit = _limit(request)
    after = _session_cursor(request.query.get("cursor"))
    bounds = rollup.in_local_days(
        scope.sites,
        scope.period.first,
        scope.period.last,
        TrackedSession.site_id,
        TrackedSession.started_at,
    )
    if not bounds:
        return web.json_response({"data": [], "next_cursor": None})
    query = select(TrackedSession).where(or_(*bounds), session_visible(scope.account_id))
    channel = request.query.get("channel")
    if channel:
        query = query.where(TrackedSession.channel == channel)
    if after is not None:
        at, ident = after
        query = query.where(
            or_(
                TrackedSession.started_at < at,
                and_(TrackedSession.started_at == at, TrackedSession.id < ident),
            )
        )
    async with request.app[appkeys.DATABASE].sessions() as db:
        rows = list(
            await db.scalars(
                query.order_by(TrackedSession.started_at.desc(), TrackedSession.id.desc()).limit(
                    limit + 1
                )
            )
        )
    more = len(rows) > limit
    rows = rows[:limit]
    await _audit(request, "api.sessions_listed", count=len(rows))
    cursor = f"{rows[-1].started_at.timestamp():.6f}_{rows[-1].id}" if more else None
    return web.json_response({"data": [session_json(s) for s in rows], "next_cursor": cursor})


async def get_session(request: web.Request) -> web.Response:
    token = _token(request)
    session_id = request.match_info["session_id"]
    async with request.app[appkeys.DATABASE].sessions() as db:
        row = (
            await db.execute(
                select(TrackedSession)
                .join(Site, Site.id == TrackedSession.site_id)
                .where(
                    TrackedSession.id == session_id[:64],
                    Site.account_id == token.account_id,
                    session_visible(token.account_id),  # a restricted visit: kept, not shown
                )
            )
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("unknown_session", "no such session in your account")
        pageviews = list(
            await db.scalars(
                select(Pageview).where(Pageview.session_id == row.id).order_by(Pageview.viewed_at)
            )
        )
        cart = await db.get(Cart, row.id)
    await _audit(request, "api.session_read", target=f"session:{row.id}")
    body = session_json(row)
    body["pageviews"] = [
        {
            "url": p.url,
            "title": p.title,
            "viewed_at": _iso(p.viewed_at),
            "duration_ms": p.duration_ms,
        }
        for p in pageviews
    ]
    body["cart"] = (
        {
            "items": cart.items or [],
            "total": f"{cart.total:.2f}" if cart.total is not None else None,
            "currency": cart.currency,
            "item_count": cart.item_count,
            "updated_at": _iso(cart.updated_at),
        }
        if cart is not None
        else None
    )
    return web.json_response(body)


async def list_calls(request: web.Request) -> web.Response:
    scope = await _scope(request)
    query = request.query
    f = CallFilter.parse(
        {"dim": query.get("dimension"), "value": query.get("value"), "metric": query.get("metric")}
    )
    async with request.app[appkeys.DATABASE].sessions() as db:
        lines, cursor = await queries.list_calls(
            db, scope, f, limit=_limit(request), cursor=query.get("cursor")
        )
    await _audit(request, "api.calls_listed", count=len(lines), filter=f.as_query())
    token = _token(request)
    return web.json_response(
        {
            "data": [call_json(line.call, token, line.credit) for line in lines],
            "next_cursor": cursor,
        }
    )


async def get_call(request: web.Request) -> web.Response:
    token = _token(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        call, _ = await queries.call_in_account(
            db, token.account_id, _int_id(request.match_info["call_id"], "call")
        )
    await _audit(request, "api.call_read", target=f"call:{call.id}")
    return web.json_response(call_json(call, token))


async def update_call(request: web.Request) -> web.Response:
    """Set or clear a call's outcome tag (sale, lead, no_answer, spam)."""
    token = _token(request)
    body = await read_json(request, 4096)
    if not isinstance(body, dict) or set(body) != {"outcome_tag"}:
        raise ApiError(
            "invalid_body",
            'the body is {"outcome_tag": "sale" | "lead" | "no_answer" | "spam" | null}',
        )
    tag = body["outcome_tag"]
    if tag is not None and tag not in OUTCOME_TAGS:
        raise ApiError(
            "invalid_tag", f"outcome_tag must be one of {', '.join(OUTCOME_TAGS)} or null"
        )
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        call, site = await queries.call_in_account(
            db, token.account_id, _int_id(request.match_info["call_id"], "call")
        )
        call.outcome_tag = tag
        await rollup.mark_dirty(
            db, site.id, [rollup.local_day(call.started_at, rollup.zone(site.timezone))], now
        )
        await audit(
            db,
            action="call.tagged",
            at=now,
            actor=token.actor,
            account_id=token.account_id,
            target=f"call:{call.id}",
            site_id=site.id,
            tag=tag,
        )
    return web.json_response(call_json(call, token))


async def list_contact_requests(request: web.Request) -> web.Response:
    scope = await _scope(request)
    token = _token(request)
    limit = _limit(request)
    status = request.query.get("status")
    if status is not None and status not in ("open", "claimed", "closed"):
        raise ApiError("invalid_status", "status must be open, claimed or closed")
    bounds = rollup.in_local_days(
        scope.sites,
        scope.period.first,
        scope.period.last,
        ContactRequest.site_id,
        ContactRequest.created_at,
    )
    if not bounds:
        return web.json_response({"data": [], "next_cursor": None})
    query = select(ContactRequest).where(or_(*bounds), contact_request_visible(scope.account_id))
    if status:
        query = query.where(ContactRequest.status == status)
    cursor = request.query.get("cursor")
    if cursor:
        query = query.where(ContactRequest.id < _int_id(cursor, "cursor"))
    async with request.app[appkeys.DATABASE].sessions() as db:
        rows = list(await db.scalars(query.order_by(ContactRequest.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    await _audit(request, "api.contact_requests_listed", count=len(rows))
    return web.json_response(
        {
            "data": [
                {
                    "id": r.id,
                    "site_id": r.site_id,
                    "session_id": r.session_id,
                    "kind": r.kind,
                    "phone": _phone(token, r.phone_e164) or "",
                    "status": r.status,
                    "outcome_tag": r.outcome_tag,
                    "outside_hours": bool(r.outside_hours),
                    "created_at": _iso(r.created_at),
                    "closed_at": _iso(r.closed_at),
                    "call_id": r.call_id,
                }
                for r in rows
            ],
            "next_cursor": str(rows[-1].id) if more else None,
        }
    )


def _compare(request: web.Request) -> bool:
    raw = request.query.get("compare", "true")
    if raw not in ("true", "false"):
        raise ApiError("invalid_compare", "compare must be true or false")
    return raw == "true"


async def report(request: web.Request) -> web.Response:
    """Return a breakdown (channel, source/medium, campaign, keyword, landing page)."""
    dimension = request.match_info["dimension"]
    if dimension not in rollup.DIMENSIONS:
        raise NotFound(
            "unknown_report", f"reports are {', '.join(rollup.DIMENSIONS)} and timeseries"
        )
    scope = await _scope(request)
    compare = _compare(request)
    await rollup.refresh_for_read(
        request.app[appkeys.DATABASE], request.app[appkeys.CLOCK], scope.site_ids
    )
    async with request.app[appkeys.DATABASE].sessions() as db:
        rows, total = await queries.breakdown(db, scope, dimension, compare=compare)
    return web.json_response(
        {
            "dimension": dimension,
            "model": scope.model,
            "period": _period(scope.period),
            "previous_period": _period(scope.period.previous()) if compare else None,
            "site_ids": scope.site_ids,
            "rows": [row_json(r, compare) for r in rows],
            "total": row_json(total, compare),
        }
    )


async def timeseries(request: web.Request) -> web.Response:
    scope = await _scope(request)
    await rollup.refresh_for_read(
        request.app[appkeys.DATABASE], request.app[appkeys.CLOCK], scope.site_ids
    )
    async with request.app[appkeys.DATABASE].sessions() as db:
        current = await queries.daily(db, scope)
        previous = await queries.daily(db, scope.previous())
    return web.json_response(
        {
            "period": _period(scope.period),
            "dates": [d.isoformat() for d in scope.period.dates()],
            "calls": [v / UNITS_PER_CALL for v in current],
            "previous_calls": [v / UNITS_PER_CALL for v in previous],
        }
    )


def endpoint_json(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events or []),
        "active": bool(endpoint.active),
        "created_at": _iso(endpoint.created_at),
    }
    if secret:
        body["secret"] = endpoint.secret
    return body


async def list_webhooks(request: web.Request) -> web.Response:
    async with request.app[appkeys.DATABASE].sessions() as db:
        endpoints = list(
            await db.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.account_id == _token(request).account_id)
                .order_by(WebhookEndpoint.id)
            )
        )
    return web.json_response({"data": [endpoint_json(e) for e in endpoints], "next_cursor": None})


async def create_webhook(request: web.Request) -> web.Response:
    token = _token(request)
    body = await read_json(request, 16384)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("url"), str)
        or not isinstance(body.get("events"), list)
    ):
        raise ApiError(
            "invalid_body", 'the body is {"url": "https://...", "events": ["call.completed", ...]}'
        )
    unknown = set(body) - {"url", "events", "description"}
    if unknown:
        raise ApiError("invalid_body", f"unknown fields: {', '.join(sorted(unknown))}")
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        endpoint = await webhooks.create_endpoint(
            db,
            token.account_id,
            body["url"],
            [str(e) for e in body["events"]],
            now,
            str(body.get("description") or ""),
        )
        await audit(
            db,
            action="webhook.created",
            at=now,
            actor=token.actor,
            account_id=token.account_id,
            ip_truncated=client_address(request),
            target=f"webhook:{endpoint.id}",
        )
    return web.json_response(endpoint_json(endpoint, secret=True), status=201)


async def delete_webhook(request: web.Request) -> web.Response:
    token = _token(request)
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        endpoint = await webhooks.endpoint_of_account(
            db, token.account_id, _int_id(request.match_info["webhook_id"], "webhook")
        )
        await db.delete(endpoint)
        await audit(
            db,
            action="webhook.deleted",
            at=now,
            actor=token.actor,
            account_id=token.account_id,
            ip_truncated=client_address(request),
            target=f"webhook:{endpoint.id}",
        )
    return web.Response(status=204)


async def import_costs(request: web.Request) -> web.Response:
    """Import ad spend rows (the same rules as the CSV upload)."""
    token = _token(request)
    body = await read_json(request, MAX_BODY)
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("rows"), list)
        or set(body) - {"rows", "site_id"}
    ):
        raise ApiError(
            "invalid_body",
            'the body is {"site_id": null, "rows": [{"date", "channel", "cost", "currency"}]}',
        )
    header = ["date", "channel", "source", "medium", "campaign", "cost", "currency"]
    # Rows go through the CSV importer so the API and the upload share one set of rules.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for item in body["rows"]:
        if not isinstance(item, dict) or set(item) - set(header):
            raise ApiError("invalid_body", f"a row has the fields {', '.join(header)}")
        writer.writerow(["" if item.get(k) is None else str(item.get(k)) for k in header])
    parsed = cost_import.parse_costs_csv(buffer.getvalue())
    site_id = body.get("site_id")
    async with request.app[appkeys.DATABASE].begin() as db:
        if site_id is not None:
            if isinstance(site_id, bool) or not isinstance(site_id, int):  # true is not site 1
                raise ApiError("invalid_site", "site_id must be a site id or null")
            site_id = (await queries.resolve_sites(db, token.account_id, site_id))[0].id
        now = request.app[appkeys.CLOCK].now()
        import_id = await cost_import.import_costs(db, token.account_id, site_id, parsed, now)
        await audit(
            db,
            action="costs.imported",
            at=now,
            actor=token.actor,
            account_id=token.account_id,
            ip_truncated=client_address(request),
            target=f"costs:{import_id}",
            rows=len(parsed),
        )
    return web.json_response({"import_id": import_id, "rows": len(parsed)}, status=201)


async def openapi(request: web.Request) -> web.Response:
    """Serve the OpenAPI 3.1 document (public: it describes, it grants nothing)."""
    document = schema.openapi_document(ROUTES, request.app[appkeys.SETTINGS].public_url.rstrip("/"))
    return web.json_response(document, headers={"Cache-Control": "public, max-age=300"})


# -- the route table -----------------------------------------------------------------------------

DATE_Q: Final = {"type": "string", "format": "date"}
SITE = Param(
    "site_id",
    "query",
    {"type": "integer", "minimum": 1},
    "Only this site (default: every site of the account).",
)
FROM = Param("from", "query", DATE_Q, "First local day (default: 30 days before `to`).")
TO = Param("to", "query", DATE_Q, "Last local day, included (default: today).")
MODEL = Param(
    "model",
    "query",
    {"type": "string", "enum": list(MODELS), "default": "last_non_direct"},
    "Attribution model.",
)
LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
)
CURSOR = Param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page.")
COMPARE = Param(
    "compare",
    "query",
    {"type": "string", "enum": ["true", "false"], "default": "true"},
    "Include the previous period.",
)

ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/api/v1/sites", list_sites, "listSites", "List the account's sites", "sites", response=page_of("Site"), errors=(401,)),
    Route("GET", "/api/v1/sites/{site_id}", get_site, "getSite", "Get a site", "sites",
          params=(Param("site_id", "path", {"type": "string", "pattern": "^[0-9]+$"}),), response=ref("Site")),
    Route("GET", "/api/v1/numbers", list_numbers, "listNumbers", "List tracking numbers", "numbers",
          params=(SITE, LIMIT, CURSOR), response=page_of("TrackingNumber")),
    Route("GET", "/api/v1/sessions", list_sessions, "listSessions", "List sessions, newest first", "sessions",
          params=(SITE, FROM, TO, Param("channel", "query", {"type": "string"}), LIMIT, CURSOR), response=page_of("Session")),
    Route("GET", "/api/v1/sessions/{session_id}", get_session, "getSession", "Get a session with its pages and cart", "sessions",
          params=(Param("session_id", "path", {"type": "string", "maxLength": 64}),), response=ref("SessionDetail")),
    Route("GET", "/api/v1/calls", list_calls, "listCalls", "List calls, newest first (optionally those credited to a value)", "calls",
          params=(SITE, FROM, TO, MODEL,
                  Param("dimension", "query", {"type": "string", "enum": list(rollup.DIMENSIONS)}),
                  Param("value", "query", {"type": "string"}, "Required with dimension."),
                  Param("metric", "query", {"type": "string", "enum": list(queries.METRICS)}),
                  LIMIT, CURSOR),
          response=page_of("Call")),
    Route("GET", "/api/v1/calls/{call_id}", get_call, "getCall", "Get a call", "calls",
          params=(Param("call_id", "path", {"type": "string", "pattern": "^[0-9]+$"}),), response=ref("Call")),
    Route("PATCH", "/api/v1/calls/{call_id}", update_call, "updateCall", "Set a call's outcome tag", "calls", scope="write",
          params=(Param("call_id", "path", {"type": "string", "pattern": "^[0-9]+$"}),), body=ref("CallUpdate"), response=ref("Call")),
    Route("GET", "/api/v1/contact-requests", list_contact_requests, "listContactRequests", "List contact requests, newest first", "contact requests",
          params=(SITE, FROM, TO, Param("status", "query", {"type": "string", "enum": ["open", "claimed", "closed"]}), LIMIT, CURSOR),
          response=page_of("ContactRequest")),
    Route("GET", "/api/v1/reports/timeseries", timeseries, "getTimeSeries", "Calls per local day, with the previous period", "reports",
          params=(SITE, FROM, TO), response=ref("TimeSeries")),
    Route("GET", "/api/v1/reports/{dimension}", report, "getReport", "Calls by channel, source/medium, campaign, keyword or landing page", "reports",
          params=(Param("dimension", "path", {"type": "string", "enum": list(rollup.DIMENSIONS)}), SITE, FROM, TO, MODEL, COMPARE),
          response=ref("Report")),
    Route("GET", "/api/v1/webhooks", list_webhooks, "listWebhooks", "List webhook endpoints", "webhooks",
          response=page_of("WebhookEndpoint"), errors=(401,)),
    Route("POST", "/api/v1/webhooks", create_webhook, "createWebhook", "Add a webhook endpoint (the answer holds its secret)", "webhooks",
          scope="write", body=ref("WebhookEndpointCreate"), response=ref("WebhookEndpoint"), status=201, errors=(400, 401)),
    Route("DELETE", "/api/v1/webhooks/{webhook_id}", delete_webhook, "deleteWebhook", "Delete a webhook endpoint", "webhooks",
          scope="write", params=(Param("webhook_id", "path", {"type": "string", "pattern": "^[0-9]+$"}),), status=204),
    Route("POST", "/api/v1/costs", import_costs, "importCosts", "Import ad spend", "costs", scope="write",
          body=ref("CostImport"), response=ref("CostImportResult"), status=201, errors=(400, 401, 404, 413)),
)  # fmt: skip


def setup(app: web.Application) -> None:
    """Add the API routes and the OpenAPI document."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _guarded(route))
    app.router.add_get("/api/openapi.json", openapi)
