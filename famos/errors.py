"""Errors users see: the CLI prints their message on one line, no traceback, exit code 2; the render
server maps each to one gRPC status code (``famos.render_server.interceptors``)."""


def quoted(text: str, limit: int = 64) -> str:
    """User input inside an error message: escaped (repr) and at most ``limit`` characters of it, so a
    10,000-character name cannot blow up a message (or a gRPC status past its metadata limit)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


class UserError(Exception):
    """A mistake in the user's input (file, field, limit); the message names it."""


class InvalidField(UserError, ValueError):
    """A request field (or command-line option) is malformed or out of range; the message starts
    with the field's name. Raised once, where a request is validated."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why

    def __reduce__(self):  # pickled by its two arguments: errors travel back from cluster workers
        return type(self), (self.field, self.why)


class OverLimit(UserError):
    """A request over a limit of the door that takes it (pixels, chunks, content pixels, free disk);
    the message names the limit. The render server answers RESOURCE_EXHAUSTED."""


class BundleError(UserError, ValueError):
    """A bundle is missing, incomplete, truncated, modified or of another format; names the file."""


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend, device or precision cannot run on this machine."""


class Cancelled(UserError):
    """A render was cancelled (client disconnect, job cancel, Ctrl-C) between two chunks."""


class DiskFull(UserError, OSError):
    """No space left where an output was being written; names the file, what it needs and what is free.
    Nothing is left behind: the partial file is removed before this is raised."""

    def __str__(self) -> str:
        return str(self.strerror)
