"""Domain errors of the render service. Plain exceptions, no gRPC: ``interceptors`` maps them to
status codes in one table, so the servicer, the model store and the job store just raise.

A malformed request field is the core's ``famos.errors.InvalidField`` (INVALID_ARGUMENT), raised by
the same checks that the command lines use."""

from __future__ import annotations

from famos.errors import OverLimit, UserError


class NotFound(UserError):
    """An unknown model or job."""


class ResourceExhausted(OverLimit):
    """Over a server limit of its own: waiting renders, unfinished jobs (a request's pixels, chunks
    and content are the core's ``OverLimit``, raised where the request is resolved)."""


class AlreadyExists(UserError):
    """A job output name that is already taken."""


class FailedPrecondition(UserError):
    """The object is not in a state that allows the call (e.g. downloading an unfinished job)."""
