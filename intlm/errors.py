"""The one exception type the CLI turns into a single clear error line."""


class IntlmError(Exception):
    """A user-facing problem: bad input, bad settings, a corrupt checkpoint."""
