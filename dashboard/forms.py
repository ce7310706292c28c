"""Pieces of the server-rendered forms: a field's error message where the field is."""

from __future__ import annotations

from collections.abc import Mapping

from dashboard.pages import escape


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
