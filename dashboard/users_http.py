"""The users of an account (admins) and each user's own profile.

- `/dashboard/users` (admins): the account's users, and a form to add one.
- `/dashboard/users/{id}` (admins): change a user's role, language or callback phone; disable
  or enable them (someone who left); set a new password.
- `/profile` (every signed-in user): their own language, callback phone and password.

Everything goes through `tracker.users`, as `calltrack user …` does, and writes the same audit
entries (`user.list`, `user.viewed`, `user.created`, `user.changed`, `user.disabled`,
`user.enabled`, `user.password_changed`): staff emails and phones are personal data too. A new
role, a disabled account or a password set by an admin signs the user out everywhere; the
consoles this worker serves close at once, the others within the hub's sign-in recheck. An
admin cannot change their own role nor disable themselves, so an account always keeps an
admin who can sign in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dashboard.auth import check_csrf, require
from dashboard.forms import FormCtx, alert, field_error, invalid_attrs, notice
from dashboard.i18n import pick_language
from dashboard.pages import escape, nav_for, new_nonce, render_page
from tracker import appkeys
from tracker.audit import audit
from tracker.errors import ApiError
from tracker.models import Account, User
from tracker.phones import phone_forms
from tracker.users import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    ROLES,
    USER_LANGUAGES,
    account_region,
    audit_user,
    check_email,
    check_password,
    create_user,
    parse_user_phone,
    set_disabled,
    set_password,
    update_user,
    verify_password,
)
from tracker.web import client_address, parse_id, read_form

BASE = "/dashboard/users"
PROFILE = "/profile"
MAX_FIELD = 400  # longer than any email or phone a form may hold; the rest is cut, then refused


# -- shared --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ctx(FormCtx):
    @property
    def now(self) -> dt.datetime:
        return self.request.app[appkeys.CLOCK].now()

    @property
    def ip(self) -> str | None:
        return client_address(self.request)


async def _ctx(request: web.Request, *roles: str) -> Ctx:
    auth = await require(request, *roles)
    return Ctx(request, auth, pick_language(request, auth.user.language))


async def _checked_form(ctx: Ctx) -> MultiDictProxy[Any]:
    form = await read_form(ctx.request)
    check_csrf(ctx.request, ctx.auth, str(form.get("csrf", "")) or None)
    return form


def _text(form: MultiDictProxy[Any], name: str, limit: int = MAX_FIELD) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def _close_consoles(request: web.Request, ended: Collection[str]) -> None:
    """Close this worker's consoles of sign-ins just ended (other workers: their recheck)."""
    hub = request.app.get(appkeys.HUB)
    if hub is not None and ended:
        hub.close_logins(set(ended))


def _page(ctx: Ctx, path: str, title: str, content: str, *, status: int = 200) -> web.Response:
    other = "fr" if ctx.lang == "en" else "en"
    switch = (
        f'<a class="lang" href="{escape(path + "?" + urlencode({"lang": other}))}" '
        f'hreflang="{other}">{other.upper()}</a>'
    )
    active = BASE if path.startswith(BASE) else path
    body = (
        f'{nav_for(ctx.auth, ctx.lang, active)}<main class="form-page users-page">'
        f'<div class="heading"><h1>{escape(title)}</h1>{switch}</div>{content}</main>'
    )
    return render_page(f"{title} — Calltrack", body, lang=ctx.lang, nonce=new_nonce(),
                       status=status)  # fmt: skip


def _role_name(ctx: Ctx, role: str) -> str:
    return ctx.tr(f"users.role.{role}")


def _phone_text(e164: str | None) -> str:
    return phone_forms(e164).international if e164 else ""


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else ""


def _select(
    ctx: Ctx, name: str, choices: tuple[str, ...], chosen: str, label: Callable[[str], str]
) -> str:
    options = "".join(
        f'<option value="{escape(c)}"{" selected" if c == chosen else ""}>{escape(label(c))}</option>'
        for c in choices
    )
    return f'<select id="{name}" name="{name}">{options}</select>'


