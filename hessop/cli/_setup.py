"""Build the model and the data that ``hessop analyze`` studies.

The model comes from the zoo (:func:`hessop.models.build_model`) or from a
user factory ``module:function``. Its weights come from a file loaded with
``torch.load(..., weights_only=True)``, or from a short training run with
:func:`hessop.training.train` when no file is given.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import logging
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hessop import partition
from hessop._mpi import get_rank
from hessop.checkpoints import CHECKPOINT_FORMAT
from hessop.cli._errors import CommandError, run_on_all_ranks
from hessop.cli._report import sha256_of, write_with
from hessop.datasets import DatasetInfo, load_dataset
from hessop.evaluation import preserved_modes
from hessop.models import build_model
from hessop.models._resnet import CifarResNet
from hessop.training import train

logger = logging.getLogger(__name__)

STAGES = CifarResNet.STAGE_NAMES
MODEL_FILE = "model.pt"
MODEL_FILE_FORMAT = "hessop-analyze-model"
_RESNET_NAME = re.compile(r"resnet(\d+)")
_CIFAR_FILES = {
    "cifar10": "data_batch_1.bin ... data_batch_5.bin and test_batch.bin",
    "cifar100": "train.bin and test.bin",
}


def model_options(args: Any) -> dict[str, Any]:
    """Collect the model's keyword options from ``--model-option`` and switches."""
    options: dict[str, Any] = {}
    for item in args.model_option or ():
        key, separator, text = item.partition("=")
        if not separator or not key.strip().isidentifier():
            raise CommandError(
                f"--model-option {item!r} is not KEY=VALUE with KEY a Python name"
            )
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[key.strip()] = value

    switches = {"batch_norm": args.no_batch_norm, "residual": args.no_residual}
    for key, stages in switches.items():
        if stages is None:
            continue
        flag = "--no-" + key.replace("_", "-")
        if not _RESNET_NAME.fullmatch(args.model):
            raise CommandError(
                f"{flag} applies to the CIFAR ResNets (resnet20, resnet32, ...), "
                f"not to --model {args.model}"
            )
        if key in options:
            raise CommandError(f"{flag} and --model-option {key}=... conflict")
        unknown = [stage for stage in stages if stage not in STAGES]
        if unknown:
            raise CommandError(
                f"{flag} takes stage names {', '.join(STAGES)} (or none for all "
                f"stages), got {', '.join(unknown)}"
            )
        removed = set(stages) or set(STAGES)
        options[key] = [stage not in removed for stage in STAGES]
    return options


def model_label(name: str, options: Mapping[str, Any]) -> str:
    """Return a readable model name for titles, such as ``ResNet-20 (no BN)``."""
    match = _RESNET_NAME.fullmatch(name)
    if match is None:
        return {"mlp": "MLP", "cnn": "CNN"}.get(name, name)
    label = f"ResNet-{match.group(1)}"
    notes = []
    for key, short in (("batch_norm", "BN"), ("residual", "residual")):
        value = options.get(key)
        if value is None or value is True:
            continue
        flags = [value] * len(STAGES) if isinstance(value, bool) else list(value)
        removed = [
            stage for stage, keep in zip(STAGES, flags, strict=False) if not keep
        ]
        if len(removed) == len(STAGES):
            notes.append(f"no {short}")
        elif removed:
            notes.append(f"no {short} in {', '.join(removed)}")
    return f"{label} ({'; '.join(notes)})" if notes else label


def build(args: Any, info: DatasetInfo) -> tuple[nn.Module, dict[str, Any]]:
    """Build the untrained model that ``--model`` names."""
    options = model_options(args)
    if ":" in args.model:
        model = _build_user_model(args.model, info, options, args.seed)
    else:
        try:
            model = build_model(
                args.model,
                num_classes=info.num_classes,
                in_channels=info.channels,
                image_size=info.image_size,
                seed=args.seed,
                **options,
            )
        except ValueError as error:
            raise CommandError(f"--model {args.model}: {error}") from None
    num_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    record = {
        "name": args.model,
        "label": model_label(args.model, options),
        "options": options,
        "class": type(model).__name__,
        "num_parameters": num_parameters,
    }
    return model, record


