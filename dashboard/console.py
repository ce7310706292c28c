"""The advisor console page: a server-rendered shell that console.js fills from the hub.

The page carries no visitor data: everything live arrives on `/console/ws` and is written into
the page with DOM text APIs (docs/hub-protocol.md). The bootstrap (CSRF token, user, language,
the account's sites, the UI texts) travels as inert JSON in a nonce'd
`<script type="application/json">`, read by `/static/console.js`.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import select

from dashboard import console_commands
from dashboard.auth import require
from dashboard.i18n import TEXTS, pick_language, t
from dashboard.pages import NAV_ITEMS, escape, new_nonce, render_page
from tracker import appkeys
from tracker.models import Site

CONSOLE_ROLES = ("advisor", "admin")
TEXT_PREFIX = "console."


def _json_for_script(data: Any) -> str:
    # Inside <script> the HTML parser only looks for "</script"; escaping <, > and & keeps any
    # text (a site name, an email) from ending the element, and U+2028/9 from breaking parsers.
    return (
        json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def console_texts(lang: str) -> dict[str, str]:
    """Return the console's UI texts in `lang`, keyed without the prefix."""
    return {key[len(TEXT_PREFIX) :]: t(key, lang) for key in TEXTS if key.startswith(TEXT_PREFIX)}


def _shell(lang: str, email: str, role: str, csrf: str, sites: list[Site]) -> str:
    # The same destinations as the other pages' header (reports, privacy, settings by role).
    others = "".join(
        f'<a href="{path}">{escape(fr if lang == "fr" else en)}</a>'
        for path, en, fr, roles in NAV_ITEMS
        if path != "/console" and role in roles
    )
    options = "".join(
        f'<option value="{escape(site.site_key)}">{escape(site.name)}</option>' for site in sites
    )
    other = "en" if lang == "fr" else "fr"
    return (
        f'<a class="skip" href="#queue">{escape(t("console.skip", lang))}</a>'
        '<header class="top console-top">'
        '<a class="brand" href="/console">Calltrack</a>'
        '<nav aria-label="Calltrack">'
        f'<a href="/console" aria-current="page">{escape(t("console", lang))}</a>{others}</nav>'
        '<label class="site-filter"><span class="sr-only">'
        f'{escape(t("console.sites", lang))}</span><select id="site-filter">'
        f'<option value="">{escape(t("console.all_sites", lang))}</option>{options}</select></label>'
        '<span class="spacer"></span>'
        '<span id="conn" class="conn" role="status" data-state="connecting">'
        f"{escape(t('console.conn_connecting', lang))}</span>"
        '<button type="button" id="notify" class="ghost" hidden>'
        f"{escape(t('console.notify_enable', lang))}</button>"
        f'<a class="lang" href="?lang={other}" hreflang="{other}" lang="{other}">'
        f"{other.upper()}</a>"
        f'<a class="who" href="/profile" title="{escape(t("profile.title", lang))}">{escape(email)}</a>'
        f'<form method="post" action="/logout"><input type="hidden" name="csrf" '
        f'value="{escape(csrf)}"><button type="submit" class="ghost">'
        f"{escape(t('sign_out', lang))}</button></form>"
        "</header>"
        '<div id="pops" class="pops" role="region" aria-live="assertive" '
        f'aria-label="{escape(t("console.incoming", lang))}"></div>'
        '<main class="console" id="main">'
        f'<noscript><p class="error">{escape(t("console.noscript", lang))}</p></noscript>'
        '<div class="col-main">'
        '<section class="card" id="queue" aria-labelledby="queue-title" tabindex="-1">'
        f'<h2 id="queue-title">{escape(t("console.requests", lang))} '
        '<span class="count" id="queue-count">0</span></h2>'
        '<div id="queue-body"></div></section>'
        '<section class="card" aria-labelledby="visitors-title">'
        f'<h2 id="visitors-title">{escape(t("console.visitors", lang))} '
        '<span class="count" id="visitors-count">0</span></h2>'
        '<div id="visitors-body" class="table-wrap"></div></section>'
        "</div>"
        '<aside class="card panel" id="panel" aria-labelledby="panel-title">'
        '<div class="panel-head">'
        f'<h2 id="panel-title" tabindex="-1">{escape(t("console.visitor", lang))}</h2>'
        '<button type="button" id="panel-close" class="small ghost-dark" hidden>'
        f"{escape(t('console.close', lang))}</button></div>"
        f'<div id="panel-body"><p class="muted">{escape(t("console.pick_visitor", lang))}</p></div>'
        "</aside>"
        "</main>"
        '<div id="toast" class="toast" role="alert" hidden></div>'
    )


async def console_page(request: web.Request) -> web.Response:
    """Serve the console shell to advisors and administrators."""
    auth = await require(request, *CONSOLE_ROLES)
    user = auth.user
    lang = pick_language(request, user.language)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = list(
            await db.scalars(
                select(Site).where(Site.account_id == user.account_id).order_by(Site.name)
            )
        )
    boot = {
        "csrf": auth.csrf,
        "lang": lang,
        "user": {"id": user.id, "email": user.email, "role": user.role},
        "sites": [
            {"key": site.site_key, "name": site.name, "domain": site.domain} for site in sites
        ],
        "t": console_texts(lang),
    }
    nonce = new_nonce()
    head = (
        '<link rel="stylesheet" href="/static/console.css">'
        f'<script type="application/json" id="boot" nonce="{nonce}">{_json_for_script(boot)}'
        "</script>"
        f'<script src="/static/console.js" defer nonce="{nonce}"></script>'
    )
    body = _shell(lang, user.email, user.role, auth.csrf, sites)
    return render_page(
        f"{t('console.title', lang)} — Calltrack", body, lang=lang, nonce=nonce, head=head
    )


def setup(app: web.Application) -> None:
    """Add the console page and its hub commands."""
    app.router.add_get("/console", console_page)
    console_commands.setup(app)
