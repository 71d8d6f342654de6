"""Domain errors of the render service. Plain exceptions, no gRPC: ``interceptors`` maps them to
status codes in one table, so the servicer, the model store and the job store just raise."""

from __future__ import annotations

from famos.errors import UserError


class NotFound(UserError):
    """An unknown model or job."""


class InvalidArgument(UserError):
    """A request field is malformed or out of range; the message starts with the field's name."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field


class ResourceExhausted(UserError):
    """Over a server limit: pixels, waiting renders, unfinished jobs."""


class AlreadyExists(UserError):
    """A job output name that is already taken."""


class FailedPrecondition(UserError):
    """The object is not in a state that allows the call (e.g. downloading an unfinished job)."""
