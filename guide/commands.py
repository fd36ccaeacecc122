"""Command-line conventions shared by every stage's `cli.py` (and the `w2s` dispatcher above them).

A stage's `cli.py` builds its parsers from light modules only, and reaches the code that does the work
through `lazy("module:function")`: torch and transformers load when a command runs, never for `--help`
or a bad flag (`tests/test_cli.py` holds every command's `--help` to that). This is the one place where
first-party code is imported by name at run time, and `tests/test_layers.py` checks those names against
the layers like any import.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A mistake the user can fix (a recipe, a file, a flag, a model name, an unfinished run): the commands
    print its message on one line, without a traceback, and exit with status 2."""


class GuideError(UserError, ValueError):
    """A decoding setting, prompt or model that cannot be used (the guide stage's user error)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line naming it, not the whole usage first (`--help` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for the options)\n")


_debug = False


def run_command(prog: str, main: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Runs a command's `main(argv)`: a user's mistake (`UserError`, or an OS error such as a folder it may
    not write) is one line on stderr and exit status 2; `--debug` (anywhere in `argv`) shows the traceback."""
    global _debug
    _debug = _debug or "--debug" in argv  # seen by a command run inside this one (w2s train -> train/dpo.py)
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv) or 0
    except (UserError, OSError) as e:
        if _debug:
            raise
        message = str(e) if isinstance(e, UserError) or not e.strerror else f"{e.strerror}: {e.filename or ''}"
        print(f"{prog}: error: {message} (--debug for the traceback)", file=sys.stderr)
        return 2


def command(prog: str) -> Callable:
    """Decorates a stage's command function `main(argv)` with `run_command`: called from the `w2s`
    dispatcher, from `python -m`, or from a test, a user's mistake is one line and exit status 2."""

    def wrap(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int]:
        @functools.wraps(main)
        def run(argv: list[str]) -> int:
            return run_command(prog, main, argv)

        return run

    return wrap


def lazy(target: str) -> Callable[..., Any]:
    """The function `"package.module:name"`, imported when first called (see the module's docstring)."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.target = target  # read by tests/test_layers.py
    return call
