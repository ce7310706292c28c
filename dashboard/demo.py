"""The embedded demo: a merchant shop carrying the snippet, and a page showing what was recorded."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tracker import appkeys
from tracker.clock import Clock
from tracker.models import Call, Cart, Pageview, Site, TrackedSession
from tracker.phones import phone_forms
from tracker.sites import SiteSpec, create_site, get_or_create_account, snippet_for

DEMO_ACCOUNT = "demo"
DEMO_SITE_NAME = "Vélos Martin (demo)"
DEMO_PHONE = "+33 1 23 45 67 89"

_PRODUCTS = [
    ("VM-CITY-01", "Vélo de ville Martin Classic", "649.00"),
    ("VM-GRAV-02", "Gravel Martin Aventure", "1290.00"),
    ("VM-KIDS-03", "Draisienne Petit Martin", "119.00"),
]

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#12355b;color:#fff;padding:14px 24px;display:flex;flex-wrap:wrap;gap:8px 24px;
align-items:center}
header a{color:#fff;text-decoration:none;margin-right:14px}
header .phone{margin-left:auto;font-weight:600;white-space:nowrap}
main{max-width:920px;margin:24px auto;padding:0 16px}
.card{background:#fff;border-radius:8px;padding:16px 20px;margin:12px 0;box-shadow:0 1px 3px #0002}
button{background:#12355b;color:#fff;border:0;border-radius:6px;padding:8px 14px;cursor:pointer}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{padding:6px 8px;border-bottom:1px solid #e3e6ea;text-align:left;font-size:14px;vertical-align:top}
.muted{color:#667}
.banner{position:fixed;bottom:0;left:0;right:0;z-index:2147483647;background:#fff;border-top:2px solid #12355b;
padding:12px 24px;display:flex;gap:12px;align-items:center}
"""


async def ensure_demo_site(db: AsyncSession, clock: Clock) -> Site:
    """Create the demo account and site once; return the site."""
    account = await get_or_create_account(db, DEMO_ACCOUNT, clock)
    site = await db.scalar(
        select(Site).where(Site.account_id == account.id, Site.name == DEMO_SITE_NAME)
    )
    if site is None:
        site = await create_site(
            db,
            account,
            SiteSpec(
                name=DEMO_SITE_NAME, domain="demo.calltrack.test", phone=DEMO_PHONE, country="FR"
            ),
            clock,
        )
    return site


async def _demo_site(request: web.Request) -> Site:
    database, clock = request.app[appkeys.DATABASE], request.app[appkeys.CLOCK]
    try:
        async with database.begin() as db:
            return await ensure_demo_site(db, clock)
    except IntegrityError:
        # The first visitors arrived together and another request created the demo account
        # first: it is there now.
        async with database.begin() as db:
            return await ensure_demo_site(db, clock)


def _short(session_id: str | None) -> str:
    """A session id as both tables show it: its first 8 characters, the whole on hover."""
    if not session_id:
        return ""
    return (
        f'<code class=muted title="{html.escape(session_id)}">{html.escape(session_id[:8])}</code>'
    )


