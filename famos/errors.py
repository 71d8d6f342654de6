"""Errors users see: the CLI prints their message on one line, no traceback, exit code 2; the render
server maps each to one gRPC status code (``famos.render_server.interceptors``)."""

import re


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


class GraphFailed(BundleError):
    """A bundle's graph loaded but failed while computing a window (a graph that does not compute
    what its manifest describes, or the backend ran out of something): the backend's own first
    line follows, without the server's paths."""

    def __init__(self, backend: str, shape: tuple[int, ...], err: BaseException):
        said = _backend_message(str(err)) or type(err).__name__
        super().__init__(f"the model's graph failed on {_window(shape)} ({backend}: {said[:400]})")
        self.backend, self.shape, self.first = backend, shape, said

    def __reduce__(self):  # errors travel back from cluster workers
        return _graph_failed, (self.backend, self.shape, self.first)


def _window(shape: tuple[int, ...]) -> str:
    """A window as errors name it, from its (batch, channels, height, width) shape."""
    return f"a {shape[-1]}x{shape[-2]} window" if len(shape) >= 2 else "a window"


def _backend_message(text: str) -> str:
    """A backend's error on one line, without its status prefix, its C++ source locations and
    function signatures, or any other absolute path (they name the build machine's files, and a
    server must not echo paths)."""
    text = " ".join(text.split())
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # a C++ source location and the function there, an optional return type first
    text = re.sub(r"\S*/\S+:\d+ (?:[\w:<>]+\*? )?(\w+::)+~?\w+\(.*?\)( const)? ?", "", text)
    text = re.sub(r"Exception from \S+:\d+: ?| at \S+\.(?:cpp|cc|hpp|h):\d+", "", text)  # OpenVINO's locations
    # any other file path (with an extension or a line number), not a graph's node names
    return re.sub(r"(?<![\w.'])/[^\s']+(?:\.\w+(?::\d+)?|:\d+)", "<path>", text).strip()


# what a backend says when a window does not fit in memory: the machine's state, not the bundle's
_OUT_OF_MEMORY = re.compile(r"failed to allocate|bad_alloc|out of memory|cannot allocate", re.IGNORECASE)


def window_failed(backend: str, shape: tuple[int, ...], err: BaseException) -> UserError:
    """The error a runner raises when ``backend`` fails on a window: OverLimit when it ran out of
    memory (RESOURCE_EXHAUSTED: a smaller chunk, or later, may work), else GraphFailed."""
    if _OUT_OF_MEMORY.search(str(err)):
        return OverLimit(f"{backend} ran out of memory on {_window(shape)}: use a smaller --chunk or free memory "
                         f"({_backend_message(str(err))[:200]})")
    return GraphFailed(backend, shape, err)


def _graph_failed(backend: str, shape: tuple[int, ...], first: str) -> GraphFailed:
    return GraphFailed(backend, shape, RuntimeError(first))


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend, device or precision cannot run on this machine."""


class Cancelled(UserError):
    """A render was cancelled (client disconnect, job cancel, Ctrl-C) between two chunks."""


class DiskFull(UserError, OSError):
    """No space left where an output was being written; names the file, what it needs and what is free.
    Nothing is left behind: the partial file is removed before this is raised."""

    def __str__(self) -> str:
        return str(self.strerror)
