"""The marketer dashboard: reports, drill-downs, call journeys, exports, costs and webhooks.

Pages are server-rendered; figures travel to `/static/reports.js` as inert JSON for the charts
(Chart.js, vendored under /static/vendor). Every figure links to the calls behind it, every
call to its journey. Who sees what is in `dashboard.reports.roles`; every page that shows
personal data (caller numbers, journeys, recordings) is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web
from sqlalchemy import func, select

from dashboard import webhooks
from dashboard.auth import Auth, check_csrf, require
from dashboard.i18n import pick_language, t
from dashboard.pages import escape, new_nonce, render_page, top_nav
from dashboard.reports import costs as cost_import
from dashboard.reports import exports, queries, rollup
from dashboard.reports import texts as _texts
from dashboard.reports.models import MODEL_LABELS, MODELS, UNITS_PER_CALL
from dashboard.reports.queries import CallFilter, Metrics, Row, Scope
from dashboard.reports.roles import (
    REPORT_ROLES,
    SETTINGS_ROLES,
    caller_for,
    hears_recordings,
    sees_caller_numbers,
)
from tracker import appkeys
from tracker.audit import COMMIT_MARGIN, audit, recent_audit_mark
from tracker.errors import ApiError
from tracker.models import AdCost, Site, WebhookDelivery, WebhookEndpoint
from tracker.web import (
    BODY_ERRORS,
    client_address,
    drop_unread_body,
    log_background_failure,
    parse_id,
    read_form,
)

log = logging.getLogger("calltrack.reports")

DIMENSION_KEYS: Final = rollup.DIMENSIONS
MAX_UPLOAD_BYTES: Final = 10 * 1024 * 1024
CALLS_PAGE: Final = 50
# A CSV built in memory: beyond this, the paginated API is the right tool.
MAX_EXPORT_CALLS: Final = 200_000
REFRESHER: Final = "reports"


# -- formatting ----------------------------------------------------------------------------------


def number(value: float | None, lang: str, digits: int = 0) -> str:
    """Write a number the way the reader's language does (1,234.5 or 1 234,5)."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def percent(value: float | None, lang: str) -> str:
    return (
        "—"
        if value is None
        else number(value * 100, lang, 1) + ("\u202f%" if lang == "fr" else "%")
    )


def calls_text(milli: int, lang: str) -> str:
    """Write milli-calls as calls: whole numbers plainly, fractions with one decimal."""
    return number(milli / UNITS_PER_CALL, lang, 0 if milli % UNITS_PER_CALL == 0 else 1)


def tenths_text(tenths: int, lang: str) -> str:
    return number(tenths / 10, lang, 0 if tenths % 10 == 0 else 1)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def change(current: int, previous: int, lang: str) -> str:
    """Render the change against the previous period as a coloured badge."""
    if not previous:
        return (
            '<span class="delta">—</span>'
            if not current
            else f'<span class="delta up">{escape(t("reports.new", lang))}</span>'
        )
    ratio = (current - previous) / previous
    kind = "up" if ratio > 0 else "down" if ratio < 0 else "flat"
    sign = "+" if ratio > 0 else ""
    return f'<span class="delta {kind}">{sign}{escape(percent(ratio, lang))}</span>'


def money(amounts: Mapping[str, Decimal], lang: str) -> str:
    if not amounts:
        return "—"
    return " · ".join(
        f"{number(float(amount), lang, 2)}\u00a0{escape(currency)}"
        for currency, amount in sorted(amounts.items())
    )


def _json_for_script(data: Any) -> str:
    # Inert JSON inside <script>: escape what could end the element or confuse parsers.
    return (
        json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def outcome_label(outcome: str, lang: str) -> str:
    """Translate a call outcome; carrier statuses (ringing, in-progress) stay as they are."""
    key = f"reports.outcome.{outcome}"
    return t(key, lang) if key in _texts.REPORT_TEXTS else outcome


def value_label(dimension: str, value: str, lang: str) -> str:
    if value == rollup.UNATTRIBUTED:
        return "(non attribué)" if lang == "fr" else "(unattributed)"
    if value == rollup.NOT_SET:
        return "(non défini)" if lang == "fr" else "(not set)"
    return value


# -- request context -----------------------------------------------------------------------------


@dataclass
class Context:
    auth: Auth
    lang: str
    sites: list[Site]
    scope: Scope
    compare: bool
    site_param: str

    @property
    def role(self) -> str:
        return self.auth.user.role

    def base_query(self, **extra: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "from": self.scope.period.first.isoformat(),
            "to": self.scope.period.last.isoformat(),
            "site": self.site_param or None,
            "model": self.scope.model,
            "compare": "1" if self.compare else "0",
        }
        values.update(extra)
        return {k: v for k, v in values.items() if v is not None}

    def link(self, path: str, **extra: str | None) -> str:
        return f"{path}?{urlencode(self.base_query(**extra))}"


async def context(request: web.Request, *roles: str) -> Context:
    """Sign-in check, language, the account's sites and the report scope from the query."""
    auth = await require(request, *(roles or REPORT_ROLES))
    lang = pick_language(request, auth.user.language)
    query = request.query
    async with request.app[appkeys.DATABASE].sessions() as db:
        all_sites = await queries.account_sites(db, auth.user.account_id)
        chosen = await queries.resolve_sites(db, auth.user.account_id, query.get("site"))
    today = queries.today_for(chosen or all_sites, request.app[appkeys.CLOCK].now())
    period = queries.parse_period(query.get("from"), query.get("to"), today)
    scope = Scope(auth.user.account_id, chosen, period, queries.parse_model(query.get("model")))
    return Context(
        auth=auth,
        lang=lang,
        sites=all_sites,
        scope=scope,
        compare=query.get("compare", "1") != "0",
        site_param=query.get("site", "") if query.get("site") not in (None, "all") else "",
    )


async def _audit(
    request: web.Request, auth: Auth, action: str, target: str | None = None, **detail: Any
) -> None:
    app = request.app
    async with app[appkeys.DATABASE].begin() as db:
        await audit(
            db,
            action=action,
            at=app[appkeys.CLOCK].now(),
            user=auth.user,
            target=target,
            ip_truncated=client_address(request),
            **detail,
        )


# -- layout --------------------------------------------------------------------------------------


def _tabs(ctx: Context, active: str) -> str:
    items = [
        ("/dashboard", t("reports.overview", ctx.lang)),
        ("/dashboard/calls", t("reports.calls", ctx.lang)),
        ("/dashboard/costs", t("reports.costs", ctx.lang)),
    ]
    if ctx.role in SETTINGS_ROLES:
        items.append(("/dashboard/webhooks", t("reports.webhooks", ctx.lang)))
    links = "".join(
        f'<a href="{escape(ctx.link(path) if path != "/dashboard/webhooks" else path)}"'
        f"{' aria-current=page' if path == active else ''}>{escape(label)}</a>"
        for path, label in items
    )
    other = "fr" if ctx.lang == "en" else "en"
    return (
        f'<nav class="tabs" aria-label="{escape(t("reports.title", ctx.lang))}">{links}'
        f'<span class="spacer"></span><a class="lang" href="?{escape(urlencode({**ctx.base_query(), "lang": other}))}" '
        f'hreflang="{other}">{other.upper()}</a></nav>'
    )


def _page(
    ctx: Context, title: str, active: str, content: str, data: Any | None = None
) -> web.Response:
    nonce = new_nonce()
    head = '<link rel="stylesheet" href="/static/reports.css">'
    if data is not None:
        head += (
            f'<script type="application/json" id="report-data" nonce="{nonce}">{_json_for_script(data)}</script>'
            f'<script src="/static/vendor/chart.umd.js" defer nonce="{nonce}"></script>'
            f'<script src="/static/vendor/chartjs-chart-matrix.min.js" defer nonce="{nonce}"></script>'
        )
    head += f'<script src="/static/reports.js" defer nonce="{nonce}"></script>'
    body = (
        top_nav(
            role=ctx.role,
            email=ctx.auth.user.email,
            csrf=ctx.auth.csrf,
            lang=ctx.lang,
            active="/dashboard",
        )
        + f'<main class="reports">{_tabs(ctx, active)}{content}</main>'
    )
    return render_page(f"{title} — Calltrack", body, lang=ctx.lang, nonce=nonce, head=head)


def _filters(ctx: Context, action: str, extra: Mapping[str, str] | None = None) -> str:
    lang = ctx.lang
    site_options = f'<option value="all">{escape(t("reports.all_sites", lang))}</option>' + "".join(
        f'<option value="{s.id}"{" selected" if ctx.site_param == str(s.id) else ""}>{escape(s.name)}</option>'
        for s in ctx.sites
    )
    model_options = "".join(
        f'<option value="{m}"{" selected" if m == ctx.scope.model else ""}>{escape(MODEL_LABELS[m][lang])}</option>'
        for m in MODELS
    )
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in (extra or {}).items()
    )
    return (
        f'<form class="filters card" method="get" action="{escape(action)}">{hidden}'
        f'<label>{escape(t("reports.from", lang))}<input type="date" name="from" value="{ctx.scope.period.first.isoformat()}" required></label>'
        f'<label>{escape(t("reports.to", lang))}<input type="date" name="to" value="{ctx.scope.period.last.isoformat()}" required></label>'
        f'<label>{escape(t("reports.site", lang))}<select name="site">{site_options}</select></label>'
        f'<label class="model">{escape(t("reports.model", lang))}<select name="model" id="model" data-autosubmit>{model_options}</select></label>'
        f'<label class="check"><input type="checkbox" name="compare" value="1"{" checked" if ctx.compare else ""}>'
        f"{escape(t('reports.compare', lang))}</label>"
        # Unchecked boxes send nothing: this later "0" is read only when the box is off.
        '<input type="hidden" name="compare" value="0">'
        f'<input type="hidden" name="lang" value="{escape(lang)}">'
        f'<button type="submit">{escape(t("reports.apply", lang))}</button></form>'
    )


