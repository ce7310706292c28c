"""Where personal data lives: every table of the schema, classified.

`tests/test_privacy_erase.py` checks that every table of `Base.metadata` appears here, so a new
table cannot hold visitors' or callers' data without the privacy tools knowing what to do with
it on export and erasure.
"""

from __future__ import annotations

from typing import Literal

Treatment = Literal["delete", "anonymise", "scrub", "keep_hash", "staff", "none"]

# table -> (what erasure does, why)
TABLES: dict[str, tuple[Treatment, str]] = {
    "sessions": ("delete", "a visit: URLs, referrer, device, truncated IP, visitor id"),
    "pageviews": ("delete", "pages of a visit"),
    "carts": ("delete", "cart contents of a visit"),
    "leases": ("delete", "which visit held which tracking number, when"),
    "calls": (
        "anonymise",
        "caller number, visit link and recording references are removed; channel, date and "
        "duration stay so that reports keep counting the call",
    ),
    "carrier_events": ("delete", "raw carrier callbacks; they carry the caller's number"),
    "contact_requests": ("delete", "callback requests: phone number, message"),
    "audit_log": ("scrub", "the action stays; identifiers in its target and detail are removed"),
    "webhook_deliveries": ("delete", "copies of events sent to the merchant's systems"),
    "privacy_restrictions": ("delete", "the identifiers a restriction applies to"),
    "privacy_exports": ("delete", "export archives of the person, and their files"),
    "privacy_exclusions": (
        "keep_hash",
        "a keyed hash only; kept so that an objection is still honoured after erasure "
        "(deleted on request with --drop-exclusion)",
    ),
    "users": ("staff", "the merchant's staff accounts, not data subjects of tracking"),
    "login_sessions": ("staff", "staff sign-in sessions"),
    "api_tokens": ("staff", "API credentials of the account"),
    "accounts": ("none", "the merchant"),
    "sites": ("none", "site configuration"),
    "business_numbers": ("none", "the merchant's published numbers"),
    "tracking_numbers": ("none", "numbers rented from the carrier"),
    "webhook_endpoints": ("none", "the merchant's webhook URLs"),
    "ad_costs": ("none", "ad spend per day and campaign"),
    "report_session_days": ("none", "anonymous daily aggregates"),
    "report_call_days": ("none", "anonymous daily aggregates"),
    "report_dirty_days": ("none", "which days of aggregates to recompute"),
    "report_rollup_state": ("none", "aggregate bookkeeping"),
    "config_generation": ("none", "a counter of configuration changes"),
    "privacy_purge_cursors": ("none", "retention purge progress"),
}


def unclassified(table_names: list[str]) -> list[str]:
    """Return the tables this inventory does not know yet."""
    return sorted(name for name in table_names if name not in TABLES)
