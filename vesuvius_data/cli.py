"""What every command line tool does with a user's mistake: one clear line, exit status 2.

Bad input (a missing file, a damaged chunk, a wrong shape or label value, an existing run
folder) surfaces as one of ``USER_ERRORS`` with a message that already names the file and the
fix; a traceback would only bury that line. Anything else is a bug and keeps its traceback.
``VESUVIUS_DEBUG=1`` shows tracebacks for user errors too.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

__all__ = ["USER_ERRORS", "EXIT_USER_ERROR", "user_errors", "positive_int", "nonnegative_int"]

EXIT_USER_ERROR = 2  # argparse's status for bad arguments, so every user error reads alike
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError,
                                                FileExistsError, NotADirectoryError,
                                                IsADirectoryError, PermissionError)


def message(err: BaseException) -> str:
    """The error's own words: a KeyError's str() would add quotes, and an error re-raised from
    a DataLoader worker carries the worker's traceback, whose last line is the message."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    text = str(err) or type(err).__name__
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def user_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a tool's ``main(argv) -> int``: user errors print ``error: ...`` and return 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as e:
            if os.environ.get("VESUVIUS_DEBUG"):
                raise
            print(f"error: {message(e)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (a bad value is argparse's usage error, not a traceback)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value
