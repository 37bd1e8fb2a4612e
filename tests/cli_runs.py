"""Helpers for tests of the ``hessop`` command line: runs, reports, CIFAR files."""

import contextlib
import io
import json

import numpy as np

from hessop.cli import main

# A full analysis of a small network in a few seconds: ResNet-8 trained for
# one epoch, analysed on 96 digits in three uneven batches (40, 40, 16), in
# float64 so that comparisons with the library are tight.
SMALL_RUN = [
    "analyze",
    "--model",
    "resnet8",
    "--epochs",
    "1",
    "--train-samples",
    "200",
    "--num-samples",
    "96",
    "--batch-size",
    "40",
    "--dtype",
    "float64",
    "--top-k",
    "2",
    "--eig-max-matvecs",
    "40",
    "--trace-matvecs",
    "12",
    "--density-steps",
    "15",
    "--block-eig-max-matvecs",
    "10",
    "--block-trace-matvecs",
    "6",
    "--landscape-points",
    "5",
    "--landscape-grid",
    "3",
    "--mpi",
    "off",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CIFAR_PIXELS = 3 * 32 * 32


def run_cli(arguments):
    """Run ``hessop`` in this process; return the status, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main([str(argument) for argument in arguments])
        except SystemExit as exit_:
            status = exit_.code
    return status, stdout.getvalue(), stderr.getvalue()


def read_report(directory):
    return json.loads((directory / "report.json").read_text())


def strip_run_details(value):
    """Remove what differs between two runs with the same numbers: timings,
    the list of runs and every ``seconds`` entry."""
    if isinstance(value, dict):
        return {
            key: strip_run_details(item)
            for key, item in value.items()
            if key not in ("seconds", "timings", "runs")
        }
    if isinstance(value, list):
        return [strip_run_details(item) for item in value]
    return value


def write_cifar(directory, files, label_bytes, num_classes, records, seed=0):
    """Write CIFAR binary files: label bytes, then 3072 channel-major pixels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name in files:
        labels = rng.integers(0, num_classes, size=(records, label_bytes))
        pixels = rng.integers(0, 256, size=(records, CIFAR_PIXELS))
        data = np.concatenate([labels, pixels], axis=1).astype(np.uint8)
        (directory / name).write_bytes(data.tobytes())
    return directory
