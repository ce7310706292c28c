"""Serve the snippet with the site's configuration in front of it."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from tracker import appkeys
from tracker.errors import NotFound
from tracker.phones import phone_forms
from tracker.web import unreachable

STATIC = Path(__file__).with_name("static")
# Five minutes: a settings change (new business number, consent mode) reaches pages quickly
# while a visitor browsing a site fetches the script once.
MAX_AGE = 300
# After that, for a day, the browser runs the copy it has at once and fetches a fresh one in
# the background for the next page: the printed tag holds the first paint for ct.js
# (tracker.sites.snippet_for), and a cached copy costs that paint nothing. A settings change
# then reaches a returning visitor one page later (the numbers themselves come from collect).
STALE_WHILE_REVALIDATE = 86400
# Served without its configuration while the database is away: asked for again this soon.
DEGRADED_MAX_AGE = 30
# A key no site has: asked for again this soon (the site may be created in a moment).
UNKNOWN_MAX_AGE = 60

log = logging.getLogger("calltrack.snippet")


@functools.cache
def minified_snippet() -> str:
    """Return the minified snippet (built by `make snippet`, committed), read once per process."""
    return (STATIC / "calltrack.min.js").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=256)
def gzipped(body: bytes) -> bytes:
    # One compression per distinct configuration, not per request.
    return gzip.compress(body, compresslevel=9, mtime=0)


def accepts_gzip(request: web.Request) -> bool:
    for part in request.headers.get("Accept-Encoding", "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def snippet_config(
    site_key: str,
    public_url: str | None,
    consent_mode: str | None,
    business_e164: tuple[str, ...],
    contact_widget: bool = False,
) -> dict[str, Any]:
    """The configuration served in front of the snippet; no `public_url`: no collect URL, and
    the snippet then sends nothing (a key no site has)."""
    config: dict[str, Any] = {"k": site_key}
    if public_url is not None:
        config["u"] = f"{public_url}/collect"
    if contact_widget:
        config["c"] = f"{public_url}/contact.js"
    if consent_mode is not None:
        # Consent required is the snippet's default: `cm` is sent only for `not_required`.
        if consent_mode != "required":
            config["cm"] = consent_mode
        config["b"] = [phone_forms(e164).as_snippet(with_display=True) for e164 in business_e164]
    return config


# Appended only for sites with the contact widget: it loads contact.js after the snippet has
# defined `calltrack`, outside the snippet's 3,000-byte budget (the widget is lazy by design).
# A script element created by a script loads asynchronously without `async`.
CONTACT_LOADER = (
    ";document.head.append(Object.assign(document.createElement('script'),"
    "{src:window.__calltrack_cfg.c}));"
)


def render_snippet(config: dict[str, Any]) -> str:
    # `</` would end an inline <script> if a merchant inlines the file; keep JSON inert.
    payload = json.dumps(config, separators=(",", ":")).replace("</", "<\\/")
    loader = CONTACT_LOADER if config.get("c") else ""
    return f"window.__calltrack_cfg={payload};\n{minified_snippet()}{loader}"


async def snippet(request: web.Request) -> web.Response:
    """Serve `ct.js?k=KEY`: cacheable, cross-origin, never an error page."""
    app = request.app
    settings = app[appkeys.SETTINGS]
    site_key = request.query.get("k", "")[:64]
    consent_mode: str | None = None
    business: tuple[str, ...] = ()
    contact_widget = False
    # No such site (no key, a typo, a deleted site): the snippet gets no collect URL, so it
    # sends nothing, and the merchant's console shows no failed request per page. Asked for
    # again soon, for a site being set up.
    known = False
    cache_control = f"public, max-age={UNKNOWN_MAX_AGE}"
    if site_key:
        try:
            async with app[appkeys.DATABASE].sessions() as db:
                cached = await app[appkeys.SITE_CACHE].get(db, site_key)
            consent_mode = cached.site.consent_mode
            business = cached.business_e164
            contact_widget = (cached.site.settings or {}).get("contact_widget") is True
            known = True
            cache_control = (
                f"public, max-age={MAX_AGE}, stale-while-revalidate={STALE_WHILE_REVALIDATE}"
            )
        except NotFound:
            pass
        except Exception as exc:
            if not unreachable(exc):
                raise
            # The database is away and this worker never saw the site: the tracker still runs,
            # with the safe defaults (consent required, no number to swap), and the browser
            # asks again soon for the real configuration.
            log.warning("snippet of %s served without its configuration: %r", site_key, exc)
            known = True
            cache_control = f"public, max-age={DEGRADED_MAX_AGE}"
    public_url = settings.public_url if known else None
    config = snippet_config(site_key, public_url, consent_mode, business, contact_widget)
    body = render_snippet(config).encode("utf-8")
    compress = accepts_gzip(request)
    # One ETag per representation (RFC 9110 8.8.3): the gzipped body is another byte string.
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + ('-gz"' if compress else '"')
    headers = {
        "Cache-Control": cache_control,
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if etag in (tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")):
        return web.Response(status=304, headers=headers)
    if compress:
        # Sent compressed (about 3 KB instead of 6): most merchants put no proxy in front
        # that would compress it for us.
        headers["Content-Encoding"] = "gzip"
        body = gzipped(body)
    return web.Response(
        body=body, content_type="application/javascript", charset="utf-8", headers=headers
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/ct.js", snippet)