def _language_name(ctx: Ctx) -> Callable[[str], str]:
    return lambda code: ctx.tr(f"users.language.{code}")


def _input(
    errors: dict[str, str], name: str, label: str, value: str = "", *, kind: str = "text",
    hint: str = "", attrs: str = "",
) -> str:  # fmt: skip
    hint_html = f'<span class="muted small hint">{escape(hint)}</span>' if hint else ""
    return (
        f'<label for="{name}">{escape(label)}{hint_html}</label>'
        f'<input type="{kind}" id="{name}" name="{name}" value="{escape(value)}"{attrs}'
        f"{invalid_attrs(errors, name)}>{field_error(errors, name)}"
    )


def _password_inputs(ctx: Ctx, errors: dict[str, str], *, current: bool = False) -> str:
    limits = f' minlength="{MIN_PASSWORD_LENGTH}" maxlength="{MAX_PASSWORD_LENGTH}"'
    parts = []
    if current:
        parts.append(_input(errors, "current_password", ctx.tr("users.current_password"),
                            kind="password", attrs=' autocomplete="current-password"'))  # fmt: skip
    parts.append(
        _input(errors, "password", ctx.tr("users.new_password"), kind="password",
               hint=ctx.tr("users.password_hint", n=str(MIN_PASSWORD_LENGTH)),
               attrs=f' autocomplete="new-password"{limits}')
    )  # fmt: skip
    parts.append(_input(errors, "password_again", ctx.tr("users.password_again"), kind="password",
                        attrs=f' autocomplete="new-password"{limits}'))  # fmt: skip
    return "".join(parts)


def _new_password(ctx: Ctx, form: MultiDictProxy[Any], errors: dict[str, str]) -> str | None:
    password = _text(form, "password", MAX_PASSWORD_LENGTH + 1)
    try:
        check_password(password)
    except ApiError:
        errors["password"] = ctx.tr("users.err_password", n=str(MIN_PASSWORD_LENGTH),
                                    most=str(MAX_PASSWORD_LENGTH))  # fmt: skip
        return None
    if _text(form, "password_again", MAX_PASSWORD_LENGTH + 1) != password:
        errors["password_again"] = ctx.tr("users.err_password_again")
        return None
    return password


def _phone(ctx: Ctx, raw: str, region: str | None, errors: dict[str, str]) -> str | None:
    try:
        return parse_user_phone(raw, region)
    except ApiError:
        errors["phone"] = ctx.tr("users.err_phone")
        return None


def _phone_hint(ctx: Ctx, region: str | None, *, own: bool = False) -> str:
    return ctx.tr("profile.phone_hint" if own else "users.phone_hint") + (
        " " + ctx.tr("users.phone_region", country=region) if region else ""
    )


# -- the list of users (admins) ------------------------------------------------------------------


@dataclasses.dataclass
class NewUser:
    email: str = ""
    role: str = "advisor"
    language: str = "en"
    phone: str = ""
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


async def _account_user_id(db: AsyncSession, account_id: int, email: str) -> int | None:
    user_id: int | None = await db.scalar(
        select(User.id).where(User.account_id == account_id, User.email == email)
    )
    return user_id


async def _account_users(db: AsyncSession, account_id: int) -> list[User]:
    return list(
        await db.scalars(select(User).where(User.account_id == account_id).order_by(User.email))
    )


