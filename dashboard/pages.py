"""Server-rendered page layout with a strict Content-Security-Policy."""

from __future__ import annotations

import html
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from dashboard.auth import Auth

# Inline scripts run only with this response's nonce; visitor-supplied text can never become
# script, even if a template forgot to escape it (defence in depth for the console).
CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; media-src 'self' https:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


def escape(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def render_page(
    title: str,
    body: str,
    *,
    lang: str = "en",
    nonce: str | None = None,
    head: str = "",
    status: int = 200,
) -> web.Response:
    """Wrap `body` (already escaped HTML) in the common layout and security headers."""
    nonce = nonce or new_nonce()
    document = (
        f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        f"{head}</head><body>{body}</body></html>"
    )
    response = web.Response(text=document, content_type="text/html", status=status)
    response.headers["Content-Security-Policy"] = CSP.format(nonce=nonce)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


# (path, English label, French label, roles allowed) of the top navigation.
NAV_ITEMS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("/console", "Console", "Console", ("advisor", "admin")),
    ("/dashboard", "Reports", "Rapports", ("marketer", "admin")),
    ("/dashboard/privacy", "Privacy", "Confidentialité", ("admin", "dpo")),
    ("/dashboard/settings", "Settings", "Réglages", ("admin",)),
    ("/dashboard/users", "Users", "Utilisateurs", ("admin",)),
]


def nav_for(auth: Auth, lang: str, active: str) -> str:
    """Render `top_nav` for the signed-in user of `auth`."""
    return top_nav(
        role=auth.user.role, email=auth.user.email, csrf=auth.csrf, lang=lang, active=active
    )


def top_nav(*, role: str, email: str, csrf: str, lang: str, active: str) -> str:
    """Render the header shared by every signed-in page (links filtered by role)."""
    links = "".join(
        f'<a href="{path}"{" aria-current=page" if path == active else ""}>'
        f"{escape(fr if lang == 'fr' else en)}</a>"
        for path, en, fr, roles in NAV_ITEMS
        if role in roles
    )
    sign_out = "Se déconnecter" if lang == "fr" else "Sign out"
    profile = "Votre profil" if lang == "fr" else "Your profile"
    current = " aria-current=page" if active == "/profile" else ""
    return (
        '<header class="top"><strong>Calltrack</strong><nav>'
        f"{links}</nav><span class=spacer></span>"
        f'<a class="profile" href="/profile" title="{profile}"{current}>{escape(email)}</a>'
        f'<form method="post" action="/logout"><input type="hidden" name="csrf" '
        f'value="{escape(csrf)}"><button type="submit">{escape(sign_out)}</button></form></header>'
    )
