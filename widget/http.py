"""Serve the snippet with the site's configuration in front of it."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import rjsmin
from aiohttp import web

from tracker import appkeys
from tracker.errors import NotFound
from tracker.phones import phone_forms

STATIC = Path(__file__).with_name("static")
# Five minutes: a settings change (new business number, consent mode) reaches pages quickly
# while a visitor browsing a site fetches the script once.
MAX_AGE = 300


@functools.cache
def minified_snippet() -> str:
    """Return the snippet minified once per process."""
    return str(rjsmin.jsmin((STATIC / "calltrack.js").read_text(encoding="utf-8")))


def snippet_config(
    site_key: str,
    public_url: str,
    consent_mode: str | None,
    business_e164: tuple[str, ...],
    contact_widget: bool = False,
) -> dict[str, Any]:
    config: dict[str, Any] = {"k": site_key, "u": f"{public_url}/collect"}
    if contact_widget:
        config["c"] = f"{public_url}/contact.js"
    if consent_mode is not None:
        config["cm"] = consent_mode
        config["b"] = [phone_forms(e164).as_snippet(with_display=True) for e164 in business_e164]
    return config


# Appended only for sites with the contact widget: it loads contact.js after the snippet has
# defined `calltrack`, outside the snippet's 3,000-byte budget (the widget is lazy by design).
CONTACT_LOADER = (
    ";(()=>{const e=document.createElement('script');e.async=!0;"
    "e.src=window.__calltrack_cfg.c;document.head.append(e)})();"
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
    if site_key:
        try:
            async with app[appkeys.DATABASE].sessions() as db:
                cached = await app[appkeys.SITE_CACHE].get(db, site_key)
            consent_mode = cached.site.consent_mode
            business = cached.business_e164
            contact_widget = (cached.site.settings or {}).get("contact_widget") is True
        except NotFound:
            pass
    config = snippet_config(site_key, settings.public_url, consent_mode, business, contact_widget)
    body = render_snippet(config)
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    headers = {
        "Cache-Control": f"public, max-age={MAX_AGE}",
        "ETag": etag,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        text=body, content_type="application/javascript", charset="utf-8", headers=headers
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/ct.js", snippet)
