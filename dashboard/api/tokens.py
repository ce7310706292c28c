"""API tokens: `ct_` + 43 random URL-safe characters, shown once, stored as SHA-256.

A token belongs to an account (the tenant every request is confined to) and has a scope:
`read` (every GET) or `write` (also PATCH, POST, DELETE). SHA-256 without salt is enough here:
the token carries 256 bits of randomness, so there is nothing to brute-force, and a lookup
by hash stays one indexed query per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.errors import ApiError
from tracker.models import Account, ApiToken

PREFIX: Final = "ct_"
SCOPES: Final = ("read", "write")
# Refresh last_used_at at most this often: a busy integration must not write on every call.
TOUCH_EVERY: Final = dt.timedelta(minutes=5)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenAuth:
    """Who is calling: the token's account, scope and right to see caller numbers."""

    token_id: int
    account_id: int
    scope: str
    caller_numbers: bool
    prefix: str

    def allows(self, needed: str) -> bool:
        return needed == "read" or self.scope == "write"

    @property
    def actor(self) -> str:
        return f"api-token:{self.prefix}"


async def create_token(
    db: AsyncSession,
    account: Account,
    name: str,
    scope: str,
    now: dt.datetime,
    *,
    caller_numbers: bool = False,
) -> tuple[ApiToken, str]:
    """Create a token; return the row and the plaintext (shown once, never stored)."""
    if scope not in SCOPES:
        raise ApiError("invalid_scope", f"scope must be one of {', '.join(SCOPES)}")
    label = (name or "").strip()[:200] or "API token"
    plaintext = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        account_id=account.id,
        name=label,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:10],
        scope=scope,
        caller_numbers=caller_numbers,
        created_at=now,
    )
    db.add(token)
    await db.flush()
    return token, plaintext


async def authenticate(db: AsyncSession, header: str | None, now: dt.datetime) -> TokenAuth | None:
    """Return the caller of `Authorization: Bearer ct_...`, or None for a bad or revoked token."""
    if not header:
        return None
    kind, _, value = header.strip().partition(" ")
    value = value.strip()
    if kind.lower() != "bearer" or not value.startswith(PREFIX) or len(value) > 200:
        return None
    token = await db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(value)))
    if token is None or token.revoked_at is not None:
        return None
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        token.last_used_at = now
    return TokenAuth(token.id, token.account_id, token.scope, token.caller_numbers, token.prefix)


async def revoke_token(
    db: AsyncSession, account_id: int, token_id: int, now: dt.datetime
) -> ApiToken:
    token = await db.get(ApiToken, token_id)
    if token is None or token.account_id != account_id:
        raise ApiError("unknown_token", "no such token in this account", status=404)
    token.revoked_at = token.revoked_at or now
    return token
