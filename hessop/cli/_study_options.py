"""Command-line options of ``hessop study`` and the checks across them."""

from __future__ import annotations

import argparse
import itertools
import re
from typing import Any

from hessop.cli._options import non_negative_int, positive_float, positive_int
from hessop.cli._train import (
    add_data_options,
    add_execution_options,
    add_model_options,
    add_training_options,
)

DEFAULT_VARIANTS = ("baseline", "no-bn", "no-residual")
_VARIANT = re.compile(
    r"(?P<kind>baseline|no-bn|no-residual)(?:-(?P<stage>stage[123]))?"
    r"(?::(?P<lr>[0-9.eE+-]+))?"
)

DESCRIPTION = """\
Reproduce the study of PyHessian (Yao, Gholami, Keutzer and Mahoney, IEEE
BigData 2020) on how BatchNorm and residual connections shape the Hessian
during training. Each variant of a CIFAR ResNet is trained, and at every
checkpoint hessop analyze computes the top eigenvalues, the Hessian trace
with its standard error, and the top eigenvalue and trace of each stage.
The spectral density is computed at a few checkpoints and the loss landscape
along the top two eigenvectors at the last one. OUT gets accuracy.md and
accuracy.json (final test accuracy, trace and top eigenvalue per variant),
hessian.md (the metrics at every checkpoint), study.json and PNG figures:
trace, stage-wise trace and top eigenvalue against epoch, spectral densities
and loss landscapes.

Without options the study trains ResNet-20 with BatchNorm and residual
connections, without BatchNorm, and without residual connections on the
scikit-learn digits (1x8x8) for 20 epochs, with checkpoints at epochs 5, 10,
15 and 20, and analyses the training loss on 512 training samples: about 10 to
15 minutes on 2 CPU cores. The no-bn variant trains with --no-bn-lr (0.01),
because ResNet-20 without any BatchNorm stays at chance accuracy on digits
at the baseline's learning rate of 0.1; every other variant uses --lr.

Budget per checkpoint, in Hessian-vector products (matvecs; each costs about
one forward and two backward passes over the analysed samples) with the
default options: 30 for the top two eigenvalues, 30 for the trace, 3 x (15 +
15) for the stages' top eigenvalue and trace, and 2 for a determinism check,
so at most 152 matvecs (Lanczos stops early once both eigenpairs converge).
Add 60 matvecs for the spectral density at the checkpoints of
--density-epochs (epochs 5, 10 and 20 by default) and, at the last
checkpoint, 21 + 11 x 11 = 142 forward passes for the loss landscape. One
variant and seed therefore makes at most 4 x 152 + 3 x 60 = 788 matvecs.

The standard errors of the traces are those of the Hutchinson estimator
(probe noise) with one seed, and the spread between seeds (standard error of
the mean over seeds, which includes the probe noise) with several --seeds.
"""

