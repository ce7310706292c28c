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

from tracker.phones import mask_e164

REPORT_ROLES: Final = ("marketer", "admin")
SETTINGS_ROLES: Final = ("admin",)


def sees_caller_numbers(role: str) -> bool:
    return role == "admin"


def hears_recordings(role: str) -> bool:
    return role == "admin"


def caller_for(role: str, e164: str | None) -> str | None:
    """Show a caller number as this role may see it."""
    return e164 if sees_caller_numbers(role) else mask_e164(e164)
