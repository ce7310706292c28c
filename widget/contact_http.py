"""The visitor's contact requests: `POST /contact`, the widget script and the opening status.

Like `/collect`, the endpoint is called cross-origin from merchant pages with a `text/plain`
JSON body (no CORS preflight) and answers every error in the `{"error": {"code", "message"}}`
envelope, with CORS headers so the widget can read and show the message. Messages are in the
visitor's language (French or English).

New requests are handed to `app[EXTRAS]["contact_listeners"]` (the console registers its
publisher there): `widget` must not import `dashboard`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import rjsmin
from aiohttp import web

from tracker import appkeys
from tracker.contacts import (
    check_contact_request,
    create_contact_request,
    describe_request,
    is_open_now,
    next_opening,
    visitor_language,
)
from tracker.errors import ApiError
from tracker.models import Site
from tracker.sitecache import CachedSite
from tracker.web import CORS_HEADERS, client_ip, error_response, read_json, unreachable
from widget.http import accepts_gzip, gzipped

log = logging.getLogger("calltrack.contact")

STATIC = Path(__file__).with_name("static")
# A phone number and a short message: anything bigger is not from the widget.
MAX_BODY_BYTES = 8 * 1024
# The widget script changes only with a deployment; five minutes like the snippet.
MAX_AGE = 300
# Per visitor address: a real visitor asks once or twice; more is a script filling the
# advisors' queue. Ten minutes lets a visitor who mistyped their number try again.
RATE_LIMIT = 5
RATE_WINDOW_S = 600
MAX_TRACKED_ADDRESSES = 50_000

ContactListener = Callable[[web.Application, Site, dict[str, Any]], Awaitable[None]]

TEXTS: dict[str, dict[str, str]] = {
    "confirmed": {
        "en": "Thank you! An advisor will call you back in a few minutes.",
        "fr": "Merci ! Un conseiller vous rappelle dans quelques minutes.",
    },
    "closed": {
        "en": "Thank you! We are closed right now: an advisor will call you back when we reopen.",
        "fr": "Merci ! Nous sommes fermés en ce moment : un conseiller vous rappellera dès notre réouverture.",
    },
    "closed_until": {
        "en": "Thank you! We are closed right now: an advisor will call you back when we reopen, {when}.",
        "fr": "Merci ! Nous sommes fermés en ce moment : un conseiller vous rappellera dès notre réouverture, {when}.",
    },
    "closed_notice": {
        "en": "We are closed right now. Leave your number and we will call you back when we reopen.",
        "fr": "Nous sommes fermés en ce moment. Laissez votre numéro : nous vous rappellerons dès notre réouverture.",
    },
    "closed_notice_until": {
        "en": "We are closed right now. Leave your number and we will call you back when we reopen, {when}.",
        "fr": "Nous sommes fermés en ce moment. Laissez votre numéro : nous vous rappellerons dès notre réouverture, {when}.",
    },
    "invalid_phone": {
        "en": "This phone number does not look valid. Check it and try again.",
        "fr": "Ce numéro de téléphone ne semble pas valide. Vérifiez-le et réessayez.",
    },
    "uncallable_number": {
        "en": "We cannot call this number back (premium rate or abroad). Please give another.",
        "fr": "Nous ne pouvons pas rappeler ce numéro (surtaxé ou à l'étranger). "
        "Merci d'en indiquer un autre.",
    },
    "invalid_message": {
        "en": "Your message is too long (1000 characters at most).",
        "fr": "Votre message est trop long (1000 caractères au plus).",
    },
    "rate_limited": {
        "en": "You have sent several requests already. Please wait a few minutes.",
        "fr": "Vous avez déjà envoyé plusieurs demandes. Merci de patienter quelques minutes.",
    },
    "contact_disabled": {
        "en": "Callback requests are not available on this site.",
        "fr": "Les demandes de rappel ne sont pas disponibles sur ce site.",
    },
    "error": {
        "en": "Your request could not be sent. Please try again.",
        "fr": "Votre demande n'a pas pu être envoyée. Merci de réessayer.",
    },
}
DAY_NAMES = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "fr": ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
}
WHEN = {
    "en": {"today": "today at {t}", "tomorrow": "tomorrow at {t}", "day": "{d} at {t}"},
    "fr": {"today": "aujourd'hui à {t}", "tomorrow": "demain à {t}", "day": "{d} à {t}"},
}


def text(key: str, lang: str, **values: str) -> str:
    """Return a visitor-facing sentence in `lang` (fr or en)."""
    entry = TEXTS.get(key, TEXTS["error"])
    return (entry.get(lang) or entry["en"]).format(**values)


def _when(site: Site, now_utc: Any, lang: str) -> str | None:
    opening = next_opening(site, now_utc)
    if opening is None:
        return None
    today = now_utc.astimezone(opening.tzinfo).date()
    words = WHEN[lang]
    clock = opening.strftime("%H:%M")
    days = (opening.date() - today).days
    if days == 0:
        return words["today"].format(t=clock)
    if days == 1:
        return words["tomorrow"].format(t=clock)
    return words["day"].format(d=DAY_NAMES[lang][opening.weekday()], t=clock)


class ContactRateLimiter:
    """Count requests per visitor address in a fixed window: in Redis when the app has it."""

    def __init__(
        self, secret_key: str, limit: int = RATE_LIMIT, window_s: int = RATE_WINDOW_S
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._secret = secret_key.encode()
        self._hits: dict[str, deque[float]] = {}

    def _key(self, address: str) -> str:
        # Keyed hash: the limiter (and Redis) never holds a visitor's raw address.
        return hmac.new(self._secret, address.encode(), hashlib.sha256).hexdigest()[:32]

    async def allow(self, address: str | None, redis: Any = None, prefix: str = "") -> bool:
        """Count one request from `address`; False once the window's limit is passed."""
        key = self._key(address or "unknown")
        if redis is not None:
            window = int(time.time() // self.window_s)
            name = f"{prefix}contact-rate:{key}:{window}"
            try:
                count = int(await redis.incr(name))
                if count == 1:
                    await redis.expire(name, self.window_s)
                return count <= self.limit
            except Exception as exc:
                if not unreachable(exc):
                    raise
                # Redis is down: count in this worker instead of refusing a visitor who asks
                # to be called back (the limit then holds per worker, not across them).
                log.warning("contact rate limit counted in this worker: Redis unreachable")
        now = time.monotonic()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= MAX_TRACKED_ADDRESSES:
                self._hits.clear()
            hits = self._hits[key] = deque()
        while hits and now - hits[0] > self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True


def limiter(app: web.Application) -> ContactRateLimiter:
    """Return the app's rate limiter (tests replace it to change the limit)."""
    found = app[appkeys.EXTRAS].get("contact_limiter")
    if not isinstance(found, ContactRateLimiter):
        found = ContactRateLimiter(app[appkeys.SETTINGS].secret_key)
        app[appkeys.EXTRAS]["contact_limiter"] = found
    return found


def _error(code: str, lang: str, status: int) -> web.Response:
    return error_response(code, text(code, lang), status, CORS_HEADERS)


def _string(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{name} must be a string")
    return value[:limit]


async def _site(app: web.Application, site_key: Any) -> CachedSite:
    if not isinstance(site_key, str) or not site_key or len(site_key) > 64:
        raise ApiError("invalid_request", "k (the site key) is required")
    async with app[appkeys.DATABASE].sessions() as db:
        return await app[appkeys.SITE_CACHE].get(db, site_key)


def contact_enabled(site: Site) -> bool:
    """Tell whether the site takes contact requests (`Site.settings["contact_widget"]`)."""
    return (site.settings or {}).get("contact_widget") is True


async def contact(request: web.Request) -> web.Response:
    """Store a callback request and tell the console; answer a localized confirmation (201)."""
    lang = visitor_language(request.headers.get("Accept-Language"))
    try:
        body = await read_json(request, MAX_BODY_BYTES)
        if not isinstance(body, dict):
            raise ApiError("invalid_request", "a JSON object is expected")
        lang = visitor_language(_string(body, "lang", 35), lang)
        return await _contact(request, body, lang)
    except ApiError as exc:
        status = exc.status
        if exc.code in TEXTS:
            return _error(exc.code, lang, status)
        return error_response(exc.code, exc.message, status, CORS_HEADERS)


async def _contact(request: web.Request, body: dict[str, Any], lang: str) -> web.Response:
    app = request.app
    settings = app[appkeys.SETTINGS]
    cached = await _site(app, body.get("k"))
    site = cached.site
    if not contact_enabled(site):
        return _error("contact_disabled", lang, 403)
    phone = _string(body, "phone", 64)
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ApiError("invalid_message", "message must be a string")
    session_id = _string(body, "s", 64)
    # Validated before the limit counts it: a visitor who mistyped their number retries freely.
    check_contact_request(site, phone or "", message)
    address = client_ip(request, settings.trusted_proxies)
    if not await limiter(app).allow(address, app[appkeys.REDIS], settings.redis_prefix):
        return _error("rate_limited", lang, 429)
    now = app[appkeys.CLOCK].now()
    async with app[appkeys.DATABASE].begin() as db:
        created = await create_contact_request(
            db, site, session_id, phone or "", message, lang, now
        )
        summary = await describe_request(db, created)
    for listener in list(app[appkeys.EXTRAS].setdefault("contact_listeners", [])):
        try:
            await listener(app, site, summary)
        except Exception:
            # The request is stored and shows in the console's snapshot: never fail the visitor.
            log.exception("contact listener failed")
    if created.outside_hours:
        when = _when(site, now, lang)
        confirmation = text("closed_until", lang, when=when) if when else text("closed", lang)
    else:
        confirmation = text("confirmed", lang)
    return web.json_response(
        {
            "id": created.id,
            "status": created.status,
            "outside_hours": created.outside_hours,
            "message": confirmation,
        },
        status=201,
        headers=CORS_HEADERS,
    )


async def contact_status(request: web.Request) -> web.Response:
    """Tell the widget whether advisors are on duty now, with a sentence when they are not."""
    app = request.app
    lang = visitor_language(request.query.get("lang"))
    try:
        cached = await _site(app, request.query.get("k"))
    except ApiError as exc:
        return error_response(exc.code, exc.message, exc.status, CORS_HEADERS)
    site = cached.site
    now = app[appkeys.CLOCK].now()
    is_open = is_open_now(site, now)
    notice: str | None = None
    if not is_open:
        when = _when(site, now, lang)
        notice = (
            text("closed_notice_until", lang, when=when) if when else text("closed_notice", lang)
        )
    # A minute of caching: the status turns at opening time, not to the second.
    headers = {**CORS_HEADERS, "Cache-Control": "public, max-age=60"}
    return web.json_response(
        {"enabled": contact_enabled(site), "open": is_open, "message": notice}, headers=headers
    )


async def contact_preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=CORS_HEADERS)


@functools.cache
def minified_widget() -> tuple[str, str]:
    """Return the widget script minified once per process, with its ETag."""
    body = str(rjsmin.jsmin((STATIC / "contact.js").read_text(encoding="utf-8")))
    return body, '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'


async def widget_script(request: web.Request) -> web.Response:
    """Serve the contact widget: cacheable, cross-origin."""
    text, etag = minified_widget()
    # Sent gzipped where the browser takes it (11 KB → about 4), like ct.js: it loads on every
    # page of a site with the widget. One ETag per representation.
    compress = accepts_gzip(request)
    if compress:
        etag = etag[:-1] + '-gz"'
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE}",
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    body = text.encode("utf-8")
    if compress:
        headers["Content-Encoding"] = "gzip"
        body = gzipped(body)
    return web.Response(
        body=body, content_type="application/javascript", charset="utf-8", headers=headers
    )


def setup(app: web.Application) -> None:
    """Add the contact endpoint, its status, the widget script and the listener list."""
    app[appkeys.EXTRAS].setdefault("contact_listeners", [])
    app.router.add_post("/contact", contact)
    app.router.add_route("OPTIONS", "/contact", contact_preflight)
    app.router.add_get("/contact/status", contact_status)
    app.router.add_get("/contact.js", widget_script)
