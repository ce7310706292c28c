"""Users of an account: advisors, marketers, administrators; argon2-hashed passwords."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock
from tracker.errors import ApiError, Conflict
from tracker.models import Account, User

ROLES = ("admin", "marketer", "advisor", "dpo")
MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """Hash with argon2id (the library's current recommended parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Check a password without leaking why it failed."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def create_user(
    db: AsyncSession, account: Account, email: str, password: str, role: str, clock: Clock
) -> User:
    """Create a user; raise ApiError for a bad email, role or password."""
    email = (email or "").strip().lower()
    if not _EMAIL.match(email):
        raise ApiError("invalid_email", f"{email!r} is not an email address")
    if role not in ROLES:
        raise ApiError("invalid_role", f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
        )
    if await db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("duplicate_email", f"a user with the email {email} already exists")
    user = User(
        account_id=account.id,
        email=email,
        password_hash=hash_password(password),
        role=role,
        language="en",
        created_at=clock.now(),
    )
    db.add(user)
    await db.flush()
    return user
