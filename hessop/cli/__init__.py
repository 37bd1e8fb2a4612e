"""The ``hessop`` command line.

``hessop <command> [options]``, also ``python -m hessop``. Each command lives
in its own module with an ``add_parser(subparsers)`` function that registers
its options and returns its parser, with two defaults set on the parsed
arguments: ``handler``, which runs the command and returns its exit status,
and ``validate``, which checks option combinations against that parser.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from hessop._version import __version__
from hessop.cli import _analyze, _study, _train
from hessop.cli._errors import EXIT_USAGE, ArgumentParser, run_reporting_errors

__all__ = ["build_parser", "main"]

# Modules of the subcommands, in the order of ``hessop --help``.
COMMANDS = (_analyze, _train, _study)

# Environment variables through which MPI launchers give a process its rank:
# MPICH and Intel MPI (Hydra), Open MPI, MVAPICH and PMIx.
_MPI_RANK_VARIABLES = (
    "PMI_RANK",
    "OMPI_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_RANK",
    "PMIX_RANK",
)


def build_parser() -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    """Return the ``hessop`` argument parser and the parser of each command."""
    parser = ArgumentParser(
        prog="hessop",
        description="The loss Hessian of a PyTorch network: spectra, traces, "
        "densities and loss landscapes.",
    )
    parser.add_argument("--version", action="version", version=f"hessop {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    commands = {}
    for command in COMMANDS:
        subparser = command.add_parser(subparsers)
        commands[subparser.prog.split()[-1]] = subparser
    return parser, commands


def launcher_rank() -> int:
    """Return this process's MPI rank as the launcher announced it, 0 if none."""
    for name in _MPI_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hessop`` command line and return its exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        0 on success, 1 when the command failed, 2 for an invalid command
        line, 130 when interrupted. Under MPI only rank 0 prints the error.
    """
    parser, commands = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.validate(commands[args.command], args)
    show = args.mpi == "off" or launcher_rank() == 0
    return run_reporting_errors(
        f"hessop {args.command}",
        lambda: args.handler(args),
        debug=args.debug,
        show=show,
    )
