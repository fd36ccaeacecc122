"""Command-line conventions shared by every stage's `cli.py` (and the `w2s` dispatcher above them).

A stage's `cli.py` builds its parsers from light modules only, and reaches the code that does the work
through `lazy("module:function")`: torch and transformers load when a command runs, never for `--help`
or a bad flag (`tests/test_cli.py` holds every command's `--help` to that). This is the one place where
first-party code is imported by name at run time, and `tests/test_layers.py` checks those names against
the layers like any import.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A mistake the user can fix (a recipe, a file, a flag, a model name, an unfinished run): the commands
    print its message on one line, without a traceback, and exit with status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line naming it, not the whole usage first (`--help` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for the options)\n")


def lazy(target: str) -> Callable[..., Any]:
    """The function `"package.module:name"`, imported when first called (see the module's docstring)."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.target = target  # read by tests/test_layers.py
    return call
