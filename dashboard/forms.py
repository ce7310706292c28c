"""Pieces of the server-rendered form pages: the request context, a field's error message
where the field is, notices."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from aiohttp import web

from dashboard.auth import Auth
from dashboard.i18n import t
from dashboard.pages import escape


@dataclasses.dataclass(frozen=True)
class FormCtx:
    """A signed-in request to a form page, in the language it is answered in."""

    request: web.Request
    auth: Auth
    lang: str

    def tr(self, key: str, **values: str) -> str:
        text = t(key, self.lang)
        return text.format(**values) if values else text


def field_error(errors: Mapping[str, str], name: str) -> str:
    """Render a field's error message where the field is, if it has one."""
    message = errors.get(name)
    if not message:
        return ""
    return f'<p class="field-error" id="{name}-error" role="alert">{escape(message)}</p>'


def invalid_attrs(errors: Mapping[str, str], name: str) -> str:
    """Mark an input as invalid and tie it to its message (screen readers read both)."""
    if name not in errors:
        return ""
    return f' aria-invalid="true" aria-describedby="{name}-error"'


def notice(text: str) -> str:
    return f'<p class="notice" role="status">{escape(text)}</p>' if text else ""


def alert(text: str) -> str:
    return f'<p class="alert" role="alert">{escape(text)}</p>' if text else ""
