"""Training checkpoints: build, restore, save and load them.

A checkpoint is the dict that :func:`hessop.training.train` builds with
:func:`make_checkpoint` and passes to its ``on_checkpoint`` callback. It
contains only tensors, numbers, strings, lists, tuples, dicts and a
:class:`collections.Counter` (the learning-rate milestones), so
:func:`torch.load` reads it with ``weights_only=True``, which refuses to run
code from an untrusted file.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "load_checkpoint",
    "save_checkpoint",
]

#: Value of the ``"format"`` entry of every training checkpoint.
CHECKPOINT_FORMAT = "hessop-training-checkpoint"
#: Version of the checkpoint layout. It changes when an entry changes meaning.
CHECKPOINT_VERSION = 1


def make_checkpoint(
    epoch: int,
    settings: Mapping[str, Any],
    history: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> dict[str, Any]:
    """Collect the state of a training run after ``epoch`` completed epochs.

    Returns
    -------
    dict
        ``format``, ``version``, ``epoch``, ``settings`` and ``history`` as
        given, ``model``, ``optimizer`` and ``scheduler`` (deep copies of
        their ``state_dict``, so later training steps do not change them) and
        ``rng``: the global torch random state under ``"torch"``, plus the
        CUDA random state of ``device`` under ``"cuda"`` for a GPU.
    """
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "settings": dict(settings),
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
        "rng": rng,
        "history": dict(history),
    }


def restore_states(
    checkpoint: Mapping[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> None:
    """Load the model, optimiser, scheduler and random states of a checkpoint.

    The global torch random state is set, so call this inside
    :func:`torch.random.fork_rng` to keep the caller's state. A CUDA random
    state is restored only when training on a GPU and the checkpoint has one.
    """
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
    if device.type == "cuda" and "cuda" in checkpoint["rng"]:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"].cpu(), device)


def save_checkpoint(checkpoint: Mapping[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically.

    The data goes to a temporary file in the same directory, which then
    replaces ``path`` with :func:`os.replace`. A reader therefore sees the
    old file or the complete new one, never a partial write.

    Parameters
    ----------
    checkpoint : Mapping
        The checkpoint, optionally with extra entries (such as a
        ``"metadata"`` dict of strings and numbers) added by the caller.
    path : str or Path
        Destination file. Its directory must exist.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(dict(checkpoint), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    path : str or Path
        File written by :func:`save_checkpoint`.
    map_location : str or torch.device, optional
        Where to put the tensors, as in :func:`torch.load`.

    Returns
    -------
    dict
        The checkpoint, ready for the ``resume_from`` argument of
        :func:`hessop.training.train`.

    Raises
    ------
    ValueError
        If the file is not a hessop training checkpoint of a version that
        this hessop reads.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    validate_checkpoint(checkpoint, str(path))
    return checkpoint


def validate_checkpoint(checkpoint: object, source: str = "checkpoint") -> None:
    """Raise ValueError unless ``checkpoint`` has the format and version expected."""
    if (
        not isinstance(checkpoint, Mapping)
        or checkpoint.get("format") != CHECKPOINT_FORMAT
    ):
        raise ValueError(
            f"{source} is not a hessop training checkpoint: it has no "
            f"'format': {CHECKPOINT_FORMAT!r} entry"
        )
    version = checkpoint.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(
            f"{source} has checkpoint version {version!r}, but this hessop reads "
            f"version {CHECKPOINT_VERSION}"
        )
