"""User-facing errors.

Anything the user can fix (a bad file, a bad option) raises :class:`ScscError`. The CLI prints its message on
one line and exits with code 2, without a traceback.
"""


class ScscError(Exception):
    """An error caused by user input; the message is shown to the user as is."""

    exit_code = 2


class InputError(ScscError):
    """A data file that cannot be read or fails validation."""


class ConfigError(ScscError):
    """An unknown option, key or component name in a configuration."""