def _users_table(ctx: Ctx, users: list[User]) -> str:
    tr = ctx.tr
    rows = []
    for user in users:
        status = (
            f'<span class="badge off">{escape(tr("users.disabled_since", date=_when(user.disabled_at)))}</span>'
            if user.disabled_at else f'<span class="badge on">{escape(tr("users.active"))}</span>'
        )  # fmt: skip
        you = (
            f' <span class="muted small">({escape(tr("users.you"))})</span>'
            if user.id == ctx.auth.user.id
            else ""
        )
        rows.append(
            f'<tr><td class="email"><a href="{BASE}/{user.id}">{escape(user.email)}</a>{you}</td>'
            f"<td>{escape(_role_name(ctx, user.role))}</td>"
            f"<td>{escape(tr(f'users.language.{user.language}'))}</td>"
            f'<td class="phone">{escape(_phone_text(user.phone_e164)) or "—"}</td>'
            f"<td>{status}</td><td>{escape(_when(user.created_at))}</td></tr>"
        )  # fmt: skip
    head = "".join(
        f'<th scope="col">{escape(tr(key))}</th>'
        for key in (
            "email",
            "users.role",
            "users.language",
            "users.phone",
            "users.status",
            "users.created",
        )
    )
    return (
        f'<section class="card"><h2>{escape(tr("users.list"))}</h2>'
        f'<div class="table-wrap"><table class="users"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<p class="muted small">{escape(tr("users.roles_hint"))}</p></section>'
    )


def _new_user_form(ctx: Ctx, fields: NewUser, region: str | None) -> str:
    tr, errors = ctx.tr, fields.errors
    return (
        f'<form class="card" method="post" action="{BASE}?{urlencode({"lang": ctx.lang})}" novalidate>'
        f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
        f'<h2>{escape(tr("users.add"))}</h2>'
        + _input(errors, "email", tr("email"), fields.email, kind="email",
                 attrs=' maxlength="320" autocomplete="off" spellcheck="false"')
        + f'<div class="row"><div><label for="role">{escape(tr("users.role"))}</label>'
        f'{_select(ctx, "role", ROLES, fields.role, lambda r: _role_name(ctx, r))}</div>'
        f'<div><label for="language">{escape(tr("users.language"))}</label>'
        f'{_select(ctx, "language", USER_LANGUAGES, fields.language, _language_name(ctx))}</div></div>'
        + _input(errors, "phone", tr("users.phone"), fields.phone, kind="tel",
                 hint=_phone_hint(ctx, region), attrs=' maxlength="40" autocomplete="off"')
        + _password_inputs(ctx, errors)
        + f'<p class="muted small">{escape(tr("users.add_hint"))}</p>'
        f'<div class="actions"><button type="submit">{escape(tr("users.add_button"))}</button></div>'
        "</form>"
    )  # fmt: skip


async def _users_content(
    ctx: Ctx, db: AsyncSession, fields: NewUser, *, message: str = "", problem: str = ""
) -> str:
    users = await _account_users(db, ctx.auth.user.account_id)
    region = await account_region(db, ctx.auth.user.account_id)
    await _audit_user_list(ctx, db)
    return (
        notice(message) + alert(problem) + _users_table(ctx, users)
        + _new_user_form(ctx, fields, region)
    )  # fmt: skip


async def _audit_user_list(ctx: Ctx, db: AsyncSession) -> None:
    """Staff emails and phones are personal data: who listed them is kept (as the CLI does)."""
    await audit(db, action="user.list", at=ctx.now, user=ctx.auth.user, ip_truncated=ctx.ip)


DONE = {
    "created": "users.done_created",
    "saved": "users.done_saved",
    "unchanged": "settings.unchanged",
    "disabled": "users.done_disabled",
    "enabled": "users.done_enabled",
    "password": "users.done_password",
}


def _done(ctx: Ctx) -> str:
    key = DONE.get(ctx.request.query.get("done", ""))
    return ctx.tr(key) if key else ""


async def users_page(request: web.Request) -> web.Response:
    ctx = await _ctx(request, "admin")
    message = _done(ctx)
    async with request.app[appkeys.DATABASE].begin() as db:
        email = ctx.request.query.get("email", "")[:320].lower()
        # Named only when the account has that user: a crafted link cannot put words on the page.
        if message and email and await _account_user_id(db, ctx.auth.user.account_id, email):
            message = ctx.tr("users.done_created_named", email=email)
        content = await _users_content(ctx, db, NewUser(), message=message)
    return _page(ctx, BASE, ctx.tr("users.title"), content)


