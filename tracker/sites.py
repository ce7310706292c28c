"""Accounts (tenants) and sites: creation, lookup and the snippet a merchant pastes."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import zoneinfo
from dataclasses import dataclass

import phonenumbers
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock, SystemClock
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Account, BusinessNumber, Site, TrackingNumber
from tracker.phones import InvalidPhoneNumber, phone_forms, to_e164

CONSENT_MODES = ("required", "not_required")
POOL_EXHAUSTION = ("overflow", "business")
_DOMAIN = re.compile(r"^(?=.{1,253}\Z)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\Z")
# fr, fr-BE, es-419, zh-Hant: 8 characters at most (the column).
_LANGUAGE = re.compile(r"^(?=.{2,8}\Z)[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,4})?\Z")
_COUNTRY_LANGUAGE = {"FR": "fr", "BE": "fr", "LU": "fr", "CH": "fr", "MC": "fr", "CA": "en"}


def new_site_key() -> str:
    """Make a site key: public (it is in every page), unguessable, URL-safe."""
    return "ct" + secrets.token_hex(10)


def normalise_domain(domain: str) -> str:
    """Lower-case a bare host name; accept a pasted URL; raise ApiError when invalid."""
    text = (domain or "").strip().lower()
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text).split("/", 1)[0].split(":", 1)[0]
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]  # a fully qualified name: "velos-martin.fr."
    if text.startswith("www."):
        text = text[4:]
    try:
        text = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ApiError("invalid_domain", f"{domain!r} is not a valid domain name") from exc
    if not _DOMAIN.match(text):
        raise ApiError("invalid_domain", f"{domain!r} is not a valid domain name")
    return text


async def get_or_create_account(db: AsyncSession, name: str, clock: Clock) -> Account:
    """Return the account called `name`, creating it when missing."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise ApiError("invalid_account", "an account name of 1 to 200 characters is required")
    account = await db.scalar(select(Account).where(Account.name == name))
    if account is None:
        account = Account(name=name, created_at=clock.now())
        db.add(account)
        await db.flush()
    return account


@dataclass(frozen=True)
class SiteSpec:
    name: str
    domain: str
    phone: str
    country: str
    timezone: str | None = None
    language: str | None = None
    consent_mode: str = "required"


def _validate_country(country: str) -> str:
    code = (country or "").strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        # AQ, BV, HM... are ISO 3166 codes without a telephone numbering plan of their own.
        raise ApiError(
            "invalid_country",
            f"{country!r} is not the ISO 3166 code of a country with its own phone numbers "
            "(e.g. FR, DE, GB)",
        )
    return code


def _default_timezone(country: str) -> str:
    from phonenumbers import timezone as phone_timezone

    example = phonenumbers.example_number(country)
    zones = phone_timezone.time_zones_for_number(example) if example else ()
    return zones[0] if zones and zones[0] != "Etc/Unknown" else "UTC"


async def create_site(
    db: AsyncSession, account: Account, spec: SiteSpec, clock: Clock | None = None
) -> Site:
    """Create a site with its primary business number."""
    clock = clock or SystemClock()
    name = spec.name.strip()
    if not name or len(name) > 200:
        raise ApiError("invalid_name", "a site name of 1 to 200 characters is required")
    country = _validate_country(spec.country)
    try:
        business_e164 = to_e164(spec.phone, country)
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", str(exc)) from exc
    await refuse_tracking_number(db, business_e164)
    if spec.consent_mode not in CONSENT_MODES:
        raise ApiError("invalid_consent_mode", f"consent_mode must be one of {CONSENT_MODES}")
    timezone = spec.timezone or _default_timezone(country)
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ApiError("invalid_timezone", f"{timezone!r} is not an IANA time zone") from exc
    language = (spec.language or "").strip() or _COUNTRY_LANGUAGE.get(country, "en")
    if not _LANGUAGE.match(language):
        # Cut to the column, "français-de-france" became "français".
        raise ApiError("invalid_language", f"{language!r} is not a language code such as fr or en")
    site = Site(
        account_id=account.id,
        site_key=new_site_key(),
        name=name,
        domain=normalise_domain(spec.domain),
        country=country,
        timezone=timezone,
        language=language,
        consent_mode=spec.consent_mode,
        lease_hold_minutes=30,
        pool_exhaustion="overflow",
        record_calls=False,
        recording_notice=True,
        whisper=True,
        settings={},
        created_at=clock.now(),
    )
    db.add(site)
    await db.flush()
    db.add(BusinessNumber(site_id=site.id, e164=business_e164, label="main", is_primary=True))
    await db.flush()
    return site


