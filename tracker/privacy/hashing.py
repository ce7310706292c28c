"""Keyed hashes of personal identifiers (HMAC-SHA256 keyed with CALLTRACK_SECRET_KEY).

The exclusion list, export records and the privacy tools' audit entries name a person only by
these hashes. Without the server secret a hash cannot be reversed by trying every phone number
(a plain SHA-256 of a phone number can: there are only ~10^10 of them per country). The account
id is part of the message, so the same person has unrelated hashes in two tenants.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Literal

SubjectKind = Literal["phone", "visitor", "session", "call"]
# A purpose label: the exclusion key is derived from, never equal to, the secret used for cookies
# and visit hashes, so one leaked derived key exposes nothing else.
_PURPOSE = b"calltrack privacy subject hash v1"


@functools.lru_cache(maxsize=8)
def _derived_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode("utf-8"), _PURPOSE, hashlib.sha256).digest()


def subject_hash(secret_key: str, account_id: int, kind: str, value: str) -> str:
    """Hash one identifier of a person (E.164 number, visitor id...) for one account."""
    message = f"{account_id}|{kind}|{value}".encode()
    return hmac.new(_derived_key(secret_key), message, hashlib.sha256).hexdigest()


def subject_ref(secret_key: str, account_id: int, kind: str, value: str) -> str:
    """Name a person in an audit entry without writing the identifier: `phone:<hash>`."""
    return f"{kind}:{subject_hash(secret_key, account_id, kind, value)}"