# -- overview ------------------------------------------------------------------------------------


def _kpi(
    ctx: Context,
    key: str,
    shown: str,
    current: int | None,
    previous: int | None,
    metric: str | None,
) -> str:
    href = ctx.link("/dashboard/calls", metric=metric)
    delta = (
        change(current, previous, ctx.lang)
        if ctx.compare and current is not None and previous is not None
        else ""
    )
    return (
        f'<a class="kpi card" href="{escape(href)}" data-kpi="{escape(key)}">'
        f'<span class="label">{escape(t("reports.kpi." + key, ctx.lang))}</span>'
        f'<span class="figure">{escape(shown)}</span>{delta}</a>'
    )


def _kpis(ctx: Context, current: Metrics, previous: Metrics) -> str:
    lang = ctx.lang
    return (
        '<section class="kpis" aria-label="KPI">'
        + "".join(
            [
                _kpi(
                    ctx,
                    "calls",
                    calls_text(current.calls, lang),
                    current.calls,
                    previous.calls,
                    None,
                ),
                _kpi(
                    ctx,
                    "answered",
                    percent(current.answered_rate, lang),
                    current.answered,
                    previous.answered,
                    "answered",
                ),
                _kpi(
                    ctx,
                    "missed",
                    percent(current.missed_rate, lang),
                    current.missed,
                    previous.missed,
                    "missed",
                ),
                _kpi(
                    ctx, "duration", duration_text(current.average_duration), None, None, "answered"
                ),
                _kpi(
                    ctx,
                    "first_time",
                    calls_text(current.first_time, lang),
                    current.first_time,
                    previous.first_time,
                    "first_time",
                ),
                _kpi(
                    ctx,
                    "per_1000",
                    number(current.per_thousand_sessions, lang, 1),
                    None,
                    None,
                    None,
                ),
                _kpi(
                    ctx,
                    "sales",
                    calls_text(current.sales, lang),
                    current.sales,
                    previous.sales,
                    "sale",
                ),
                _kpi(
                    ctx,
                    "leads",
                    calls_text(current.leads, lang),
                    current.leads,
                    previous.leads,
                    "lead",
                ),
            ]
        )
        + "</section>"
    )


def _cell(ctx: Context, dimension: str, value: str, text: str, metric: str | None = None) -> str:
    href = ctx.link("/dashboard/calls", dim=dimension, value=value, metric=metric)
    return f'<td class="num"><a href="{escape(href)}">{escape(text)}</a></td>'