async def users_create(request: web.Request) -> web.Response:
    """Add a user to the admin's account; errors next to their fields, nothing saved."""
    ctx = await _ctx(request, "admin")
    form = await _checked_form(ctx)
    fields = NewUser(email=_text(form, "email"), role=_text(form, "role"),
                     language=_text(form, "language"), phone=_text(form, "phone"))  # fmt: skip
    errors = fields.errors
    async with request.app[appkeys.DATABASE].begin() as db:
        region = await account_region(db, ctx.auth.user.account_id)
        try:
            email = check_email(fields.email)
        except ApiError:
            email, errors["email"] = "", ctx.tr("users.err_email")
        if fields.role not in ROLES:
            fields.role, errors["role"] = "advisor", ctx.tr("users.err_role")
        if fields.language not in USER_LANGUAGES:
            fields.language = "en"
        phone = _phone(ctx, fields.phone, region, errors)
        password = _new_password(ctx, form, errors)
        if email and await db.scalar(select(User.id).where(User.email == email)) is not None:
            errors["email"] = ctx.tr("users.err_duplicate")
        if errors or password is None:
            content = await _users_content(ctx, db, fields, problem=ctx.tr("settings.not_saved"))
            return _page(ctx, BASE, ctx.tr("users.title"), content, status=400)
        user = await _create(ctx, db, email, password, fields, phone)
    query = {"done": "created", "email": user.email, "lang": ctx.lang}
    raise web.HTTPSeeOther(f"{BASE}?{urlencode(query)}")


async def _create(
    ctx: Ctx, db: AsyncSession, email: str, password: str, fields: NewUser, phone: str | None
) -> User:
    account = await db.get(Account, ctx.auth.user.account_id)
    assert account is not None
    user = await create_user(db, account, email, password, fields.role, ctx.request.app[appkeys.CLOCK],
                             language=fields.language, phone_e164=phone)  # fmt: skip
    await audit_user(db, user, "user.created", ctx.now, by=ctx.auth.user, ip_truncated=ctx.ip,
                     role=user.role)  # fmt: skip
    return user


# -- one user (admins) ---------------------------------------------------------------------------


@dataclasses.dataclass
class UserFields:
    role: str
    language: str
    phone: str
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, user: User) -> UserFields:
        return cls(user.role, user.language, _phone_text(user.phone_e164))


async def _account_user(ctx: Ctx, db: AsyncSession) -> User:
    """The user of the URL, only within the admin's own account (another's reads as unknown)."""
    user_id = parse_id(ctx.request.match_info["user_id"])
    user = await db.get(User, user_id) if user_id is not None else None
    if user is None or user.account_id != ctx.auth.user.account_id:
        raise web.HTTPNotFound(text=ctx.tr("users.unknown"))
    return user


