"""The privacy pages (admin and DPO): find a person, export, rectify, erase, restrict, exclude,
retention, audit log, records of processing and breach report.

Handlers are thin: they parse the form, call one service of `tracker.privacy` and render. Every
handler that shows or changes personal data writes exactly one audit entry, in the same
transaction as the work, so an action and its trace commit or roll back together. People are
named in audit entries by keyed hash, never by number (see tracker.privacy.hashing).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.auth import Auth, check_csrf, require
from dashboard.i18n import TEXTS, pick_language, t
from dashboard.pages import escape, nav_for, render_page
from dashboard.reports import rollup
from tracker import appkeys
from tracker.audit import audit
from tracker.errors import ApiError
from tracker.models import AuditEntry, ExportRecord, PurgeCursor, Site
from tracker.phones import phone_forms
from tracker.privacy import breach, register, retention
from tracker.privacy.erase import PoolReleaser, erase_person, tell_consoles
from tracker.privacy.exclusion import (
    ExclusionCache,
    add_exclusion,
    list_exclusions,
    remove_exclusion,
)
from tracker.privacy.export import DEFAULT_EXPORT_DIR, export_path, export_person
from tracker.privacy.find import Person, find_person, parse_subject, scope_for
from tracker.privacy.hashing import subject_ref
from tracker.privacy.rectify import RECTIFIABLE, rectify
from tracker.privacy.restrict import lift_restriction, restrict_person
from tracker.web import client_address, parse_id, read_form

log = logging.getLogger("calltrack.privacy")
PRIVACY_ROLES = ("admin", "dpo")
BASE = "/dashboard/privacy"
# The first purge waits for the server to settle, then runs every few hours: retention is
# counted in months, and a closed account must be gone within 90 days.
FIRST_PURGE_DELAY = dt.timedelta(minutes=10)
PURGE_INTERVAL = dt.timedelta(hours=6)
MAX_AUDIT_ROWS = 200
MAX_AUDIT_EXPORT = 100_000
SHOWN_PAGEVIEWS = 100

PRIVACY_TEXTS: dict[str, dict[str, str]] = {
    "privacy.title": {"en": "Privacy", "fr": "Confidentialité"},
    "privacy.find": {"en": "Find a person", "fr": "Rechercher une personne"},
    "privacy.exclusions": {"en": "Exclusion list", "fr": "Liste d'exclusion"},
    "privacy.retention": {"en": "Retention", "fr": "Conservation"},
    "privacy.audit": {"en": "Audit log", "fr": "Journal d'audit"},
    "privacy.register": {"en": "Records of processing", "fr": "Registre des traitements"},
    "privacy.breach": {"en": "Breach report", "fr": "Rapport de violation"},
    "privacy.intro": {
        "en": "Answer a data-subject request: search by phone number (any written form), "
        "visitor id, visit id or call, then export, correct, restrict or erase what Calltrack "
        "holds. Every use of these tools is recorded in the audit log.",
        "fr": "Répondez à une demande d'exercice de droits : recherchez par numéro de téléphone "
        "(quelle que soit son écriture), identifiant visiteur, visite ou appel, puis exportez, "
        "corrigez, limitez ou effacez ce que Calltrack conserve. Chaque utilisation de ces "
        "outils est consignée dans le journal d'audit.",
    },
    "privacy.kind": {"en": "Search by", "fr": "Rechercher par"},
    "privacy.kind.phone": {"en": "Phone number", "fr": "Numéro de téléphone"},
    "privacy.kind.visitor": {"en": "Visitor id", "fr": "Identifiant visiteur"},
    "privacy.kind.session": {"en": "Visit (session) id", "fr": "Identifiant de visite"},
    "privacy.kind.call": {"en": "Call", "fr": "Appel"},
    "privacy.value": {"en": "Value", "fr": "Valeur"},
    "privacy.site": {"en": "Site", "fr": "Site"},
    "privacy.all_sites": {"en": "All sites", "fr": "Tous les sites"},
    "privacy.search": {"en": "Search", "fr": "Rechercher"},
    "privacy.nothing": {
        "en": "Calltrack holds nothing about this person.",
        "fr": "Calltrack ne conserve rien sur cette personne.",
    },
    "privacy.traces": {
        "en": "{n} audit entries name this identifier (earlier searches of the privacy tools).",
        "fr": "{n} entrées d'audit citent cet identifiant (recherches antérieures).",
    },
    "privacy.person": {"en": "Person", "fr": "Personne"},
    "privacy.found_by": {"en": "Found by", "fr": "Trouvée par"},
    "privacy.phones": {"en": "Phone numbers", "fr": "Numéros"},
    "privacy.visitors": {"en": "Visitor ids", "fr": "Identifiants visiteur"},
    "privacy.restricted": {"en": "Restricted", "fr": "Limitée"},
    "privacy.excluded": {"en": "Excluded", "fr": "Exclue"},
    "privacy.capped": {
        "en": "Many records are linked: the search stopped growing. Narrow it to one site.",
        "fr": "Beaucoup d'enregistrements sont liés : la recherche s'est arrêtée. "
        "Limitez-la à un site.",
    },
    "privacy.records": {"en": "Records by table", "fr": "Enregistrements par table"},
    "privacy.table": {"en": "Table", "fr": "Table"},
    "privacy.count": {"en": "Count", "fr": "Nombre"},
    "privacy.export": {"en": "Export (ZIP)", "fr": "Exporter (ZIP)"},
    "privacy.restrict": {"en": "Restrict", "fr": "Limiter"},
    "privacy.lift": {"en": "Lift restriction", "fr": "Lever la limitation"},
    "privacy.exclude_phone": {"en": "Exclude this number", "fr": "Exclure ce numéro"},
    "privacy.exclude_visitor": {"en": "Exclude this visitor", "fr": "Exclure ce visiteur"},
    "privacy.erase": {"en": "Erase…", "fr": "Effacer…"},
    "privacy.calls": {"en": "Calls", "fr": "Appels"},
    "privacy.sessions": {"en": "Visits", "fr": "Visites"},
    "privacy.pageviews": {"en": "Pages seen", "fr": "Pages vues"},
    "privacy.contact_requests": {"en": "Callback requests", "fr": "Demandes de rappel"},
    "privacy.leases": {"en": "Tracking numbers shown", "fr": "Numéros de suivi affichés"},
    "privacy.audit_entries": {"en": "Audit entries", "fr": "Entrées d'audit"},
    "privacy.prior_exports": {"en": "Exports produced", "fr": "Exports produits"},
    "privacy.when": {"en": "When", "fr": "Quand"},
    "privacy.caller": {"en": "Caller", "fr": "Appelant"},
    "privacy.channel": {"en": "Channel", "fr": "Canal"},
    "privacy.duration": {"en": "Duration", "fr": "Durée"},
    "privacy.outcome": {"en": "Outcome", "fr": "Issue"},
    "privacy.recording": {"en": "Recording", "fr": "Enregistrement"},
    "privacy.landing": {"en": "Landing page", "fr": "Page d'arrivée"},
    "privacy.pages": {"en": "Pages", "fr": "Pages"},
    "privacy.device": {"en": "Device", "fr": "Appareil"},
    "privacy.location": {"en": "Location", "fr": "Localisation"},
    "privacy.cart": {"en": "Cart", "fr": "Panier"},
    "privacy.phone": {"en": "Phone", "fr": "Téléphone"},
    "privacy.message": {"en": "Message", "fr": "Message"},
    "privacy.status": {"en": "Status", "fr": "Statut"},
    "privacy.page": {"en": "Page", "fr": "Page"},
    "privacy.number": {"en": "Number", "fr": "Numéro"},
    "privacy.page_title": {"en": "Title", "fr": "Titre"},
    "privacy.from_time": {"en": "From", "fr": "Du"},
    "privacy.until_time": {"en": "Until", "fr": "Au"},
    "privacy.action": {"en": "Action", "fr": "Action"},
    "privacy.actor": {"en": "User", "fr": "Utilisateur"},
    "privacy.target": {"en": "Record", "fr": "Enregistrement"},
    "privacy.from_where": {"en": "From", "fr": "Depuis"},
    "privacy.detail": {"en": "Detail", "fr": "Détail"},
    "privacy.correct": {"en": "Correct", "fr": "Corriger"},
    "privacy.field": {"en": "Field", "fr": "Champ"},
    "privacy.new_value": {"en": "New value", "fr": "Nouvelle valeur"},
    "privacy.download": {"en": "Download", "fr": "Télécharger"},
    "privacy.rectified": {
        "en": "Corrected; the change is recorded in the audit log.",
        "fr": "Corrigé ; la modification est consignée dans le journal d'audit.",
    },
    "privacy.unchanged": {"en": "Nothing to change.", "fr": "Rien à modifier."},
    "privacy.restricted_done": {
        "en": "Restricted: the data is kept but left out of reports, exports and the console.",
        "fr": "Limitée : les données sont conservées mais exclues des rapports, exports et de "
        "la console.",
    },
    "privacy.lifted_done": {"en": "Restriction lifted.", "fr": "Limitation levée."},
    "privacy.excluded_done": {
        "en": "Excluded: this person will not be tracked again (calls still reach you).",
        "fr": "Exclue : cette personne ne sera plus suivie (ses appels vous parviennent toujours).",
    },
    "privacy.confirm_title": {"en": "Erase this person?", "fr": "Effacer cette personne ?"},
    "privacy.confirm_text": {
        "en": "This cannot be undone. Visits, pages, carts, callback requests and carrier "
        "records are deleted; calls are kept in reports without the caller; audit entries lose "
        "the identifiers; exports already produced are deleted.",
        "fr": "Action irréversible. Visites, pages, paniers, demandes de rappel et données de "
        "l'opérateur sont supprimés ; les appels restent comptés dans les rapports sans "
        "l'appelant ; les entrées d'audit perdent les identifiants ; les exports déjà produits "
        "sont supprimés.",
    },
    "privacy.drop_exclusion": {
        "en": "Also remove this person from the exclusion list (they may be tracked again)",
        "fr": "Retirer aussi cette personne de la liste d'exclusion (elle pourra être suivie à "
        "nouveau)",
    },
    "privacy.confirm_erase": {"en": "Erase permanently", "fr": "Effacer définitivement"},
    "privacy.cancel": {"en": "Cancel", "fr": "Annuler"},
    "privacy.erased": {"en": "Erased", "fr": "Effacée"},
    "privacy.erased_text": {
        "en": "Done. What was erased, table by table (reference {id}):",
        "fr": "Terminé. Ce qui a été effacé, table par table (référence {id}) :",
    },
    "privacy.what": {"en": "What", "fr": "Quoi"},
    "privacy.deleted": {"en": "deleted", "fr": "supprimés"},
    "privacy.anonymised": {"en": "anonymised", "fr": "anonymisés"},
    "privacy.unlinked": {"en": "unlinked", "fr": "déliés"},
    "privacy.scrubbed": {"en": "scrubbed", "fr": "expurgés"},
    "privacy.kept": {"en": "kept (keyed hash)", "fr": "conservés (empreinte)"},
    "privacy.released": {
        "en": "Tracking numbers released: {n}. Export files deleted: {files}.",
        "fr": "Numéros de suivi libérés : {n}. Fichiers d'export supprimés : {files}.",
    },
    "privacy.excl_intro": {
        "en": "Excluded people are never tracked: an excluded visitor's browsing is ignored; "
        "an excluded caller's calls are forwarded to you but not recorded, attributed or "
        "shown. Entries are keyed hashes, so the list cannot show who is on it: search a "
        "number to know whether it is excluded.",
        "fr": "Les personnes exclues ne sont jamais suivies : la navigation d'un visiteur exclu "
        "est ignorée ; les appels d'un appelant exclu vous sont transférés sans être "
        "enregistrés, attribués ni affichés. Les entrées sont des empreintes à clé : la liste "
        "ne peut pas montrer qui y figure ; recherchez un numéro pour le savoir.",
    },
    "privacy.add": {"en": "Add", "fr": "Ajouter"},
    "privacy.remove": {"en": "Remove", "fr": "Retirer"},
    "privacy.kind_col": {"en": "Kind", "fr": "Type"},
    "privacy.hash": {"en": "Keyed hash", "fr": "Empreinte"},
    "privacy.added_by": {"en": "Added by", "fr": "Ajoutée par"},
    "privacy.empty_list": {"en": "Nobody is excluded.", "fr": "Personne n'est exclu."},
    "privacy.ret_intro": {
        "en": "Data older than these periods is deleted by the scheduled purge (every 6 hours; "
        "also `calltrack privacy purge`). Defaults follow the CNIL's recommendations.",
        "fr": "Les données plus anciennes que ces durées sont supprimées par la purge planifiée "
        "(toutes les 6 heures ; aussi `calltrack privacy purge`). Les valeurs par défaut "
        "suivent les recommandations de la CNIL.",
    },
    "privacy.data_class": {"en": "Data", "fr": "Données"},
    "privacy.months": {"en": "Months", "fr": "Mois"},
    "privacy.default": {"en": "Default", "fr": "Défaut"},
    "privacy.basis": {"en": "Basis", "fr": "Fondement"},
    "privacy.last_purge": {"en": "Last purge", "fr": "Dernière purge"},
    "privacy.save": {"en": "Save", "fr": "Enregistrer"},
    "privacy.saved": {"en": "Saved.", "fr": "Enregistré."},
    "privacy.not_by_calltrack": {
        "en": "applied by your log rotation",
        "fr": "appliquée par votre rotation des journaux",
    },
    "privacy.running": {"en": "in progress", "fr": "en cours"},
    "privacy.never": {"en": "never", "fr": "jamais"},
    "privacy.rows_deleted": {"en": "{n} rows", "fr": "{n} lignes"},
    "privacy.audit_intro": {
        "en": "Every user action that reads or changes personal data. Entries cannot be edited "
        "or deleted from Calltrack (the retention purge removes them after the audit period).",
        "fr": "Chaque action d'un utilisateur qui lit ou modifie des données personnelles. Les "
        "entrées ne peuvent être ni modifiées ni supprimées depuis Calltrack (la purge les "
        "retire après la durée de conservation).",
    },
    "privacy.contains": {"en": "Contains", "fr": "Contient"},
    "privacy.since": {"en": "Since", "fr": "Depuis le"},
    "privacy.until": {"en": "Until", "fr": "Jusqu'au"},
    "privacy.filter": {"en": "Filter", "fr": "Filtrer"},
    "privacy.csv": {"en": "Export CSV", "fr": "Exporter en CSV"},
    "privacy.no_entries": {"en": "No entry.", "fr": "Aucune entrée."},
    "privacy.latest": {"en": "Latest {n} entries.", "fr": "{n} dernières entrées."},
    "privacy.language": {"en": "Language", "fr": "Langue"},
    "privacy.show": {"en": "Show", "fr": "Afficher"},
    "privacy.reg_yours": {"en": "What only you know", "fr": "Ce que vous seul savez"},
    "privacy.reg_yours_hint": {
        "en": "The record is generated from the site's configuration; these details come from "
        "you. An empty field shows as “to be completed”.",
        "fr": "Le registre est généré à partir de la configuration du site ; ces informations "
        "viennent de vous. Un champ vide apparaît « à compléter ».",
    },
    "privacy.reg_controller": {
        "en": "Controller (name, address)",
        "fr": "Responsable du traitement (nom, adresse)",
    },
    "privacy.reg_dpo": {
        "en": "Data protection officer (contact)",
        "fr": "Délégué à la protection des données (contact)",
    },
    "privacy.reg_hosting": {
        "en": "Hosting (provider, location)",
        "fr": "Hébergement (prestataire, lieu)",
    },
    "privacy.reg_transfers": {
        "en": "Transfers outside the EU/EEA, one per line (with their safeguard)",
        "fr": "Transferts hors UE/EEE, un par ligne (avec leur garantie)",
    },
    "privacy.markdown": {"en": "Markdown", "fr": "Markdown"},
    "privacy.html": {"en": "HTML (print to PDF)", "fr": "HTML (imprimer en PDF)"},
    "privacy.breach_intro": {
        "en": "Who accessed which records, and how many people, in a time window: what a "
        "notification needs (the controller has 72 hours; tell them at once).",
        "fr": "Qui a consulté quels enregistrements, et combien de personnes, sur une période : "
        "ce qu'une notification exige (le responsable dispose de 72 heures ; prévenez-le sans "
        "délai).",
    },
    "privacy.people": {
        "en": "People possibly concerned",
        "fr": "Personnes possiblement concernées",
    },
    "privacy.people_range": {
        "en": "at least {low}, at most {high}",
        "fr": "au moins {low}, au plus {high}",
    },
    "privacy.by_user": {"en": "By user", "fr": "Par utilisateur"},
    "privacy.entries": {"en": "Entries", "fr": "Entrées"},
    "privacy.addresses": {"en": "Addresses", "fr": "Adresses"},
    "privacy.sign_ins": {"en": "Sign-ins", "fr": "Connexions"},
    "privacy.actions": {"en": "Actions", "fr": "Actions"},
    "privacy.no_site": {
        "en": "This account has no site yet.",
        "fr": "Ce compte n'a pas encore de site.",
    },
    "privacy.error": {"en": "Error", "fr": "Erreur"},
}
TEXTS.update(PRIVACY_TEXTS)

PRIVACY_CSS = """<style>
.privacy h1{margin:4px 0 10px;font-size:22px;color:var(--brand)}
.privacy h2{font-size:17px;margin:0 0 8px}
.subnav{display:flex;flex-wrap:wrap;gap:4px;margin:0 0 16px;border-bottom:1px solid var(--line)}
.subnav a{padding:8px 12px;text-decoration:none;color:var(--muted);border-bottom:3px solid transparent}
.subnav a[aria-current=page]{color:var(--brand);border-color:var(--brand);font-weight:600}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-end}
.row label{margin:0;flex:1 1 160px}
.row button{flex:0 0 auto}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin-top:12px}
.actions form{margin:0}
button.danger{background:var(--warn)}
.notice{background:#e7f4ee;border-left:4px solid var(--accent);padding:10px 14px;margin-bottom:14px}
.alert{background:#fbeae3;border-left:4px solid var(--warn);padding:10px 14px;margin-bottom:14px}
dl.ids{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:8px 0}
dl.ids dt{color:var(--muted);font-size:13px}
dl.ids dd{margin:0;font-family:ui-monospace,monospace;font-size:13px;word-break:break-all}
.badge.warn{background:#fbeae3;color:var(--warn)}
.badge.ok{background:#e7f4ee;color:var(--accent)}
td.num,th.num{text-align:right}
td code,dd code{font-size:12px}
code.wrap,dd code{word-break:break-all}
.privacy td:first-child{white-space:nowrap}
dl.ids dd.text{font-family:inherit;font-size:14px}
form.inline{display:flex;gap:6px;align-items:center;margin:0}
form.inline select,form.inline input{width:auto;margin:0;padding:4px 6px;font-size:13px}
form.inline button{padding:4px 10px;font-size:13px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:14px}
.register h1{font-size:20px}.register h2{font-size:16px;color:var(--brand);margin-top:18px}
.register table th{text-transform:none;letter-spacing:0;font-size:13px;color:var(--ink)}
.register td:first-child{white-space:normal}
.register-form label{display:block;margin:10px 0 0}
.register-form input,.register-form textarea{display:block;width:100%;box-sizing:border-box;margin-top:4px}
.muted.small{font-size:13px}
</style>"""

SUBNAV = (
    (BASE, "privacy.find"),
    (f"{BASE}/exclusions", "privacy.exclusions"),
    (f"{BASE}/retention", "privacy.retention"),
    (f"{BASE}/audit", "privacy.audit"),
    (f"{BASE}/register", "privacy.register"),
    (f"{BASE}/breach", "privacy.breach"),
)


@dataclass
class Ctx:
    """One request's signed-in privacy user, language and clock."""

    request: web.Request
    auth: Auth
    lang: str
    now: dt.datetime
    ip_truncated: str | None

    @property
    def secret(self) -> str:
        return self.request.app[appkeys.SETTINGS].secret_key

    @property
    def account_id(self) -> int:
        return self.auth.user.account_id

    def tr(self, key: str, **values: Any) -> str:
        text = t(key, self.lang)
        return text.format(**values) if values else text


async def _ctx(request: web.Request) -> Ctx:
    auth = await require(request, *PRIVACY_ROLES)
    return Ctx(
        request=request,
        auth=auth,
        lang=pick_language(request, auth.user.language),
        now=request.app[appkeys.CLOCK].now(),
        ip_truncated=client_address(request),
    )


async def _form(ctx: Ctx) -> MultiDictProxy[str | bytes | Any]:
    form = await read_form(ctx.request)
    check_csrf(ctx.request, ctx.auth, str(form.get("csrf", "")) or None)
    return form


async def _audit(
    db: AsyncSession, ctx: Ctx, action: str, target: str | None = None, **detail: Any
) -> None:
    await audit(
        db,
        action=action,
        at=ctx.now,
        user=ctx.auth.user,
        target=target,
        ip_truncated=ctx.ip_truncated,
        **detail,
    )


def _page(ctx: Ctx, title: str, body: str, active: str, *, status: int = 200) -> web.Response:
    nav = nav_for(ctx.auth, ctx.lang, BASE)
    tabs = "".join(
        f'<a href="{path}"{" aria-current=page" if path == active else ""}>'
        f"{escape(ctx.tr(key))}</a>"
        for path, key in SUBNAV
    )
    return render_page(
        f"{title} — Calltrack",
        f'{nav}<main class="privacy"><nav class="subnav" aria-label="{escape(ctx.tr("privacy.title"))}">'
        f"{tabs}</nav>{body}</main>",
        lang=ctx.lang,
        head=PRIVACY_CSS,
        status=status,
    )


def _csrf(ctx: Ctx) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'


def _when(moment: dt.datetime | None) -> str:
    return "" if moment is None else escape(moment.strftime("%Y-%m-%d %H:%M"))


def _phone(e164: str | None) -> str:
    if not e164:
        return ""
    try:
        return escape(phone_forms(e164).international)
    except Exception:
        return escape(e164)


def _error_page(ctx: Ctx, exc: ApiError, active: str) -> web.Response:
    body = (
        f"<h1>{escape(ctx.tr('privacy.error'))}</h1>"
        f'<p class="alert" role="alert">{escape(exc.message)}</p>'
        # The code too, as on every error page (dashboard/errors.py).
        f'<p class="muted">{escape(ctx.tr("error.code"))} <code>{escape(exc.code)}</code></p>'
        f'<p><a href="{BASE}">{escape(ctx.tr("privacy.find"))}</a></p>'
    )
    return _page(ctx, ctx.tr("privacy.error"), body, active, status=exc.status)


async def _sites(db: AsyncSession, account_id: int) -> list[Site]:
    return list(
        await db.scalars(select(Site).where(Site.account_id == account_id).order_by(Site.name))
    )


def _site_options(sites: list[Site], selected: str | None, *, all_option: str | None) -> str:
    options = f'<option value="">{escape(all_option)}</option>' if all_option else ""
    for site in sites:
        chosen = " selected" if site.site_key == selected else ""
        options += (
            f'<option value="{escape(site.site_key)}"{chosen}>{escape(site.name)} '
            f"({escape(site.domain)})</option>"
        )
    return options


# ---------------------------------------------------------------------------------------------
# Find a person


def _search_form(
    ctx: Ctx, sites: list[Site], kind: str = "phone", q: str = "", site: str = ""
) -> str:
    kinds = "".join(
        f'<option value="{k}"{" selected" if k == kind else ""}>'
        f"{escape(ctx.tr('privacy.kind.' + k))}</option>"
        for k in ("phone", "visitor", "session", "call")
    )
    return (
        f'<form class="card" method="post" action="{BASE}/find">{_csrf(ctx)}<div class="row">'
        f'<label>{escape(ctx.tr("privacy.kind"))}<select name="kind">{kinds}</select></label>'
        f'<label style="flex:2 1 240px">{escape(ctx.tr("privacy.value"))}'
        f'<input name="q" required maxlength="64" value="{escape(q)}" autocomplete="off"></label>'
        f'<label>{escape(ctx.tr("privacy.site"))}<select name="site">'
        f"{_site_options(sites, site, all_option=ctx.tr('privacy.all_sites'))}</select></label>"
        f'<button type="submit">{escape(ctx.tr("privacy.search"))}</button></div></form>'
    )


async def home(request: web.Request) -> web.Response:
    """Show the search form (names no one: not audited)."""
    ctx = await _ctx(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await _sites(db, ctx.account_id)
    body = (
        f"<h1>{escape(ctx.tr('privacy.find'))}</h1>"
        f'<p class="muted">{escape(ctx.tr("privacy.intro"))}</p>{_search_form(ctx, sites)}'
    )
    return _page(ctx, ctx.tr("privacy.title"), body, BASE)


@dataclass(frozen=True)
class _Lookup:
    kind: str
    q: str
    site: str


def _lookup(form: MultiDictProxy[Any]) -> _Lookup:
    return _Lookup(
        kind=str(form.get("kind", "phone")),
        q=str(form.get("q", ""))[:64],
        site=str(form.get("site", ""))[:64],
    )


async def _find(db: AsyncSession, ctx: Ctx, lookup: _Lookup) -> Person:
    scope = await scope_for(db, ctx.account_id, lookup.site or None)
    query = parse_subject(lookup.kind, lookup.q, scope.default_country)
    return await find_person(db, scope, query, ctx.secret)


def _hidden_lookup(ctx: Ctx, lookup: _Lookup) -> str:
    return (
        _csrf(ctx)
        + f'<input type="hidden" name="kind" value="{escape(lookup.kind)}">'
        + f'<input type="hidden" name="q" value="{escape(lookup.q)}">'
        + f'<input type="hidden" name="site" value="{escape(lookup.site)}">'
    )


def _button_form(ctx: Ctx, lookup: _Lookup, action: str, label: str, *, extra: str = "",
                 css: str = "secondary") -> str:  # fmt: skip
    return (
        f'<form method="post" action="{BASE}/{action}">{_hidden_lookup(ctx, lookup)}{extra}'
        f'<button type="submit" class="{css}">{escape(label)}</button></form>'
    )


def _rectify_form(ctx: Ctx, lookup: _Lookup, table: str, record_id: object) -> str:
    options = "".join(
        f'<option value="{escape(name)}">{escape(name)}</option>' for name in RECTIFIABLE[table]
    )
    return (
        f'<form class="inline" method="post" action="{BASE}/rectify">{_hidden_lookup(ctx, lookup)}'
        f'<input type="hidden" name="table" value="{escape(table)}">'
        f'<input type="hidden" name="record" value="{escape(record_id)}">'
        f'<select name="field" aria-label="{escape(ctx.tr("privacy.field"))}">{options}</select>'
        f'<input name="value" required maxlength="200" aria-label="{escape(ctx.tr("privacy.new_value"))}" '
        f'placeholder="{escape(ctx.tr("privacy.new_value"))}">'
        f'<button type="submit" class="secondary">{escape(ctx.tr("privacy.correct"))}</button></form>'
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _person_view(
    ctx: Ctx, person: Person, lookup: _Lookup, sites: list[Site], notice: str = ""
) -> str:
    tr = ctx.tr
    out = [
        f"<h1>{escape(tr('privacy.find'))}</h1>",
        _search_form(ctx, sites, lookup.kind, lookup.q, lookup.site),
    ]
    if notice:
        out.append(f'<p class="notice" role="status">{escape(notice)}</p>')
    if not person.found and not person.exclusions and not person.restrictions:
        traces = (
            f'<br><span class="muted small">{escape(tr("privacy.traces", n=len(person.audit_entries)))}</span>'
            if person.audit_entries
            else ""
        )
        out.append(
            f'<p class="card" id="nothing-found">{escape(tr("privacy.nothing"))}{traces}</p>'
        )
        return "".join(out)
    badges = ""
    if person.restrictions:
        badges += f' <span class="badge warn">{escape(tr("privacy.restricted"))}</span>'
    if person.exclusions:
        badges += f' <span class="badge warn">{escape(tr("privacy.excluded"))}</span>'
    ids = [
        (tr("privacy.found_by"), escape(tr("privacy.kind." + person.query.kind))),
        (tr("privacy.phones"), ", ".join(_phone(p) for p in sorted(person.phones)) or "—"),
        (tr("privacy.visitors"), ", ".join(f"<code>{escape(v)}</code>" for v in sorted(person.visitor_ids)) or "—"),
    ]  # fmt: skip
    dl = "".join(
        f"<dt>{escape(k)}</dt><dd{' class=text' if i < 2 else ''}>{v}</dd>"
        for i, (k, v) in enumerate(ids)
    )
    buttons = [_button_form(ctx, lookup, "export", tr("privacy.export"), css="")]
    if person.restrictions:
        buttons.append(_button_form(ctx, lookup, "restrict", tr("privacy.lift"),
                                    extra='<input type="hidden" name="do" value="lift">'))  # fmt: skip
    else:
        buttons.append(_button_form(ctx, lookup, "restrict", tr("privacy.restrict"),
                                    extra='<input type="hidden" name="do" value="restrict">'))  # fmt: skip
    if person.phones:
        buttons.append(_button_form(ctx, lookup, "exclude", tr("privacy.exclude_phone"),
                                    extra='<input type="hidden" name="what" value="phone">'))  # fmt: skip
    if person.visitor_ids:
        buttons.append(_button_form(ctx, lookup, "exclude", tr("privacy.exclude_visitor"),
                                    extra='<input type="hidden" name="what" value="visitor">'))  # fmt: skip
    buttons.append(_button_form(ctx, lookup, "erase", tr("privacy.erase"), css="danger"))
    counts = "".join(
        f"<tr><td>{escape(table)}</td><td class=num>{count}</td></tr>"
        for table, count in person.counts().items()
        if count
    )
    out.append(
        f'<section class="card" id="person"><h2>{escape(tr("privacy.person"))}{badges}</h2>'
        f'<dl class="ids">{dl}</dl>'
        + (f'<p class="alert">{escape(tr("privacy.capped"))}</p>' if person.capped else "")
        + f'<div class="actions">{"".join(buttons)}</div></section>'
    )
    out.append(
        f'<div class="grid2"><section class="card"><h2>{escape(tr("privacy.records"))}</h2>'
        f"<table><thead><tr><th>{escape(tr('privacy.table'))}</th><th class=num>"
        f"{escape(tr('privacy.count'))}</th></tr></thead><tbody>{counts}</tbody></table></section>"
    )
    exports = [
        [_when(e.created_at), escape(e.created_by),
         f'<a href="{BASE}/exports/{e.id}">{escape(tr("privacy.download"))}</a>']
        for e in person.exports
    ]  # fmt: skip
    out.append(
        f'<section class="card"><h2>{escape(tr("privacy.prior_exports"))}</h2>'
        + (_table([tr("privacy.when"), tr("privacy.actor"), ""], exports) if exports else "—")
        + "</section></div>"
    )
    if person.calls:
        rows = [
            [
                _when(c.started_at),
                escape(c.direction),
                _phone(c.caller_e164),
                escape(c.channel or "—"),
                escape(f"{c.duration_s} s" if c.duration_s is not None else "—"),
                escape(c.outcome or c.status),
                escape(f"{c.recording_duration_s or 0} s" if c.recording_sid else "—"),
                _rectify_form(ctx, lookup, "calls", c.id),
            ]
            for c in person.calls
        ]
        headers = [tr("privacy.when"), "", tr("privacy.caller"), tr("privacy.channel"),
                   tr("privacy.duration"), tr("privacy.outcome"), tr("privacy.recording"),
                   tr("privacy.correct")]  # fmt: skip
        out.append(
            f'<section class="card" id="calls"><h2>{escape(tr("privacy.calls"))}</h2>{_table(headers, rows)}</section>'
        )
    if person.contact_requests:
        rows = [
            [_when(r.created_at), _phone(r.phone_e164), escape(r.message or ""),
             escape(r.status), _rectify_form(ctx, lookup, "contact_requests", r.id)]
            for r in person.contact_requests
        ]  # fmt: skip
        headers = [tr("privacy.when"), tr("privacy.phone"), tr("privacy.message"),
                   tr("privacy.status"), tr("privacy.correct")]  # fmt: skip
        out.append(
            f'<section class="card" id="contact-requests"><h2>{escape(tr("privacy.contact_requests"))}</h2>{_table(headers, rows)}</section>'
        )
    if person.sessions:
        carts = {c.session_id: c for c in person.carts}
        rows = []
        for s in person.sessions:
            cart = carts.get(s.id)
            place = ", ".join(p for p in (s.city, s.region, s.country) if p)
            rows.append([
                _when(s.started_at), escape(s.channel), f"<code class=wrap>{escape(s.landing_url[:80])}</code>",
                str(s.pageview_count), escape(" / ".join(p for p in (s.device, s.browser, s.os) if p)),
                escape(place or "—"),
                escape(f"{cart.total} {cart.currency or ''}" if cart and cart.total is not None else "—"),
                _rectify_form(ctx, lookup, "sessions", s.id),
            ])  # fmt: skip
        headers = [tr("privacy.when"), tr("privacy.channel"), tr("privacy.landing"),
                   tr("privacy.pages"), tr("privacy.device"), tr("privacy.location"),
                   tr("privacy.cart"), tr("privacy.correct")]  # fmt: skip
        out.append(
            f'<section class="card" id="sessions"><h2>{escape(tr("privacy.sessions"))}</h2>{_table(headers, rows)}</section>'
        )
    if person.pageviews:
        rows = [[_when(p.viewed_at), escape(p.title or ""), f"<code class=wrap>{escape(p.url[:100])}</code>"]
                for p in person.pageviews[:SHOWN_PAGEVIEWS]]  # fmt: skip
        out.append(
            f'<section class="card"><h2>{escape(tr("privacy.pageviews"))}</h2>{_table([tr("privacy.when"), tr("privacy.page_title"), tr("privacy.page")], rows)}</section>'
        )
    if person.leases:
        rows = [
            [_when(lease.started_at), _when(lease.ended_at or lease.hold_until),
             _phone(person.tracking_numbers.get(lease.tracking_number_id))]
            for lease in person.leases
        ]  # fmt: skip
        headers = [tr("privacy.from_time"), tr("privacy.until_time"), tr("privacy.number")]
        out.append(
            f'<section class="card"><h2>{escape(tr("privacy.leases"))}</h2>{_table(headers, rows)}</section>'
        )
    if person.audit_entries:
        rows = [[_when(a.at), escape(a.actor), f"<code>{escape(a.action)}</code>", escape(a.target or "")]
                for a in person.audit_entries]  # fmt: skip
        out.append(
            f'<section class="card"><h2>{escape(tr("privacy.audit_entries"))}</h2>{_table([tr("privacy.when"), tr("privacy.actor"), tr("privacy.action"), tr("privacy.target")], rows)}</section>'
        )
    return "".join(out)


@dataclass(frozen=True)
class _Done:
    """What a person action did: its audit action, a notice, the audited target and detail."""

    action: str
    notice: str
    target: str | None
    detail: dict[str, Any]


PersonWork = Callable[[AsyncSession, Ctx, Person, MultiDictProxy[Any]], Awaitable[_Done]]


async def _person_action(request: web.Request, work: PersonWork) -> web.Response:
    """Find the person named by the form, run `work`, audit it once, show the person again."""
    ctx = await _ctx(request)
    form = await _form(ctx)
    lookup = _lookup(form)
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            sites = await _sites(db, ctx.account_id)
            person = await _find(db, ctx, lookup)
            done = await work(db, ctx, person, form)
            await _audit(db, ctx, done.action, done.target, **done.detail)
            if done.notice:
                # Show the person as the change left them.
                await db.flush()
                person = await _find(db, ctx, lookup)
    except ApiError as exc:
        return _error_page(ctx, exc, BASE)
    body = _person_view(ctx, person, lookup, sites, done.notice)
    return _page(ctx, ctx.tr("privacy.find"), body, BASE)


async def find(request: web.Request) -> web.Response:
    """Show everything held about one person (audited: privacy.find)."""

    async def work(db: AsyncSession, ctx: Ctx, person: Person, form: Any) -> _Done:
        detail = {"subject": person.subject(ctx.secret), "records": person.record_refs()}
        return _Done("privacy.find", "", None, detail)

    return await _person_action(request, work)


async def export(request: web.Request) -> web.StreamResponse:
    """Build and download the person's archive (audited: privacy.export)."""
    ctx = await _ctx(request)
    form = await _form(ctx)
    lookup = _lookup(form)
    directory = request.app[appkeys.PRIVACY_EXPORT_DIR]
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            person = await _find(db, ctx, lookup)
            result = await export_person(
                db,
                person,
                directory=directory,
                secret_key=ctx.secret,
                actor=ctx.auth.user.email,
                now=ctx.now,
                site_id=person.scope.site_ids[0] if len(person.scope.site_ids) == 1 else None,
            )
            await _audit(
                db, ctx, "privacy.export", f"privacy_exports:{result.record.id}",
                subject=person.subject(ctx.secret), records=person.record_refs(),
                counts=result.counts,
            )  # fmt: skip
    except ApiError as exc:
        return _error_page(ctx, exc, BASE)
    return _zip_response(result.content, ctx.now)


def _zip_response(content: bytes, now: dt.datetime) -> web.Response:
    return web.Response(
        body=content,
        content_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="calltrack-export-{now:%Y%m%d}.zip"',
            "Cache-Control": "no-store",
        },
    )


async def download_export(request: web.Request) -> web.StreamResponse:
    """Download an export already produced (audited: privacy.export_download)."""
    ctx = await _ctx(request)
    raw = request.match_info["id"]
    directory = request.app[appkeys.PRIVACY_EXPORT_DIR]
    async with request.app[appkeys.DATABASE].begin() as db:
        export_id = parse_id(raw)
        record = await db.get(ExportRecord, export_id) if export_id is not None else None
        if record is None or record.account_id != ctx.account_id or record.expires_at <= ctx.now:
            raise web.HTTPNotFound(text="no such export")
        path = export_path(directory, record)
        try:
            content = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise web.HTTPNotFound(text="the export file is gone") from None
        await _audit(db, ctx, "privacy.export_download", f"privacy_exports:{record.id}")
        created = record.created_at
    return _zip_response(content, created)


async def rectify_view(request: web.Request) -> web.Response:
    """Correct one field of one record (audited: privacy.rectify)."""

    async def work(db: AsyncSession, ctx: Ctx, person: Person, form: Any) -> _Done:
        change = await rectify(
            db,
            person,
            table=str(form.get("table", "")),
            record_id=str(form.get("record", "")),
            field=str(form.get("field", "")),
            value=str(form.get("value", ""))[:2000],
            secret_key=ctx.secret,
        )
        notice = ctx.tr("privacy.rectified" if change.changed else "privacy.unchanged")
        detail = {"subject": person.subject(ctx.secret), **change.audit, "changed": change.changed}
        return _Done("privacy.rectify", notice, f"{change.table}:{change.record_id}", detail)

    return await _person_action(request, work)


async def restrict(request: web.Request) -> web.Response:
    """Restrict a person, or lift it (audited: privacy.restrict / privacy.restrict_lift)."""

    async def work(db: AsyncSession, ctx: Ctx, person: Person, form: Any) -> _Done:
        detail: dict[str, Any] = {
            "subject": person.subject(ctx.secret),
            "records": person.record_refs(),
        }
        action = str(form.get("do", "restrict"))
        if action not in ("restrict", "lift"):
            raise ApiError("invalid_action", 'do is "restrict" or "lift"')
        # Reports are rollups: the person's days are recomputed with or without them.
        await rollup.mark_person_dirty(db, person, ctx.now)
        if action == "lift":
            detail["identifiers"] = await lift_restriction(db, person)
            return _Done("privacy.restrict_lift", ctx.tr("privacy.lifted_done"), None, detail)
        detail["identifiers"] = await restrict_person(
            db, person, actor=ctx.auth.user.email, now=ctx.now
        )
        return _Done("privacy.restrict", ctx.tr("privacy.restricted_done"), None, detail)

    return await _person_action(request, work)


async def exclude(request: web.Request) -> web.Response:
    """Put the person's number or visitor ids on the exclusion list (audited: privacy.exclude)."""

    async def work(db: AsyncSession, ctx: Ctx, person: Person, form: Any) -> _Done:
        what = str(form.get("what", "phone"))
        values = sorted(person.phones if what == "phone" else person.visitor_ids)
        if what not in ("phone", "visitor") or not values:
            raise ApiError("nothing_to_exclude", "this person has no such identifier")
        added = 0
        for value in values:
            query = parse_subject(what, value, person.scope.default_country)
            _, created = await add_exclusion(
                db, ctx.account_id, query, secret_key=ctx.secret, actor=ctx.auth.user.email,
                now=ctx.now,
            )  # fmt: skip
            added += int(created)
        _invalidate_exclusions(ctx)
        detail = {"subject": person.subject(ctx.secret), "kind": what, "added": added}
        return _Done("privacy.exclude", ctx.tr("privacy.excluded_done"), None, detail)

    return await _person_action(request, work)


def _invalidate_exclusions(ctx: Ctx) -> None:
    cache = ctx.request.app.get(appkeys.EXCLUSIONS)
    if cache is not None:
        cache.invalidate(ctx.account_id)


def _erase_counts_rows(ctx: Ctx, tables: dict[str, dict[str, int]]) -> str:
    rows = []
    for table, what in sorted(tables.items()):
        done = ", ".join(f"{n} {ctx.tr('privacy.' + kind)}" for kind, n in what.items())
        rows.append(f"<tr><td>{escape(table)}</td><td>{escape(done)}</td></tr>")
    return "".join(rows)


async def erase(request: web.Request) -> web.Response:
    """Ask for confirmation (privacy.erase_preview), then erase (privacy.erase)."""
    ctx = await _ctx(request)
    form = await _form(ctx)
    lookup = _lookup(form)
    confirmed = str(form.get("confirm", "")) == "yes"
    drop = str(form.get("drop_exclusion", "")) == "yes"
    pool: PoolReleaser | None = getattr(request.app.get(appkeys.NUMBERS), "pool", None)
    hub = request.app.get(appkeys.HUB)
    live = hub.backend if hub is not None else None
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            person = await _find(db, ctx, lookup)
            if not confirmed:
                await _audit(db, ctx, "privacy.erase_preview", None,
                             subject=person.subject(ctx.secret), records=person.record_refs())  # fmt: skip
            else:
                report = await erase_person(
                    db, person, secret_key=ctx.secret,
                    export_dir=request.app[appkeys.PRIVACY_EXPORT_DIR], now=ctx.now, pool=pool,
                    drop_exclusion=drop, hub=live,
                )  # fmt: skip
                # Names no identifier: the erased person must not reappear through this entry.
                await _audit(db, ctx, "privacy.erase", f"erasure:{report.erasure_id}",
                             tables=report.tables, total=report.total)  # fmt: skip
        if confirmed:
            await tell_consoles(live, report, ctx.now)  # committed: consoles may resync now
    except ApiError as exc:
        return _error_page(ctx, exc, BASE)
    tr = ctx.tr
    if not confirmed:
        counts = "".join(
            f"<tr><td>{escape(table)}</td><td class=num>{n}</td></tr>"
            for table, n in person.counts().items()
            if n
        )
        drop_box = (
            f'<label><input type="checkbox" name="drop_exclusion" value="yes" style="display:inline;width:auto"> '
            f"{escape(tr('privacy.drop_exclusion'))}</label>"
            if person.exclusions
            else ""
        )
        body = (
            f'<h1>{escape(tr("privacy.confirm_title"))}</h1><section class="card">'
            f'<p class="alert">{escape(tr("privacy.confirm_text"))}</p>'
            f"<table><thead><tr><th>{escape(tr('privacy.table'))}</th><th class=num>"
            f"{escape(tr('privacy.count'))}</th></tr></thead><tbody>{counts}</tbody></table>"
            f'<form method="post" action="{BASE}/erase">{_hidden_lookup(ctx, lookup)}'
            f'<input type="hidden" name="confirm" value="yes">{drop_box}<div class="actions">'
            f'<button type="submit" class="danger" id="confirm-erase">{escape(tr("privacy.confirm_erase"))}</button>'
            f'<a class="muted" href="{BASE}">{escape(tr("privacy.cancel"))}</a></div></form></section>'
        )
        return _page(ctx, tr("privacy.confirm_title"), body, BASE)
    collector = request.app.get(appkeys.COLLECTOR)
    if collector is not None:
        # This worker's collect cache must not keep writing to visits that no longer exist.
        for session_id in person.session_ids:
            collector.cache.forget(session_id)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await _sites(db, ctx.account_id)
    body = (
        f'<h1>{escape(tr("privacy.erased"))}</h1><section class="card" id="erasure-report">'
        f"<p>{escape(tr('privacy.erased_text', id=report.erasure_id))}</p>"
        f"<table><thead><tr><th>{escape(tr('privacy.table'))}</th><th>{escape(tr('privacy.what'))}"
        f"</th></tr></thead><tbody>{_erase_counts_rows(ctx, report.tables)}</tbody></table>"
        f'<p class="muted small">{escape(tr("privacy.released", n=report.redis_released, files=report.files_deleted))}</p>'
        f"</section>{_search_form(ctx, sites)}"
    )
    return _page(ctx, tr("privacy.erased"), body, BASE)


# ---------------------------------------------------------------------------------------------
# Exclusion list


async def exclusions_page(request: web.Request) -> web.Response:
    """List the account's exclusion entries (audited: privacy.exclusions_view)."""
    ctx = await _ctx(request)
    tr = ctx.tr
    async with request.app[appkeys.DATABASE].begin() as db:
        entries = await list_exclusions(db, ctx.account_id)
        sites = await _sites(db, ctx.account_id)
        await _audit(db, ctx, "privacy.exclusions_view", None, count=len(entries))
    rows = [
        [
            escape(tr("privacy.kind." + e.kind)),
            f"<code>{escape(e.key_hash[:16])}…</code>",
            _when(e.created_at),
            escape(e.created_by),
            f'<form class="inline" method="post" action="{BASE}/exclusions/{e.id}/delete">'
            f'{_csrf(ctx)}<button type="submit" class="secondary">{escape(tr("privacy.remove"))}'
            "</button></form>",
        ]
        for e in entries
    ]
    kinds = "".join(
        f'<option value="{k}">{escape(tr("privacy.kind." + k))}</option>'
        for k in ("phone", "visitor")
    )
    body = (
        f'<h1>{escape(tr("privacy.exclusions"))}</h1>'
        f'<p class="muted">{escape(tr("privacy.excl_intro"))}</p>'
        f'<form class="card" method="post" action="{BASE}/exclusions">{_csrf(ctx)}<div class="row">'
        f'<label>{escape(tr("privacy.kind_col"))}<select name="kind">{kinds}</select></label>'
        f'<label style="flex:2 1 240px">{escape(tr("privacy.value"))}<input name="q" required maxlength="64" autocomplete="off"></label>'
        f'<label>{escape(tr("privacy.site"))}<select name="site">{_site_options(sites, None, all_option=None)}</select></label>'
        f'<button type="submit">{escape(tr("privacy.add"))}</button></div></form>'
        f'<section class="card">'
        + (_table([tr("privacy.kind_col"), tr("privacy.hash"), tr("privacy.when"), tr("privacy.added_by"), ""], rows)
           if rows else f"<p>{escape(tr('privacy.empty_list'))}</p>")
        + "</section>"
    )  # fmt: skip
    return _page(ctx, tr("privacy.exclusions"), body, f"{BASE}/exclusions")


async def exclusions_add(request: web.Request) -> web.Response:
    """Exclude a number or visitor id typed by the DPO (audited: privacy.exclude)."""
    ctx = await _ctx(request)
    form = await _form(ctx)
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            scope = await scope_for(db, ctx.account_id, str(form.get("site", "")) or None)
            query = parse_subject(str(form.get("kind", "")), str(form.get("q", ""))[:64],
                                  scope.default_country)  # fmt: skip
            entry, created = await add_exclusion(db, ctx.account_id, query, secret_key=ctx.secret,
                                                 actor=ctx.auth.user.email, now=ctx.now)  # fmt: skip
            await _audit(db, ctx, "privacy.exclude", f"privacy_exclusions:{entry.id}",
                         subject=subject_ref(ctx.secret, scope.account_id, query.kind, query.value),
                         kind=query.kind, added=int(created))  # fmt: skip
    except ApiError as exc:
        return _error_page(ctx, exc, f"{BASE}/exclusions")
    _invalidate_exclusions(ctx)
    raise web.HTTPSeeOther(f"{BASE}/exclusions")


async def exclusions_remove(request: web.Request) -> web.Response:
    """Remove one entry (audited: privacy.exclusion_remove)."""
    ctx = await _ctx(request)
    await _form(ctx)
    raw = request.match_info["id"]
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            entry = await remove_exclusion(db, ctx.account_id, parse_id(raw) or -1)
            await _audit(db, ctx, "privacy.exclusion_remove", f"privacy_exclusions:{entry.id}",
                         kind=entry.kind)  # fmt: skip
    except ApiError as exc:
        return _error_page(ctx, exc, f"{BASE}/exclusions")
    _invalidate_exclusions(ctx)
    raise web.HTTPSeeOther(f"{BASE}/exclusions")


# ---------------------------------------------------------------------------------------------
# Retention


def _last_purge(ctx: Ctx, cursor: PurgeCursor | None) -> str:
    if cursor is None:
        return escape(ctx.tr("privacy.never"))
    state = _when(cursor.finished_at) if cursor.finished_at else escape(ctx.tr("privacy.running"))
    return f"{state} · {escape(ctx.tr('privacy.rows_deleted', n=f'{cursor.deleted:,}'))}"


async def retention_page(request: web.Request) -> web.Response:
    """Show and edit per-site retention periods (audited: privacy.retention_view / _update)."""
    ctx = await _ctx(request)
    tr = ctx.tr
    notice = ""
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            sites = await _sites(db, ctx.account_id)
            if request.method == "POST":
                form = await _form(ctx)
                site_key = str(form.get("site", ""))
                site = next((s for s in sites if s.site_key == site_key), None)
                if site is None:
                    raise ApiError("unknown_site", "no such site in this account", status=404)
                submitted = {k: form[k] for k in retention.DATA_CLASSES if k in form}
                before = retention.retention_months(site)
                after = retention.set_retention(site, submitted)
                changed = {k: [before[k], v] for k, v in after.items() if before[k] != v}
                await _audit(db, ctx, "privacy.retention_update", f"sites:{site.id}",
                             changed=changed)  # fmt: skip
                notice = tr("privacy.saved")
            else:
                await _audit(db, ctx, "privacy.retention_view", None)
            scopes = [f"site:{s.id}" for s in sites]
            cursors = {
                (c.scope, c.data_class): c
                for c in await db.scalars(select(PurgeCursor).where(PurgeCursor.scope.in_(scopes)))
            }
    except ApiError as exc:
        return _error_page(ctx, exc, f"{BASE}/retention")
    if not sites:
        body = f'<h1>{escape(tr("privacy.retention"))}</h1><p class="card">{escape(tr("privacy.no_site"))}</p>'
        return _page(ctx, tr("privacy.retention"), body, f"{BASE}/retention")
    cards = []
    for site in sites:
        periods = retention.retention_months(site)
        rows = []
        for name, data_class in retention.DATA_CLASSES.items():
            basis = data_class.basis_fr if ctx.lang == "fr" else data_class.basis_en
            cursor = cursors.get((f"site:{site.id}", name))
            last = (_last_purge(ctx, cursor) if data_class.purged_by_calltrack
                    else escape(tr("privacy.not_by_calltrack")))  # fmt: skip
            rows.append(
                f"<tr><td><strong>{escape(name)}</strong></td>"
                f'<td><input type="number" name="{escape(name)}" min="{retention.MIN_MONTHS}" '
                f'max="{retention.MAX_MONTHS}" value="{periods[name]}" style="width:90px" '
                f'aria-label="{escape(name)}"></td><td class=num>{data_class.months}</td>'
                f'<td class="muted small">{escape(basis)}</td><td class="small">{last}</td></tr>'
            )
        cards.append(
            f'<form class="card" method="post" action="{BASE}/retention">{_csrf(ctx)}'
            f'<input type="hidden" name="site" value="{escape(site.site_key)}">'
            f"<h2>{escape(site.name)} <span class=muted>({escape(site.domain)})</span></h2>"
            f'<table><thead><tr><th>{escape(tr("privacy.data_class"))}</th><th>{escape(tr("privacy.months"))}</th>'
            f'<th class=num>{escape(tr("privacy.default"))}</th><th>{escape(tr("privacy.basis"))}</th>'
            f'<th>{escape(tr("privacy.last_purge"))}</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<div class="actions"><button type="submit">{escape(tr("privacy.save"))}</button></div></form>'
        )  # fmt: skip
    body = (
        f"<h1>{escape(tr('privacy.retention'))}</h1>"
        + (f'<p class="notice" role="status">{escape(notice)}</p>' if notice else "")
        + f'<p class="muted">{escape(tr("privacy.ret_intro"))}</p>{"".join(cards)}'
    )
    return _page(ctx, tr("privacy.retention"), body, f"{BASE}/retention")


# ---------------------------------------------------------------------------------------------
# Audit log


@dataclass(frozen=True)
class _AuditFilter:
    actor: str
    action: str
    contains: str
    since: str
    until: str

    @classmethod
    def of(cls, request: web.Request) -> _AuditFilter:
        q = request.query
        return cls(*(q.get(name, "").strip()[:200] for name in ("actor", "action", "contains", "since", "until")))  # fmt: skip

    def query(self, account_id: int) -> Any:
        statement = select(AuditEntry).where(AuditEntry.account_id == account_id)
        if self.actor:
            statement = statement.where(AuditEntry.actor.contains(self.actor, autoescape=True))
        if self.action:
            statement = statement.where(AuditEntry.action.startswith(self.action, autoescape=True))
        if self.contains:
            statement = statement.where(
                AuditEntry.target.contains(self.contains, autoescape=True)
                | cast(AuditEntry.detail, Text).contains(self.contains, autoescape=True)
            )
        if self.since:
            statement = statement.where(AuditEntry.at >= breach.parse_moment(self.since))
        if self.until:
            statement = statement.where(AuditEntry.at < breach.parse_moment(self.until, end=True))
        return statement.order_by(AuditEntry.id.desc())

    def as_detail(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def query_string(self) -> str:
        return urlencode(self.as_detail())


async def audit_page(request: web.Request) -> web.Response:
    """Search the audit log (audited: privacy.audit_search)."""
    ctx = await _ctx(request)
    tr = ctx.tr
    filters = _AuditFilter.of(request)
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            entries = list(await db.scalars(filters.query(ctx.account_id).limit(MAX_AUDIT_ROWS)))
            await _audit(db, ctx, "privacy.audit_search", None, filters=filters.as_detail())
    except ApiError as exc:
        return _error_page(ctx, exc, f"{BASE}/audit")
    rows = [
        [_when(e.at), escape(e.actor), f"<code>{escape(e.action)}</code>", escape(e.target or ""),
         f"<code class=wrap>{escape(json.dumps(e.detail, ensure_ascii=False)[:160])}</code>", escape(e.ip_truncated or "")]
        for e in entries
    ]  # fmt: skip

    def field(name: str, label: str, kind: str = "text") -> str:
        value = escape(getattr(filters, name))
        return (
            f'<label>{escape(tr(label))}<input type="{kind}" name="{name}" value="{value}"></label>'
        )

    body = (
        f'<h1>{escape(tr("privacy.audit"))}</h1><p class="muted">{escape(tr("privacy.audit_intro"))}</p>'
        f'<form class="card" method="get" action="{BASE}/audit"><div class="row">'
        + field("actor", "privacy.actor") + field("action", "privacy.action")
        + field("contains", "privacy.contains") + field("since", "privacy.since", "date")
        + field("until", "privacy.until", "date")
        + f'<button type="submit">{escape(tr("privacy.filter"))}</button>'
        f'<a class="muted" href="{BASE}/audit.csv?{escape(filters.query_string())}">{escape(tr("privacy.csv"))}</a>'
        f'</div></form><section class="card">'
        + (f'<p class="muted small">{escape(tr("privacy.latest", n=len(entries)))}</p>'
           + _table([tr("privacy.when"), tr("privacy.actor"), tr("privacy.action"), tr("privacy.target"),
                     tr("privacy.detail"), tr("privacy.from_where")], rows)
           if rows else f"<p>{escape(tr('privacy.no_entries'))}</p>")
        + "</section>"
    )  # fmt: skip
    return _page(ctx, tr("privacy.audit"), body, f"{BASE}/audit")


async def audit_csv(request: web.Request) -> web.Response:
    """Export the filtered audit log as CSV (audited: privacy.audit_export)."""
    ctx = await _ctx(request)
    filters = _AuditFilter.of(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "at", "actor", "action", "target", "detail", "ip_truncated"])
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            count = 0
            for e in await db.scalars(filters.query(ctx.account_id).limit(MAX_AUDIT_EXPORT)):
                writer.writerow([e.id, e.at.isoformat(), e.actor, e.action, e.target or "",
                                 json.dumps(e.detail, ensure_ascii=False), e.ip_truncated or ""])  # fmt: skip
                count += 1
            await _audit(db, ctx, "privacy.audit_export", None, filters=filters.as_detail(),
                         rows=count)  # fmt: skip
    except ApiError as exc:
        return _error_page(ctx, exc, f"{BASE}/audit")
    return web.Response(
        text=buffer.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="calltrack-audit-{ctx.now:%Y%m%d}.csv"',
            "Cache-Control": "no-store",
        },
    )


# ---------------------------------------------------------------------------------------------
# Records of processing


async def register_page(request: web.Request) -> web.Response:
    """Show or download a site's record of processing (audited: privacy.register)."""
    ctx = await _ctx(request)
    tr = ctx.tr
    doc_lang = request.query.get("doc", ctx.lang)
    doc_lang = doc_lang if doc_lang in register.LANGUAGES else "en"
    fmt = request.query.get("format", "")
    notice = ""
    async with request.app[appkeys.DATABASE].begin() as db:
        sites = await _sites(db, ctx.account_id)
        if not sites:
            await _audit(db, ctx, "privacy.register", None)
            body = f'<h1>{escape(tr("privacy.register"))}</h1><p class="card">{escape(tr("privacy.no_site"))}</p>'
            return _page(ctx, tr("privacy.register"), body, f"{BASE}/register")
        wanted = request.query.get("site", sites[0].site_key)
        site = next((s for s in sites if s.site_key == wanted), sites[0])
        if request.method == "POST":
            try:
                if site.site_key != wanted:  # never another site than the one named
                    raise ApiError("unknown_site", "no such site in this account", status=404)
                await _update_register(ctx, db, site)
            except ApiError as exc:
                return _error_page(ctx, exc, f"{BASE}/register")
            notice = tr("privacy.saved")
        document = await register.build_register(
            db, site, request.app[appkeys.SETTINGS], doc_lang, ctx.now
        )
        await _audit(db, ctx, "privacy.register", f"sites:{site.id}", language=doc_lang,
                     format=fmt or "page")  # fmt: skip
    name = f"calltrack-register-{site.site_key}-{doc_lang}"
    if fmt == "md":
        return web.Response(
            text=register.to_markdown(document), content_type="text/markdown", charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.md"'},
        )  # fmt: skip
    if fmt == "html":
        return web.Response(
            text=register.to_html(document), content_type="text/html", charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.html"'},
        )  # fmt: skip
    langs = "".join(
        f'<option value="{code}"{" selected" if code == doc_lang else ""}>{label}</option>'
        for code, label in (("fr", "Français"), ("en", "English"))
    )
    base_q = f"site={escape(site.site_key)}&amp;doc={doc_lang}"
    body = (
        f'<h1>{escape(tr("privacy.register"))}</h1>'
        f'<form class="card" method="get" action="{BASE}/register"><div class="row">'
        f'<label>{escape(tr("privacy.site"))}<select name="site">{_site_options(sites, site.site_key, all_option=None)}</select></label>'
        f'<label>{escape(tr("privacy.language"))}<select name="doc">{langs}</select></label>'
        f'<button type="submit">{escape(tr("privacy.show"))}</button>'
        f'<a class="muted" href="{BASE}/register?{base_q}&amp;format=md">{escape(tr("privacy.markdown"))}</a>'
        f'<a class="muted" href="{BASE}/register?{base_q}&amp;format=html">{escape(tr("privacy.html"))}</a>'
        f'</div></form>'
        + (f'<p class="notice" role="status">{escape(notice)}</p>' if notice else "")
        + _register_form(ctx, site, doc_lang)
        + f'<article class="card register" lang="{doc_lang}">{register.to_html_fragment(document)}</article>'
    )  # fmt: skip
    return _page(ctx, tr("privacy.register"), body, f"{BASE}/register")


async def _update_register(ctx: Ctx, db: AsyncSession, site: Site) -> None:
    """Store what the form changed of the merchant's own details (audited when it changes)."""
    form = await _form(ctx)
    assignments = []
    for name in register.REGISTER_FIELDS:
        if name in form:
            text = str(form[name])
            if name == "transfers":
                text = ";".join(text.splitlines())
            assignments.append(f"{name}={text}")
    changed = register.apply_register_fields(site, assignments)
    if changed:
        await _audit(db, ctx, "privacy.register_update", f"sites:{site.id}", changed=changed)


def _register_form(ctx: Ctx, site: Site, doc_lang: str) -> str:
    tr = ctx.tr
    typed: dict[str, Any] = (site.settings or {}).get("register") or {}
    query = urlencode({"site": site.site_key, "doc": doc_lang})
    rows = []
    for name in ("controller", "dpo", "hosting"):
        rows.append(
            f'<label>{escape(tr(f"privacy.reg_{name}"))}<input type="text" name="{name}" '
            f'maxlength="{register.MAX_REGISTER_TEXT}" value="{escape(str(typed.get(name, "")))}"></label>'
        )  # fmt: skip
    transfers = "\n".join(str(t) for t in typed.get("transfers") or [])
    rows.append(
        f'<label>{escape(tr("privacy.reg_transfers"))}<textarea name="transfers" rows="3">'
        f"{escape(transfers)}</textarea></label>"
    )
    return (
        f'<form class="card register-form" method="post" action="{BASE}/register?{escape(query)}">'
        f'{_csrf(ctx)}<h2>{escape(tr("privacy.reg_yours"))}</h2>'
        f'<p class="muted small">{escape(tr("privacy.reg_yours_hint"))}</p>{"".join(rows)}'
        f'<div class="actions"><button type="submit">{escape(tr("privacy.save"))}</button></div></form>'
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Breach report


async def breach_page(request: web.Request) -> web.Response:
    """Report accesses in a window (audited: privacy.breach_report once a window is given)."""
    ctx = await _ctx(request)
    tr = ctx.tr
    since_raw, until_raw = request.query.get("since", ""), request.query.get("until", "")
    report_html = ""
    if since_raw and until_raw:
        try:
            since = breach.parse_moment(since_raw)
            until = breach.parse_moment(until_raw, end=True)
            async with request.app[appkeys.DATABASE].begin() as db:
                report = await breach.breach_report(db, ctx.account_id, since, until)
                await _audit(db, ctx, "privacy.breach_report", None, since=since.isoformat(),
                             until=until.isoformat())  # fmt: skip
        except ApiError as exc:
            return _error_page(ctx, exc, f"{BASE}/breach")
        data = report.as_json()
        records = [[escape(table), f"{r['count']:,}"] for table, r in data["records"].items()]
        actors = [[escape(actor), str(i["entries"]), escape(", ".join(i["addresses"]))]
                  for actor, i in data["actors"].items()]  # fmt: skip
        actions = [[f"<code>{escape(a)}</code>", str(n)] for a, n in data["actions"].items()]
        sign_ins = [[escape(s["at"][:16].replace("T", " ")), escape(s["actor"]), escape(s["action"]),
                     escape(s["address"] or "")] for s in data["sign_ins"]]  # fmt: skip
        people = tr(
            "privacy.people_range", low=data["people"]["at_least"], high=data["people"]["at_most"]
        )
        report_html = (
            f'<section class="card" id="breach-report"><h2>{escape(tr("privacy.people"))}: {escape(people)}</h2>'
            f'<p class="muted small">{escape(" ".join(data["notes"]))}</p><div class="grid2"><div>'
            f'<h2>{escape(tr("privacy.records"))}</h2>{_table([tr("privacy.table"), tr("privacy.count")], records)}'
            f'<h2 style="margin-top:14px">{escape(tr("privacy.actions"))}</h2>{_table([tr("privacy.action"), tr("privacy.count")], actions)}</div>'
            f'<div><h2>{escape(tr("privacy.by_user"))}</h2>{_table([tr("privacy.actor"), tr("privacy.entries"), tr("privacy.addresses")], actors)}'
            f'<h2 style="margin-top:14px">{escape(tr("privacy.sign_ins"))}</h2>{_table([tr("privacy.when"), tr("privacy.actor"), tr("privacy.action"), tr("privacy.addresses")], sign_ins)}</div></div></section>'
        )  # fmt: skip
    body = (
        f'<h1>{escape(tr("privacy.breach"))}</h1><p class="muted">{escape(tr("privacy.breach_intro"))}</p>'
        f'<form class="card" method="get" action="{BASE}/breach"><div class="row">'
        f'<label>{escape(tr("privacy.since"))}<input type="date" name="since" required value="{escape(since_raw)}"></label>'
        f'<label>{escape(tr("privacy.until"))}<input type="date" name="until" required value="{escape(until_raw)}"></label>'
        f'<button type="submit">{escape(tr("privacy.show"))}</button></div></form>{report_html}'
    )  # fmt: skip
    return _page(ctx, tr("privacy.breach"), body, f"{BASE}/breach")


# ---------------------------------------------------------------------------------------------
# The scheduled purge


async def _purge_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_purge_loop(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _purge_loop(app: web.Application) -> None:
    await asyncio.sleep(FIRST_PURGE_DELAY.total_seconds())
    while True:
        try:
            await run_scheduled_purge(app)
        except Exception:
            # The next run resumes where this one stopped (privacy_purge_cursors).
            log.exception("scheduled purge failed")
        await asyncio.sleep(PURGE_INTERVAL.total_seconds())


async def run_scheduled_purge(app: web.Application) -> retention.PurgeReport | None:
    """Run one purge of every site (skipped when another worker is purging)."""
    database = app[appkeys.DATABASE]
    now = app[appkeys.CLOCK].now()

    async def run() -> retention.PurgeReport:
        return await retention.purge(database, now, export_dir=app[appkeys.PRIVACY_EXPORT_DIR])

    report = await retention.locked_purge(database, run)
    if report is not None and report.deleted:
        log.info("purge: %s", report.as_json())
    return report


def setup(app: web.Application, export_dir: Path | None = None) -> None:
    """Add the privacy pages, the exclusion cache and the scheduled purge."""
    settings = app[appkeys.SETTINGS]
    app[appkeys.EXCLUSIONS] = ExclusionCache(settings.secret_key, app[appkeys.CLOCK])
    app[appkeys.PRIVACY_EXPORT_DIR] = export_dir or DEFAULT_EXPORT_DIR
    app.cleanup_ctx.append(_purge_ctx)
    router = app.router
    router.add_get(BASE, home)
    router.add_post(f"{BASE}/find", find)
    router.add_post(f"{BASE}/export", export)
    router.add_get(f"{BASE}/exports/{{id}}", download_export)
    router.add_post(f"{BASE}/rectify", rectify_view)
    router.add_post(f"{BASE}/erase", erase)
    router.add_post(f"{BASE}/restrict", restrict)
    router.add_post(f"{BASE}/exclude", exclude)
    router.add_get(f"{BASE}/exclusions", exclusions_page)
    router.add_post(f"{BASE}/exclusions", exclusions_add)
    router.add_post(f"{BASE}/exclusions/{{id}}/delete", exclusions_remove)
    router.add_get(f"{BASE}/retention", retention_page)
    router.add_post(f"{BASE}/retention", retention_page)
    router.add_get(f"{BASE}/audit", audit_page)
    router.add_get(f"{BASE}/audit.csv", audit_csv)
    router.add_get(f"{BASE}/register", register_page)
    router.add_post(f"{BASE}/register", register_page)
    router.add_get(f"{BASE}/breach", breach_page)