def _table(ctx: Context, dimension: str, rows: list[Row], total: Row) -> str:
    lang = ctx.lang
    if not rows:
        return f'<p class="muted empty">{escape(t("reports.empty", lang))}</p>'
    columns = ["calls", "share"]
    if ctx.compare:
        columns.append("change")
    columns += [
        "answered",
        "missed",
        "duration",
        "first_time",
        "sessions",
        "per_1000",
        "sales",
        "leads",
        "cost",
        "cpc",
    ]
    head = f'<th scope="col">{escape(t("reports.dim." + dimension, lang))}</th>' + "".join(
        f'<th scope="col" class="num">{escape(t("reports.col." + c, lang))}</th>' for c in columns
    )

    def cells(row: Row, value: str | None) -> str:
        m = row.current
        share = row.display_tenths / total.display_tenths if total.display_tenths else None
        out = []
        for c in columns:
            if c == "calls":
                text = tenths_text(row.display_tenths, lang)
                out.append(
                    _cell(ctx, dimension, value, text)
                    if value is not None
                    else f'<td class="num" data-total>{escape(text)}</td>'
                )
            elif c == "share":
                out.append(f'<td class="num">{escape(percent(share, lang))}</td>')
            elif c == "change":
                out.append(f'<td class="num">{change(m.calls, row.previous.calls, lang)}</td>')
            elif c in ("answered", "missed"):
                rate = m.answered_rate if c == "answered" else m.missed_rate
                out.append(
                    _cell(ctx, dimension, value, percent(rate, lang), c)
                    if value is not None
                    else f'<td class="num">{escape(percent(rate, lang))}</td>'
                )
            elif c == "duration":
                out.append(f'<td class="num">{escape(duration_text(m.average_duration))}</td>')
            elif c == "first_time":
                text = calls_text(m.first_time, lang)
                out.append(
                    _cell(ctx, dimension, value, text, "first_time")
                    if value is not None
                    else f'<td class="num">{escape(text)}</td>'
                )
            elif c == "sessions":
                out.append(f'<td class="num">{escape(number(m.sessions, lang))}</td>')
            elif c == "per_1000":
                out.append(
                    f'<td class="num">{escape(number(m.per_thousand_sessions, lang, 1))}</td>'
                )
            elif c in ("sales", "leads"):
                amount = m.sales if c == "sales" else m.leads
                text = calls_text(amount, lang)
                out.append(
                    _cell(ctx, dimension, value, text, c[:-1] if c == "sales" else "lead")
                    if value is not None
                    else f'<td class="num">{escape(text)}</td>'
                )
            elif c == "cost":
                out.append(f'<td class="num">{money(row.costs, lang)}</td>')
            else:
                out.append(f'<td class="num">{money(row.cost_per_call(), lang)}</td>')
        return "".join(out)

    body = "".join(
        f'<tr data-value="{escape(r.value)}"><th scope="row">{escape(value_label(dimension, r.value, lang))}</th>{cells(r, r.value)}</tr>'
        for r in rows
    )
    foot = f'<tr class="total"><th scope="row">{escape(t("reports.total", lang))}</th>{cells(total, None)}</tr>'
    return (
        f'<div class="table-wrap"><table class="report" id="breakdown" data-dimension="{escape(dimension)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody><tfoot>{foot}</tfoot></table></div>"
    )


def _exports(ctx: Context, dimension: str) -> str:
    lang = ctx.lang
    links = [
        (
            ctx.link("/dashboard/export/report.csv", dim=dimension),
            t("reports.export.table", lang),
            "export-table",
        ),
        (ctx.link("/dashboard/export/calls.csv"), t("reports.export.calls", lang), "export-calls"),
        (ctx.link("/dashboard/export/daily.csv"), t("reports.export.daily", lang), "export-daily"),
        (
            ctx.link("/dashboard/export/heatmap.csv"),
            t("reports.export.heatmap", lang),
            "export-heatmap",
        ),
    ]
    items = "".join(
        f'<li><a id="{i}" href="{escape(h)}" download>{escape(label)}</a></li>'
        for h, label, i in links
    )
    forms = ""
    kinds = [("google-ads-clicks", "reports.export.gads_clicks")]
    if sees_caller_numbers(ctx.role):
        kinds.insert(0, ("google-ads-calls", "reports.export.gads_calls"))
    for kind, label in kinds:
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in ctx.base_query().items()
        )
        forms += (
            f'<form class="gads" method="get" action="/dashboard/export/{kind}.csv">{hidden}'
            f"<strong>{escape(t(label, lang))}</strong>"
            f'<label>{escape(t("reports.export.conversion_name", lang))}<input name="conversion_name" value="Calltrack call" maxlength="100" required></label>'
            f'<label>{escape(t("reports.export.value", lang))}<input name="value" value="0" inputmode="decimal"></label>'
            f'<label>{escape(t("reports.export.currency", lang))}<input name="currency" value="EUR" maxlength="3" size="3"></label>'
            + (
                f'<label>{escape(t("reports.export.min_duration", lang))}<input name="min_duration" value="{exports.DEFAULT_MIN_DURATION}" inputmode="numeric"></label>'
                if kind == "google-ads-calls"
                else ""
            )
            + f'<button type="submit" class="secondary">{escape(t("reports.export.download", lang))}</button></form>'
        )
    return (
        f'<section class="card exports"><h2>{escape(t("reports.exports", lang))}</h2>'
        f'<ul class="export-links">{items}</ul><div class="gads-forms">{forms}</div></section>'
    )


async def overview(request: web.Request) -> web.Response:
    """Render the report: KPIs, charts, a breakdown table and exports."""
    ctx = await context(request)
    lang = ctx.lang
    dimension = request.query.get("dim", "channel")
    if dimension not in DIMENSION_KEYS:
        dimension = "channel"
    scope = ctx.scope
    await rollup.refresh_for_read(
        request.app[appkeys.DATABASE], request.app[appkeys.CLOCK], scope.site_ids
    )
    async with request.app[appkeys.DATABASE].sessions() as db:
        current, previous = await queries.totals(db, scope, compare=ctx.compare)
        rows, total = await queries.breakdown(db, scope, dimension, compare=ctx.compare)
        channel_rows = (
            rows
            if dimension == "channel"
            else (await queries.breakdown(db, scope, "channel", compare=False))[0]
        )
        series = await queries.daily(db, scope)
        previous_series = await queries.daily(db, scope.previous()) if ctx.compare else []
        grid = await queries.heatmap(db, scope)
    if not ctx.sites:
        content = f'<p class="card">{escape(t("reports.no_sites", lang))}</p>'
        return _page(ctx, t("reports.title", lang), "/dashboard", content)
    split = [r for r in channel_rows if r.current.calls]
    data = {
        "lang": lang,
        "model": scope.model,
        "labels": [d.isoformat() for d in scope.period.dates()],
        "series": [v / UNITS_PER_CALL for v in series],
        "previous": [v / UNITS_PER_CALL for v in previous_series],
        "split": {
            "labels": [value_label("channel", r.value, lang) for r in split],
            "values": [r.current.calls / UNITS_PER_CALL for r in split],
            "links": [ctx.link("/dashboard/calls", dim="channel", value=r.value) for r in split],
        },
        "dayLinks": [ctx.link("/dashboard/calls", day=d.isoformat()) for d in scope.period.dates()],
        "heatmap": [[v / UNITS_PER_CALL for v in row] for row in grid],
        "slotLink": ctx.link("/dashboard/calls", slot="SLOT"),
        "t": {
            "current": t("reports.chart.current", lang),
            "previous": t("reports.chart.previous", lang),
            "calls": t("reports.col.calls", lang),
            "weekdays": t("reports.weekdays", lang).split(","),
        },
    }
    tabs = "".join(
        f'<a href="{escape(ctx.link("/dashboard", dim=d))}" data-dim="{d}"{" aria-current=true" if d == dimension else ""}>'
        f"{escape(t('reports.dim.' + d, lang))}</a>"
        for d in DIMENSION_KEYS
    )
    content = (
        _filters(ctx, "/dashboard", {"dim": dimension})
        + _kpis(ctx, current, previous)
        + '<section class="charts">'
        f'<figure class="card chart wide"><figcaption>{escape(t("reports.chart.series", lang))}</figcaption>'
        '<div class="canvas"><canvas id="series-chart" role="img" aria-label="'
        f'{escape(t("reports.chart.series", lang))}"></canvas></div></figure>'
        f'<figure class="card chart"><figcaption>{escape(t("reports.chart.split", lang))} · '
        f'<span class="muted">{escape(MODEL_LABELS[scope.model][lang])}</span></figcaption>'
        '<div class="canvas"><canvas id="split-chart" role="img" aria-label="'
        f'{escape(t("reports.chart.split", lang))}"></canvas></div></figure>'
        f'<figure class="card chart"><figcaption>{escape(t("reports.chart.heatmap", lang))}</figcaption>'
        '<div class="canvas"><canvas id="heatmap-chart" role="img" aria-label="'
        f'{escape(t("reports.chart.heatmap", lang))}"></canvas></div></figure>'
        "</section>"
        f'<section class="card breakdown"><nav class="dims">{tabs}</nav>{_table(ctx, dimension, rows, total)}</section>'
        + _exports(ctx, dimension)
    )
    return _page(ctx, t("reports.title", lang), "/dashboard", content, data)