def _user_forms(
    ctx: Ctx, user: User, fields: UserFields, region: str | None, password_errors: dict[str, str]
) -> str:
    tr, errors = ctx.tr, fields.errors
    action = f"{BASE}/{user.id}?{urlencode({'lang': ctx.lang})}"
    csrf = f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
    self_edit = user.id == ctx.auth.user.id
    role_select = _select(ctx, "role", ROLES, fields.role, lambda r: _role_name(ctx, r))
    if self_edit:
        role_select = (
            f'<select id="role" name="role" disabled><option>{escape(_role_name(ctx, user.role))}'
            f'</option></select><p class="muted small">{escape(tr("users.own_role"))}</p>'
        )
    status = (
        tr("users.disabled_since", date=_when(user.disabled_at)) if user.disabled_at
        else tr("users.active")
    )  # fmt: skip
    line = tr("users.status_line", status=status, date=_when(user.created_at))
    details = f'<p class="muted">{escape(line)}</p>'
    edit = (
        f'<form class="card" method="post" action="{escape(action)}" novalidate>{csrf}'
        '<input type="hidden" name="do" value="save">'
        f'<h2>{escape(tr("users.details"))}</h2>'
        f'<div class="row"><div><label for="role">{escape(tr("users.role"))}</label>{role_select}'
        f'{field_error(errors, "role")}</div>'
        f'<div><label for="language">{escape(tr("users.language"))}</label>'
        f'{_select(ctx, "language", USER_LANGUAGES, fields.language, _language_name(ctx))}</div></div>'
        + _input(errors, "phone", tr("users.phone"), fields.phone, kind="tel",
                 hint=_phone_hint(ctx, region), attrs=' maxlength="40" autocomplete="off"')
        + f'<p class="muted small">{escape(tr("users.role_change_hint"))}</p>'
        f'<div class="actions"><button type="submit">{escape(tr("settings.save"))}</button></div></form>'
    )  # fmt: skip
    if self_edit:
        access = f'<p class="muted">{escape(tr("users.own_access"))}</p>'
    elif user.disabled_at is None:
        access = (
            f'<form method="post" action="{escape(action)}">{csrf}<input type="hidden" name="do" value="disable">'
            f'<p class="muted small">{escape(tr("users.disable_hint"))}</p>'
            f'<button type="submit" class="danger">{escape(tr("users.disable"))}</button></form>'
        )  # fmt: skip
    else:
        access = (
            f'<form method="post" action="{escape(action)}">{csrf}<input type="hidden" name="do" value="enable">'
            f'<button type="submit" class="secondary">{escape(tr("users.enable"))}</button></form>'
        )  # fmt: skip
    access_card = f'<section class="card"><h2>{escape(tr("users.access"))}</h2>{access}</section>'
    password = (
        f'<form class="card" method="post" action="{escape(action)}" novalidate>{csrf}'
        '<input type="hidden" name="do" value="password">'
        f'<h2>{escape(tr("users.set_password"))}</h2>'
        f'<p class="muted small">{escape(tr("users.set_password_hint"))}</p>'
        + _password_inputs(ctx, password_errors)
        + f'<div class="actions"><button type="submit" class="secondary">{escape(tr("users.set_password"))}</button></div></form>'
    )  # fmt: skip
    back = (
        f'<p><a href="{BASE}?{urlencode({"lang": ctx.lang})}">← {escape(tr("users.back"))}</a></p>'
    )
    return back + details + edit + access_card + password


async def user_page(request: web.Request) -> web.Response:
    ctx = await _ctx(request, "admin")
    async with request.app[appkeys.DATABASE].begin() as db:
        user = await _account_user(ctx, db)
        region = await account_region(db, user.account_id)
        await audit_user(db, user, "user.viewed", ctx.now, by=ctx.auth.user, ip_truncated=ctx.ip)
        content = notice(_done(ctx)) + _user_forms(ctx, user, UserFields.of(user), region, {})
    return _page(ctx, f"{BASE}/{user.id}", user.email, content)


