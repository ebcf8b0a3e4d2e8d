"""The server's error tree, and the one table mapping it to gRPC and HTTP status codes."""

from __future__ import annotations

import grpc


class PlaitError(Exception):
    """Base of every error the server raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(PlaitError):
    """Bad input: names the field and says what is wrong with it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(PlaitError):
    pass


class AlreadyExists(PlaitError):
    pass


class FailedPrecondition(PlaitError):
    pass


class Unauthenticated(PlaitError):
    pass


class PermissionDenied(PlaitError):
    """A valid credential without the right to this call (a worker token on management)."""


class Unavailable(PlaitError):
    pass


class StorageError(Unavailable):
    """Redis answered a call with an error (out of memory, a failing script): nothing of it
    may be taken as applied; the caller keeps what it holds and tries again later."""


class ConfigError(PlaitError):
    """A setting has a bad value; names the flag or variable."""


_STATUS: dict[type[PlaitError], tuple[grpc.StatusCode, int]] = {
    InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, 409),
    FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, 412),
    Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, 403),
    Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    ConfigError: (grpc.StatusCode.INTERNAL, 500),
}


def grpc_status(error: PlaitError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls][0]
    return grpc.StatusCode.INTERNAL


def http_status(error: PlaitError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls][1]
    return 500