def _page(title: str, body: str, head: str = "") -> web.Response:
    document = (
        f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{head}</head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(text=document, content_type="text/html")


def _shop_header(display: str, e164: str) -> str:
    return (
        '<header><strong>Vélos Martin</strong><nav><a href="/demo/">Accueil</a>'
        '<a href="/demo/product/VM-GRAV-02">Gravel</a><a href="/demo/contact">Contact</a>'
        '<a href="/demo/activity">→ what Calltrack recorded</a></nav>'
        f'<a class="phone" href="tel:{e164}">{html.escape(display)}</a></header>'
    )


async def shop(request: web.Request) -> web.Response:
    """Serve the demo merchant page with the script tag, as a merchant would paste it."""
    site = await _demo_site(request)
    settings = request.app[appkeys.SETTINGS]
    forms = phone_forms("+33123456789")
    product = request.match_info.get("sku")
    items = "".join(
        f'<div class="card"><h3>{html.escape(name)}</h3><p>{price} €</p>'
        f'<button data-sku="{sku}" data-name="{html.escape(name)}" data-price="{price}">'
        "Ajouter au panier</button></div>"
        for sku, name, price in _PRODUCTS
        if product is None or sku == product
    )
    body = (
        _shop_header(forms.national, forms.e164) + "<main><h1>Vélos Martin — démo</h1>"
        f"<p>Appelez-nous au <strong>{forms.national}</strong> ou au {forms.international}.</p>"
        f'<div id="cart" class="card">Panier : <span id="cart-total">0.00</span> €</div>'
        f"{items}"
        '<p class="muted">This page is served by Calltrack as a stand-in for a merchant site. '
        "The two script tags in its &lt;head&gt; are exactly what <code>calltrack site create"
        "</code> prints.</p></main>"
        '<div class="banner" id="consent"><span>Ce site utilise un identifiant de visite '
        'pour vous rappeler.</span><button id="accept">Accepter</button>'
        '<button id="refuse">Refuser</button></div>'
        "<script>"
        "let cart=[];document.querySelectorAll('button[data-sku]').forEach(b=>b.onclick=()=>{"
        "cart.push({name:b.dataset.name,sku:b.dataset.sku,qty:1,price:+b.dataset.price});"
        "const total=cart.reduce((s,i)=>s+i.price*i.qty,0);"
        "document.getElementById('cart-total').textContent=total.toFixed(2);"
        "calltrack('cart',{items:cart,total,currency:'EUR'});});"
        # A stand-in consent tool: it remembers an acceptance (storage is allowed then) and,
        # for this tab only, a refusal, so the banner does not come back on every page.
        "const hide=()=>document.getElementById('consent').remove();"
        "document.getElementById('accept').onclick=()=>{calltrack('consent',true);hide();"
        "try{localStorage.demo_consent='1'}catch(e){}};"
        "document.getElementById('refuse').onclick=()=>{calltrack('consent',false);hide();"
        "try{sessionStorage.demo_consent='0'}catch(e){}};"
        "try{if(localStorage.demo_consent){calltrack('consent',true);hide()}"
        "else if(sessionStorage.demo_consent)hide()}catch(e){}"
        "</script>"
    )
    # Each page has its own title, as a shop's do: the visit's path reads as pages, not as one.
    names = {sku: name for sku, name, _ in _PRODUCTS}
    if product is not None:
        title = f"{names.get(product, product)} — Vélos Martin"
    elif request.path.endswith("/contact"):
        title = "Contact — Vélos Martin"
    else:
        title = "Vélos Martin — démo"
    return _page(title, body, snippet_for(site.site_key, settings.public_url))


def _cell(value: Any) -> str:
    return html.escape("" if value is None else str(value))


async def activity(request: web.Request) -> web.Response:
    """Show the demo site's latest sessions: channel, pages, cart, location, device."""
    site = await _demo_site(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sessions = list(
            await db.scalars(
                select(TrackedSession)
                .where(TrackedSession.site_id == site.id)
                .order_by(TrackedSession.last_seen_at.desc())
                .limit(20)
            )
        )
        ids = [s.id for s in sessions]
        pages: dict[str, list[Pageview]] = {}
        for pageview in await db.scalars(
            select(Pageview).where(Pageview.session_id.in_(ids)).order_by(Pageview.viewed_at)
        ):
            pages.setdefault(pageview.session_id, []).append(pageview)
        carts = {
            c.session_id: c for c in await db.scalars(select(Cart).where(Cart.session_id.in_(ids)))
        }
        calls = list(
            await db.scalars(
                select(Call)
                .where(Call.site_id == site.id)
                .order_by(Call.started_at.desc())
                .limit(10)
            )
        )
    rows = []
    for s in sessions:
        path = " → ".join(_cell(p.title or p.url) for p in pages.get(s.id, []))
        cart = carts.get(s.id)
        cart_text = f"{cart.total} {cart.currency} ({cart.item_count} items)" if cart else ""
        rows.append(
            f"<tr><td>{_cell(s.started_at.strftime('%H:%M:%S'))}<br>{_short(s.id)}</td>"
            f"<td>{_cell(s.channel)}</td>"
            f"<td>{_cell(s.source)} / {_cell(s.medium)}<br><span class=muted>{_cell(s.campaign)}</span></td>"
            f"<td>{path}</td><td>{_cell(cart_text)}</td>"
            f"<td>{_cell(s.city)} {_cell(s.country)}</td><td>{_cell(s.browser)} · {_cell(s.os)} · "
            f"{_cell(s.device)}</td><td>{'yes' if s.consent else 'no'}</td></tr>"
        )
    table = (
        "<table><tr><th>Started (UTC)</th><th>Channel</th><th>Source / medium</th><th>Pages</th>"
        "<th>Cart</th><th>Location</th><th>Device</th><th>Consent</th></tr>"
        + ("".join(rows) or "<tr><td colspan=8 class=muted>No visit yet.</td></tr>")
        + "</table>"
    )
    call_rows = "".join(
        f"<tr><td>{_cell(c.started_at.strftime('%H:%M:%S'))}</td><td>{_cell(c.caller_e164)}</td>"
        f"<td>{_cell(c.tracking_e164)}</td><td>{_cell(c.status)}</td><td>{_cell(c.channel)}</td>"
        f"<td>{_cell(c.method)} ({c.confidence:.2f})</td><td>{_short(c.session_id)}</td></tr>"
        for c in calls
    )
    calls_table = (
        "<table><tr><th>Time (UTC)</th><th>Caller</th><th>Tracking number</th><th>Status</th>"
        "<th>Channel</th><th>Attribution</th><th>Session</th></tr>"
        + (
            call_rows
            or "<tr><td colspan=7 class=muted>No call yet: "
            "<code>calltrack simulate call --to NUMBER --from +33612345678</code></td></tr>"
        )
        + "</table>"
    )
    body = (
        '<header><strong>Calltrack demo</strong><nav><a href="/demo/">Open the demo shop</a>'
        '<a href="/demo/?utm_source=google&utm_medium=cpc&utm_campaign=velos-ete">'
        "… as a Google Ads click</a></nav></header>"
        f"<main><h1>Recorded sessions</h1><p class=muted>Site key <code>{_cell(site.site_key)}</code>. "
        "This page refreshes every 3 seconds.</p>"
        f"<div class=card>{table}</div><h2>Calls</h2><div class=card>{calls_table}</div></main>"
    )
    return _page("Calltrack — recorded sessions", body, '<meta http-equiv="refresh" content="3">')


async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo/activity")


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/demo", shop)
    app.router.add_get("/demo/", shop)
    app.router.add_get("/demo/contact", shop)
    app.router.add_get("/demo/product/{sku}", shop)
    app.router.add_get("/demo/activity", activity)