# -- drill-down and journey ------------------------------------------------------------------------


def _describe_filter(ctx: Context, f: CallFilter) -> str:
    lang = ctx.lang
    parts = []
    if f.dimension and f.value is not None:
        parts.append(
            f"{t('reports.dim.' + f.dimension, lang)}: {value_label(f.dimension, f.value, lang)}"
        )
    if f.metric:
        key = {"sale": "sales", "lead": "leads"}.get(f.metric, f.metric)
        parts.append(t("reports.kpi." + key, lang))
    if f.day:
        parts.append(f.day.isoformat())
    if f.slot:
        weekday, _, hour = f.slot.partition("-")
        parts.append(f"{t('reports.weekdays', lang).split(',')[int(weekday)]} {int(hour):02d}h")
    if f.tag:
        parts.append(f.tag)
    return " · ".join(parts) or t("reports.calls.all", lang)


async def calls_page(request: web.Request) -> web.Response:
    """List the calls behind a figure (masked caller numbers unless admin)."""
    ctx = await context(request)
    lang = ctx.lang
    f = CallFilter.parse(request.query)
    async with request.app[appkeys.DATABASE].sessions() as db:
        lines, cursor = await queries.list_calls(
            db, ctx.scope, f, limit=CALLS_PAGE, cursor=request.query.get("cursor")
        )
    await _audit(request, ctx.auth, "report.calls_listed", filter=f.as_query(), count=len(lines))
    show_credit = f.dimension is not None
    head = "".join(
        f'<th scope="col"{cls}>{escape(t(k, lang))}</th>'
        for k, cls in [
            ("reports.calls.when", ""),
            ("reports.site", ""),
            ("reports.calls.caller", ""),
            ("reports.dim.channel", ""),
            ("reports.dim.source_medium", ""),
            ("reports.dim.campaign", ""),
            ("reports.calls.outcome", ""),
            ("reports.calls.duration", ' class="num"'),
            ("reports.calls.tag", ""),
            *([("reports.calls.credit", ' class="num"')] if show_credit else []),
        ]
    )
    body = ""
    for line in lines:
        call = line.call
        local = call.started_at.astimezone(rollup.zone(line.site.timezone))
        href = f"/dashboard/calls/{call.id}?{urlencode({'model': ctx.scope.model, 'lang': lang})}"
        caller = caller_for(ctx.role, call.caller_e164) or "—"
        body += (
            f'<tr data-call="{call.id}"><td><a href="{escape(href)}">{escape(local.strftime("%Y-%m-%d %H:%M"))}</a></td>'
            f"<td>{escape(line.site.name)}</td><td class=caller>{escape(caller)}"
            + (
                f" <span class=badge>{escape(t('reports.new_caller', lang))}</span>"
                if call.first_time_caller
                else ""
            )
            + "</td>"
            f"<td>{escape(value_label('channel', call.channel or rollup.UNATTRIBUTED, lang))}</td>"
            f"<td>{escape(rollup.source_medium(call.source, call.medium) if call.channel else '—')}</td>"
            f"<td>{escape(call.campaign or '—')}</td>"
            f'<td><span class="outcome {escape(call.outcome or call.status)}">{escape(outcome_label(call.outcome or call.status, lang))}</span></td>'
            f'<td class="num">{escape(duration_text(call.duration_s))}</td>'
            f"<td>{escape(call.outcome_tag or '—')}</td>"
            + (
                f'<td class="num">{escape(number(line.credit / UNITS_PER_CALL, lang, 3))}</td>'
                if show_credit
                else ""
            )
            + "</tr>"
        )
    table = (
        f'<div class="table-wrap"><table class="calls" id="calls"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        if lines
        else f'<p class="muted empty">{escape(t("reports.calls.none", lang))}</p>'
    )
    more = (
        f'<a class="button secondary" href="{escape(ctx.link("/dashboard/calls", cursor=cursor, **f.as_query()))}">'
        f"{escape(t('reports.calls.next', lang))}</a>"
        if cursor
        else ""
    )
    export = ctx.link("/dashboard/export/calls.csv", **f.as_query())
    content = (
        _filters(ctx, "/dashboard/calls", f.as_query())
        + f'<section class="card"><div class="section-head"><h1>{escape(t("reports.calls.title", lang))}</h1>'
        f'<p class="muted">{escape(t("reports.calls.filter", lang))}: <strong>{escape(_describe_filter(ctx, f))}</strong> · '
        f"{escape(MODEL_LABELS[ctx.scope.model][lang])}</p>"
        f'<span class="spacer"></span><a href="{escape(ctx.link("/dashboard"))}">{escape(t("reports.calls.back", lang))}</a>'
        f'<a class="button secondary" href="{escape(export)}" download>{escape(t("reports.export.calls", lang))}</a></div>'
        f"{table}<div class=pager>{more}</div></section>"
    )
    return _page(ctx, t("reports.calls.title", lang), "/dashboard/calls", content)


def _call_id(request: web.Request) -> int:
    call_id = parse_id(request.match_info["call_id"])
    if call_id is None:
        raise ApiError("unknown_call", "no such call in your account", status=404)
    return call_id