async def refuse_tracking_number(db: AsyncSession, e164: str) -> None:
    """A number Calltrack tracks calls on cannot also be the number those calls go to."""
    tracking = await db.scalar(
        select(TrackingNumber.id).where(
            TrackingNumber.e164 == e164, TrackingNumber.state == "active"
        )
    )
    if tracking is not None:
        raise Conflict(
            "tracking_number",
            f"{e164} is a tracking number here; a business number must be one the merchant "
            "answers (release the tracking number first)",
        )


async def add_business_number(
    db: AsyncSession, site: Site, phone: str, label: str
) -> BusinessNumber:
    """Add another published number (e.g. after-sales) to a site."""
    try:
        e164 = to_e164(phone, site.country)
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", str(exc)) from exc
    existing = await db.scalar(
        select(BusinessNumber).where(BusinessNumber.site_id == site.id, BusinessNumber.e164 == e164)
    )
    if existing is not None:
        raise Conflict("duplicate_number", f"{e164} is already a business number of this site")
    await refuse_tracking_number(db, e164)
    # The label is how lists and `numbers advise` tell a site's pools apart.
    label = (label or "").strip()
    if not label or len(label) > 100:
        raise ApiError("invalid_label", "a business number needs a label of 1 to 100 characters")
    # Compared here, not with SQL lower(): SQLite's folds ASCII only ("APRÈS-VENTE").
    labels = await db.scalars(select(BusinessNumber.label).where(BusinessNumber.site_id == site.id))
    if label.casefold() in {existing.casefold() for existing in labels}:
        raise Conflict("duplicate_label", f"this site already has a number labelled {label!r}")
    number = BusinessNumber(site_id=site.id, e164=e164, label=label)
    db.add(number)
    await db.flush()
    return number


async def site_by_key(db: AsyncSession, site_key: str) -> Site:
    """Find a site by its key; raise NotFound."""
    site = await db.scalar(select(Site).where(Site.site_key == site_key))
    if site is None:
        raise NotFound("unknown_site", f"no site has the key {site_key!r}")
    return site


async def business_numbers(db: AsyncSession, site_id: int) -> list[BusinessNumber]:
    """List a site's business numbers, primary first."""
    rows = await db.scalars(
        select(BusinessNumber)
        .where(BusinessNumber.site_id == site_id)
        .order_by(BusinessNumber.is_primary.desc(), BusinessNumber.id)
    )
    return list(rows)


async def list_sites(db: AsyncSession, account: Account | None = None) -> list[Site]:
    """List sites, of one account when given."""
    query = select(Site).order_by(Site.id)
    if account is not None:
        query = query.where(Site.account_id == account.id)
    return list(await db.scalars(query))


# How long the merchant's first paint may wait for ct.js (see snippet_for).
RENDER_HOLD_MS = 1000


def snippet_for(site_key: str, public_url: str) -> str:
    """Return the two script tags a merchant pastes into every page's <head>.

    The first is the command queue. The second loads ct.js `async` (parsing goes on) and
    `blocking="render"`: Chromium holds the first paint until ct.js has run, so the business
    number is hidden before it is ever painted (no flicker). Should ct.js be slow or
    unreachable, the queue's timer lifts the hold after RENDER_HOLD_MS (removing the
    attribute unblocks rendering): a Calltrack outage delays the merchant's first paint by
    one second at most (every copy of the tag: a page that has it twice). Browsers without
    `blocking` treat the tag as plain async. A page whose Content-Security-Policy refuses
    inline scripts runs neither the queue nor that timer: such a merchant drops
    `blocking="render"` (or allows the tag by hash).
    """
    src = f"{public_url.rstrip('/')}/ct.js?k={site_key}"
    return (
        "<script>window.calltrack=window.calltrack||function(){"
        "(calltrack.q=calltrack.q||[]).push(arguments)};"
        "setTimeout(function(){document.querySelectorAll('#calltrack-js').forEach("
        f"function(s){{s.removeAttribute('blocking')}})}},{RENDER_HOLD_MS});</script>\n"
        f'<script async blocking="render" id="calltrack-js" src="{src}"></script>'
    )


async def site_summary(db: AsyncSession, site: Site, public_url: str) -> dict[str, object]:
    """Describe a site for the CLI and API."""
    numbers = await business_numbers(db, site.id)
    account = await db.get(Account, site.account_id)
    return {
        "site_key": site.site_key,
        "account": account.name if account is not None else None,
        "name": site.name,
        "domain": site.domain,
        "country": site.country,
        "timezone": site.timezone,
        "language": site.language,
        "consent_mode": site.consent_mode,
        "business_numbers": [
            {"e164": n.e164, "label": n.label, "display": phone_forms(n.e164).national}
            for n in numbers
        ],
        "snippet": snippet_for(site.site_key, public_url),
        "created_at": site.created_at.isoformat(),
    }


def dumps(data: object) -> str:
    """Serialise for the CLI: UTF-8, stable key order."""
    return json.dumps(data, ensure_ascii=False, indent=2, default=_default)


def _default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)
