"""Failures the managers report; handlers turn them into the contract's error responses."""

from __future__ import annotations

import errno

from pymongo.errors import PyMongoError

from storage import WriteFailed

STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO}


class ServiceError(Exception):
    status = 400

    def __init__(self, message: str, *, fields: dict[str, str] | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.retry_after = retry_after


class Invalid(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.challenge = "Bearer" if error is None else f'Bearer error="{error}"'


class Forbidden(ServiceError):
    status = 403


class QuotaExceeded(Forbidden):
    def __init__(self, message: str = "quota exceeded") -> None:
        super().__init__(message)


class NotFound(ServiceError):
    status = 404

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class TooLarge(ServiceError):
    """413: more bytes than one file may have (the one place this message is made)."""

    status = 413

    def __init__(self, limit: int | None = None, message: str | None = None) -> None:
        super().__init__(message or f"file too large: at most {limit} bytes")
        self.limit = limit


class Unsupported(ServiceError):
    status = 415


class RateLimited(ServiceError):
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)


class Unavailable(ServiceError):
    status = 503


class InsufficientStorage(ServiceError):
    status = 507

    def __init__(self, message: str = "the storage volume is full or not writable") -> None:
        super().__init__(message)


class DatabaseUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__("database unavailable")


def classify(exc: BaseException) -> ServiceError | None:
    """The contract's answer to a failure of a dependency (database down → 503, the storage
    volume full or failing → 507); None for anything else (a bug: 500)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, WriteFailed) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS):
        return InsufficientStorage()
    if isinstance(exc, PyMongoError):
        return DatabaseUnavailable()
    return None


class Conflict(ServiceError):
    status = 409


class Gone(ServiceError):
    status = 410
