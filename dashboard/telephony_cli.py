"""`calltrack numbers buy|import|reconfigure`, `calltrack calls list`, `calltrack simulate call`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.cli import cli_actor
from telephony.carrier_factory import close_carrier, create_carrier
from telephony.carriers.base import Carrier, CarrierError, ProvisionedNumber, WebhookUrls
from telephony.signature import SIMULATED, TWILIO, webhook_urls
from tracker.audit import audit
from tracker.clock import SystemClock
from tracker.config import Settings
from tracker.db import migrated_database
from tracker.errors import ApiError
from tracker.models import BusinessNumber, Call, TrackingNumber
from tracker.numbers.rules import parse_rule
from tracker.numbers.service import find_business_number, number_service_for
from tracker.phones import InvalidPhoneNumber, phone_forms, to_e164
from tracker.sites import dumps, site_by_key

CALL_FIELDS = (
    "id",
    "provider_call_id",
    "caller",
    "tracking_number",
    "started_at",
    "answered_at",
    "ended_at",
    "status",
    "outcome",
    "duration",
    "session_id",
    "channel",
    "source",
    "medium",
    "campaign",
    "method",
    "confidence",
    "recording_url",
)


class TelephonyCliError(Exception):
    """A user-facing error of these commands: printed as one line, exit status 2."""


def _fail(message: str) -> TelephonyCliError:
    return TelephonyCliError(message)


def number_json(
    number: TrackingNumber, status_url: str | None = None, fallback_url: str | None = None
) -> dict[str, Any]:
    """Describe a tracking number for the CLI."""
    data: dict[str, Any] = {
        "id": number.id,
        "e164": number.e164,
        "provider": number.provider,
        "provider_sid": number.provider_sid,
        "kind": number.kind,
        "state": number.state,
        "voice_url": number.voice_url,
    }
    if status_url is not None:
        data["status_url"] = status_url
    if fallback_url is not None:
        data["fallback_url"] = fallback_url
    return data


def call_json(call: Call) -> dict[str, Any]:
    """Describe a call with exactly the fields of `calls list --json`."""
    return {
        "id": call.id,
        "provider_call_id": call.provider_call_id,
        "caller": call.caller_e164,
        "tracking_number": call.tracking_e164,
        "started_at": call.started_at.isoformat(),
        "answered_at": call.answered_at.isoformat() if call.answered_at else None,
        "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        "status": call.status,
        "outcome": call.outcome,
        "duration": call.duration_s,
        "session_id": call.session_id,
        "channel": call.channel,
        "source": call.source,
        "medium": call.medium,
        "campaign": call.campaign,
        "method": call.method,
        "confidence": call.confidence,
        "recording_url": call.recording_url,
    }


async def _with_db(settings: Settings, work: Any) -> Any:
    database = await migrated_database(settings.database_url)
    try:
        async with database.begin() as db:
            return await work(db)
    finally:
        await database.close()


class _CliCarrier:
    """A carrier as `NumberService` uses it, with the CLI's search and configure options."""

    def __init__(
        self,
        carrier: Carrier,
        *,
        country: str | None = None,
        contains: str | None = None,
        configure: bool = True,
    ) -> None:
        self.carrier = carrier
        self.country = country.upper() if country else None
        self.contains = contains
        self.configure_webhooks = configure

    @property
    def name(self) -> str:
        return self.carrier.name

    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]:
        return await self.carrier.search_available(
            self.country or country, count, self.contains or contains
        )

    async def buy(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        return await self.carrier.buy(e164, webhooks)

    async def configure(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        if self.configure_webhooks:
            return await self.carrier.configure(e164, webhooks)
        # --no-configure: the carrier is not asked; the number is recorded as pointing where
        # the merchant is told to point it.
        return ProvisionedNumber(
            e164=e164,
            provider=self.carrier.name,
            provider_sid=None,
            voice_url=webhooks.voice_url,
            status_url=webhooks.status_url,
            fallback_url=webhooks.fallback_url,
        )

    async def release(self, number: ProvisionedNumber) -> None:
        await self.carrier.release(number)


async def _add_numbers(
    settings: Settings, carrier: _CliCarrier, site_key: str, **options: Any
) -> list[dict[str, Any]]:
    """Provision through the number service (pool sync, duplicate checks) in one transaction."""
    webhooks = webhook_urls(settings.public_url)
    service = number_service_for(settings, None, carrier=carrier)

    async def work(db: AsyncSession) -> list[dict[str, Any]]:
        site = await site_by_key(db, site_key)
        added = await service.add_numbers(
            db, site, SystemClock().now(), webhooks=webhooks, **options
        )
        business = await service.business_number(db, site, options.get("business_e164"))
        fallback = webhooks.forwarding_to(business.e164).fallback_url
        return [number_json(number, webhooks.status_url, fallback) for number in added]

    try:
        return list(await _with_db(settings, work))
    finally:
        await service.aclose()
        await close_carrier(carrier.carrier)


async def cmd_numbers_buy(args: argparse.Namespace, settings: Settings) -> int:
    """Search the carrier's numbers, buy them and point their webhooks at us."""
    carrier = _CliCarrier(create_carrier(settings), country=args.country, contains=args.contains)
    bought = await _add_numbers(
        settings, carrier, args.site, count=args.count, business_e164=args.business_number
    )
    print(dumps(bought))
    return 0


async def cmd_numbers_import(args: argparse.Namespace, settings: Settings) -> int:
    """Register a number the merchant already owns with the carrier."""
    rule = None
    if args.kind == "source":
        if not args.rule_type or not args.rule_value:
            raise _fail("a source number needs --rule-type and --rule-value")
        rule = parse_rule(args.rule_type, args.rule_value)
    carrier = _CliCarrier(create_carrier(settings, args.provider), configure=not args.no_configure)
    (result,) = await _add_numbers(
        settings,
        carrier,
        args.site,
        e164=args.number,
        rule=rule,
        business_e164=args.business_number,
    )
    if args.no_configure:
        result["configure"] = {
            "voice_url": result["voice_url"],
            "voice_method": "POST",
            "status_callback": result["status_url"],
            "status_callback_method": "POST",
            "voice_fallback_url": result["fallback_url"],
            "voice_fallback_method": "POST",
        }
        print(
            "The carrier's configuration was left alone. In its console, set this number's\n"
            f"  voice webhook (POST):     {result['voice_url']}\n"
            f"  status callback (POST):   {result['status_url']}\n"
            f"  voice fallback (POST):    {result['fallback_url']}",
            file=sys.stderr,
        )
    print(dumps(result))
    return 0


async def cmd_numbers_reconfigure(args: argparse.Namespace, settings: Settings) -> int:
    """Point every active number of a site at this server's webhooks again.

    For a new public URL, and for numbers bought before the voice fallback existed: each
    number's carrier is told its voice, status and fallback URLs (the fallback rings the
    business line the number forwards to).
    """
    webhooks = webhook_urls(settings.public_url)
    carriers: dict[str, Carrier] = {}
    failed = 0

    async def work(db: AsyncSession) -> list[dict[str, Any]]:
        nonlocal failed
        site = await site_by_key(db, args.site)
        primary = (await find_business_number(db, site)).e164  # for numbers naming none
        rows = await db.execute(
            select(TrackingNumber, BusinessNumber.e164)
            .outerjoin(BusinessNumber, BusinessNumber.id == TrackingNumber.business_number_id)
            .where(TrackingNumber.site_id == site.id, TrackingNumber.state == "active")
            .order_by(TrackingNumber.id)
        )
        results = []
        for number, business in rows.all():
            hooks = webhooks.forwarding_to(business or primary)
            try:
                carrier = carriers.get(number.provider) or create_carrier(settings, number.provider)
                carriers[number.provider] = carrier
                configured = await carrier.configure(number.e164, hooks)
            except CarrierError as exc:
                failed += 1
                results.append(
                    {"e164": number.e164, "provider": number.provider, "error": str(exc)}
                )
                continue
            number.voice_url = configured.voice_url
            number.provider_sid = configured.provider_sid or number.provider_sid
            results.append(number_json(number, hooks.status_url, hooks.fallback_url))
        return results

    try:
        results = await _with_db(settings, work)
    finally:
        for carrier in carriers.values():
            await close_carrier(carrier)
    print(dumps(results))
    if failed:
        print(
            f"calltrack: {failed} number(s) could not be reconfigured (see error)", file=sys.stderr
        )
        return 2
    return 0


async def cmd_calls_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print a site's calls, most recent first."""

    async def work(db: AsyncSession) -> list[dict[str, Any]]:
        site = await site_by_key(db, args.site)
        calls = list(
            await db.scalars(
                select(Call)
                .where(Call.site_id == site.id)
                .order_by(Call.started_at.desc(), Call.id.desc())
                .limit(args.limit)
            )
        )
        # Callers' numbers are personal data: who listed them is kept, as in the dashboard.
        await audit(db, action="cli.calls_listed", at=SystemClock().now(), actor=cli_actor(),
                    account_id=site.account_id, target=site.site_key, count=len(calls))  # fmt: skip
        return [call_json(call) for call in calls]

    calls = await _with_db(settings, work)
    if args.json:
        print(dumps(calls))
        return 0
    for call in calls:
        print(
            f"{call['started_at'][:19]}  {call['caller'] or 'anonymous':<16} → "
            f"{call['tracking_number']:<16} {call['status']:<12} {call['outcome'] or '':<8} "
            f"{call['channel'] or '-':<16} {call['method']} ({call['confidence']:.2f})"
        )
    if not calls:
        print("no calls yet", file=sys.stderr)
    return 0


async def _simulate(args: argparse.Namespace, settings: Settings, server_url: str) -> Any:
    import aiohttp

    from telephony.simulate import CallScript, SimulatedCarrierClient, http_poster, ring

    urls: WebhookUrls = webhook_urls(settings.public_url)
    script = CallScript(answer=args.answer, talk_seconds=args.talk_seconds)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        poster = http_poster(session, server_url, settings.public_url)
        client = SimulatedCarrierClient(settings.secret_key, poster)
        try:
            return await ring(
                client,
                voice_url=urls.voice_url,
                status_url=urls.status_url,
                to=args.to,
                from_=args.from_,
                script=script,
            )
        except aiohttp.ClientConnectionError as exc:
            raise _fail(
                f"no Calltrack server answers at {server_url} ({exc}); start `calltrack demo`, "
                "pass --server URL, or use --in-process"
            ) from exc


async def _server_answers(base_url: str) -> bool:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(f"{base_url}/healthz") as response,
        ):
            return response.status > 0
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def cmd_simulate_call(args: argparse.Namespace, settings: Settings) -> int:
    """Ring a tracking number through the simulated carrier and print the stored call."""
    try:
        args.to = to_e164(args.to)
        # A caller written nationally ("06 12 34 56 78") is from the tracking number's country.
        args.from_ = to_e164(args.from_, phone_forms(args.to).region)
    except InvalidPhoneNumber as exc:
        raise _fail(str(exc)) from exc
    if args.server and not os.environ.get("CALLTRACK_PUBLIC_URL", "").strip():
        # `serve` without CALLTRACK_PUBLIC_URL checks signatures against its own address:
        # sign for the server named here, as Twilio signs for the URL it posts to.
        settings = dataclasses.replace(settings, public_url=args.server.rstrip("/"))
    in_process = args.in_process
    if not in_process and not args.server and not await _server_answers(settings.public_url):
        # No server is running here (a fresh shell, a script): play the call against the same
        # database through the same webhook code, served from this process.
        print(
            f"no Calltrack server at {settings.public_url}: serving the webhooks in-process",
            file=sys.stderr,
        )
        in_process = True
    if in_process:
        from aiohttp import web

        from dashboard.app import create_app

        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        # Port 0: the system picks a free one.
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        try:
            result = await _simulate(args, settings, f"http://{host}:{port}")
        finally:
            await runner.cleanup()
    else:
        result = await _simulate(args, settings, args.server or settings.public_url)

    async def stored(db: AsyncSession) -> dict[str, Any] | None:
        call = await db.scalar(
            select(Call).where(Call.provider == SIMULATED, Call.provider_call_id == result.call_sid)
        )
        return call_json(call) if call is not None else None

    output = {
        "call_sid": result.call_sid,
        "voice_status": result.voice_status,
        "dialed": result.dialed,
        "whisper": result.whisper,
        "call": await _with_db(settings, stored),
    }
    print(dumps(output))
    if result.voice_status == 403:
        print(
            "the server refused the carrier's signature: run this command with the server's "
            f"CALLTRACK_SECRET_KEY and CALLTRACK_PUBLIC_URL (signed for {settings.public_url})",
            file=sys.stderr,
        )
    return 0 if result.voice_status == 200 else 1


def _wrap(handler: Any) -> Any:
    """Turn carrier and CLI errors into one line on stderr and exit status 2."""

    async def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return int(await handler(args, settings))
        except (CarrierError, TelephonyCliError) as exc:
            print(f"calltrack: {exc}", file=sys.stderr)
            return 2
        except ApiError as exc:
            print(json.dumps(exc.as_json(), ensure_ascii=False), file=sys.stderr)
            return 2

    return run


def register_numbers_commands(numbers: Any) -> None:
    """Add `buy`, `import` and `reconfigure` to the `numbers` command group."""
    buy = numbers.add_parser("buy", help="buy numbers from the carrier and configure them")
    buy.add_argument("--site", required=True, help="site key")
    buy.add_argument("--country", help="ISO country code (default: the site's)")
    buy.add_argument("--count", type=int, default=1)
    buy.add_argument("--contains", help="digits the numbers must contain")
    buy.add_argument("--business-number", help="the business number whose pool gets them")
    buy.add_argument("--json", action="store_true", help="(output is always JSON)")
    buy.set_defaults(handler=_wrap(cmd_numbers_buy))

    imported = numbers.add_parser("import", help="register a number already owned at a carrier")
    imported.add_argument("--site", required=True, help="site key")
    imported.add_argument("--provider", choices=[TWILIO, SIMULATED])
    imported.add_argument("--number", required=True)
    imported.add_argument(
        "--no-configure",
        action="store_true",
        help="leave the carrier's configuration alone; print the webhook URLs to paste",
    )
    imported.add_argument("--kind", choices=["pool", "source"], default="pool")
    imported.add_argument("--rule-type", help="source numbers: landing_param, referrer_domain...")
    imported.add_argument("--rule-value")
    imported.add_argument("--business-number", help="the business number it forwards to")
    imported.add_argument("--json", action="store_true", help="(output is always JSON)")
    imported.set_defaults(handler=_wrap(cmd_numbers_import))

    reconfigure = numbers.add_parser(
        "reconfigure",
        help="point a site's numbers at this server's webhooks again (new public URL, fallback)",
    )
    reconfigure.add_argument("--site", required=True, help="site key")
    reconfigure.add_argument("--json", action="store_true", help="(output is always JSON)")
    reconfigure.set_defaults(handler=_wrap(cmd_numbers_reconfigure))


def register(commands: Any) -> None:
    """Add `calls list` and `simulate call`."""
    calls = commands.add_parser("calls", help="read calls").add_subparsers(
        dest="calls_command", required=True, metavar="ACTION"
    )
    listing = calls.add_parser("list", help="list a site's calls")
    listing.add_argument("--site", required=True, help="site key")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=_wrap(cmd_calls_list))

    simulate = commands.add_parser("simulate", help="play carrier traffic").add_subparsers(
        dest="simulate_command", required=True, metavar="ACTION"
    )
    call = simulate.add_parser("call", help="ring a tracking number through the simulated carrier")
    call.add_argument("--to", required=True, help="the tracking number (E.164)")
    call.add_argument("--from", dest="from_", required=True, help="the caller (E.164)")
    call.add_argument(
        "--answer", choices=["completed", "no-answer", "busy", "failed"], default="completed"
    )
    call.add_argument("--talk-seconds", type=int, default=42)
    call.add_argument("--server", help="the server's address (default: CALLTRACK_PUBLIC_URL)")
    call.add_argument(
        "--in-process", action="store_true", help="serve the webhooks in this process instead"
    )
    call.set_defaults(handler=_wrap(cmd_simulate_call))
