"""The site settings page (admins): the snippet, the contact widget, time zone and opening hours.

The page and `calltrack site set` change these settings through `apply_contact_settings`, so
both store the same values and write the same `site.settings_changed` audit entry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.auth import check_csrf, require
from dashboard.forms import FormCtx, field_error, invalid_attrs
from dashboard.forms import alert as alert_html
from dashboard.forms import notice as notice_html
from dashboard.i18n import pick_language, t
from dashboard.pages import escape, nav_for, new_nonce, render_page
from tracker import appkeys
from tracker.audit import audit
from tracker.contacts import (
    DAYS,
    HoursSetting,
    format_opening_hours,
    format_time_ranges,
    is_open_now,
    parse_opening_hours,
    parse_time_ranges,
)
from tracker.errors import ApiError
from tracker.models import Site, User
from tracker.sites import snippet_for
from tracker.web import client_address, read_form

BASE = "/dashboard/settings"
ROLES = ("admin",)
AUDIT_ACTION = "site.settings_changed"
# Longer than any real day of ranges (12 ranges of 11 characters); the column holds 64 for zones.
MAX_DAY_LENGTH = 200
MAX_ZONE_LENGTH = 64


# -- the settings, shared with `calltrack site set` ----------------------------------------------


@functools.cache
def _zones() -> dict[str, str]:
    """Map the lower-cased IANA names to their spelling (reading the zone database once)."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def timezone_names() -> list[str]:
    return sorted(_zones().values())


def check_timezone(name: str) -> str:
    """Return the IANA spelling of a zone (`europe/paris` → `Europe/Paris`); raise ApiError."""
    text = name.strip()
    if text and len(text) <= MAX_ZONE_LENGTH:
        try:
            zoneinfo.ZoneInfo(text)
            return text
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            found = _zones().get(text.lower())
            if found is not None:
                return found
    raise ApiError(
        "invalid_timezone", f"{name!r} is not an IANA time zone; use a name such as Europe/Paris"
    )


def hours_text(raw: Any) -> str:
    """Write a stored `opening_hours` value for people, even a broken one."""
    try:
        parse_opening_hours(raw)
    except ApiError:
        return "invalid (treated as always open)"
    return format_opening_hours(raw or None)


@dataclasses.dataclass(frozen=True)
class ContactSettings:
    """The settings this page edits, as stored on the site."""

    contact_widget: bool
    opening_hours: dict[str, Any] | None
    timezone: str

    @classmethod
    def of(cls, site: Site) -> ContactSettings:
        stored = site.settings or {}
        hours = stored.get("opening_hours")
        return cls(
            contact_widget=stored.get("contact_widget") is True,
            opening_hours=hours if isinstance(hours, dict) and hours else None,
            timezone=site.timezone or "UTC",
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "contact_widget": self.contact_widget,
            "opening_hours": self.opening_hours,
            "opening_hours_text": hours_text(self.opening_hours),
            "timezone": self.timezone,
        }


def apply_contact_settings(site: Site, wanted: ContactSettings) -> dict[str, list[Any]]:
    """Store `wanted` on the site (caller commits); return `{name: [before, after]}` of changes."""
    before = ContactSettings.of(site)
    changed: dict[str, list[Any]] = {}
    if wanted.contact_widget != before.contact_widget:
        changed["contact_widget"] = [before.contact_widget, wanted.contact_widget]
    if wanted.opening_hours != before.opening_hours:
        changed["opening_hours"] = [
            hours_text(before.opening_hours),
            hours_text(wanted.opening_hours),
        ]
    if wanted.timezone != before.timezone:
        changed["timezone"] = [before.timezone, wanted.timezone]
    if not changed:
        return changed
    settings = {**(site.settings or {}), "contact_widget": wanted.contact_widget}
    if wanted.opening_hours is None:
        settings.pop("opening_hours", None)
    else:
        settings["opening_hours"] = wanted.opening_hours
    # A new dict: the JSON column only notices replaced values.
    site.settings = settings
    site.timezone = wanted.timezone
    return changed