async def user_submit(request: web.Request) -> web.Response:
    """`do` = save (role, language, phone), disable, enable or password."""
    ctx = await _ctx(request, "admin")
    form = await _checked_form(ctx)
    action = _text(form, "do", 20)
    ended: list[str] = []
    async with request.app[appkeys.DATABASE].begin() as db:
        user = await _account_user(ctx, db)
        region = await account_region(db, user.account_id)
        self_edit = user.id == ctx.auth.user.id
        audit_args: dict[str, Any] = {"by": ctx.auth.user, "ip_truncated": ctx.ip}
        if action in ("disable", "enable"):
            if self_edit:
                raise ApiError("own_access", "you cannot disable yourself; another admin can",
                               status=409)  # fmt: skip
            disabled = action == "disable"
            done = "unchanged"
            if (user.disabled_at is not None) != disabled:
                ended = await set_disabled(db, user, disabled, ctx.now)
                await audit_user(db, user, f"user.{action}d", ctx.now, **audit_args,
                                 sign_ins_ended=len(ended))  # fmt: skip
                done = f"{action}d"
        elif action == "password":
            errors: dict[str, str] = {}
            password = _new_password(ctx, form, errors)
            if password is None:
                content = alert(ctx.tr("settings.not_saved")) + _user_forms(
                    ctx, user, UserFields.of(user), region, errors
                )
                return _page(ctx, f"{BASE}/{user.id}", user.email, content, status=400)
            # The admin's own browser stays signed in when they set their own password here.
            keep = ctx.auth.login.token_hash if self_edit else None
            ended = await set_password(db, user, password, keep=keep)
            await audit_user(db, user, "user.password_changed", ctx.now, **audit_args,
                             sign_ins_ended=len(ended))  # fmt: skip
            done = "password"
        elif action == "save":
            fields = UserFields(_text(form, "role") or user.role, _text(form, "language"),
                                _text(form, "phone"))  # fmt: skip
            if self_edit:
                fields.role = user.role  # a disabled select sends nothing; nothing else counts
            if fields.role not in ROLES:
                fields.role, fields.errors["role"] = user.role, ctx.tr("users.err_role")
            if fields.language not in USER_LANGUAGES:
                fields.language = user.language
            phone = _phone(ctx, fields.phone, region, fields.errors)
            if fields.errors:
                content = alert(ctx.tr("settings.not_saved")) + _user_forms(
                    ctx, user, fields, region, {}
                )
                return _page(ctx, f"{BASE}/{user.id}", user.email, content, status=400)
            changed, ended = await update_user(
                db, user, role=fields.role, language=fields.language, phone_e164=phone
            )
            done = "saved" if changed else "unchanged"
            if changed:
                await audit_user(db, user, "user.changed", ctx.now, **audit_args,
                                 changed=changed, sign_ins_ended=len(ended))  # fmt: skip
        else:
            raise ApiError("invalid_action", "do must be save, disable, enable or password")
    _close_consoles(request, ended)
    query = {"done": done, "lang": ctx.lang}
    raise web.HTTPSeeOther(f"{BASE}/{user.id}?{urlencode(query)}")


# -- one's own profile ---------------------------------------------------------------------------


def _profile_forms(
    ctx: Ctx, fields: UserFields, region: str | None, password_errors: dict[str, str]
) -> str:
    tr, user, errors = ctx.tr, ctx.auth.user, fields.errors
    action = f"{PROFILE}?{urlencode({'lang': ctx.lang})}"
    csrf = f'<input type="hidden" name="csrf" value="{escape(ctx.auth.csrf)}">'
    who = (
        f'<section class="card"><h2>{escape(user.email)}</h2><p class="muted">'
        f"{escape(tr('users.role_line', role=_role_name(ctx, user.role)))}</p>"
        f'<p class="muted small">{escape(tr("profile.ask_admin"))}</p></section>'
    )
    details = (
        f'<form class="card" method="post" action="{escape(action)}" novalidate>{csrf}'
        '<input type="hidden" name="do" value="save">'
        f'<h2>{escape(tr("users.details"))}</h2>'
        f'<label for="language">{escape(tr("users.language"))}</label>'
        f'{_select(ctx, "language", USER_LANGUAGES, fields.language, _language_name(ctx))}'
        + _input(errors, "phone", tr("users.phone"), fields.phone, kind="tel",
                 hint=_phone_hint(ctx, region, own=True), attrs=' maxlength="40" autocomplete="tel"')
        + f'<div class="actions"><button type="submit">{escape(tr("settings.save"))}</button></div></form>'
    )  # fmt: skip
    password = (
        f'<form class="card" method="post" action="{escape(action)}" novalidate>{csrf}'
        '<input type="hidden" name="do" value="password">'
        f'<h2>{escape(tr("profile.password"))}</h2>'
        f'<p class="muted small">{escape(tr("profile.password_hint"))}</p>'
        + _password_inputs(ctx, password_errors, current=True)
        + f'<div class="actions"><button type="submit" class="secondary">{escape(tr("profile.password"))}</button></div></form>'
    )  # fmt: skip
    return who + details + password


