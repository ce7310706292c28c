"""Sign-in for the console and the dashboard: cookie sessions, CSRF, roles, audit.

The cookie carries a random token; the database keeps only its SHA-256, so a leaked database
does not leak live sessions. Cookies are HttpOnly and SameSite=Lax, and Secure whenever the
public URL is https (browsers refuse Secure cookies on plain-http origins other than localhost,
which would lock a plain-http test install out).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import web
from sqlalchemy import delete, select

from dashboard.i18n import pick_language, t
from dashboard.pages import escape, render_page
from tracker import appkeys
from tracker.audit import audit
from tracker.geo import truncate_ip
from tracker.models import LoginSession, User
from tracker.users import hash_password, verify_password
from tracker.web import client_ip, read_form

COOKIE = "ct_session"
# A working day: advisors sign in once in the morning; an unattended laptop is signed out.
SESSION_TTL = dt.timedelta(hours=12)
# Failed sign-ins allowed per address and email in a sliding minute (argon2 is slow on purpose;
# this stops password guessing and keeps one client from eating the CPU).
MAX_FAILURES_PER_MINUTE = 10
_failures: dict[str, deque[float]] = defaultdict(deque)
# Per-request memo: False means "looked up, nobody signed in".
AUTH_KEY: web.RequestKey[Auth | bool] = web.RequestKey("auth", object)  # type: ignore[arg-type]


@dataclass
class Auth:
    user: User
    login: LoginSession

    @property
    def csrf(self) -> str:
        return self.login.csrf_token


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _secure_cookies(request: web.Request) -> bool:
    return request.app[appkeys.SETTINGS].public_url.startswith("https://")


def _safe_next(target: str | None, default: str) -> str:
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def home_for(role: str) -> str:
    """Where a user lands after signing in: a page their role may open (a DPO landed on the
    reports, which are not theirs, and got "Access denied")."""
    return {"advisor": "/console", "dpo": "/dashboard/privacy"}.get(role, "/dashboard")


async def current_auth(request: web.Request) -> Auth | None:
    """Return the signed-in user of this request, or None."""
    cached = request.get(AUTH_KEY)
    if cached is not None:
        return cached if isinstance(cached, Auth) else None
    token = request.cookies.get(COOKIE)
    result: Auth | None = None
    if token and len(token) < 200:
        now = request.app[appkeys.CLOCK].now()
        async with request.app[appkeys.DATABASE].begin() as db:
            login = await db.get(LoginSession, _hash(token))
            if login is not None and login.expires_at > now:
                user = await db.get(User, login.user_id)
                if user is not None and user.disabled_at is None:
                    if now - login.last_seen_at > dt.timedelta(minutes=5):
                        login.last_seen_at = now
                        login.expires_at = now + SESSION_TTL
                    db.expunge(user)
                    db.expunge(login)
                    result = Auth(user, login)
    request[AUTH_KEY] = result or False
    return result


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


async def require(request: web.Request, *roles: str) -> Auth:
    """Return the signed-in user if their role is allowed; else redirect, 401 or 403."""
    auth = await current_auth(request)
    if auth is None:
        if _wants_json(request):
            raise web.HTTPUnauthorized(
                text='{"error": {"code": "unauthorized", "message": "Sign in first."}}',
                content_type="application/json",
            )
        raise web.HTTPFound(f"/login?next={quote(request.path_qs)}")
    if roles and auth.user.role not in roles:
        message = t("forbidden", pick_language(request, auth.user.language))
        if _wants_json(request):
            raise web.HTTPForbidden(
                text=f'{{"error": {{"code": "forbidden", "message": "{message}"}}}}',
                content_type="application/json",
            )
        raise web.HTTPForbidden(text=message)
    return auth


def check_csrf(request: web.Request, auth: Auth, submitted: str | None) -> None:
    """Refuse a state-changing request without this session's CSRF token (form or header)."""
    token: str = submitted or request.headers.get("X-CSRF-Token") or ""
    if not hmac.compare_digest(token.encode(), auth.csrf.encode()):
        raise web.HTTPForbidden(
            text='{"error": {"code": "csrf_failed", "message": "The form expired; reload the page."}}',
            content_type="application/json",
        )


