"""``hessop train``: train a zoo model with SGD and save checkpoints.

The output directory gets one training checkpoint every few epochs
(:func:`hessop.checkpoints.save_checkpoint`, readable with
``torch.load(..., weights_only=True)``) and ``training.json`` with the
settings and the per-epoch train and test loss and accuracy. Rerunning the
same command resumes from the latest checkpoint, or does nothing when the
last epoch is already saved. ``hessop study`` trains each variant through
:func:`run_training`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from hessop.checkpoints import load_checkpoint, save_checkpoint
from hessop.cli._console import configured_logging, show_progress
from hessop.cli._errors import CommandError
from hessop.cli._options import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    sample_count,
)
from hessop.cli._report import prepare_output_directory, to_json, write_json
from hessop.cli._setup import build, load_data, milestones
from hessop.datasets import DATASET_NAMES
from hessop.training import TrainingHistory, train

logger = logging.getLogger(__name__)

TRAINING_FORMAT = "hessop-training-run"
TRAINING_VERSION = 1
TRAINING_NAME = "training.json"
_CHECKPOINT_NAME = re.compile(r"checkpoint-epoch-(\d+)\.pt")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}

DESCRIPTION = """\
Train a model of the zoo with SGD, momentum 0.9, weight decay and a step
learning-rate schedule, and save a checkpoint every --checkpoint-every
epochs and after the last one, as OUT/checkpoint-epoch-NNNN.pt. Each
checkpoint contains the weights, the optimiser and scheduler states, the
torch random state, the settings and the history, and loads with
torch.load(..., weights_only=True). OUT/training.json contains the settings
and the train and test loss and accuracy of every epoch.

Rerunning the same command resumes from the latest checkpoint and gives the
same weights as an uninterrupted run (on the CPU, with the same number of
threads). A run whose last epoch is saved is not trained again.
"""

EPILOG = """\
examples:
  hessop train
  hessop train --model resnet20 --no-batch-norm --lr 0.01 --out runs/no-bn
  hessop train --data cifar10 --data-dir ~/data/cifar-10-batches-bin \\
      --epochs 160 --lr-milestones 80 120 --checkpoint-every 20
"""


def checkpoint_name(epoch: int) -> str:
    """Return the file name of the checkpoint after ``epoch`` epochs."""
    return f"checkpoint-epoch-{epoch:04d}.pt"


def add_model_options(parser: argparse.ArgumentParser, *, switches: bool) -> None:
    """Add ``--model`` and, with ``switches``, the BatchNorm and residual switches."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="resnet20",
        metavar="NAME",
        help="resnet20, resnet32, resnet56 (any resnet<6n+2>, such as resnet8), "
        "mlp or cnn (default: resnet20)",
    )
    if switches:
        model.add_argument(
            "--no-batch-norm",
            nargs="*",
            metavar="STAGE",
            help="ResNets: remove BatchNorm from the given stages (stage1, stage2, "
            "stage3), or from all stages and the stem when no stage is given",
        )
        model.add_argument(
            "--no-residual",
            nargs="*",
            metavar="STAGE",
            help="ResNets: remove the residual connections from the given stages, "
            "or from all stages when none is given",
        )
    model.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra keyword argument of the model, VALUE a Python literal, such as "
        "width=32; repeatable",
    )


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Add the dataset options shared by ``train`` and ``study``."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        choices=DATASET_NAMES,
        default="digits",
        help="digits (scikit-learn, 1x8x8, no download), cifar10 or cifar100 "
        "(binary version from --data-dir), or synthetic Gaussian clusters "
        "(default: digits)",
    )
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="CIFAR directory with the binary files, or its parent",
    )
    data.add_argument(
        "--train-samples",
        type=sample_count,
        default=None,
        metavar="N",
        help="training samples, a random subset chosen by the seed, or 'all' "
        "(default: all)",
    )


