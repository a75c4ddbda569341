"""Errors of whole calls, made from the API's ``{"error": {"code", "message"}}`` bodies.

Per-file problems never raise: they are listed in the call's report. An exception means the call
as a whole could not go on (no valid token, a deck this token may not use, the server down after
every retry); it carries the report of what had finished by then, if anything had.
"""

from __future__ import annotations

from typing import Any, Optional


class MediaError(Exception):
    """Base of every error this package raises."""

    #: The API's reason code (``unauthorized``, ``quota_exceeded``, …) or a local one.
    code: str = "error"

    def __init__(self, message: str, *, code: Optional[str] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: The HTTP status, when the error came from an answer.
        self.status = status
        #: What the call had finished before it failed (an ``UploadReport`` or ``DownloadReport``).
        self.report: Any = None

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.code not in self.message else self.message


class AuthError(MediaError):
    """401: the token is missing, expired or wrong, and a fresh one did not help."""

    code = "unauthorized"


class ForbiddenError(MediaError):
    """403: the token is valid but may not do this (scope, or a deck it does not maintain)."""

    code = "forbidden"


class BadRequest(MediaError):
    """400/404/405/413: the request itself is wrong; retrying cannot help."""

    code = "bad_request"


class QuotaExceeded(MediaError):
    """429 ``quota_exceeded``: the user's daily upload allowance is used up."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(MediaError):
    """429 ``rate_limited`` that went on after every retry."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: Optional[float] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(MediaError):
    """5xx after every retry."""

    code = "server_error"


class NetworkError(MediaError):
    """Connection failures or timeouts after every retry (includes a proxy that refuses us)."""

    code = "network_error"


class Cancelled(MediaError):
    """The caller's ``cancel()`` returned True. Reports say ``cancelled=True`` instead of raising;
    only calls without a report (``status``) raise this."""

    code = "cancelled"


def _message(body: Any, fallback: str) -> tuple[str, str]:
    """(code, message) from an API error body, or from a fallback for bodies that are not ours
    (a proxy's HTML page, an empty 502)."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code")
            message = err.get("message")
            if isinstance(code, str) and isinstance(message, str):
                return code, message
    return "", fallback


def error_for(status: int, body: Any, *, retry_after: Optional[float] = None) -> MediaError:
    """The exception for an API answer with this status and (parsed JSON) body."""
    code, message = _message(body, f"HTTP {status}")
    kw: dict[str, Any] = {"status": status}
    if code:
        kw["code"] = code
    if status == 401:
        return AuthError(message or "the token was refused", **kw)
    if status == 403:
        return ForbiddenError(message, **kw)
    if status == 429:
        if code == "quota_exceeded":
            return QuotaExceeded(message, retry_after=retry_after, **kw)
        return RateLimited(message, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return BadRequest(message, **kw)
