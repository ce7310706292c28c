"""Twilio behind the `Carrier` interface, through the official `twilio` package.

The REST client is blocking (requests); every call runs in a worker thread so the event loop
keeps serving webhooks. `CALLTRACK_TWILIO_API_URL` points the client at a stand-in for
api.twilio.com (the Prism mock of Twilio's OpenAPI spec in the tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import phonenumbers
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from telephony.carriers.base import (
    CarrierError,
    PlacedCall,
    ProvisionedNumber,
    WebhookUrls,
)

log = logging.getLogger("calltrack.twilio")
TWILIO_API = "https://api.twilio.com"
# Twilio answers in well under a second; ten seconds means it is unreachable, and a CLI
# command or a callback request should fail with a clear message instead of hanging.
REQUEST_TIMEOUT_S = 10.0
T = TypeVar("T")


# twilio ships no type information: its client class is Any to mypy.
class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Send the requests meant for api.twilio.com to another base URL (a local stand-in)."""

    def __init__(self, api_url: str | None, timeout: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__(timeout=timeout)
        self.api_url = api_url.rstrip("/") if api_url else None

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self.api_url and url.startswith(TWILIO_API):
            url = self.api_url + url[len(TWILIO_API) :]
        return super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def _message(response: Any) -> str:
    """Read Twilio's (or a stand-in's) error message from an error response."""
    try:
        body = json.loads(response.text)
    except (TypeError, ValueError):
        return str(getattr(response, "text", ""))[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    return str(body.get("message") or body.get("detail") or body.get("title") or body)[:200]


def _country_of(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def _fallback(webhooks: WebhookUrls) -> dict[str, str]:
    """Twilio asks the voice fallback when the voice webhook errs or times out."""
    if not webhooks.fallback_url:
        return {}
    return {"voice_fallback_url": webhooks.fallback_url, "voice_fallback_method": "POST"}


class TwilioCarrier:
    """Search, buy, configure and release Twilio numbers; place bridged calls."""

    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_url: str | None = None,
        http_client: TwilioHttpClient | None = None,
        bundle_sids: Mapping[str, str] | None = None,
        address_sids: Mapping[str, str] | None = None,
    ) -> None:
        self.http_client = http_client or RebasedHttpClient(api_url)
        self.client = Client(account_sid, auth_token, http_client=self.http_client)
        # Per country (ISO code): the Bundle and Address a purchase there must name.
        self.bundle_sids = {k.upper(): v for k, v in (bundle_sids or {}).items()}
        self.address_sids = {k.upper(): v for k, v in (address_sids or {}).items()}

    async def _call(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except TwilioRestException as exc:
            raise CarrierError(f"Twilio refused the request: {exc.msg} (code {exc.code})") from exc
        except TwilioException as exc:
            # Listing pages raises a bare TwilioException("Unable to fetch page", response).
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(response, "status_code", None)
            if status is None:
                raise CarrierError(f"Twilio answered unexpectedly: {exc.args[0]}") from exc
            raise CarrierError(
                f"Twilio refused the request: HTTP {status}: {_message(response)}"
            ) from exc
        except requests.RequestException as exc:
            raise CarrierError(f"Twilio could not be reached: {type(exc).__name__}") from exc

    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]:
        """Return up to `count` purchasable voice numbers (local numbers) in `country`."""

        def work() -> list[str]:
            options: dict[str, Any] = {"voice_enabled": True, "limit": count, "page_size": count}
            if contains:
                options["contains"] = contains
            found = self.client.available_phone_numbers(country.upper()).local.list(**options)
            return [n.phone_number for n in found if n.phone_number]

        return await self._call(work)

    async def buy(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Buy a number with its voice and status webhooks already set."""

        options: dict[str, Any] = {}
        country = _country_of(e164)
        if country in self.bundle_sids:
            options["bundle_sid"] = self.bundle_sids[country]
        if country in self.address_sids:
            options["address_sid"] = self.address_sids[country]

        def work() -> ProvisionedNumber:
            bought = self.client.incoming_phone_numbers.create(
                phone_number=e164,
                voice_url=webhooks.voice_url,
                voice_method="POST",
                status_callback=webhooks.status_url,
                status_callback_method="POST",
                **_fallback(webhooks),
                **options,
            )
            return self._provisioned(bought, e164)

        return await self._call(work)

    def _find_owned_sid(self, e164: str) -> str:
        owned = self.client.incoming_phone_numbers.list(phone_number=e164, limit=20)
        for number in owned:
            if number.phone_number == e164 and number.sid:
                return str(number.sid)
        raise CarrierError(f"{e164} is not a number of this Twilio account")

    async def configure(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Point a number this account already owns at Calltrack's webhooks."""

        def work() -> ProvisionedNumber:
            sid = self._find_owned_sid(e164)
            updated = self.client.incoming_phone_numbers(sid).update(
                voice_url=webhooks.voice_url,
                voice_method="POST",
                status_callback=webhooks.status_url,
                status_callback_method="POST",
                **_fallback(webhooks),
            )
            return self._provisioned(updated, e164)

        return await self._call(work)

    async def release(self, number: ProvisionedNumber) -> None:
        """Give the number back to Twilio (it stops ringing here at once)."""

        def work() -> None:
            sid = number.provider_sid or self._find_owned_sid(number.e164)
            self.client.incoming_phone_numbers(sid).delete()

        await self._call(work)

    async def place_bridged_call(
        self, *, first_e164: str, then_e164: str, caller_id: str, url: str, status_url: str
    ) -> PlacedCall:
        """Ring `first_e164`; when answered, Twilio fetches `url`, which dials `then_e164`."""

        def work() -> PlacedCall:
            call = self.client.calls.create(
                to=first_e164,
                from_=caller_id,
                url=url,
                method="POST",
                status_callback=status_url,
                status_callback_method="POST",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )
            return PlacedCall(
                provider=self.name, provider_call_id=str(call.sid), status=str(call.status)
            )

        return await self._call(work)

    def _provisioned(self, number: Any, requested: str) -> ProvisionedNumber:
        return ProvisionedNumber(
            e164=str(number.phone_number or requested),
            provider=self.name,
            provider_sid=str(number.sid) if number.sid else None,
            voice_url=number.voice_url,
            status_url=number.status_callback,
            fallback_url=number.voice_fallback_url,
        )

    def close(self) -> None:
        """Close the pooled HTTP connections."""
        if self.http_client.session is not None:
            self.http_client.session.close()
