"""`calltrack numbers add|list|release|advise`, `calltrack site set` and `site add-number`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.cli import cli_actor, emit, with_db
from dashboard.site_settings import (
    ContactSettings,
    apply_contact_settings,
    audit_settings_change,
    check_timezone,
)
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.carriers.base import CarrierError
from telephony.signature import webhook_urls
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.contacts import parse_opening_spec
from tracker.errors import ApiError, NotFound
from tracker.models import Site, TrackingNumber
from tracker.numbers.advise import advise
from tracker.numbers.rules import SourceRule, parse_rule
from tracker.numbers.service import NumberService, number_service_for
from tracker.phones import InvalidPhoneNumber, to_e164
from tracker.privacy.register import apply_register_fields
from tracker.sites import CONSENT_MODES, POOL_EXHAUSTION, add_business_number, site_by_key

# A hold shorter than the snippet's 30 s ping would drop a visitor's number between two pings;
# beyond a day a pool would need one number per daily visitor.
MIN_HOLD_MINUTES = 1
MAX_HOLD_MINUTES = 24 * 60

Work = Callable[[AsyncSession, NumberService], Awaitable[Any]]


async def _with_service(
    settings: Settings, work: Work, *, carrier_for: str | None = None, exclude: bool = False
) -> Any:
    """Run `work(db, service)` in one transaction; carrier errors become API errors."""
    carrier = None

    async def run(db: AsyncSession) -> Any:
        nonlocal carrier
        taken: list[str] = []
        if exclude:
            taken = list(await db.scalars(select(TrackingNumber.e164)))
        try:
            carrier = create_carrier(settings, carrier_for, exclude=taken)
        except CarrierError as exc:
            raise ApiError("carrier_unavailable", str(exc), status=503) from exc
        service = number_service_for(settings, None, carrier=carrier)
        try:
            return await work(db, service)
        except CarrierError as exc:
            raise ApiError("carrier_error", str(exc), status=502) from exc
        finally:
            await service.aclose()

    try:
        return await with_db(settings, run)
    finally:
        if carrier is not None:
            await close_carrier(carrier)


def _rule(args: argparse.Namespace) -> SourceRule | None:
    # `is not None`: an empty value (`--source ""`, a shell variable left unset) is a rule
    # with nothing in it, refused by parse_rule, not a request for a pool number.
    for option, rule_type in (
        ("source", "channel"),
        ("utm_source", "utm_source"),
        ("referrer_domain", "referrer_domain"),
        ("landing_param", "landing_param"),
    ):
        value = getattr(args, option)
        if value is not None:
            return parse_rule(rule_type, value)
    return None


async def cmd_numbers_add(args: argparse.Namespace, settings: Settings) -> int:
    rule = _rule(args)
    count = args.count if args.count is not None else 1

    async def work(db: AsyncSession, service: NumberService) -> list[dict[str, Any]]:
        now = SystemClock().now()
        site = await site_by_key(db, args.site)
        added = await service.add_numbers(
            db,
            site,
            now,
            count=count,
            rule=rule,
            business_e164=args.business,
            e164=args.number,
            webhooks=webhook_urls(settings.public_url),
        )
        wanted = {number.e164 for number in added}
        return [n for n in await service.list_numbers(db, site, now) if n["e164"] in wanted]

    for attempt in range(3):
        try:
            emit(await _with_service(settings, work, exclude=True))
            return 0
        except IntegrityError:
            # Another `numbers add` (or worker) took one of the numbers chosen here first:
            # nothing was saved; choose again among those still free.
            if attempt == 2:
                raise
    return 1  # not reached


def _print_numbers(numbers: list[dict[str, Any]]) -> None:
    header = ("number", "kind", "rule", "state", "business", "holder", "leases")
    rows = [
        (
            n["display"],
            n["kind"],
            f"{n['rule']['type']}={n['rule']['value']}" if n["rule"] else "-",
            n["state"],
            n["business_number"]["label"] if n["business_number"] else "-",
            n["holder"] or "-",
            str(n["leases"]["total"]),
        )
        for n in numbers
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))


async def cmd_numbers_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: AsyncSession, service: NumberService) -> list[dict[str, Any]]:
        site = await site_by_key(db, args.site)
        return await service.list_numbers(db, site, SystemClock().now(), include_released=args.all)

    numbers = await _with_service(settings, work)
    if args.json:
        emit(numbers)
    elif numbers:
        _print_numbers(numbers)
    else:
        print("no tracking numbers: add some with `calltrack numbers add`")
    return 0


async def cmd_numbers_release(args: argparse.Namespace, settings: Settings) -> int:
    async def provider(db: AsyncSession) -> str:
        site = await site_by_key(db, args.site)
        try:
            e164 = to_e164(args.number, site.country)
        except InvalidPhoneNumber as exc:
            raise ApiError("invalid_phone", str(exc)) from exc
        found = await db.scalar(
            select(TrackingNumber.provider).where(
                TrackingNumber.site_id == site.id,
                TrackingNumber.e164 == e164,
                TrackingNumber.state == "active",
            )
        )
        if found is None:
            raise NotFound("unknown_number", f"{e164} is not an active number of this site")
        return str(found)

    async def work(db: AsyncSession, service: NumberService) -> list[dict[str, Any]]:
        now = SystemClock().now()
        site = await site_by_key(db, args.site)
        released = await service.release_number(db, site, args.number, now)
        numbers = await service.list_numbers(db, site, now, include_released=True)
        return [n for n in numbers if n["e164"] == released.e164]

    # A number is released at the carrier it was bought from, whatever the current setting.
    name = await with_db(settings, provider)
    emit((await _with_service(settings, work, carrier_for=name))[0])
    return 0


async def cmd_numbers_advise(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 < args.target < 1:
        raise ApiError("invalid_target", "--target is a share between 0 and 1, e.g. 0.99")
    if not 1 <= args.days <= 366:
        raise ApiError("invalid_days", "--days must be between 1 and 366")

    async def work(db: AsyncSession) -> dict[str, Any]:
        site = await site_by_key(db, args.site)
        return await advise(db, site, SystemClock().now(), days=args.days, target=args.target)

    report = await with_db(settings, work)
    if args.json:
        emit(report)
        return 0
    print(
        f"Site {report['site_key']}: last {report['days']} days, hold {report['hold_minutes']} min"
    )
    print(f"  visits with consent        {report['sessions_with_consent']}")
    if not report["sessions_with_consent"]:
        print(
            f"  no visit with consent in the last {report['days']} days: nothing to size the "
            "pool from yet (pool numbers go only to visits with consent)"
        )
        return 0
    print(f"  peak concurrent sessions   {report['peak_concurrent_sessions']}")
    target = f"{report['target']:.1%}"
    # A site without a business number yet is sized as one pool.
    for pool in report["pools"] or [{**report, "business_number": {"label": "-"}}]:
        used = pool.get("utilisation")
        print(
            f"  pool {pool['business_number']['label']:<10} {pool.get('pool_size', 0)} numbers, "
            f"peak {pool['peak_concurrent_sessions']}, "
            f"utilisation {'-' if used is None else f'{used:.0%}'}, "
            f"{pool.get('overflow_leases', 0)} overflow leases of {pool.get('leases', 0)}"
        )
        if pool.get("sessions_on_source_numbers"):
            print(
                f"    {pool['sessions_on_source_numbers']} visits saw a source number "
                "(not counted: they take none from the pool)"
            )
        size = pool["recommended_pool_size"]
        if size is None:
            best = pool["best_checked"]
            detail = f" (best: {best['accuracy']:.1%} with {best['size']})" if best else ""
            print(f"    no pool size reaches {target} of calls within the hold{detail}")
        else:
            print(f"    numbers for {target} of calls within the hold: {size}")
    print(f"  CallTrackingMetrics' rule of thumb: {report['rule_of_thumb']['pool_size']}")
    return 0


def _wanted_contact_settings(args: argparse.Namespace, site: Site) -> ContactSettings:
    """Return the site's contact settings with what the command line changes."""
    wanted = ContactSettings.of(site)
    if args.contact_widget is not None:
        wanted = dataclasses.replace(wanted, contact_widget=args.contact_widget == "on")
    if args.opening_hours is not None:
        wanted = dataclasses.replace(wanted, opening_hours=parse_opening_spec(args.opening_hours))
    if args.timezone is not None:
        wanted = dataclasses.replace(wanted, timezone=check_timezone(args.timezone))
    return wanted


