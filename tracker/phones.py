"""Phone numbers: parse to E.164 and prepare display forms, always through `phonenumbers`."""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberFormat, geocoder

MASK = "•"


class InvalidPhoneNumber(ValueError):
    """The text is not a valid phone number for the given region."""


def parse_phone(raw: str, default_country: str | None = None) -> phonenumbers.PhoneNumber:
    """Parse a phone number written in any common form; raise InvalidPhoneNumber."""
    text = (raw or "").strip()
    if not text or len(text) > 64:
        raise InvalidPhoneNumber("a phone number is required (at most 64 characters)")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, (default_country or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        # (Not phonenumbers' own text: "(1) The string supplied did not seem to be...".)
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number")
    if number.extension:
        # Dropped silently, "... 89 ext 12" would be stored as another line's number.
        raise InvalidPhoneNumber(
            f"{raw!r} has an extension ({number.extension}): give the number callers dial"
        )
    return number


def to_e164(raw: str, default_country: str | None = None) -> str:
    """Normalise to E.164 (`+33123456789`); raise InvalidPhoneNumber."""
    return phonenumbers.format_number(parse_phone(raw, default_country), PhoneNumberFormat.E164)


@dataclass(frozen=True)
class PhoneForms:
    e164: str
    country_code: str
    national_digits: str
    national: str
    international: str
    region: str | None

    def as_snippet(self, *, with_display: bool) -> dict[str, str]:
        """Shape the number for the snippet's configuration or collect response."""
        data = {"e164": self.e164, "cc": self.country_code, "nat": self.national_digits}
        if with_display:
            data["national"] = self.national
            data["international"] = self.international
        return data


def phone_forms(e164: str) -> PhoneForms:
    """Prepare the written forms of an E.164 number for display and for matching on pages."""
    number = phonenumbers.parse(e164, None)
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    return PhoneForms(
        e164=e164,
        country_code=str(number.country_code),
        national_digits="".join(ch for ch in national if ch.isdigit()),
        national=national,
        international=phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        region=phonenumbers.region_code_for_number(number),
    )


def caller_location(e164: str, language: str = "en") -> tuple[str | None, str | None]:
    """Return (country ISO code, region description) for a caller's number."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None, None
    region = phonenumbers.region_code_for_number(number)
    description = geocoder.description_for_number(number, language) or None
    return region, description


def mask_e164(e164: str | None) -> str | None:
    """Mask a number: keep the country code, the first national digit and the last two."""
    if not e164:
        return None
    try:
        number = phonenumbers.parse(e164, None)
        written = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
        prefix = f"+{number.country_code}"
    except phonenumbers.NumberParseException:
        written, prefix = e164, e164[:3]
    head, rest = written[: len(prefix)], written[len(prefix) :]
    digits = [i for i, ch in enumerate(rest) if ch.isdigit()]
    keep = set(digits[:1] + digits[-2:])
    return head + "".join(
        MASK if i in digits and i not in keep else ch for i, ch in enumerate(rest)
    )


# Where a callback may ring: the site's own country, and Europe for a European merchant (EU,
# EEA, Switzerland, the UK); the US and Canada for each other. Anything else, and numbers that
# cost the caller a surcharge, is refused: one advisor click on a number a stranger typed would
# otherwise make the merchant pay premium or long-distance rates (toll fraud).
_EUROPE = frozenset(
    "AD AT AX BE BG CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI LT LU LV "
    "MC MT NL NO PL PT RO SE SI SK SM VA".split()
)
_NORTH_AMERICA = frozenset(("US", "CA"))
# A country's overseas parts dial as home (a French site's visitor in Réunion, a US site's in
# Puerto Rico), with their own region codes.
_OVERSEAS = {
    "FR": frozenset("RE GP MQ GF YT PM BL MF NC PF WF".split()),
    "US": frozenset("PR VI GU AS MP".split()),
    "NL": frozenset("BQ CW SX AW".split()),
    "DK": frozenset(("FO", "GL")),
    "NO": frozenset(("SJ",)),
    "FI": frozenset(("AX",)),
    "GB": frozenset(("GG", "JE", "IM")),
}
_SURCHARGED = frozenset(
    (
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.PAGER,
        phonenumbers.PhoneNumberType.VOICEMAIL,
    )
)


class UncallableNumber(InvalidPhoneNumber):
    """A valid number a callback must not ring (surcharged, or far away)."""


def callback_number(raw: str, site_country: str) -> str:
    """A number a visitor asks to be called back on, to E.164; raise InvalidPhoneNumber for an
    invalid, surcharged or far-away one (see above)."""
    number = parse_phone(raw, site_country)
    if phonenumbers.number_type(number) in _SURCHARGED:
        raise UncallableNumber(f"{raw!r} is a premium-rate or shared-cost number")
    country = site_country.upper()
    allowed = {country}
    for zone in (_EUROPE, _NORTH_AMERICA):
        if country in zone:
            allowed |= zone
    for home in list(allowed):
        allowed |= _OVERSEAS.get(home, frozenset())
    if phonenumbers.region_code_for_number(number) not in allowed:
        raise UncallableNumber(f"{raw!r} is outside the countries this shop calls back")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
