"""The one error type for a user's mistakes."""


class SenformerError(Exception):
    """A mistake in the user's input: bad option, file, record or configuration.

    The message names what is wrong (the file, record index or option). The CLI prints it
    as one line on stderr and exits with code 2; anything else is a bug.
    """
