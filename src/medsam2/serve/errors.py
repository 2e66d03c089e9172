"""The server's errors: a status code and a one-line message, sent as ``{"error": "..."}``."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses.

    Attributes:
        status: the HTTP status (400 bad input, 401 key, 404 no such session, 409 busy, 413 too
            large, 429 too many sessions).
        message: one line saying what was wrong and what to do.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(session_id: str) -> ApiError:
    return ApiError(404, f"no session {session_id!r}: it was closed or expired; open the scan again")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name where it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def validation_text(errors: list) -> str:
    """The first of pydantic's errors as one line: ``where: what``."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    message = first.get("msg", "invalid request")
    return f"{where}: {message}" if where else message
