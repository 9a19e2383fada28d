"""One error type for bad input: its message is one line that names the field or file and what is allowed."""

import argparse


class M2DError(ValueError):
    """Invalid user input (config field, CLI flag, data file). ``str(err)`` is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class OneLineParser(argparse.ArgumentParser):
    """argparse without the usage block on errors: ``prog: error: ...`` alone, exit code 2, like every M2DError."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")
