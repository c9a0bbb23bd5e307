"""The one exception type users see: its message says what was wrong and what to do."""


class DDMError(ValueError):
    """Bad input or a failed computation, explained. The CLI prints the message and exits 1."""
