"""Users of an account: advisors, marketers, administrators; argon2-hashed passwords."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.clock import Clock
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Account, LoginSession, User

ROLES = ("admin", "marketer", "advisor", "dpo")
USER_LANGUAGES = ("en", "fr")
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
    _check_password(password)
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


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
        )


async def user_by_email(db: AsyncSession, email: str) -> User:
    user = await db.scalar(select(User).where(User.email == (email or "").strip().lower()))
    if user is None:
        raise NotFound("unknown_user", f"no user with the email {email!r}")
    return user


async def end_sign_ins(db: AsyncSession, user: User) -> int:
    """Sign the user out of every browser: pages refuse them at once, consoles close within
    the hub's sign-in recheck. Return how many sign-ins ended."""
    result: Any = await db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    return int(result.rowcount or 0)


async def set_disabled(db: AsyncSession, user: User, disabled: bool, now: dt.datetime) -> int:
    """Disable (sign-ins ended, none accepted) or enable a user; return sign-ins ended."""
    if not disabled:
        user.disabled_at = None
        return 0
    user.disabled_at = user.disabled_at or now
    return await end_sign_ins(db, user)


def change_user(
    user: User, *, role: str | None = None, language: str | None = None
) -> dict[str, list[Any]]:
    """Change a user's role or language; return what changed as {field: [before, after]}."""
    changed: dict[str, list[Any]] = {}
    if role is not None:
        if role not in ROLES:
            raise ApiError("invalid_role", f"role must be one of {', '.join(ROLES)}")
        if role != user.role:
            changed["role"] = [user.role, role]
            user.role = role
    if language is not None:
        if language not in USER_LANGUAGES:
            raise ApiError(
                "invalid_language", f"language must be one of {', '.join(USER_LANGUAGES)}"
            )
        if language != user.language:
            changed["language"] = [user.language, language]
            user.language = language
    return changed


async def set_password(db: AsyncSession, user: User, password: str) -> int:
    """Replace the password and end every sign-in made with the old one; return how many."""
    _check_password(password)
    user.password_hash = hash_password(password)
    return await end_sign_ins(db, user)
