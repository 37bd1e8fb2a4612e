"""The analysis report: atomic writes, JSON conversion and resuming a run.

``report.json`` is rewritten after every metric, always through a temporary
file in the same directory that then replaces the old file, so a reader (or
a run killed mid-write) sees either the previous complete report or the new
one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from hessop.cli._errors import CommandError

REPORT_FORMAT = "hessop-analyze-report"
REPORT_VERSION = 1
REPORT_NAME = "report.json"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` that replaces it on success.

    The file is flushed and synced before :func:`os.replace` renames it, so
    ``path`` contains the old or the new contents, never a partial write. On
    an exception the temporary file is removed and ``path`` is unchanged.
    """
    path = Path(path)
    # os.open applies the umask to mode 0o666, as a plain open() would;
    # tempfile.mkstemp would create the file readable by its owner only.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented standard JSON, atomically."""
    text = json.dumps(to_json(value), indent=2, allow_nan=False) + "\n"
    with atomic_file(path, "w") as file:
        file.write(text)


def write_with(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer`` on a binary temporary file that then replaces ``path``."""
    with atomic_file(path, "wb") as file:
        writer(file)


def to_json(value: Any) -> Any:
    """Convert numpy and torch values to JSON types; NaN and inf become None.

    Standard JSON has no NaN or infinity, so a non-finite float (a loss that
    overflowed at a far landscape point) is stored as ``null``.
    """
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, torch.Tensor):
        return to_json(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in the JSON report")


def sha256_of(path: Path) -> str:
    """Return the SHA-256 digest of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_output_directory(directory: Path) -> Path:
    """Create the output directory and check that files can be written there.

    Raises
    ------
    CommandError
        If the directory cannot be created or is not writable.
    """
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CommandError(
            f"cannot create output directory {directory}: a file with that name "
            "exists; pass another --out"
        ) from None
    except OSError as error:
        raise CommandError(
            f"cannot create output directory {directory}: {_reason(error)}; "
            "pass another --out"
        ) from None
    if not directory.is_dir():
        raise CommandError(f"output path {directory} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise CommandError(
            f"output directory {directory} is not writable: {_reason(error)}; "
            "pass another --out"
        ) from None
    return directory


def load_previous(directory: Path) -> dict[str, Any] | None:
    """Return the report of an earlier run in ``directory``, or None if absent.

    Raises
    ------
    CommandError
        If ``report.json`` exists but is not an analysis report that this
        version of hessop reads.
    """
    path = Path(directory) / REPORT_NAME
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CommandError(
            f"cannot resume from {path}: the file is not valid JSON ({error}); "
            "remove it or run without --resume"
        ) from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise CommandError(
            f"cannot resume from {path}: it is not a hessop analyze report; "
            "pass another --out"
        )
    if report.get("version") != REPORT_VERSION:
        raise CommandError(
            f"cannot resume from {path}: report version {report.get('version')!r}, "
            f"but this hessop resumes version {REPORT_VERSION}; run without --resume"
        )
    return report


def check_resumable(previous: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Raise unless the earlier run used the same result-affecting settings.

    Raises
    ------
    CommandError
        Naming the first setting that differs and both values.
    """
    saved = previous.get("settings", {})
    current = to_json(settings)
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            option = "--" + key.replace("_", "-")
            raise CommandError(
                f"cannot resume: the report in this directory was computed with "
                f"{option} {_show(saved.get(key))}, this run has "
                f"{_show(current.get(key))}; use the same settings or another --out"
            )


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
