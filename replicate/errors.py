"""The one base class of every problem a user can fix: the CLIs print its message in one line, exit 2.

Also the help layout every CLI shares (:class:`HelpFormatter`), kept here, in the bottom layer, so that each
CLI module can import it without importing another CLI.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input (name, spec, data location, option): the message says what is wrong and how to fix it."""


def cli(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a CLI entry point: a :class:`UserError` becomes ``error: <message>`` on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The epilog's examples as written, and every default in the option's help."""