async def audit_settings_change(
    db: AsyncSession,
    site: Site,
    changed: dict[str, list[Any]],
    now: dt.datetime,
    *,
    user: User | None = None,
    actor: str | None = None,
    ip_truncated: str | None = None,
) -> None:
    """Write the one audit entry of a settings change."""
    await audit(
        db,
        action=AUDIT_ACTION,
        at=now,
        user=user,
        actor=actor,
        account_id=site.account_id,
        target=f"site:{site.id}",
        ip_truncated=ip_truncated,
        changed=changed,
    )


# -- the page ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fields:
    """What the form shows: the stored settings, or what the admin typed, with its errors."""

    contact_widget: bool
    timezone: str
    always_open: bool
    days: dict[str, str]
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, site: Site) -> Fields:
        current = ContactSettings.of(site)
        days = dict.fromkeys(DAYS, "")
        try:
            has_hours = parse_opening_hours(current.opening_hours) is not None
        except ApiError:
            has_hours = False  # shown as "always open": visitors see a broken setting that way
        if has_hours and current.opening_hours is not None:
            for day in DAYS:
                days[day] = format_time_ranges(current.opening_hours.get(day) or [], ", ")
        return cls(current.contact_widget, current.timezone, not has_hours, days)

    @classmethod
    def typed(cls, form: MultiDictProxy[Any]) -> Fields:
        return cls(
            contact_widget="contact_widget" in form,
            timezone=str(form.get("timezone", ""))[: MAX_ZONE_LENGTH * 4],
            always_open="always_open" in form,
            days={day: str(form.get(f"hours_{day}", ""))[: MAX_DAY_LENGTH * 4] for day in DAYS},
        )

    def validate(self, lang: str) -> ContactSettings | None:
        """Return the settings to store, or None with `errors` filled (field → message)."""
        self.errors.clear()
        try:
            timezone = check_timezone(self.timezone)
        except ApiError:
            timezone = ""
            self.errors["timezone"] = t("settings.err_timezone", lang)
        hours: HoursSetting | None = None
        if not self.always_open:
            hours = {}
            for day in DAYS:
                text = self.days[day]
                try:
                    if len(text) > MAX_DAY_LENGTH:
                        raise ApiError("invalid_opening_hours", "too long")
                    ranges = parse_time_ranges(text)
                except ApiError:
                    self.errors[f"hours_{day}"] = t("settings.err_range", lang)
                    continue
                if ranges:
                    hours[day] = ranges
            if not hours and not self.errors.keys() & {f"hours_{d}" for d in DAYS}:
                self.errors["hours"] = t("settings.err_no_hours", lang)
        if self.errors:
            return None
        parse_opening_hours(hours)  # the stored format's own check, should anything slip by
        return ContactSettings(self.contact_widget, hours or None, timezone)


@dataclasses.dataclass(frozen=True)
class Ctx(FormCtx):
    def url(self, **query: str) -> str:
        return f"{BASE}?{urlencode({**query, 'lang': self.lang})}"


async def _ctx(request: web.Request) -> Ctx:
    auth = await require(request, *ROLES)
    return Ctx(request, auth, pick_language(request, auth.user.language))


async def _sites(db: AsyncSession, account_id: int) -> list[Site]:
    return list(
        await db.scalars(
            select(Site).where(Site.account_id == account_id).order_by(Site.name, Site.id)
        )
    )


def _error(fields: Fields, name: str) -> str:
    return field_error(fields.errors, name)


def _invalid(fields: Fields, name: str) -> str:
    return invalid_attrs(fields.errors, name)


def _site_picker(ctx: Ctx, sites: list[Site], site: Site) -> str:
    if len(sites) < 2:
        return ""
    options = "".join(
        f'<option value="{escape(s.site_key)}"{" selected" if s.id == site.id else ""}>'
        f"{escape(s.name)} ({escape(s.domain)})</option>"
        for s in sites
    )
    return (
        f'<form class="card picker" method="get" action="{BASE}">'
        f'<input type="hidden" name="lang" value="{escape(ctx.lang)}">'
        f'<label>{escape(ctx.tr("settings.site"))}<select name="site">{options}</select></label>'
        f'<button type="submit" class="secondary">{escape(ctx.tr("settings.show"))}</button></form>'
    )