async def call_page(request: web.Request) -> web.Response:
    """Show a call: caller, attribution, credit by model, journey (pages, cart), recording."""
    ctx = await context(request)
    lang = ctx.lang
    async with request.app[appkeys.DATABASE].sessions() as db:
        journey = await queries.call_journey(db, ctx.auth.user.account_id, _call_id(request))
    call, site = journey.call, journey.site
    await _audit(request, ctx.auth, "report.call_viewed", target=f"call:{call.id}", site_id=site.id)
    tz = rollup.zone(site.timezone)
    facts = [
        ("reports.calls.when", call.started_at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")),
        ("reports.site", site.name),
        ("reports.calls.caller", caller_for(ctx.role, call.caller_e164) or "—"),
        ("reports.call.tracking", call.tracking_e164),
        ("reports.dim.channel", value_label("channel", call.channel or rollup.UNATTRIBUTED, lang)),
        (
            "reports.dim.source_medium",
            rollup.source_medium(call.source, call.medium) if call.channel else "—",
        ),
        ("reports.dim.campaign", call.campaign or "—"),
        ("reports.dim.term", call.term or "—"),
        ("reports.calls.outcome", outcome_label(call.outcome or call.status, lang)),
        ("reports.calls.duration", duration_text(call.duration_s)),
        ("reports.calls.tag", call.outcome_tag or "—"),
        ("reports.call.method", f"{call.method} ({number(call.confidence * 100, lang)} %)"),
    ]
    facts_html = "".join(f"<dt>{escape(t(k, lang))}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    if not call.recording_url:
        recording = f'<p class="muted">{escape(t("reports.call.no_recording", lang))}</p>'
    elif hears_recordings(ctx.role):
        recording = (
            f'<audio controls preload="none" src="/dashboard/calls/{call.id}/recording"></audio>'
            f' <a href="/dashboard/calls/{call.id}/recording">{escape(t("reports.call.recording", lang))}</a>'
        )
    else:
        recording = f'<p class="muted">{escape(t("reports.call.recording_admin", lang))}</p>'
    sessions_html = ""
    credit_rows = ""
    for entry in journey.sessions:
        s = entry.session
        when = s.started_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        pages = "".join(
            f"<li><time>{escape(p.viewed_at.astimezone(tz).strftime('%H:%M'))}</time> {escape(p.title or p.url)}"
            f' <span class="muted url">{escape(rollup.landing_path(p.url))}</span></li>'
            for p in entry.pageviews
        )
        cart = ""
        if entry.cart is not None and entry.cart.items:
            items = "".join(
                f"<li>{escape(item.get('qty', 1))} × {escape(item.get('name') or item.get('sku') or '?')}</li>"
                for item in entry.cart.items[:20]
                if isinstance(item, dict)
            )
            total = (
                f"{entry.cart.total} {entry.cart.currency or ''}"
                if entry.cart.total is not None
                else ""
            )
            cart = f'<div class="cart"><strong>{escape(t("reports.call.cart", lang))}</strong> {escape(total)}<ul>{items}</ul></div>'
        credit_rows += (
            f'<tr><th scope="row">{escape(when)} · {escape(s.channel)}</th>'
            + "".join(
                f'<td class="num">{escape(number(entry.credits[m] / UNITS_PER_CALL, lang, 3))}</td>'
                for m in MODELS
            )
            + "</tr>"
        )
        sessions_html += (
            f'<li class="touch{" anchor" if s.id == call.session_id else ""}"><div class="touch-head">'
            f"<time>{escape(when)}</time>"
            f'<span class="badge">{escape(s.channel)}</span> {escape(rollup.source_medium(s.source, s.medium))}'
            f"{' · ' + escape(s.campaign) if s.campaign else ''}"
            f'<span class="muted"> · {escape(rollup.landing_path(s.landing_url))}</span></div>'
            f"{'<ol class=pages>' + pages + '</ol>' if pages else ''}{cart}</li>"
        )
    credits_html = ""
    if journey.sessions:
        head = "".join(
            f'<th scope="col" class="num">{escape(MODEL_LABELS[m][lang])}</th>' for m in MODELS
        )
        sums = "".join(
            f'<td class="num">{escape(number(sum(e.credits[m] for e in journey.sessions) / UNITS_PER_CALL, lang, 3))}</td>'
            for m in MODELS
        )
        credits_html = (
            f'<h2>{escape(t("reports.call.credits", lang))}</h2><div class="table-wrap"><table class="report credits">'
            f"<thead><tr><th></th>{head}</tr></thead><tbody>{credit_rows}</tbody>"
            f'<tfoot><tr class="total"><th scope="row">{escape(t("reports.total", lang))}</th>{sums}</tr></tfoot></table></div>'
        )
    if not journey.sessions:
        sessions_html = f'<p class="muted">{escape(t("reports.call.no_journey", lang))}</p>'
    elif len(journey.sessions) == 1 and not journey.sessions[0].session.visitor_id:
        sessions_html = f'<p class="muted">{escape(t("reports.call.no_consent", lang))}</p><ol class="journey">{sessions_html}</ol>'
    else:
        sessions_html = f'<ol class="journey">{sessions_html}</ol>'
    content = (
        f'<section class="card call-detail"><div class="section-head"><h1>{escape(t("reports.call.title", lang))} #{call.id}</h1>'
        f'<span class="spacer"></span><a href="{escape(ctx.link("/dashboard/calls"))}">{escape(t("reports.calls.back", lang))}</a></div>'
        f'<dl class="facts">{facts_html}</dl>'
        f"<h2>{escape(t('reports.call.recording', lang))}</h2>{recording}</section>"
        f'<section class="card"><h2>{escape(t("reports.call.journey", lang))}</h2>{sessions_html}{credits_html}</section>'
    )
    return _page(ctx, f"{t('reports.call.title', lang)} #{call.id}", "/dashboard/calls", content)


async def recording(request: web.Request) -> web.Response:
    """Send an administrator to the call's recording (audited)."""
    auth = await require(request, *[r for r in REPORT_ROLES if hears_recordings(r)])
    async with request.app[appkeys.DATABASE].sessions() as db:
        call, site = await queries.call_in_account(db, auth.user.account_id, _call_id(request))
    if not call.recording_url:
        raise ApiError("no_recording", "this call was not recorded", status=404)
    await _audit(request, auth, "call.recording_played", target=f"call:{call.id}", site_id=site.id)
    raise web.HTTPFound(call.recording_url)


# -- exports -------------------------------------------------------------------------------------


def _csv_response(text: str, filename: str, *, bom: bool = True) -> web.Response:
    # A UTF-8 BOM makes Excel read accented campaign names right; Google Ads files go without
    # one, as their first line must be Google's `Parameters:` row.
    body = ("\ufeff" + text if bom else text).encode()
    response = web.Response(body=body, content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _decimal(text: str | None, name: str) -> Decimal:
    try:
        value = Decimal((text or "0").replace(",", "."))
    except InvalidOperation as exc:
        raise ApiError("invalid_value", f"{name} must be a number") from exc
    if not value.is_finite() or value < 0 or value > Decimal("1e9"):
        raise ApiError("invalid_value", f"{name} must be a positive number")
    return value


def _conversion_params(query: Mapping[str, str]) -> tuple[str, Decimal, str]:
    name = (query.get("conversion_name") or "Calltrack call").strip()[:100]
    currency = (query.get("currency") or "EUR").strip().upper()
    if len(currency) != 3 or not (currency.isascii() and currency.isalpha()):  # not "ÉUR"
        raise ApiError("invalid_currency", "currency must be a 3-letter ISO 4217 code")
    return name or "Calltrack call", _decimal(query.get("value"), "value"), currency


async def _all_lines(request: web.Request, scope: Scope, f: CallFilter) -> list[queries.CallLine]:
    lines: list[queries.CallLine] = []
    cursor: str | None = None
    async with request.app[appkeys.DATABASE].sessions() as db:
        while True:
            page, cursor = await queries.list_calls(db, scope, f, limit=1000, cursor=cursor)
            lines.extend(page)
            if cursor is None:
                return lines
            if len(lines) >= MAX_EXPORT_CALLS:
                raise ApiError(
                    "export_too_large",
                    f"more than {MAX_EXPORT_CALLS} calls: export a shorter period or use the API",
                    status=413,
                )


async def export(request: web.Request) -> web.Response:
    """Serve a CSV: a report table, calls, daily series, heatmap or a Google Ads file."""
    name = request.match_info["name"]
    roles = SETTINGS_ROLES if name == "google-ads-calls" else REPORT_ROLES
    ctx = await context(request, *roles)
    scope = ctx.scope
    stamp = f"{scope.period.first.isoformat()}_{scope.period.last.isoformat()}"
    await rollup.refresh_for_read(
        request.app[appkeys.DATABASE], request.app[appkeys.CLOCK], scope.site_ids
    )
    if name == "report":
        dimension = request.query.get("dim", "channel")
        async with request.app[appkeys.DATABASE].sessions() as db:
            rows, total = await queries.breakdown(db, scope, dimension, compare=ctx.compare)
        return _csv_response(
            exports.report_csv(rows, total), f"calls-by-{dimension}-{scope.model}-{stamp}.csv"
        )
    if name == "daily":
        async with request.app[appkeys.DATABASE].sessions() as db:
            series = await queries.daily(db, scope)
            previous = await queries.daily(db, scope.previous())
        return _csv_response(
            exports.series_csv(scope.period.dates(), series, previous), f"calls-per-day-{stamp}.csv"
        )
    if name == "heatmap":
        async with request.app[appkeys.DATABASE].sessions() as db:
            grid = await queries.heatmap(db, scope)
        return _csv_response(exports.heatmap_csv(grid), f"calls-by-hour-{stamp}.csv")
    if name == "calls":
        f = CallFilter.parse(request.query)
        lines = await _all_lines(request, scope, f)
        await _audit(
            request,
            ctx.auth,
            "report.exported",
            kind="calls",
            filter=f.as_query(),
            count=len(lines),
        )
        return _csv_response(exports.calls_csv(lines, ctx.role), f"calls-{stamp}.csv")
    if name in ("google-ads-calls", "google-ads-clicks"):
        conversion_name, value, currency = _conversion_params(request.query)
        answered = await _all_lines(request, scope, CallFilter(metric="answered"))
        tz = queries.timezone_of(scope.sites)
        if name == "google-ads-calls":
            try:
                minimum = int(request.query.get("min_duration") or exports.DEFAULT_MIN_DURATION)
            except ValueError as exc:
                raise ApiError("invalid_value", "min_duration must be a number of seconds") from exc
            calls = [
                line.call
                for line in reversed(answered)
                if line.call.caller_e164 and (line.call.duration_s or 0) >= minimum
            ]
            await _audit(request, ctx.auth, "report.exported", kind=name, count=len(calls))
            text = exports.google_ads_calls_csv(
                calls, tz, conversion_name=conversion_name, value=value, currency=currency
            )
            return _csv_response(text, f"google-ads-call-conversions-{stamp}.csv", bom=False)
        async with request.app[appkeys.DATABASE].sessions() as db:
            clicks = await queries.gclids_of(db, [line.call for line in reversed(answered)])
        await _audit(request, ctx.auth, "report.exported", kind=name, count=len(clicks))
        text = exports.google_ads_clicks_csv(
            clicks, tz, conversion_name=conversion_name, value=value, currency=currency
        )
        return _csv_response(text, f"google-ads-click-conversions-{stamp}.csv", bom=False)
    raise ApiError("unknown_export", "no such export", status=404)


# -- costs ---------------------------------------------------------------------------------------


async def _costs_content(
    request: web.Request, ctx: Context, message: str = "", error: str = ""
) -> str:
    lang = ctx.lang
    async with request.app[appkeys.DATABASE].sessions() as db:
        imports = list(
            await db.execute(
                select(
                    AdCost.import_id,
                    func.max(AdCost.imported_at),
                    func.count(),
                    func.min(AdCost.day),
                    func.max(AdCost.day),
                    AdCost.currency,
                    func.sum(AdCost.cost),
                    AdCost.site_id,
                )
                .where(AdCost.account_id == ctx.auth.user.account_id)
                .group_by(AdCost.import_id, AdCost.currency, AdCost.site_id)
                .order_by(func.max(AdCost.imported_at).desc())
                .limit(50)
            )
        )
    names: dict[int | None, str] = {s.id: s.name for s in ctx.sites}
    site_options = (
        f'<option value="">{escape(t("reports.costs.account", lang))}</option>'
        + "".join(f'<option value="{s.id}">{escape(s.name)}</option>' for s in ctx.sites)
    )
    rows = "".join(
        f"<tr><td>{escape(at.strftime('%Y-%m-%d %H:%M'))}</td><td>{escape(names.get(site_id, t('reports.costs.account', lang)))}</td>"
        f'<td class="num">{count}</td><td>{first} → {last}</td><td class="num">{escape(money({currency: Decimal(total)}, lang))}</td></tr>'
        for _, at, count, first, last, currency, total, site_id in imports
    )
    history = (
        f'<table class="report"><thead><tr><th>{escape(t("reports.costs.when", lang))}</th><th>{escape(t("reports.site", lang))}</th>'
        f'<th class="num">{escape(t("reports.costs.rows", lang))}</th><th>{escape(t("reports.costs.days", lang))}</th>'
        f'<th class="num">{escape(t("reports.costs.amount", lang))}</th></tr></thead><tbody>{rows}</tbody></table>'
        if imports
        else f'<p class="muted">{escape(t("reports.costs.none", lang))}</p>'
    )
    notice = f'<p class="notice" role="status">{escape(message)}</p>' if message else ""
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        f'<section class="card"><h1>{escape(t("reports.costs", lang))}</h1><p class="muted">{escape(t("reports.costs.intro", lang))}</p>'
        f"{notice}{alert}"
        f'<form class="upload" method="post" action="/dashboard/costs?lang={escape(lang)}" enctype="multipart/form-data">'
        f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
        f'<label>{escape(t("reports.costs.file", lang))}<input type="file" name="file" accept=".csv,text/csv" required></label>'
        f'<label>{escape(t("reports.costs.scope", lang))}<select name="site">{site_options}</select></label>'
        f'<button type="submit">{escape(t("reports.costs.import", lang))}</button></form></section>'
        f'<section class="card"><h2>{escape(t("reports.costs.history", lang))}</h2>{history}</section>'
    )


async def costs_page(request: web.Request) -> web.Response:
    ctx = await context(request)
    return _page(
        ctx, t("reports.costs", ctx.lang), "/dashboard/costs", await _costs_content(request, ctx)
    )


async def _read_upload(request: web.Request) -> tuple[dict[str, str], bytes]:
    """Read the upload form: its text fields and the file's bytes."""
    fields: dict[str, str] = {}
    raw = b""
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "file":
            raw = bytes(await part.read(decode=False))
            if len(raw) > MAX_UPLOAD_BYTES:
                raise ApiError("payload_too_large", "the file exceeds 10 MiB", status=413)
        elif part.name:
            fields[part.name] = (await part.text())[:200]
    return fields, raw


async def costs_upload(request: web.Request) -> web.Response:
    """Import an ad-spend CSV (multipart form with the CSRF token)."""
    ctx = await context(request)
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise ApiError("payload_too_large", "the file exceeds 10 MiB", status=413)
    try:
        fields, raw = await _read_upload(request)
    except BODY_ERRORS as exc:
        # Not multipart, no boundary or no Content-Type (KeyError), broken parts, text fields
        # that are not UTF-8 or in an unknown charset, a body that does not decode.
        drop_unread_body(request, exc)
        raise ApiError(
            "invalid_form", "send the file as multipart/form-data with the form's fields"
        ) from exc
    check_csrf(request, ctx.auth, fields.get("csrf"))
    site_id: int | None = None
    if fields.get("site"):
        async with request.app[appkeys.DATABASE].sessions() as db:
            site_id = (await queries.resolve_sites(db, ctx.auth.user.account_id, fields["site"]))[
                0
            ].id
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    try:
        parsed = cost_import.parse_costs_csv(text)
    except ApiError as exc:
        content = await _costs_content(request, ctx, error=exc.message)
        response = _page(ctx, t("reports.costs", ctx.lang), "/dashboard/costs", content)
        response.set_status(400)
        return response
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        import_id = await cost_import.import_costs(
            db, ctx.auth.user.account_id, site_id, parsed, now
        )
        await audit(
            db,
            action="costs.imported",
            at=now,
            user=ctx.auth.user,
            ip_truncated=client_address(request),
            target=f"costs:{import_id}",
            rows=len(parsed),
            site_id=site_id,
        )
    message = t("reports.costs.imported", ctx.lang).format(rows=len(parsed))
    return _page(
        ctx,
        t("reports.costs", ctx.lang),
        "/dashboard/costs",
        await _costs_content(request, ctx, message=message),
    )


# -- webhooks ------------------------------------------------------------------------------------


async def _webhooks_content(
    request: web.Request, ctx: Context, message: str = "", error: str = "", secret: str = ""
) -> str:
    lang = ctx.lang
    account_id = ctx.auth.user.account_id
    async with request.app[appkeys.DATABASE].sessions() as db:
        endpoints = list(
            await db.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.account_id == account_id)
                .order_by(WebhookEndpoint.id)
            )
        )
        deliveries = list(
            await db.execute(
                select(WebhookDelivery, WebhookEndpoint.url)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.account_id == account_id)
                .order_by(WebhookDelivery.id.desc())
                .limit(100)
            )
        )
    csrf = f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
    boxes = "".join(
        f'<label class="check"><input type="checkbox" name="events" value="{e}" checked>{e}</label>'
        for e in webhooks.EVENTS
    )
    items = ""
    for e in endpoints:
        toggle = t("reports.webhooks.disable" if e.active else "reports.webhooks.enable", lang)
        items += (
            f'<li class="endpoint{"" if e.active else " inactive"}" data-endpoint="{e.id}"><div><code>{escape(e.url)}</code>'
            f'<div class="muted">{escape(", ".join(e.events or []))}</div></div><span class="spacer"></span>'
            f'<form method="post" action="/dashboard/webhooks/{e.id}/test?lang={lang}">{csrf}'
            f'<button type="submit" class="secondary" data-test="{e.id}">{escape(t("reports.webhooks.test", lang))}</button></form>'
            f'<form method="post" action="/dashboard/webhooks/{e.id}/toggle?lang={lang}">{csrf}'
            f'<button type="submit" class="secondary">{escape(toggle)}</button></form></li>'
        )
    endpoints_html = (
        f'<ul class="endpoints">{items}</ul>'
        if endpoints
        else f'<p class="muted">{escape(t("reports.webhooks.none", lang))}</p>'
    )
    log_rows = "".join(
        f'<tr data-delivery="{d.id}"><td>{escape(d.created_at.strftime("%Y-%m-%d %H:%M:%S"))}</td><td>{escape(d.event_type)}</td>'
        f"<td><code>{escape(url)}</code></td>"
        f'<td><span class="status {escape(d.status)}">{escape(t("reports.status." + d.status, lang))}</span></td>'
        f'<td class="num">{d.attempts}</td><td>{escape(d.last_status_code or d.last_error or "—")}</td>'
        f"<td>{escape(d.next_attempt_at.strftime('%Y-%m-%d %H:%M:%S') if d.status == 'pending' else '—')}</td></tr>"
        for d, url in deliveries
    )
    log_html = (
        f'<div class="table-wrap"><table class="report" id="deliveries"><thead><tr><th>{escape(t("reports.webhooks.when", lang))}</th>'
        f"<th>{escape(t('reports.webhooks.events', lang))}</th><th>URL</th><th>{escape(t('reports.webhooks.status', lang))}</th>"
        f'<th class="num">{escape(t("reports.webhooks.attempts", lang))}</th><th>{escape(t("reports.webhooks.response", lang))}</th>'
        f"<th>{escape(t('reports.webhooks.next', lang))}</th></tr></thead><tbody>{log_rows}</tbody></table></div>"
        if deliveries
        else f'<p class="muted">{escape(t("reports.webhooks.no_deliveries", lang))}</p>'
    )
    notice = f'<p class="notice" role="status">{escape(message)}</p>' if message else ""
    if secret:
        notice += f'<p class="notice secret">{escape(t("reports.webhooks.secret", lang))}: <code id="new-secret">{escape(secret)}</code></p>'
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (
        f'<section class="card"><h1>{escape(t("reports.webhooks", lang))}</h1><p class="muted">{escape(t("reports.webhooks.intro", lang))}</p>'
        f"{notice}{alert}{endpoints_html}"
        f'<form class="add-endpoint" method="post" action="/dashboard/webhooks?lang={lang}">{csrf}'
        f'<label>{escape(t("reports.webhooks.url", lang))}<input type="url" name="url" required placeholder="https://crm.example/hooks/calltrack"></label>'
        f"<fieldset><legend>{escape(t('reports.webhooks.events', lang))}</legend>{boxes}</fieldset>"
        f'<button type="submit">{escape(t("reports.webhooks.add", lang))}</button></form></section>'
        f'<section class="card"><h2>{escape(t("reports.webhooks.log", lang))}</h2>{log_html}</section>'
    )