async def cmd_site_set(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: AsyncSession) -> dict[str, Any]:
        site = await site_by_key(db, args.site)
        pool_before = (site.lease_hold_minutes, site.pool_exhaustion, site.consent_mode)
        calls_before = (site.record_calls, site.recording_notice, site.whisper)
        for option, attribute in (
            ("record_calls", "record_calls"),
            ("recording_notice", "recording_notice"),
            ("whisper", "whisper"),
        ):
            wanted = getattr(args, option)
            if wanted is not None:
                setattr(site, attribute, wanted == "on")
        if args.hold_minutes is not None:
            if not MIN_HOLD_MINUTES <= args.hold_minutes <= MAX_HOLD_MINUTES:
                raise ApiError(
                    "invalid_hold",
                    f"--hold-minutes must be between {MIN_HOLD_MINUTES} and {MAX_HOLD_MINUTES}",
                )
            site.lease_hold_minutes = args.hold_minutes
        if args.exhaustion is not None:
            site.pool_exhaustion = args.exhaustion
        if args.consent_mode is not None:
            site.consent_mode = args.consent_mode
        changed = apply_contact_settings(site, _wanted_contact_settings(args, site))
        changed.update(apply_register_fields(site, args.register or []))
        pool_after = (site.lease_hold_minutes, site.pool_exhaustion, site.consent_mode)
        calls_after = (site.record_calls, site.recording_notice, site.whisper)
        for name, before, after in zip(
            ("hold_minutes", "exhaustion", "consent_mode", "record_calls", "recording_notice",
             "whisper"),
            pool_before + calls_before,
            pool_after + calls_after,
            strict=True,
        ):  # fmt: skip
            if before != after:
                changed[name] = [before, after]
        if changed:
            await audit_settings_change(db, site, changed, SystemClock().now(), actor=cli_actor())
        await db.flush()
        return {
            "site_key": site.site_key,
            "hold_minutes": site.lease_hold_minutes,
            "exhaustion": site.pool_exhaustion,
            "consent_mode": site.consent_mode,
            "record_calls": site.record_calls,
            "recording_notice": site.recording_notice,
            "whisper": site.whisper,
            **ContactSettings.of(site).as_json(),
            # Only once set, so scripts reading the other fields see the same object as before.
            **(
                {"register": register}
                if (register := (site.settings or {}).get("register"))
                else {}
            ),
        }

    emit(await with_db(settings, work))
    return 0


