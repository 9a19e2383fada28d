"""One error type for bad input: its message is one line that names the field or file and what is allowed."""


class M2DError(ValueError):
    """Invalid user input (config field, CLI flag, data file). ``str(err)`` is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