def _snippet_card(ctx: Ctx, site: Site) -> str:
    snippet = snippet_for(site.site_key, ctx.request.app[appkeys.SETTINGS].public_url)
    return (
        f'<section class="card"><h2>{escape(ctx.tr("settings.snippet"))}</h2>'
        f'<p class="muted">{escape(ctx.tr("settings.snippet_intro", domain=site.domain))}</p>'
        f'<textarea id="snippet" readonly rows="6" spellcheck="false" '
        f'aria-label="{escape(ctx.tr("settings.snippet"))}">{escape(snippet)}</textarea>'
        f'<button type="button" class="secondary" id="copy-snippet" hidden '
        f'data-done="{escape(ctx.tr("settings.copied"))}">{escape(ctx.tr("settings.copy"))}</button>'
        "</section>"
    )


def _status_line(ctx: Ctx, site: Site) -> str:
    now = ctx.request.app[appkeys.CLOCK].now()
    try:
        local = now.astimezone(zoneinfo.ZoneInfo(site.timezone or "UTC"))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return ""
    key = "settings.now_open" if is_open_now(site, now) else "settings.now_closed"
    day = ctx.tr(f"settings.day.{DAYS[local.weekday()]}")
    text = ctx.tr(key, zone=site.timezone, day=day, time=local.strftime("%H:%M"))
    return f'<p class="muted" id="open-now">{escape(text)}</p>'


def _settings_form(ctx: Ctx, site: Site, fields: Fields) -> str:
    tr = ctx.tr
    rows = []
    for day in DAYS:
        name = f"hours_{day}"
        rows.append(
            f'<tr><th scope="row"><label for="{name}">{escape(tr(f"settings.day.{day}"))}</label></th>'
            f'<td><input type="text" id="{name}" name="{name}" class="day" maxlength="{MAX_DAY_LENGTH}" '
            f'value="{escape(fields.days[day])}" placeholder="{escape(tr("settings.closed"))}" '
            f'autocomplete="off" spellcheck="false"{_invalid(fields, name)}>{_error(fields, name)}</td></tr>'
        )  # fmt: skip
    zones = "".join(f'<option value="{escape(z)}">' for z in timezone_names())
    checked_widget = " checked" if fields.contact_widget else ""
    checked_always = " checked" if fields.always_open else ""
    return (
        f'<form class="card" method="post" action="{escape(ctx.url())}" novalidate>'
        f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
        f'<input type="hidden" name="site" value="{escape(site.site_key)}">'
        f'<h2>{escape(tr("settings.widget"))}</h2>'
        f'<label class="check"><input type="checkbox" name="contact_widget" value="on"{checked_widget}>'
        f'{escape(tr("settings.widget_on"))}</label>'
        f'<p class="muted small">{escape(tr("settings.widget_hint"))}</p>'
        f'<h2><label for="timezone">{escape(tr("settings.timezone"))}</label></h2>'
        f'<input type="text" id="timezone" name="timezone" class="zone" list="zones" '
        f'maxlength="{MAX_ZONE_LENGTH}" value="{escape(fields.timezone)}" '
        f'autocomplete="off" spellcheck="false"{_invalid(fields, "timezone")}>'
        f'{_error(fields, "timezone")}'
        f'<datalist id="zones">{zones}</datalist>'
        f'<p class="muted small">{escape(tr("settings.timezone_hint"))}</p>'
        f'<h2>{escape(tr("settings.hours"))}</h2>'
        f'<p class="muted small">{escape(tr("settings.hours_hint"))}</p>'
        f'<label class="check"><input type="checkbox" name="always_open" id="always-open" value="on"{checked_always}>'
        f'{escape(tr("settings.always_open"))}</label>'
        f'{_error(fields, "hours")}'
        f'<table class="hours"><tbody>{"".join(rows)}</tbody></table>'
        f"{_status_line(ctx, site)}"
        f'<div class="actions"><button type="submit">{escape(tr("settings.save"))}</button></div>'
        "</form>"
    )  # fmt: skip


# Copies the snippet, and greys out the days while "always open" is ticked (they are ignored
# then). The page works without it.
SCRIPT = """
const copy = document.getElementById("copy-snippet");
const snippet = document.getElementById("snippet");
if (copy && snippet && navigator.clipboard) {
  copy.hidden = false;
  copy.addEventListener("click", () => {
    navigator.clipboard.writeText(snippet.value).then(() => { copy.textContent = copy.dataset.done; });
  });
}
const always = document.getElementById("always-open");
const days = document.querySelectorAll("table.hours input.day");
const sync = () => days.forEach((input) => { input.disabled = always.checked; });
if (always) { always.addEventListener("change", sync); sync(); }
"""


