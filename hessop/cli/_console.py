"""Terminal output: logging through tqdm, progress bars and the summary table."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from tqdm.auto import tqdm


class _TqdmHandler(logging.Handler):
    """Write log records with ``tqdm.write``, so they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    """``hessop: message`` for INFO, ``hessop: warning: message`` above it."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":
            # warnings.formatwarning adds the file, the line number and the
            # source line. The first line ends with the category and message.
            message = message.strip().splitlines()[0].split(": ", 1)[-1]
        if record.levelno >= logging.WARNING:
            return f"hessop: {record.levelname.lower()}: {message}"
        return f"hessop: {message}"


@contextlib.contextmanager
def configured_logging(*, quiet: bool, verbose: bool, is_root: bool) -> Iterator[None]:
    """Send hessop's log records and Python warnings to standard error.

    INFO and above by default, WARNING and above with ``quiet`` or on MPI
    ranks other than 0, DEBUG with ``verbose``. On exit the loggers and the
    capture of warnings are restored, so calling the command from Python
    leaves the caller's logging configuration as it was.
    """
    level = logging.DEBUG if verbose else logging.INFO
    if quiet or not is_root:
        level = logging.WARNING
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter())
    loggers = [logging.getLogger(name) for name in ("hessop", "py.warnings")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, (old_level, old_propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate


def show_progress(*, quiet: bool, is_root: bool) -> bool:
    """Return whether to draw progress bars: rank 0, not quiet, stderr a terminal."""
    return is_root and not quiet and sys.stderr.isatty()


def _number(value: Any, digits: int = 6) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}"


def _seconds(value: Any) -> str:
    return "" if value is None else f"{value:.1f} s"


def summary_table(report: Mapping[str, Any]) -> str:
    """Return the summary of a report as a plain-text table."""
    description = report["description"]
    data = report["data"]
    rows: list[tuple[str, str, str, str, str]] = []
    metrics = report["metrics"]

    eigen = metrics.get("eigenvalues")
    if eigen is not None and eigen.get("status") == "complete":
        for index, (value, converged) in enumerate(
            zip(eigen["eigenvalues"], eigen["converged"], strict=True), 1
        ):
            note = "" if converged else " (not converged)"
            first = index == 1
            rows.append(
                (
                    f"top eigenvalue λ{index}",
                    _number(value) + note,
                    "",
                    str(eigen["num_matvecs"]) if first else "",
                    _seconds(eigen["seconds"]) if first else "",
                )
            )
    trace = metrics.get("trace")
    if trace is not None and trace.get("status") == "complete":
        rows.append(
            (
                f"trace ({trace['method']})",
                _number(trace["estimate"]),
                "± " + _number(trace["stderr"], 3),
                str(trace["num_matvecs"]),
                _seconds(trace["seconds"]),
            )
        )
    density = metrics.get("density")
    if density is not None and density.get("status") == "complete":
        rows.append(
            (
                "density (SLQ)",
                f"sigma = {_number(density['sigma'], 3)}",
                "",
                str(density["num_matvecs"]),
                _seconds(density["seconds"]),
            )
        )
    blocks = metrics.get("blocks")
    if blocks is not None and blocks.get("status") == "complete":
        for block in blocks["blocks"]:
            rows.append(
                (
                    f"block {block['label']}: λ1",
                    _number(block["top_eigenvalue"]),
                    "",
                    str(block["eigen"]["num_matvecs"]),
                    "",
                )
            )
            rows.append(
                (
                    f"block {block['label']}: trace",
                    _number(block["trace"]),
                    "± " + _number(block["trace_stderr"], 3),
                    str(block["trace_details"]["num_matvecs"]),
                    _seconds(block["seconds"]),
                )
            )
    landscape = metrics.get("landscape")
    if landscape is not None and landscape.get("status") == "complete":
        for name, part in landscape["parts"].items():
            losses = [v for v in _flatten(part["losses"]) if v is not None]
            spread = f"{_number(min(losses), 4)} .. {_number(max(losses), 4)}"
            rows.append(
                (f"landscape {name.replace('_', ' ')}", f"loss {spread}", "", "", "")
            )
        rows[-1] = (*rows[-1][:4], _seconds(landscape["seconds"]))

    header = ("metric", "value", "std. error", "matvecs", "time")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(5)]
    lines = [
        f"{description['title']}",
        f"{description['checkpoint']}",
        f"loss {report['loss']['value']:.6g}, accuracy "
        f"{100 * report['loss']['accuracy']:.1f} % on {data['num_samples']} "
        f"samples; {report['environment']['dtype']} on "
        f"{report['environment']['device']}, "
        f"{report['environment']['mpi_ranks']} rank(s)",
        "",
        _row(header, widths),
        _row(tuple("-" * width for width in widths), widths),
    ]
    lines += [_row(row, widths) for row in rows]
    timings = report.get("timings", {})
    lines.append("")
    lines.append(
        f"total {report.get('num_matvecs', 0)} matvecs, "
        f"{_seconds(timings.get('total_seconds'))} in this run"
    )
    return "\n".join(lines)


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    left = f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:<{widths[2]}}"
    right = f"{cells[3]:>{widths[3]}}  {cells[4]:>{widths[4]}}"
    return f"{left}  {right}".rstrip()


def _flatten(values: Any) -> list[Any]:
    if isinstance(values, list):
        return [item for value in values for item in _flatten(value)]
    return [values]
