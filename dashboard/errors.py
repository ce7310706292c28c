"""Error pages for people: the JSON error envelope rendered as HTML for browser navigations.

`tracker.web.error_middleware` turns every error into `{"error": {"code", "message"}}`, which
scripts, the snippet, carriers and the REST API read. A person who follows a stale link or
submits a form in the dashboard navigates with `Accept: text/html`; they get the same status,
code and sentence on a page with the product's layout and a way back, instead of raw JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from dashboard.auth import AUTH_KEY, Auth
from dashboard.i18n import pick_language, t
from dashboard.pages import escape, render_page
from tracker.web import Handler, close_if_body_broke

# Machine endpoints keep their JSON whatever the client accepts.
MACHINE_PREFIXES = ("/collect", "/contact", "/ct.js", "/api/", "/telephony/", "/healthz",
                    "/metrics", "/console/ws", "/static/")  # fmt: skip

# Statuses with a title of their own (`error.title.<status>` in dashboard/i18n.py); others
# get `error.title.other`.
TITLED = frozenset({400, 401, 403, 404, 405, 409, 413, 429, 503})


def wants_page(request: web.Request) -> bool:
    """A person's browser navigating (not a script, a carrier or an API client)."""
    return "text/html" in request.headers.get("Accept", "") and not request.path.startswith(
        MACHINE_PREFIXES
    )


def error_page(
    request: web.Request, status: int, code: str, message: str, headers: Mapping[str, str]
) -> web.Response:
    """The error as a page; `headers` of the JSON answer that still apply are kept."""
    # The signed-in user's language when the handler got that far (no database read here:
    # the error may be the database being away), else the browser's.
    auth = request.get(AUTH_KEY)
    lang = pick_language(request, auth.user.language if isinstance(auth, Auth) else None)
    title = t(f"error.title.{status if status in TITLED else 'other'}", lang)
    message = message[:1].upper() + message[1:]
    retry = status == 503 and request.method in ("GET", "HEAD")
    body = (
        '<main class="login error-page">'
        f"<h1>{escape(title)}</h1><p>{escape(message)}</p>"
        + (f'<p class="muted">{escape(t("error.retry", lang))}</p>' if retry else "")
        + f'<p class="muted">{escape(t("error.code", lang))} <code>{escape(code)}</code>'
        f" ({status})</p>"
        f'<p><a href="/">{escape(t("error.back", lang))}</a></p></main>'
    )
    head = '<meta http-equiv="refresh" content="5">' if retry else ""
    response = render_page(title, body, lang=lang, head=head, status=status)
    for name in ("Retry-After", "Allow"):
        if name in headers:
            response.headers[name] = headers[name]
    return response


@web.middleware
async def html_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside `error_middleware`: re-render its JSON errors for browser navigations; and, the
    outermost, close the connection after any answer to a body that broke."""
    try:
        response = await _page_for_errors(request, handler)
    except web.HTTPException as exc:  # redirects and the like, answered by aiohttp
        close_if_body_broke(request, exc)
        raise
    close_if_body_broke(request, response)
    return response


async def _page_for_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if (
        response.status < 400
        or not isinstance(response, web.Response)
        or response.content_type != "application/json"
        or not wants_page(request)
    ):
        return response
    try:
        error = json.loads(response.body)["error"]  # type: ignore[arg-type]
        code, message = str(error["code"]), str(error["message"])
    except (TypeError, ValueError, KeyError):
        return response
    return error_page(request, response.status, code, message, response.headers)
