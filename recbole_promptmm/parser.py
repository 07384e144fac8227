"""The command-line parser of every entry point: argparse, with a refusal that is one line."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose refusal is the one line ``PROG: error: ...`` with exit status 2 (argparse's own
    prints the whole usage block first); ``-h`` still prints the full help."""

    def error(self, message: str):
        if len(message) > 200:  # "unrecognized arguments: ..." quotes them all
            message = message[:200] + "..."
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; -h lists the options\n")
