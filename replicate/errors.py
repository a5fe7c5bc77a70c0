"""The one base class of every problem a user can fix: the CLIs print its message in one line, exit 2.

Also what every CLI shares: the help layout (:class:`HelpFormatter`), the option types that refuse a bad
value in argparse's usage error, and the check that an output folder can be written; kept here, in the
bottom layer, so that each CLI module can import them without importing another CLI.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, NoReturn


class UserError(Exception):
    """Bad input (name, spec, data location, option): the message says what is wrong and how to fix it."""


def cli(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a CLI entry point so that every expected way out is one line, never a traceback.

    A :class:`UserError` becomes ``error: <message>`` on stderr, exit status 2; Ctrl-C becomes ``interrupted``,
    130 (128 + SIGINT, as a shell reports it); a reader that closed the pipe (``--format json | head``) ends it
    quietly, status 1 (:func:`_closed_pipe`).
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return _closed_pipe()
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper


def _closed_pipe() -> int:
    """The reader of stdout went away: point stdout at devnull and say 1, as the Python docs' recipe does.

    devnull: the interpreter flushes stdout once more at exit, and that flush would fail again with a second,
    unanswerable BrokenPipeError. 1, not 0: what was printed is cut short, and a script that checks statuses
    (``set -o pipefail``) should know; not 2, which says the input was wrong.
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured, replaced): nothing to flush
        pass
    return 1


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (a rate or a duration; 0 would divide by zero, below 0 is no
    quantity at all), else the usage error that names the option."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def folder_option(text: str) -> Path:
    """An argparse type for a folder option: an empty path, which would silently mean the working directory
    (reading and writing there), is a usage error."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path is no folder: give a folder, or leave the option out "
                                         "for its default")
    return Path(text)


def check_writable_folder(path: Path, option: str) -> None:
    """Fail before any work, and without writing anything, when the folder ``path`` cannot be written.

    ``path`` may not exist yet: then the nearest existing folder above it, where it would be created, is
    probed. Checked up front so that minutes of work never end in an ``OSError`` traceback half-way through
    the files; ``option`` (``--out``, ``--results``) is how the user named the folder, and so the fix.
    """
    target = Path(path).absolute()
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        raise UserError(f"{option} {path}: {target} is a file, not a folder; choose another with {option} DIR")
    try:  # a probe file, not os.access: root passes access checks on read-only and virtual filesystems
        fd, probe = tempfile.mkstemp(dir=target, prefix=".replicate-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{option} {path} is not writable ({error.strerror or error}); choose another with "
                        f"{option} DIR") from None


class Parser(argparse.ArgumentParser):
    """Every command's parser. A mistake on the command line is one line that names the problem and where the
    options are listed, not argparse's usage block followed by the error (exit status 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The epilog's examples as written, and every default in the option's help."""
