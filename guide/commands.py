"""Command-line conventions shared by every stage's `cli.py` (and the `w2s` dispatcher above them)."""

from __future__ import annotations

import argparse


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line naming it, not the whole usage first (`--help` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for the options)\n")