def _same_origin(request: web.Request) -> bool:
    """Accept a sign-in POST only from our own pages (login CSRF), or from non-browser clients."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    public = urlsplit(request.app[appkeys.SETTINGS].public_url)
    own = {f"{public.scheme}://{public.netloc}", f"{request.scheme}://{request.host}"}
    return origin in own


def _rate_limited(key: str) -> bool:
    now = time.monotonic()
    window = _failures[key]
    while window and now - window[0] > 60:
        window.popleft()
    return len(window) >= MAX_FAILURES_PER_MINUTE


def _login_form(
    request: web.Request, lang: str, error: str | None, email: str = ""
) -> web.Response:
    next_url = _safe_next(request.query.get("next"), "")
    action = "/login" + (f"?next={quote(next_url)}" if next_url else "")
    alert = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        '<main class="login"><h1>Calltrack</h1>'
        f'<form method="post" action="{escape(action)}">{alert}'
        f'<label>{t("email", lang)}<input type="email" name="email" autocomplete="username" '
        f'required value="{escape(email)}"></label>'
        f'<label>{t("password", lang)}<input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        f'<button type="submit">{t("sign_in", lang)}</button></form></main>'
    )
    return render_page(t("sign_in", lang), body, lang=lang, status=401 if error else 200)


async def start(request: web.Request) -> web.Response:
    """The root of a server: sign in, or go to one's home when signed in already."""
    raise web.HTTPFound("/login")


async def login_page(request: web.Request) -> web.Response:
    auth = await current_auth(request)
    if auth is not None:
        raise web.HTTPFound(_safe_next(request.query.get("next"), home_for(auth.user.role)))
    return _login_form(request, pick_language(request), None)


async def login_submit(request: web.Request) -> web.Response:
    """Check the password, open a session, audit the sign-in."""
    lang = pick_language(request)
    if not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site sign-in refused")
    form = await read_form(request)
    email = str(form.get("email", "")).strip().lower()[:320]
    password = str(form.get("password", ""))[:1000]
    settings = request.app[appkeys.SETTINGS]
    ip = client_ip(request, settings.trusted_proxies)
    limiter_key = f"{ip}|{email}"
    if _rate_limited(limiter_key):
        return _login_form(request, lang, t("too_many_attempts", lang), email)
    clock = request.app[appkeys.CLOCK]
    now = clock.now()
    async with request.app[appkeys.DATABASE].begin() as db:
        user = await db.scalar(select(User).where(User.email == email))
        valid = user is not None and user.disabled_at is None
        # Verify even for unknown emails so response time does not reveal which exist.
        ok = verify_password(user.password_hash if user else _dummy_hash(), password) and valid
        if not ok or user is None:
            _failures[limiter_key].append(time.monotonic())
            await audit(
                db,
                action="auth.login_failed",
                at=now,
                actor=email or "(empty)",
                account_id=user.account_id if user else None,
                ip_truncated=truncate_ip(ip),
            )
            return _login_form(request, lang, t("bad_login", lang), email)
        token = secrets.token_urlsafe(32)
        await db.execute(delete(LoginSession).where(LoginSession.expires_at < now))
        db.add(
            LoginSession(
                token_hash=_hash(token),
                user_id=user.id,
                csrf_token=secrets.token_urlsafe(24),
                created_at=now,
                last_seen_at=now,
                expires_at=now + SESSION_TTL,
                ip_truncated=truncate_ip(ip),
            )
        )
        await audit(db, action="auth.login", at=now, user=user, ip_truncated=truncate_ip(ip))
        role = user.role
    _failures.pop(limiter_key, None)
    response = web.HTTPFound(_safe_next(request.query.get("next"), home_for(role)))
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        secure=_secure_cookies(request),
        samesite="Lax",
        path="/",
        max_age=int(SESSION_TTL.total_seconds()),
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    auth = await current_auth(request)
    if auth is not None:
        form = await read_form(request)
        check_csrf(request, auth, str(form.get("csrf", "")) or None)
        async with request.app[appkeys.DATABASE].begin() as db:
            await db.execute(
                delete(LoginSession).where(LoginSession.token_hash == auth.login.token_hash)
            )
            ip = client_ip(request, request.app[appkeys.SETTINGS].trusted_proxies)
            await audit(
                db,
                action="auth.logout",
                at=request.app[appkeys.CLOCK].now(),
                user=auth.user,
                ip_truncated=truncate_ip(ip),
            )
        # This browser's open consoles stop receiving visitors' data now (other workers close
        # theirs within `LOGIN_RECHECK`, see dashboard.hub.http).
        hub = request.app.get(appkeys.HUB)
        if hub is not None:
            hub.close_logins({auth.login.token_hash})
    response = web.HTTPFound("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def setup(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/console/login", login_page)
    app.router.add_post("/console/login", login_submit)
    app.router.add_post("/logout", logout)
