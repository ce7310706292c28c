"""A carrier that provisions numbers locally, for the embedded default and tests.

It hands out valid numbers of the requested country without any account. Where the regulator
reserves a range for fiction (films, books, demos), numbers come from it, so a demo visitor who
dials one reaches nobody; elsewhere they vary the subscriber digits of `phonenumbers`' example
number, and are checked with `is_valid_number`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection

import phonenumbers

from telephony.carriers.base import (
    CarrierError,
    PlacedCall,
    ProvisionedNumber,
    WebhookUrls,
)

PROVIDER = "simulated"

# E.164 prefixes of ranges reserved for fiction, completed with random digits to full length:
# FR - ARCEP's "numéros pour les œuvres de fiction" (01 99 00 xx xx);
# GB - Ofcom's drama numbers (020 7946 0xxx, 0113 496 0xxx, 0161 496 0xxx);
# US/CA - NANPA's 555-0100 to 555-0199, fictional in every area code;
# AU - ACMA's fictitious numbers (02 5550 xxxx, 03 7010 xxxx).
FICTION_RANGES: dict[str, tuple[tuple[str, int], ...]] = {
    "FR": (("+3319900", 12),),
    "GB": (("+442079460", 13), ("+441134960", 13), ("+441614960", 13)),
    "US": (("+120255501", 12), ("+121255501", 12), ("+141555501", 12)),
    "CA": (("+141655501", 12), ("+151455501", 12), ("+160455501", 12)),
    "AU": (("+6125550", 12), ("+6137010", 12)),
}
# Subscriber digits varied for countries without a known fiction range.
VARIED_DIGITS = 4


def provider_sid(e164: str) -> str:
    """Name a simulated number the way Twilio does ("PN" + 32 hex), stable across processes."""
    return "SIM" + hashlib.sha256(e164.encode()).hexdigest()[:32]


class SimulatedCarrier:
    """Provision numbers locally: buying, configuring and releasing always succeed."""

    name = PROVIDER

    def __init__(self, *, exclude: Collection[str] = (), seed: int | None = None) -> None:
        self._exclude = set(exclude)
        self._owned: set[str] = set()
        self._random = random.Random(seed)

    def _candidates(self, country: str) -> list[str]:
        region = country.upper()
        ranges = FICTION_RANGES.get(region)
        if ranges is None:
            example = phonenumbers.example_number_for_type(
                region, phonenumbers.PhoneNumberType.FIXED_LINE
            )
            if example is None:
                raise CarrierError(f"no numbers are available in {country!r}")
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            ranges = ((e164[:-VARIED_DIGITS], len(e164)),)
        numbers = []
        for prefix, length in ranges:
            free = length - len(prefix)
            numbers += [f"{prefix}{i:0{free}d}" for i in range(10**free)]
        return numbers

    async def search_available(
        self, country: str, count: int, contains: str | None = None
    ) -> list[str]:
        """Return up to `count` valid numbers of `country` that nobody here holds yet."""
        found: list[str] = []
        candidates = self._candidates(country)
        self._random.shuffle(candidates)
        for e164 in candidates:
            if len(found) >= count:
                break
            if e164 in self._exclude or e164 in self._owned:
                continue
            if contains and contains not in e164:
                continue
            if phonenumbers.is_valid_number(phonenumbers.parse(e164, None)):
                found.append(e164)
        return found

    async def buy(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Take a number (idempotent: buying it again returns the same one)."""
        self._owned.add(e164)
        # Nothing routes calls to a simulated number: the simulated telephony flow posts to the
        # webhooks itself, so no voice URL is recorded on the number.
        return ProvisionedNumber(e164=e164, provider=PROVIDER, provider_sid=provider_sid(e164))

    async def configure(self, e164: str, webhooks: WebhookUrls) -> ProvisionedNumber:
        """Adopt a number the merchant already has."""
        return await self.buy(e164, webhooks)

    async def release(self, number: ProvisionedNumber) -> None:
        """Give the number back."""
        self._owned.discard(number.e164)
        self._exclude.discard(number.e164)

    async def place_bridged_call(
        self, *, first_e164: str, then_e164: str, caller_id: str, url: str, status_url: str
    ) -> PlacedCall:
        """Bridged calls come with the telephony issue."""
        raise NotImplementedError("the simulated carrier does not place calls yet")
