"""Errors of the API layer; each maps to one HTTP status in api.app."""

from __future__ import annotations

from aios.schemas.errors import AiosError


class ApiError(AiosError):
    """Root of the API's errors. ``status`` is the HTTP status it becomes."""

    status = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class NotAuthenticated(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503