def add_training_options(
    parser: argparse.ArgumentParser, *, epochs: int, checkpoint_every: int
) -> Any:
    """Add the SGD options; return the group so that callers can add more."""
    training = parser.add_argument_group(
        "training: SGD with momentum on the train split, evaluated on the test split"
    )
    training.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        default=epochs,
        help=f"epochs (default: {epochs})",
    )
    training.add_argument(
        "--checkpoint-every",
        type=positive_int,
        metavar="N",
        default=checkpoint_every,
        help=f"save a checkpoint after every N epochs and after the last one "
        f"(default: {checkpoint_every})",
    )
    training.add_argument(
        "--lr",
        type=positive_float,
        default=0.1,
        metavar="LR",
        help="initial learning rate (default: 0.1)",
    )
    training.add_argument(
        "--lr-milestones",
        type=positive_int,
        nargs="+",
        metavar="EPOCH",
        help="epochs after which the learning rate is multiplied by --lr-gamma "
        "(default: at 50%% and 80%% of --epochs)",
    )
    training.add_argument(
        "--lr-gamma",
        type=positive_float,
        default=0.1,
        metavar="GAMMA",
        help="factor of the learning rate at each milestone (default: 0.1)",
    )
    training.add_argument(
        "--momentum",
        type=non_negative_float,
        metavar="BETA",
        default=0.9,
        help="SGD momentum (default: 0.9)",
    )
    training.add_argument(
        "--weight-decay",
        type=non_negative_float,
        metavar="LAMBDA",
        default=1e-4,
        help="L2 weight decay (default: 1e-4)",
    )
    training.add_argument(
        "--train-batch-size",
        type=positive_int,
        metavar="B",
        default=64,
        help="samples per SGD step (default: 64)",
    )
    return training


def add_execution_options(
    parser: argparse.ArgumentParser, *, out: str, mpi: bool, plots: bool = False
) -> None:
    """Add device, precision, threads, output and logging options."""
    run = parser.add_argument_group("execution and output")
    run.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="cpu, cuda or cuda:INDEX (default: cpu)",
    )
    run.add_argument(
        "--dtype",
        choices=tuple(_DTYPES),
        default="float32",
        help="precision of the model (default: float32)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads per process (torch.set_num_threads; default: PyTorch's "
        "choice)",
    )
    if mpi:
        run.add_argument(
            "--mpi",
            choices=("auto", "on", "off"),
            default="auto",
            help="split the samples of the Hessian metrics over MPI ranks; auto "
            "uses mpi4py's COMM_WORLD when started by mpiexec with more than one "
            "rank. Training runs on rank 0 (default: auto)",
        )
    else:
        parser.set_defaults(mpi="off")
    run.add_argument(
        "--out",
        default=out,
        metavar="DIR",
        help=f"output directory (default: {out})",
    )
    if plots:
        run.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and only warnings in the log",
    )
    run.add_argument("--verbose", action="store_true", help="log debug messages")
    run.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on the ``hessop`` subcommand parsers."""
    parser = subparsers.add_parser(
        "train",
        help="train a zoo model with SGD, saving resumable checkpoints",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser, switches=True)
    add_data_options(parser)
    training = add_training_options(parser, epochs=10, checkpoint_every=1)
    training.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="SEED",
        default=0,
        help="seed of the initial weights, the sample subset and the data order "
        "(default: 0)",
    )
    add_execution_options(parser, out="hessop-train", mpi=False)
    parser.set_defaults(handler=run, validate=validate)
    return parser


def validate(parser: argparse.ArgumentParser, args: Any) -> None:
    """Reject option combinations that no single option's type can catch."""
    if args.lr_milestones is not None:
        epochs = args.lr_milestones
        if any(later <= earlier for earlier, later in itertools.pairwise(epochs)):
            parser.error("--lr-milestones must be strictly increasing")


def training_settings(args: Any, model_record: dict[str, Any]) -> dict[str, Any]:
    """Return everything that determines the trained weights, as JSON values.

    A checkpoint is resumed only when its settings equal these, except
    ``epochs``: a longer run may continue a shorter one.
    """
    return to_json(
        {
            "model": model_record["name"],
            "model_options": model_record["options"],
            "data": args.data,
            "train_samples": args.train_samples,
            "seed": args.seed,
            "epochs": args.epochs,
            "batch_size": args.train_batch_size,
            "lr": args.lr,
            "lr_milestones": list(milestones(args.epochs, args.lr_milestones)),
            "lr_gamma": args.lr_gamma,
            "momentum": args.momentum,
            "weight_decay": args.weight_decay,
            "dtype": args.dtype,
        }
    )