EPILOG = """\
variants:
  baseline, no-bn, no-residual     all stages (no-bn also removes the stem's BN)
  no-bn-stage3, no-residual-stage1 one stage (stage1, stage2 or stage3)
  NAME:LR                          the variant with its own learning rate,
                                   such as baseline:0.01

examples:
  hessop study
  hessop study --variants baseline no-bn-stage1 no-bn-stage2 no-bn-stage3
  hessop study --seeds 0 1 2 --out runs/three-seeds
  hessop study --data cifar10 --data-dir ~/data/cifar-10-batches-bin \\
      --model resnet20 --epochs 160 --lr-milestones 80 120 \\
      --checkpoint-every 20 --num-samples 5000 --batch-size 1000 --device cuda
  mpiexec -n 4 hessop study --out runs/four-ranks
"""


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``hessop study`` to ``parser``."""
    add_model_options(parser, switches=False)
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        default=list(DEFAULT_VARIANTS),
        help="variants of --model to compare, see below (default: baseline no-bn "
        "no-residual)",
    )
    add_data_options(parser)
    training = add_training_options(parser, epochs=20, checkpoint_every=5)
    training.add_argument(
        "--no-bn-lr",
        type=positive_float,
        default=0.01,
        metavar="LR",
        help="initial learning rate of the no-bn variant (BatchNorm removed from "
        "every stage), unless the variant gives its own; the variants without "
        "BatchNorm in one stage use --lr (default: 0.01)",
    )
    training.add_argument(
        "--seeds",
        type=non_negative_int,
        nargs="+",
        default=[0],
        metavar="SEED",
        help="seeds of each variant: initial weights, data order, sample subsets "
        "and probe vectors; several seeds give standard errors over training "
        "runs (default: 0)",
    )
    _add_hessian_options(parser)
    add_execution_options(parser, out="hessop-study", mpi=True, plots=True)


def _add_hessian_options(parser: argparse.ArgumentParser) -> None:
    hessian = parser.add_argument_group(
        "Hessian metrics at each checkpoint (budgets in matvecs)"
    )
    hessian.add_argument(
        "--num-samples",
        type=positive_int,
        default=512,
        metavar="N",
        help="training samples in the analysed loss, a random subset chosen by "
        "the seed (default: 512)",
    )
    hessian.add_argument(
        "--batch-size",
        type=positive_int,
        default=512,
        metavar="B",
        help="samples per forward pass; changes memory and speed only (default: 512)",
    )
    budgets = (
        ("--eig-max-matvecs", 30, "Lanczos budget for the top two eigenvalues"),
        ("--trace-matvecs", 30, "Hutchinson probes for the trace"),
        ("--block-eig-max-matvecs", 15, "Lanczos budget per stage"),
        ("--block-trace-matvecs", 15, "Hutchinson probes per stage"),
        ("--density-steps", 60, "Lanczos steps of the spectral density"),
    )
    for option, default, text in budgets:
        hessian.add_argument(
            option,
            type=positive_int,
            default=default,
            metavar="N",
            help=f"{text} (default: {default})",
        )
    hessian.add_argument(
        "--density-epochs",
        type=positive_int,
        nargs="+",
        metavar="EPOCH",
        help="checkpoint epochs with a spectral density (default: the first, the "
        "middle and the last checkpoint)",
    )
    hessian.add_argument(
        "--landscape-points",
        type=positive_int,
        default=21,
        metavar="N",
        help="points of the 1D landscape along the top eigenvector (default: 21)",
    )
    hessian.add_argument(
        "--landscape-grid",
        type=positive_int,
        default=11,
        metavar="N",
        help="points per axis of the 2D landscape along the top two eigenvectors, "
        "N^2 forward passes (default: 11)",
    )
    hessian.add_argument(
        "--landscape-radius",
        type=positive_float,
        default=0.5,
        metavar="R",
        help="largest step along the unit eigenvectors (default: 0.5)",
    )


def parse_variant(text: str) -> dict[str, Any]:
    """Parse ``KIND[-STAGE][:LR]`` into the model switches and learning rate.

    Raises
    ------
    ValueError
        If ``text`` names no variant.
    """
    match = _VARIANT.fullmatch(text)
    if match is None or (match["kind"] == "baseline" and match["stage"]):
        raise ValueError(
            f"unknown variant {text!r}; use baseline, no-bn or no-residual, "
            "optionally with -stage1, -stage2 or -stage3, and :LR"
        )
    lr = None
    if match["lr"] is not None:
        try:
            lr = positive_float(match["lr"])
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"variant {text!r}: learning rate {error}") from None
    stages = [match["stage"]] if match["stage"] else []
    return {
        "name": text.replace(":", "-lr"),
        "no_batch_norm": stages if match["kind"] == "no-bn" else None,
        "no_residual": stages if match["kind"] == "no-residual" else None,
        "lr": lr,
    }


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """Return the epochs after which training saves a checkpoint."""
    return sorted({*range(every, epochs + 1, every), epochs})


def validate(parser: argparse.ArgumentParser, args: Any) -> None:
    """Reject option combinations that no single option's type can catch."""
    if not re.fullmatch(r"resnet\d+", args.model):
        parser.error(
            f"--model must be a CIFAR ResNet such as resnet20, got {args.model}"
        )
    try:
        variants = [parse_variant(text) for text in args.variants]
    except ValueError as error:
        parser.error(f"--variants: {error}")
    names = [variant["name"] for variant in variants]
    if len(set(names)) < len(names):
        parser.error("--variants lists a variant twice")
    if len(set(args.seeds)) < len(args.seeds):
        parser.error("--seeds lists a seed twice")

    if args.lr_milestones is not None:
        epochs = args.lr_milestones
        if any(later <= earlier for earlier, later in itertools.pairwise(epochs)):
            parser.error("--lr-milestones must be strictly increasing")

    saved = checkpoint_epochs(args.epochs, args.checkpoint_every)
    if args.density_epochs is None:
        args.density_epochs = sorted(
            {saved[0], saved[(len(saved) - 1) // 2], saved[-1]}
        )
    missing = [epoch for epoch in args.density_epochs if epoch not in saved]
    if missing:
        parser.error(
            f"--density-epochs {missing} are not checkpoint epochs; the checkpoints "
            f"are at epochs {saved}"
        )

    if args.eig_max_matvecs < 5:
        parser.error(
            f"--eig-max-matvecs must be at least 5, got {args.eig_max_matvecs}"
        )
    if args.block_eig_max_matvecs < 3:
        parser.error("--block-eig-max-matvecs must be at least 3")
    for option in ("landscape_points", "landscape_grid"):
        if getattr(args, option) < 2:
            parser.error(f"--{option.replace('_', '-')} must be at least 2")
    args.variant_specs = variants
