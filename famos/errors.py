"""User-facing errors: the CLI prints their message on one line, no traceback, exit code 2."""


class UserError(Exception):
    """A mistake in the user's input (file, field, limit); the message names it."""