def _latest_checkpoint(out: Path, epochs: int) -> Path | None:
    """Return the checkpoint of the most epochs, up to ``epochs``, in ``out``."""
    found = []
    for path in out.glob("checkpoint-epoch-*.pt"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match is not None and int(match.group(1)) <= epochs:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _check_resumable(
    checkpoint: dict[str, Any], settings: dict[str, Any], path: Path
) -> None:
    saved = checkpoint.get("metadata", {}).get("settings")
    if not isinstance(saved, dict):
        raise CommandError(
            f"cannot resume from {path}: it was not written by hessop train; "
            "remove it or use another --out"
        )
    for key in sorted(set(saved) | set(settings)):
        if key != "epochs" and saved.get(key) != settings.get(key):
            raise CommandError(
                f"cannot resume from {path}: it was trained with {key}="
                f"{saved.get(key)!r}, this run has {key}={settings.get(key)!r}; use "
                "the same settings or another --out"
            )


def run_training(args: Any, out: Path, *, progress: bool) -> dict[str, Any]:
    """Train (or resume, or reuse) one model and write its checkpoints.

    ``args`` carries the model, data, training and execution options of
    ``hessop train``. The function runs on one process only.

    Returns
    -------
    dict
        The contents of ``OUT/training.json``: ``settings``, ``model``,
        ``data``, ``history`` (per-epoch lists), ``checkpoints`` (epoch and
        file name of each) and ``seconds`` (wall time of this call).
    """
    started = time.perf_counter()
    out = prepare_output_directory(out)
    dtype = _DTYPES[args.dtype]
    train_set, train_info = load_data(args, "train", args.train_samples)
    test_set, _ = load_data(args, "test", None)
    model, model_record = build(args, train_info)
    model.to(dtype=dtype)
    settings = training_settings(args, model_record)

    resume_from = None
    path = _latest_checkpoint(out, args.epochs)
    if path is not None:
        try:
            resume_from = load_checkpoint(path)
        except (ValueError, RuntimeError, OSError) as error:
            raise CommandError(f"cannot resume from {path}: {error}") from None
        _check_resumable(resume_from, settings, path)
        if int(resume_from["epoch"]) < args.epochs:
            logger.info("resuming from %s (epoch %d)", path, resume_from["epoch"])

    saved_epochs = sorted(
        int(match.group(1))
        for match in (_CHECKPOINT_NAME.fullmatch(p.name) for p in out.iterdir())
        if match is not None and int(match.group(1)) <= args.epochs
    )
    record: dict[str, Any] = {
        "format": TRAINING_FORMAT,
        "version": TRAINING_VERSION,
        "status": "running",
        "settings": settings,
        "model": model_record,
        "data": train_info.to_dict(),
        "history": {},
        "checkpoints": [
            {"epoch": epoch, "file": checkpoint_name(epoch)} for epoch in saved_epochs
        ],
    }

    def on_checkpoint(checkpoint: dict[str, Any]) -> None:
        epoch = int(checkpoint["epoch"])
        checkpoint["metadata"] = {
            "command": "hessop train",
            "settings": settings,
            "model": model_record["name"],
            "model_options": model_record["options"],
            "data": args.data,
        }
        save_checkpoint(checkpoint, out / checkpoint_name(epoch))
        entries = [e for e in record["checkpoints"] if e["epoch"] != epoch]
        record["checkpoints"] = [
            *entries,
            {"epoch": epoch, "file": checkpoint_name(epoch)},
        ]
        record["history"] = dict(checkpoint["history"])
        write_json(out / TRAINING_NAME, record)
        logger.info("saved %s", out / checkpoint_name(epoch))

    if resume_from is not None and int(resume_from["epoch"]) == args.epochs:
        logger.info("training already complete in %s; nothing to do", out)
        history = TrainingHistory.from_dict(resume_from["history"])
    else:
        try:
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
                lr_gamma=args.lr_gamma,
                test_dataset=test_set,
                device=args.device,
                progress=progress,
                checkpoint_every=args.checkpoint_every,
                on_checkpoint=on_checkpoint,
                resume_from=resume_from,
            )
        except ValueError as error:
            raise CommandError(f"training failed: {error}") from None

    record["history"] = history.to_dict()
    record["status"] = "complete"
    record["seconds"] = time.perf_counter() - started
    write_json(out / TRAINING_NAME, record)
    return to_json(record)


def run(args: Any) -> int:
    """Run ``hessop train`` with parsed arguments and return the exit status."""
    # NOTE: the command has no MPI support. Started by mpiexec, every rank
    # trains the same model and writes the same files in OUT.
    with configured_logging(quiet=args.quiet, verbose=args.verbose, is_root=True):
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        out = Path(args.out).expanduser()
        record = run_training(
            args, out, progress=show_progress(quiet=args.quiet, is_root=True)
        )
        history = record["history"]
        print(
            f"{record['model']['label']}: {len(history['epoch'])} epochs, final "
            f"train accuracy {100 * history['train_accuracy'][-1]:.2f} %, test "
            f"accuracy {100 * history['test_accuracy'][-1]:.2f} %"
        )
        print(f"checkpoints and {TRAINING_NAME}: {out}")
    return 0