def _build_user_model(
    spec: str, info: DatasetInfo, options: dict[str, Any], seed: int
) -> nn.Module:
    """Import ``module:function`` (or ``path/file.py:function``) and call it."""
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise CommandError(
            f"--model {spec!r} is neither a zoo model nor MODULE:FUNCTION"
        )
    module = _import(module_name, spec)
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise CommandError(
            f"--model {spec}: module {module_name!r} has no callable {attribute!r}"
        )

    known = {
        "num_classes": info.num_classes,
        "in_channels": info.channels,
        "image_size": info.image_size,
    }
    try:
        signature = inspect.signature(factory)
        takes_any = any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            for p in signature.parameters.values()
        )
        accepted = {
            key: value
            for key, value in known.items()
            if takes_any or key in signature.parameters
        }
    except (TypeError, ValueError):
        accepted = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(**accepted, **options)
        except TypeError as error:
            raise CommandError(
                f"--model {spec}: calling {attribute} failed: {error}"
            ) from None
    if not isinstance(model, nn.Module):
        raise CommandError(
            f"--model {spec}: {attribute} returned a {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def _import(module_name: str, spec: str) -> Any:
    path = Path(module_name)
    if path.suffix == ".py":
        if not path.is_file():
            raise CommandError(f"--model {spec}: file not found: {path}")
        loader_spec = importlib.util.spec_from_file_location(path.stem, path)
        if loader_spec is None or loader_spec.loader is None:
            raise CommandError(f"--model {spec}: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return module
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise CommandError(
            f"--model {spec}: cannot import module {module_name!r} ({error}); "
            "check that it is on PYTHONPATH or in the current directory"
        ) from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(..., weights_only=True)``.

    The file may hold a state dict, a hessop training checkpoint, a model
    file that ``hessop analyze`` wrote, or a dict with a ``"state_dict"``
    or ``"model"`` entry. A common ``"module."`` prefix (from
    ``DataParallel``) is removed.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CommandError(f"weights file not found: {path}")
    if path.is_dir():
        raise CommandError(f"weights file {path} is a directory, not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CommandError(
            f"cannot read weights file {path}: permission denied"
        ) from None
    except Exception as error:
        # torch.load raises many types for a file that is not its format
        # (UnpicklingError, KeyError, IndexError, RuntimeError, EOFError). A
        # file that is its format but needs code to load fails the weights-only
        # unpickler, whose message starts "Weights only load failed".
        text = str(error)
        if "Weights only load failed" not in text:
            raise CommandError(
                f"cannot read weights file {path}: it is not a file written by "
                f"torch.save, or it is truncated ({type(error).__name__})"
            ) from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = f" (it needs {found.group(1)})" if found else ""
        raise CommandError(
            f"weights file {path} contains objects other than tensors and plain "
            f"containers{detail}, so torch.load(weights_only=True) refuses to run "
            "its code; save model.state_dict() instead"
        ) from None

    state = loaded
    if isinstance(loaded, Mapping):
        if loaded.get("format") == CHECKPOINT_FORMAT:
            state = loaded["model"]
        elif isinstance(loaded.get("state_dict"), Mapping):
            state = loaded["state_dict"]
        elif isinstance(loaded.get("model"), Mapping):
            state = loaded["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor)
        for key, value in state.items()
    ):
        raise CommandError(
            f"weights file {path} contains no state dict (a mapping of names to "
            "tensors, as model.state_dict() returns)"
        )
    keys = list(state)
    if keys and all(key.startswith("module.") for key in keys):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def load_weights(model: nn.Module, path: Path, model_name: str) -> None:
    """Load a weights file into ``model``, naming the first mismatch if any."""
    state = read_weights(path)
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CommandError(
                f"weights file {path} does not match --model {model_name}: the "
                f"model's {key!r} (shape {tuple(tensor.shape)}) is missing from "
                "the file"
            )
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CommandError(
                f"weights file {path} does not match --model {model_name}: "
                f"{key!r} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(tensor.shape)} in the model"
            )
    for key, tensor in state.items():
        if key not in expected:
            raise CommandError(
                f"weights file {path} does not match --model {model_name}: the "
                f"file has {key!r} (shape {tuple(tensor.shape)}), which the model "
                "does not have"
            )
    model.load_state_dict(state, strict=True)


def load_data(args: Any, split: str, num_samples: int | None) -> tuple[Any, Any]:
    """Load one split of ``--data``, turning loader errors into command errors."""
    if args.data in _CIFAR_FILES and args.data_dir is None:
        raise CommandError(
            f"--data {args.data} needs --data-dir DIR, a directory with the "
            f"binary files {_CIFAR_FILES[args.data]}"
        )
    if args.data not in _CIFAR_FILES and args.data_dir is not None:
        logger.warning("--data-dir is ignored for --data %s", args.data)
    try:
        return load_dataset(
            args.data,
            root=args.data_dir if args.data in _CIFAR_FILES else None,
            split=split,
            num_samples=num_samples,
            seed=args.seed,
        )
    except FileNotFoundError as error:
        raise CommandError(f"--data-dir: {error}") from None
    except ValueError as error:
        raise CommandError(f"--data {args.data}: {error}") from None


def milestones(epochs: int, requested: Sequence[int] | None) -> tuple[int, ...]:
    """Return the learning-rate milestones: as requested, or at 50 % and 80 %."""
    if requested is not None:
        return tuple(requested)
    candidates = {round(0.5 * epochs), round(0.8 * epochs)}
    return tuple(sorted(m for m in candidates if 1 <= m < epochs))


def train_model(
    model: nn.Module, args: Any, comm: Any, progress: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train ``model`` on rank 0 and share the weights with every rank.

    Returns the training record for the report and the trained state dict.
    """
    settings = {
        "epochs": args.epochs,
        "batch_size": args.train_batch_size,
        "lr": args.lr,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "lr_milestones": list(milestones(args.epochs, args.lr_milestones)),
        "lr_gamma": 0.1,
        "num_samples": args.train_samples,
    }

    def train_on_root() -> dict[str, Any] | None:
        if get_rank(comm) != 0:
            return None
        train_set, train_info = load_data(args, "train", args.train_samples)
        test_set, _ = load_data(args, "test", None)
        started = time.perf_counter()
        history = train(
            model,
            train_set,
            epochs=args.epochs,
            batch_size=args.train_batch_size,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            seed=args.seed,
            lr_milestones=settings["lr_milestones"],
            test_dataset=test_set,
            device=args.device,
            progress=progress,
        )
        return {
            "settings": {**settings, "num_samples": train_info.num_samples},
            "history": history.to_dict(),
            "seconds": time.perf_counter() - started,
        }

    record = run_on_all_ranks(comm, train_on_root, "training the model")
    state = {key: value.cpu() for key, value in model.state_dict().items()}
    if comm is not None and comm.Get_size() > 1:
        record, state = comm.bcast((record, state), root=0)
        model.load_state_dict(state)
    return record, state


def save_model_file(
    path: Path, state: Mapping[str, torch.Tensor], record: Mapping[str, Any]
) -> str:
    """Write the trained weights atomically and return the file's SHA-256."""
    contents = {
        "format": MODEL_FILE_FORMAT,
        "model": record["name"],
        "options": record["options"],
        "state_dict": dict(state),
    }
    write_with(path, lambda file: torch.save(contents, file))
    return sha256_of(path)


def make_batches(
    dataset: Any, batch_size: int, device: torch.device, dtype: torch.dtype, comm: Any
) -> tuple[Any, int]:
    """Split the samples over the MPI ranks and cut this rank's into batches.

    The samples keep their dataset order: rank ``r`` gets the ``r``-th
    contiguous share (:func:`hessop.partition`). A rank whose samples fit in
    one batch gets a single ``(inputs, targets)`` tuple, for which the
    Hessian operator builds the first-order graph once and reuses it.

    Returns this rank's data, the number of samples on all ranks and on
    this rank.
    """
    inputs, targets = dataset.tensors
    indices = torch.from_numpy(partition(np.arange(len(targets)), comm))
    inputs = inputs[indices].to(device=device, dtype=dtype)
    targets = targets[indices].to(device=device)
    batches = [
        (inputs[start : start + batch_size], targets[start : start + batch_size])
        for start in range(0, len(targets), batch_size)
    ]
    data: Any = batches[0] if len(batches) == 1 else batches
    return data, len(dataset), len(targets)


def loss_and_accuracy(
    model: nn.Module, data: Any, num_samples: int, comm: Any
) -> tuple[float, float]:
    """Return the mean cross-entropy and the accuracy over all ranks' samples."""
    batches = [data] if isinstance(data, tuple) else data

    def local() -> list[float]:
        loss, correct = 0.0, 0.0
        with preserved_modes(model), torch.no_grad():
            model.eval()
            for inputs, targets in batches:
                logits = model(inputs)
                loss += float(F.cross_entropy(logits, targets, reduction="sum"))
                correct += float((logits.argmax(dim=1) == targets).sum())
        return [loss, correct]

    totals = run_on_all_ranks(comm, local, "evaluating the loss")
    if comm is not None:
        totals = comm.allreduce(np.asarray(totals))
    loss, correct = float(totals[0]) / num_samples, float(totals[1]) / num_samples
    if not math.isfinite(loss):
        raise CommandError(
            f"the loss of the model on the data is not finite ({loss}); check the "
            "weights, the model and the data (a diverged training gives this too)"
        )
    return loss, correct
