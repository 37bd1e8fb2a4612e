"""One-line error messages and exit statuses for the command line.

A failed command prints exactly one line on standard error, ``hessop
<command>: error: <message>``, and exits with a non-zero status; the Python
traceback is shown only with ``--debug``.

Exit statuses: 0 success, 1 any failure while running, 2 an invalid command
line (argparse's convention), 130 interrupted by Ctrl-C (128 + SIGINT).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Exceptions whose message is written for the user, so it is shown as it is.
# Any other exception is shown with its type name, because its message alone
# may not say what failed.
_USER_FACING = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    ImportError,
    FloatingPointError,
)


class CommandError(Exception):
    """A failure with a message meant for the user, exit status 1."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors take one line.

    argparse prints the usage block before the error; here the error line
    alone goes to standard error, with a pointer to ``--help``.
    """

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(
            f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n"
        )
        sys.exit(EXIT_USAGE)


def one_line(text: str) -> str:
    """Join the lines of ``text`` with single spaces."""
    return " ".join(str(text).split())


def describe(error: BaseException) -> str:
    """Return the one-line message for an exception."""
    if isinstance(error, CommandError):
        return one_line(str(error))
    message = one_line(str(error))
    if isinstance(error, KeyError) and error.args:
        message = one_line(str(error.args[0]))
    if isinstance(error, _USER_FACING) and message:
        return message
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def run_reporting_errors(
    prog: str, function: Callable[[], int], *, debug: bool, show: bool = True
) -> int:
    """Call ``function`` and turn an exception into an error line and a status.

    Parameters
    ----------
    prog : str
        Program name that starts the error line, such as ``"hessop analyze"``.
    function : callable
        The command; it returns its exit status.
    debug : bool
        Print the traceback before the error line.
    show : bool
        Print anything at all; False on MPI ranks other than 0, whose errors
        rank 0 reports.
    """
    try:
        return function()
    except KeyboardInterrupt:
        if show:
            sys.stderr.write(f"\n{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:
        if show:
            if debug:
                traceback.print_exc(file=sys.stderr)
            sys.stderr.write(f"{prog}: error: {describe(error)}\n")
        return EXIT_FAILURE


def run_on_all_ranks(comm: Any, function: Callable[[], T], operation: str) -> T:
    """Run ``function`` on every MPI rank; if one rank fails, all ranks fail.

    The failing rank raises its own exception and the others a
    :class:`CommandError` that names that rank and its message, so that no
    rank waits forever in a later collective operation and rank 0 can print
    the failure. ``function`` must not call collective operations. Without a
    communicator this is a plain call.
    """
    if comm is None:
        return function()
    result: Any = None
    outcome: str | None = None
    failure: Exception | None = None
    try:
        result = function()
    except Exception as error:
        outcome = describe(error)
        failure = error
    outcomes = comm.allgather(outcome)
    failed = [(rank, text) for rank, text in enumerate(outcomes) if text is not None]
    if not failed:
        return result
    if failure is not None:
        raise failure
    rank, text = failed[0]
    raise CommandError(f"{operation} failed on rank {rank}: {text}")
