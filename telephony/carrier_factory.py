"""Choose the carrier: Twilio, or the simulated carrier of the embedded default.

`Settings.carrier` picks the carrier for new numbers and outbound calls; a number keeps the
provider it was bought from, so releasing it asks that provider (`create_carrier(settings,
number.provider)`).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from dataclasses import replace

from telephony.carriers.base import (
    Carrier,
    CarrierError,
    PlacedCall,
    ProvisionedNumber,
    WebhookUrls,
)
from telephony.carriers.simulated import SimulatedCarrier
from telephony.carriers.twilio import TwilioCarrier
from telephony.signature import SIMULATED, TWILIO
from telephony.simulate import SimulatedCalls
from tracker.config import Settings


def _configured(number: ProvisionedNumber, webhooks: WebhookUrls) -> ProvisionedNumber:
    # The simulated carrier's calls are posted to these URLs (telephony.simulate): record them
    # on the number as a real carrier would.
    return replace(
        number,
        voice_url=webhooks.voice_url,
        status_url=webhooks.status_url,
        fallback_url=webhooks.fallback_url,
    )


class SimulatedTelephony:
    """The simulated carrier: its numbers (`SimulatedCarrier`) and its calls (`SimulatedCalls`)."""

    name = SIMULATED

    def __init__(self, numbers: SimulatedCarrier, calls: SimulatedCalls) -> None:
        self.numbers = numbers
        self.calls = calls

    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]:
        return await self.numbers.search_available(country, count, contains)

    async def buy(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        return _configured(await self.numbers.buy(e164, webhooks), webhooks)

    async def configure(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        return _configured(await self.numbers.configure(e164, webhooks), webhooks)

    async def release(self, number: ProvisionedNumber) -> None:
        await self.numbers.release(number)

    async def place_bridged_call(
        self, *, first_e164: str, then_e164: str, caller_id: str, url: str, status_url: str
    ) -> PlacedCall:
        return await self.calls.place_bridged_call(
            first_e164=first_e164,
            then_e164=then_e164,
            caller_id=caller_id,
            url=url,
            status_url=status_url,
        )

    async def close(self) -> None:
        await self.calls.close()


def create_carrier(
    settings: Settings, provider: str | None = None, *, exclude: Collection[str] = ()
) -> Carrier:
    """Build the carrier named by `provider` (default: `Settings.carrier`).

    `exclude`: numbers already registered here, which the simulated carrier must not offer.
    """
    name = (provider or settings.carrier or SIMULATED).lower()
    if name == TWILIO:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise CarrierError(
                "the Twilio carrier needs CALLTRACK_TWILIO_ACCOUNT_SID and "
                "CALLTRACK_TWILIO_AUTH_TOKEN"
            )
        return TwilioCarrier(
            settings.twilio_account_sid,
            settings.twilio_auth_token,
            api_url=settings.twilio_api_url,
            bundle_sids=settings.twilio_bundle_sids,
            address_sids=settings.twilio_address_sids,
        )
    if name == SIMULATED:
        return SimulatedTelephony(
            SimulatedCarrier(exclude=exclude), SimulatedCalls(settings.secret_key)
        )
    raise CarrierError(f"unknown carrier {name!r}: use twilio or simulated")


async def close_carrier(carrier: Carrier) -> None:
    """Release what a carrier holds (HTTP sessions, calls still playing)."""
    close = getattr(carrier, "close", None)
    if close is None:
        return
    result = close()
    if inspect.isawaitable(result):
        await result