async def webhooks_create(request: web.Request) -> web.Response:
    """Add an endpoint and show its secret once."""
    ctx = await context(request, *SETTINGS_ROLES)
    form = await read_form(request)
    check_csrf(request, ctx.auth, str(form.get("csrf", "")) or None)
    now = request.app[appkeys.CLOCK].now()
    try:
        async with request.app[appkeys.DATABASE].begin() as db:
            endpoint = await webhooks.create_endpoint(
                db,
                ctx.auth.user.account_id,
                str(form.get("url", "")),
                [str(v) for v in form.getall("events", [])],
                now,
            )
            await audit(
                db,
                action="webhook.created",
                at=now,
                user=ctx.auth.user,
                ip_truncated=client_address(request),
                target=f"webhook:{endpoint.id}",
                url=endpoint.url,
            )
            secret = endpoint.secret
    except ApiError as exc:
        response = _page(
            ctx,
            t("reports.webhooks", ctx.lang),
            "/dashboard/webhooks",
            await _webhooks_content(request, ctx, error=exc.message),
        )
        response.set_status(400)
        return response
    content = await _webhooks_content(
        request, ctx, message=t("reports.webhooks.created", ctx.lang), secret=secret
    )
    return _page(ctx, t("reports.webhooks", ctx.lang), "/dashboard/webhooks", content)