PROFILE_DONE = {"saved": "users.done_saved_own", "unchanged": "settings.unchanged",
                "password": "profile.done_password"}  # fmt: skip


async def profile_page(request: web.Request) -> web.Response:
    ctx = await _ctx(request)
    async with request.app[appkeys.DATABASE].sessions() as db:
        region = await account_region(db, ctx.auth.user.account_id)
    key = PROFILE_DONE.get(request.query.get("done", ""))
    content = notice(ctx.tr(key) if key else "") + _profile_forms(
        ctx, UserFields.of(ctx.auth.user), region, {}
    )
    return _page(ctx, PROFILE, ctx.tr("profile.title"), content)


async def profile_submit(request: web.Request) -> web.Response:
    """`do` = save (language, phone) or password (the current one first)."""
    ctx = await _ctx(request)
    form = await _checked_form(ctx)
    action = _text(form, "do", 20)
    async with request.app[appkeys.DATABASE].begin() as db:
        user = await db.get(User, ctx.auth.user.id)
        assert user is not None  # `require` just read it
        region = await account_region(db, user.account_id)
        fields = UserFields.of(user)
        if action == "password":
            errors: dict[str, str] = {}
            if not verify_password(user.password_hash,
                                   _text(form, "current_password", MAX_PASSWORD_LENGTH)):  # fmt: skip
                errors["current_password"] = ctx.tr("profile.err_current")
            password = _new_password(ctx, form, errors)
            if errors or password is None:
                content = alert(ctx.tr("settings.not_saved")) + _profile_forms(
                    ctx, fields, region, errors
                )
                return _page(ctx, PROFILE, ctx.tr("profile.title"), content, status=400)
            # This browser stays signed in; every other one signs in again.
            ended = await set_password(db, user, password, keep=ctx.auth.login.token_hash)
            await audit_user(db, user, "user.password_changed", ctx.now, by=user,
                             ip_truncated=ctx.ip, sign_ins_ended=len(ended))  # fmt: skip
            done = "password"
        elif action == "save":
            fields.language = _text(form, "language")
            fields.phone = _text(form, "phone")
            if fields.language not in USER_LANGUAGES:
                fields.language = user.language
            phone = _phone(ctx, fields.phone, region, fields.errors)
            if fields.errors:
                content = alert(ctx.tr("settings.not_saved")) + _profile_forms(
                    ctx, fields, region, {}
                )
                return _page(ctx, PROFILE, ctx.tr("profile.title"), content, status=400)
            changed, ended = await update_user(db, user, language=fields.language, phone_e164=phone)
            if changed:
                await audit_user(db, user, "user.changed", ctx.now, by=user, ip_truncated=ctx.ip,
                                 changed=changed, sign_ins_ended=0)  # fmt: skip
            done = "saved" if changed else "unchanged"
        else:
            raise ApiError("invalid_action", "do must be save or password")
    _close_consoles(request, ended)  # none for a new language or phone
    # No `lang`: the page then speaks the language just chosen.
    raise web.HTTPSeeOther(f"{PROFILE}?{urlencode({'done': done})}")


def setup(app: web.Application) -> None:
    """Add the users pages (link in `dashboard.pages.NAV_ITEMS`) and the profile (header)."""
    app.router.add_get(BASE, users_page)
    app.router.add_post(BASE, users_create)
    app.router.add_get(BASE + "/{user_id}", user_page)
    app.router.add_post(BASE + "/{user_id}", user_submit)
    app.router.add_get(PROFILE, profile_page)
    app.router.add_post(PROFILE, profile_submit)
