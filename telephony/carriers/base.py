"""The carrier interface: search, buy, configure and release tracking numbers; place calls."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlencode


class CarrierError(Exception):
    """The carrier refused or failed; the message is safe to show to the merchant."""


@dataclass(frozen=True)
class ProvisionedNumber:
    e164: str
    provider: str
    provider_sid: str | None
    voice_url: str | None = None
    status_url: str | None = None
    fallback_url: str | None = None


@dataclass(frozen=True)
class WebhookUrls:
    voice_url: str
    status_url: str
    # Where the carrier asks when the voice webhook fails (Twilio's VoiceFallbackUrl): an
    # endpoint that needs no database, told which business line to ring (`forwarding_to`).
    fallback_url: str | None = None

    def forwarding_to(self, business_e164: str) -> WebhookUrls:
        """The same webhooks, with a fallback that rings `business_e164` if ours cannot answer."""
        if self.fallback_url is None:
            return self
        base = self.fallback_url.split("?", 1)[0]
        return replace(self, fallback_url=f"{base}?{urlencode({'to': business_e164})}")


@dataclass(frozen=True)
class PlacedCall:
    provider: str
    provider_call_id: str
    status: str


class Carrier(Protocol):
    name: str

    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]:
        """Return up to `count` purchasable E.164 numbers in `country`."""
        ...

    async def buy(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Buy a number and point its voice and status webhooks at Calltrack."""
        ...

    async def configure(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Point an already owned number's webhooks at Calltrack."""
        ...

    async def release(self, number: ProvisionedNumber) -> None:
        """Give a number back to the carrier."""
        ...

    async def place_bridged_call(
        self, *, first_e164: str, then_e164: str, caller_id: str, url: str, status_url: str
    ) -> PlacedCall:
        """Ring `first_e164`; when answered, the TwiML at `url` dials `then_e164`."""
        ...
