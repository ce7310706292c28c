"""Errors that are part of the API: a machine-readable code, a sentence and an HTTP status."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error to show to the caller as `{"error": {"code", "message"}}`."""

    status = 400

    def __init__(
        self, code: str, message: str, *, status: int | None = None, **detail: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.detail = detail

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return {"error": body}


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409
