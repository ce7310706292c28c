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
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number: {exc}") from exc
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
