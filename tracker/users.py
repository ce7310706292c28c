"""Users of an account: advisors, marketers, administrators; argon2-hashed passwords."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tracker.audit import audit
from tracker.clock import Clock
from tracker.errors import ApiError, Conflict, NotFound
from tracker.models import Account, LoginSession, Site, User
from tracker.phones import InvalidPhoneNumber, mask_e164, to_e164

ROLES = ("admin", "marketer", "advisor", "dpo")
USER_LANGUAGES = ("en", "fr")
MIN_PASSWORD_LENGTH = 10
# argon2 hashes any length; this only bounds the work one form can ask for.
MAX_PASSWORD_LENGTH = 1000
# A mailbox an invitation can reach: dot-separated words before the @ (no quoted forms, no
# empty word: "a..b@", "dot.@"), and host labels of letters, digits and inner hyphens, in any
# script (IDN), ending in a top-level domain of two or more characters.
_WORD = r"[^\s@\"(),:;<>\[\]\\.]+"
_LABEL = r"(?!-)(?:[^\W_]|-){1,63}(?<!-)"
_EMAIL = re.compile(
    rf"^(?=[^@]{{1,64}}@){_WORD}(?:\.{_WORD})*@(?=.{{1,255}}\Z){_LABEL}(?:\.{_LABEL})*"
    r"\.[^\W_](?:[^\W_]|-){0,61}[^\W_]\Z"
)
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
    db: AsyncSession,
    account: Account,
    email: str,
    password: str,
    role: str,
    clock: Clock,
    *,
    language: str = "en",
    phone_e164: str | None = None,
) -> User:
    """Create a user; raise ApiError for a bad email, role, language or password."""
    email = check_email(email)
    check_role(role)
    check_language(language)
    check_password(password)
    if await db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("duplicate_email", f"a user with the email {email} already exists")
    user = User(
        account_id=account.id,
        email=email,
        password_hash=hash_password(password),
        role=role,
        language=language,
        phone_e164=phone_e164,
        created_at=clock.now(),
    )
    db.add(user)
    await db.flush()
    return user


def check_email(email: str) -> str:
    """Return the email as stored (trimmed, lower case); raise ApiError."""
    email = (email or "").strip().lower()
    if len(email) > 320 or not _EMAIL.match(email):
        raise ApiError("invalid_email", f"{email[:100]!r} is not an email address")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(
            "weak_password", f"the password needs at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ApiError(
            "invalid_password", f"the password has more than {MAX_PASSWORD_LENGTH} characters"
        )


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ApiError("invalid_role", f"role must be one of {', '.join(ROLES)}")


def check_language(language: str) -> None:
    if language not in USER_LANGUAGES:
        raise ApiError("invalid_language", f"language must be one of {', '.join(USER_LANGUAGES)}")


def parse_user_phone(raw: str, region: str | None) -> str | None:
    """The phone a user's callbacks ring, to E.164 (empty: none); raise ApiError.

    `region` reads national forms (`06 12 34 56 78`): the country of the account's sites."""
    text = (raw or "").strip()
    if not text:
        return None
    if region is None and not text.startswith(("+", "00")):
        raise ApiError(
            "invalid_phone",
            f"{text!r} is a national number and this account has no site yet to tell its "
            "country: write it in international form (+33 6 12 34 56 78)",
        )
    try:
        return to_e164(text, region)
    except InvalidPhoneNumber as exc:
        raise ApiError("invalid_phone", str(exc)) from exc


async def account_region(db: AsyncSession, account_id: int) -> str | None:
    """The country national phone numbers of this account's users are read in."""
    country: str | None = await db.scalar(
        select(Site.country).where(Site.account_id == account_id).order_by(Site.id).limit(1)
    )
    return country


async def audit_user(
    db: AsyncSession,
    target: User,
    action: str,
    now: dt.datetime,
    *,
    by: User | None = None,
    actor: str | None = None,
    ip_truncated: str | None = None,
    **detail: Any,
) -> None:
    """The one audit entry of an action on a user, from the dashboard (`by`) or the CLI."""
    await audit(db, action=action, at=now, user=by, actor=actor, account_id=target.account_id,
                target=f"user:{target.id}", ip_truncated=ip_truncated, **detail)  # fmt: skip


async def user_by_email(db: AsyncSession, email: str) -> User:
    user = await db.scalar(select(User).where(User.email == (email or "").strip().lower()))
    if user is None:
        raise NotFound("unknown_user", f"no user with the email {email!r}")
    return user


async def end_sign_ins(db: AsyncSession, user: User, *, keep: str | None = None) -> list[str]:
    """Sign the user out of every browser but `keep` (a sign-in's token hash): pages refuse
    them at once, consoles close within the hub's sign-in recheck (or at once on this worker
    when the caller hands the returned token hashes to `Hub.close_logins`)."""
    query = select(LoginSession.token_hash).where(LoginSession.user_id == user.id)
    if keep is not None:
        query = query.where(LoginSession.token_hash != keep)
    ended = list(await db.scalars(query))
    if ended:
        await db.execute(delete(LoginSession).where(LoginSession.token_hash.in_(ended)))
    return ended


async def set_disabled(db: AsyncSession, user: User, disabled: bool, now: dt.datetime) -> list[str]:
    """Disable (sign-ins ended, none accepted) or enable a user; return the sign-ins ended."""
    if not disabled:
        user.disabled_at = None
        return []
    user.disabled_at = user.disabled_at or now
    return await end_sign_ins(db, user)


# `change_user(phone=...)`: leave the phone as it is.
KEEP = object()


def change_user(
    user: User,
    *,
    role: str | None = None,
    language: str | None = None,
    phone_e164: str | object | None = KEEP,
) -> dict[str, list[Any]]:
    """Change a user's role, language or phone (None: no phone); return what changed as
    {field: [before, after]}, phone numbers masked (the audit log keeps this)."""
    changed: dict[str, list[Any]] = {}
    if role is not None:
        check_role(role)
        if role != user.role:
            changed["role"] = [user.role, role]
            user.role = role
    if language is not None:
        check_language(language)
        if language != user.language:
            changed["language"] = [user.language, language]
            user.language = language
    if phone_e164 is not KEEP and phone_e164 != user.phone_e164:
        assert phone_e164 is None or isinstance(phone_e164, str)
        changed["phone"] = [mask_e164(user.phone_e164), mask_e164(phone_e164)]
        user.phone_e164 = phone_e164
    return changed


async def update_user(
    db: AsyncSession,
    user: User,
    *,
    role: str | None = None,
    language: str | None = None,
    phone_e164: str | object | None = KEEP,
) -> tuple[dict[str, list[Any]], list[str]]:
    """`change_user`, and a new role signs the user out everywhere (what they may see
    changed). Return the changes and the sign-ins ended."""
    changed = change_user(user, role=role, language=language, phone_e164=phone_e164)
    ended = await end_sign_ins(db, user) if "role" in changed else []
    return changed, ended


async def set_password(
    db: AsyncSession, user: User, password: str, *, keep: str | None = None
) -> list[str]:
    """Replace the password and end every sign-in made with the old one but `keep` (the
    browser of a user who changes their own); return the sign-ins ended."""
    check_password(password)
    user.password_hash = hash_password(password)
    return await end_sign_ins(db, user, keep=keep)
