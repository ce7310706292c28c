"""Who may see what in the reports, and caller-number masking.

- `admin`: everything, including full caller numbers, recordings, the Google Ads caller-id
  file (it hands full numbers to Google), webhooks and settings.
- `marketer`: reports, drill-downs, journeys, exports and costs, with caller numbers masked
  (`+33 6 •• •• •• 78`: enough to tell two callers apart, not to call them back). No
  recordings: a recording is the caller's voice and the conversation's content, which a
  marketing report does not need.
- `advisor`: the console only (never the reports); `dpo`: the privacy pages only.
"""

from __future__ import annotations

from typing import Final

import phonenumbers

REPORT_ROLES: Final = ("marketer", "admin")
SETTINGS_ROLES: Final = ("admin",)
MASK: Final = "•"


def sees_caller_numbers(role: str) -> bool:
    return role == "admin"


def hears_recordings(role: str) -> bool:
    return role == "admin"


def mask_e164(e164: str | None) -> str | None:
    """Mask a number: keep the country code, the first national digit and the last two."""
    if not e164:
        return None
    try:
        number = phonenumbers.parse(e164, None)
        written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        prefix = f"+{number.country_code}"
    except phonenumbers.NumberParseException:
        written, prefix = e164, e164[:3]
    head, rest = written[: len(prefix)], written[len(prefix) :]
    digits = [i for i, ch in enumerate(rest) if ch.isdigit()]
    keep = set(digits[:1] + digits[-2:])
    return head + "".join(
        MASK if i in digits and i not in keep else ch for i, ch in enumerate(rest)
    )


def caller_for(role: str, e164: str | None) -> str | None:
    """Show a caller number as this role may see it."""
    return e164 if sees_caller_numbers(role) else mask_e164(e164)