async def cmd_site_add_number(args: argparse.Namespace, settings: Settings) -> int:
    async def work(db: AsyncSession) -> dict[str, Any]:
        site = await site_by_key(db, args.site)
        number = await add_business_number(db, site, args.phone, args.label)
        return {"site_key": site.site_key, "e164": number.e164, "label": number.label}

    emit(await with_db(settings, work))
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> Any:
    """Return the sub-command group of an existing command (argparse has no public accessor)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def register(commands: Any) -> Any:
    """Add `numbers` and the pool settings of `site`; return the `numbers` action group."""
    numbers = commands.add_parser(
        "numbers", help="tracking numbers for dynamic number insertion"
    ).add_subparsers(dest="numbers_command", required=True, metavar="ACTION")

    add = numbers.add_parser("add", help="add pool numbers, or a source number with one rule")
    add.add_argument("--site", required=True, help="site key")
    add.add_argument("--count", type=int, help="how many numbers (default 1)")
    add.add_argument("--business", help="the business number they stand for (default: primary)")
    add.add_argument("--number", help="add this number instead of asking the carrier for one")
    rules = add.add_mutually_exclusive_group()
    rules.add_argument("--source", metavar="CHANNEL", help='GA4 channel, e.g. "Paid Social"')
    rules.add_argument("--utm-source", metavar="SOURCE")
    rules.add_argument("--referrer-domain", metavar="DOMAIN", help="subdomains included")
    rules.add_argument("--landing-param", metavar="NAME=VALUE", help="e.g. promo=tv")
    add.set_defaults(handler=cmd_numbers_add)

    listing = numbers.add_parser("list", help="list a site's tracking numbers")
    listing.add_argument("--site", required=True, help="site key")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--all", action="store_true", help="include released numbers")
    listing.set_defaults(handler=cmd_numbers_list)

    release = numbers.add_parser("release", help="give a number back to its carrier")
    release.add_argument("--site", required=True, help="site key")
    release.add_argument("--number", required=True)
    release.set_defaults(handler=cmd_numbers_release)

    advice = numbers.add_parser("advise", help="pool utilisation and the size a target needs")
    advice.add_argument("--site", required=True, help="site key")
    advice.add_argument("--target", type=float, default=0.99, help="share of calls (0.99)")
    advice.add_argument("--days", type=int, default=30)
    advice.add_argument("--json", action="store_true", help="print JSON")
    advice.set_defaults(handler=cmd_numbers_advise)

    site_parser = commands.choices.get("site")
    site = _subcommands(site_parser) if site_parser is not None else None
    if site is not None:
        settings = site.add_parser(
            "set",
            help="change a site's number pool, consent, call recording and whisper, contact "
            "widget and opening hours",
        )
        settings.add_argument("--site", required=True, help="site key")
        settings.add_argument("--hold-minutes", type=int, help="hold after last activity (30)")
        settings.add_argument("--exhaustion", choices=POOL_EXHAUSTION)
        settings.add_argument("--consent-mode", choices=CONSENT_MODES)
        settings.add_argument(
            "--contact-widget", choices=("on", "off"), help='the "call me back" button'
        )
        settings.add_argument(
            "--record-calls", choices=("on", "off"), help="record forwarded calls (off)"
        )
        settings.add_argument(
            "--recording-notice",
            choices=("on", "off"),
            help="tell callers a recorded call may be recorded, in the site's language (on)",
        )
        settings.add_argument(
            "--whisper",
            choices=("on", "off"),
            help='tell whoever answers where the caller came from, "Appel Google Ads" (on)',
        )
        settings.add_argument(
            "--opening-hours",
            metavar="SPEC",
            help='e.g. "mon-fri 09:00-12:30,14:00-18:00; sat 10:00-13:00" (days not named are '
            'closed), "always", or a JSON object {"mon": [["09:00", "18:00"]]}',
        )
        settings.add_argument(
            "--timezone", metavar="ZONE", help="IANA time zone of the hours, e.g. Europe/Paris"
        )
        settings.add_argument(
            "--register",
            action="append",
            metavar="FIELD=TEXT",
            help="what the record of processing needs from the merchant: controller, dpo, "
            'hosting, transfers (";" between transfers); an empty TEXT clears it; repeatable',
        )
        settings.set_defaults(handler=cmd_site_set)

        extra = site.add_parser("add-number", help="add a business number (e.g. after-sales)")
        extra.add_argument("--site", required=True, help="site key")
        extra.add_argument("--phone", required=True, help="any written form")
        extra.add_argument("--label", required=True, help="e.g. after-sales")
        extra.set_defaults(handler=cmd_site_add_number)
    return numbers