def _page(ctx: Ctx, content: str, site: Site | None = None, *, status: int = 200) -> web.Response:
    nonce = new_nonce()
    nav = nav_for(ctx.auth, ctx.lang, BASE)
    other = "fr" if ctx.lang == "en" else "en"
    query = {"site": site.site_key} if site is not None else {}
    switch = (
        f'<a class="lang" href="{escape(BASE + "?" + urlencode({**query, "lang": other}))}" '
        f'hreflang="{other}">{other.upper()}</a>'
    )
    body = (
        f'{nav}<main class="form-page site-settings"><div class="heading"><h1>{escape(ctx.tr("settings.title"))}</h1>'
        f"{switch}</div>{content}</main><script nonce=\"{nonce}\">{SCRIPT}</script>"
    )  # fmt: skip
    return render_page(
        f"{ctx.tr('settings.title')} — Calltrack", body, lang=ctx.lang, nonce=nonce, status=status
    )


def _content(
    ctx: Ctx, sites: list[Site], site: Site, fields: Fields, *, notice: str = "", alert: str = ""
) -> str:
    return (
        notice_html(notice)
        + alert_html(alert)
        + _site_picker(ctx, sites, site)
        + f'<p class="muted">{escape(site.name)} · {escape(site.domain)} · '
        f"<code>{escape(site.site_key)}</code></p>"
        + _snippet_card(ctx, site)
        + _settings_form(ctx, site, fields)
    )


def _no_site(ctx: Ctx, key: str) -> web.Response:
    return _page(ctx, f'<p class="card">{escape(ctx.tr(key))}</p>', status=404)


async def settings_page(request: web.Request) -> web.Response:
    """Show one site of the admin's account (the first one unless `?site=KEY`)."""
    ctx = await _ctx(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        sites = await _sites(db, ctx.auth.user.account_id)
    if not sites:
        return _page(ctx, f'<p class="card">{escape(ctx.tr("settings.no_site"))}</p>')
    wanted = request.query.get("site")
    site = next((s for s in sites if s.site_key == wanted), None) if wanted else sites[0]
    if site is None:
        return _no_site(ctx, "settings.unknown_site")
    saved = request.query.get("saved")
    notice = {"1": ctx.tr("settings.saved"), "0": ctx.tr("settings.unchanged")}.get(saved or "", "")
    return _page(ctx, _content(ctx, sites, site, Fields.of(site), notice=notice), site)


async def settings_submit(request: web.Request) -> web.Response:
    """Validate and store the form; one audit entry per change; redirect back (303)."""
    ctx = await _ctx(request)
    form = await read_form(request)
    check_csrf(request, ctx.auth, str(form.get("csrf", "")) or None)
    app = request.app
    now = app[appkeys.CLOCK].now()
    ip = client_address(request)
    async with app[appkeys.DATABASE].begin() as db:
        sites = await _sites(db, ctx.auth.user.account_id)
        # Only the sites of the admin's own account: another tenant's key reads as unknown.
        site = next((s for s in sites if s.site_key == str(form.get("site", ""))), None)
        if site is None:
            return _no_site(ctx, "settings.unknown_site")
        fields = Fields.typed(form)
        wanted = fields.validate(ctx.lang)
        if wanted is None:
            content = _content(ctx, sites, site, fields, alert=ctx.tr("settings.not_saved"))
            return _page(ctx, content, site, status=400)
        changed = apply_contact_settings(site, wanted)
        if changed:
            await audit_settings_change(db, site, changed, now, user=ctx.auth.user, ip_truncated=ip)
    if changed:
        # This worker serves the new settings at once; the others within the cache's TTL.
        app[appkeys.SITE_CACHE].invalidate(site.site_key)
    raise web.HTTPSeeOther(ctx.url(site=site.site_key, saved="1" if changed else "0"))


def setup(app: web.Application) -> None:
    """Add the settings page (its link is in `dashboard.pages.NAV_ITEMS`, admins only)."""
    app.router.add_get(BASE, settings_page)
    app.router.add_post(BASE, settings_submit)