def _endpoint_id(request: web.Request) -> int:
    endpoint_id = parse_id(request.match_info["endpoint_id"])
    if endpoint_id is None:
        raise ApiError("unknown_endpoint", "no such webhook endpoint in your account", status=404)
    return endpoint_id


async def webhooks_test(request: web.Request) -> web.Response:
    """Queue a test event for one endpoint ("send test event")."""
    ctx = await context(request, *SETTINGS_ROLES)
    form = await read_form(request)
    check_csrf(request, ctx.auth, str(form.get("csrf", "")) or None)
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        endpoint = await webhooks.endpoint_of_account(
            db, ctx.auth.user.account_id, _endpoint_id(request)
        )
        await webhooks.send_test_event(db, endpoint, now)
    webhooks.wake(request.app)
    raise web.HTTPSeeOther(f"/dashboard/webhooks?lang={ctx.lang}&sent={endpoint.id}")


async def webhooks_toggle(request: web.Request) -> web.Response:
    ctx = await context(request, *SETTINGS_ROLES)
    form = await read_form(request)
    check_csrf(request, ctx.auth, str(form.get("csrf", "")) or None)
    now = request.app[appkeys.CLOCK].now()
    async with request.app[appkeys.DATABASE].begin() as db:
        endpoint = await webhooks.endpoint_of_account(
            db, ctx.auth.user.account_id, _endpoint_id(request)
        )
        endpoint.active = not endpoint.active
        await audit(
            db,
            action="webhook.toggled",
            at=now,
            user=ctx.auth.user,
            ip_truncated=client_address(request),
            target=f"webhook:{endpoint.id}",
            active=endpoint.active,
        )
    raise web.HTTPSeeOther(f"/dashboard/webhooks?lang={ctx.lang}")


async def webhooks_page(request: web.Request) -> web.Response:
    """List the endpoints, the form to add one and the delivery log."""
    ctx = await context(request, *SETTINGS_ROLES)
    message = t("reports.webhooks.queued", ctx.lang) if request.query.get("sent") else ""
    return _page(
        ctx,
        t("reports.webhooks", ctx.lang),
        "/dashboard/webhooks",
        await _webhooks_content(request, ctx, message=message),
    )


# -- background refresher ------------------------------------------------------------------------


async def _refresher(app: web.Application) -> None:
    database, clock = app[appkeys.DATABASE], app[appkeys.CLOCK]
    audit_mark: int | None = None
    await asyncio.sleep(rollup.FIRST_REFRESH_DELAY)
    while True:
        try:
            # Read inside the loop: a database still starting must not end the refresher.
            if audit_mark is None:
                audit_mark = await recent_audit_mark(database)
            audit_mark = await rollup.mark_tagged_calls(
                database, max(audit_mark - COMMIT_MARGIN, 0), clock.now()
            )
            await rollup.refresh(database, clock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_background_failure(log, "report refresh failed", exc)
        await asyncio.sleep(rollup.REFRESH_SECONDS)


async def _refresher_ctx(app: web.Application) -> AsyncIterator[None]:
    if REFRESHER in app[appkeys.EXTRAS].get(webhooks.DISABLED_KEY, ()):
        yield
        return
    task = asyncio.create_task(_refresher(app), name="report-refresher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _mark_dirty(app: web.Application, call: Any) -> None:
    await rollup.mark_call_dirty(app[appkeys.DATABASE], call, app[appkeys.CLOCK].now())


def setup(app: web.Application) -> None:
    """Add the dashboard pages, the exports and the rollup refresher."""
    app[appkeys.EXTRAS].setdefault("call_listeners", []).append(_mark_dirty)
    app.cleanup_ctx.append(_refresher_ctx)
    app.router.add_get("/dashboard", overview)
    app.router.add_get("/dashboard/calls", calls_page)
    app.router.add_get(r"/dashboard/calls/{call_id}", call_page)
    app.router.add_get(r"/dashboard/calls/{call_id}/recording", recording)
    app.router.add_get(r"/dashboard/export/{name:[a-z-]+}.csv", export)
    app.router.add_get("/dashboard/costs", costs_page)
    app.router.add_post("/dashboard/costs", costs_upload)
    app.router.add_get("/dashboard/webhooks", webhooks_page)
    app.router.add_post("/dashboard/webhooks", webhooks_create)
    app.router.add_post(r"/dashboard/webhooks/{endpoint_id}/test", webhooks_test)
    app.router.add_post(r"/dashboard/webhooks/{endpoint_id}/toggle", webhooks_toggle)
