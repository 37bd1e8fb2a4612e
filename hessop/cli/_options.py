"""Command-line options of ``hessop analyze``."""

from __future__ import annotations

import argparse
import itertools
import math
from typing import Any

from hessop._graph_cache import parse_budget
from hessop.cli._metrics import METRICS
from hessop.datasets import DATASET_NAMES

DESCRIPTION = """\
Compute the Hessian metrics of the PyHessian study for a model on a dataset:
top eigenvalues, trace, spectral density, stage-wise (block) top eigenvalue
and trace, and the loss landscape. Results go to OUT/report.json and PNG
figures; a summary table goes to standard output.

Without arguments, a CIFAR ResNet-20 is trained for 10 epochs on the
scikit-learn digits (1x8x8 images) and analysed on 512 training samples: a
few minutes on 2 CPU cores. Each Hessian-vector product ("matvec") costs
about one forward and two backward passes over the analysed samples; each
landscape point costs one forward pass. With the default budgets below a run
makes at most 402 matvecs (eigenvalues 80, trace 50, density 90, three stage
blocks 60 each, 2 for a determinism check) and 518 forward passes for the
landscape.
"""

EPILOG = """\
examples:
  hessop analyze
  hessop analyze --model resnet20 --no-residual --metrics eigenvalues trace
  hessop analyze --data cifar10 --data-dir ~/data/cifar-10-batches-bin \\
      --weights resnet20.pt --num-samples 2000 --batch-size 500
  hessop analyze --blocks stage1 stage2 stage3 'head=classifier.*' --metrics blocks
  mpiexec -n 2 hessop analyze --out runs/two-ranks
"""

# Options that do not change any number of the report; a resumed run may
# change them freely.
RUN_ONLY_OPTIONS = frozenset(
    {
        "metrics",
        "save_eigenvectors",
        "out",
        "resume",
        "no_plots",
        "quiet",
        "verbose",
        "debug",
        "threads",
        "cache_budget",
        "mpi",
        "handler",
        "validate",
        "command",
    }
)


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"must be a finite positive number, got {text}"
        )
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def sample_count(text: str) -> int | None:
    """Parse a sample count; ``all`` means the whole split."""
    if text.strip().lower() == "all":
        return None
    return positive_int(text)


def cache_budget(text: str) -> float:
    """Parse a memory size for ``--cache-budget``."""
    try:
        return parse_budget(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``hessop analyze`` to ``parser``."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="resnet20",
        metavar="NAME",
        help="resnet20, resnet32, resnet38, resnet56 (any resnet<6n+2>, such as "
        "resnet8), mlp, cnn, or MODULE:FUNCTION (or FILE.py:FUNCTION) returning a "
        "classifier; FUNCTION gets num_classes, in_channels and image_size if it "
        "takes them (default: resnet20)",
    )
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
        help="ResNets: remove the residual connections from the given stages, or "
        "from all stages when none is given",
    )
    model.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra keyword argument of the model, VALUE a Python literal, such as "
        "hidden=(128,64) or activation='tanh'; repeatable",
    )
    model.add_argument(
        "--weights",
        metavar="FILE",
        help="weights to analyse: a state dict, a hessop training checkpoint or a "
        "model.pt of an earlier run, read with torch.load(weights_only=True). "
        "Without it the model is trained first (see training)",
    )

    training = parser.add_argument_group(
        "training (without --weights): SGD with momentum on the train split"
    )
    training.add_argument(
        "--epochs",
        type=non_negative_int,
        metavar="N",
        default=10,
        help="epochs; 0 analyses the initial weights (default: 10)",
    )
    training.add_argument(
        "--lr",
        type=positive_float,
        default=0.1,
        metavar="LR",
        help="learning rate (default: 0.1)",
    )
    training.add_argument(
        "--lr-milestones",
        type=positive_int,
        nargs="+",
        metavar="EPOCH",
        help="epochs after which the learning rate drops 10x (default: at 50%% "
        "and 80%% of --epochs)",
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
    training.add_argument(
        "--train-samples",
        type=sample_count,
        default=None,
        metavar="N",
        help="training samples, a random subset chosen by --seed, or 'all' "
        "(default: all)",
    )

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
        help="CIFAR directory with data_batch_1.bin ... data_batch_5.bin and "
        "test_batch.bin (CIFAR-10) or train.bin and test.bin (CIFAR-100), or its "
        "parent",
    )
    data.add_argument(
        "--split",
        choices=("train", "test"),
        default="train",
        help="split whose loss is analysed (default: train)",
    )
    data.add_argument(
        "--num-samples",
        type=sample_count,
        default=512,
        metavar="N",
        help="samples of the split in the analysed loss, a random subset chosen by "
        "--seed and kept in dataset order, or 'all' (default: 512)",
    )
    data.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        default=512,
        help="samples per forward pass in Hessian-vector products and landscape "
        "points; changes memory and speed only (default: 512)",
    )
    data.add_argument(
        "--seed",
        type=non_negative_int,
        metavar="SEED",
        default=0,
        help="seed of the sample subset, initial weights, training order, probe "
        "vectors and random directions (default: 0)",
    )

    add_metric_options(parser)

    run = parser.add_argument_group("execution and output")
    run.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="cpu, cuda or cuda:INDEX (default: cpu)",
    )
    run.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="precision of the model and the Hessian-vector products "
        "(default: float32)",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads per process (torch.set_num_threads; default: PyTorch's "
        "choice, divided by the number of MPI ranks on the node)",
    )
    run.add_argument(
        "--cache-budget",
        type=cache_budget,
        default=0.0,
        metavar="SIZE",
        help="memory for the first-order graphs of the batches kept between "
        "Hessian-vector products, in bytes or as 512MiB, 2GiB or unlimited; a "
        "kept batch costs one backward pass per matvec instead of a forward and "
        "two backward passes, and a single batch is always kept (default: 0)",
    )
    run.add_argument(
        "--mpi",
        choices=("auto", "on", "off"),
        default="auto",
        help="split the samples over MPI ranks: auto uses mpi4py's COMM_WORLD when "
        "started by mpiexec with more than one rank (default: auto)",
    )
    run.add_argument(
        "--out",
        default="hessop-out",
        metavar="DIR",
        help="output directory for report.json, figures and model files "
        "(default: hessop-out)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="keep the metrics that OUT/report.json already contains and compute the "
        "rest; the settings must match",
    )
    run.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    run.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and only warnings in the log; the summary is still "
        "printed",
    )
    run.add_argument("--verbose", action="store_true", help="log debug messages")
    run.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an error"
    )


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    """Add the metric selection and the per-metric budgets."""
    metrics = parser.add_argument_group(
        "metrics (budgets in Hessian-vector products, 'matvecs')"
    )
    _add_spectral_options(metrics)
    _add_landscape_options(metrics)


def _add_spectral_options(metrics: Any) -> None:
    """Add the options of the eigenvalues, trace, density and blocks metrics."""
    metrics.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        default=list(METRICS),
        metavar="METRIC",
        help=f"metrics to compute, from {', '.join(METRICS)} (default: all)",
    )

    metrics.add_argument(
        "--top-k",
        type=positive_int,
        metavar="K",
        default=2,
        help="eigenvalues: number of top eigenvalues (default: 2)",
    )
    metrics.add_argument(
        "--eig-rtol",
        type=positive_float,
        metavar="RTOL",
        default=1e-3,
        help="eigenvalues and blocks: relative residual ||Hv - λv|| / |λ| at which "
        "an eigenpair counts as converged (default: 1e-3)",
    )
    metrics.add_argument(
        "--eig-max-matvecs",
        type=positive_int,
        metavar="N",
        default=80,
        help="eigenvalues: matvec budget of Lanczos, at least 2k+1; a run stops "
        "earlier once all k pairs converge (default: 80)",
    )
    metrics.add_argument(
        "--save-eigenvectors",
        action="store_true",
        help="write the eigenvectors to OUT/eigenvectors.npz (always written when "
        "the landscape is computed)",
    )

    metrics.add_argument(
        "--trace-method",
        choices=("hutchinson", "hutch++", "xtrace"),
        default="hutchinson",
        help="trace and blocks: stochastic trace estimator (default: hutchinson, "
        "with Rademacher probes)",
    )
    metrics.add_argument(
        "--trace-matvecs",
        type=positive_int,
        metavar="N",
        default=50,
        help="trace: matvec budget, one per Hutchinson probe (default: 50)",
    )
    metrics.add_argument(
        "--trace-rtol",
        type=positive_float,
        metavar="RTOL",
        help="trace: stop Hutchinson once the standard error is below this fraction "
        "of |trace|, after at least 10 probes (default: use the whole budget)",
    )

    metrics.add_argument(
        "--density-steps",
        type=positive_int,
        metavar="N",
        default=90,
        help="density: Lanczos steps per probe; matvecs = steps x probes (default: 90)",
    )
    metrics.add_argument(
        "--density-probes",
        type=positive_int,
        metavar="N",
        default=1,
        help="density: random probe vectors averaged (default: 1)",
    )
    metrics.add_argument(
        "--density-sigma",
        type=positive_float,
        metavar="SIGMA",
        help="density: standard deviation of the Gaussian smoothing kernel, in "
        "eigenvalue units (default: 1%% of the range of the Lanczos nodes)",
    )

    metrics.add_argument(
        "--blocks",
        nargs="+",
        metavar="[LABEL=]PATTERN",
        help="blocks: parameter groups, each a submodule or parameter name, a glob "
        "over parameter names such as 'stage1.*.conv*', or 're:REGEX' "
        "(default: the network's stages, stage1 stage2 stage3 for ResNets)",
    )
    metrics.add_argument(
        "--block-eig-max-matvecs",
        type=positive_int,
        metavar="N",
        default=40,
        help="blocks: Lanczos matvec budget for each block's top eigenvalue "
        "(default: 40)",
    )
    metrics.add_argument(
        "--block-trace-matvecs",
        type=positive_int,
        metavar="N",
        default=20,
        help="blocks: Hutchinson probes for each block's trace (default: 20)",
    )


def _add_landscape_options(metrics: Any) -> None:
    """Add the options of the landscape metric."""
    metrics.add_argument(
        "--landscape-directions",
        nargs="+",
        metavar="KIND",
        choices=("eigen", "random"),
        default=["eigen", "random"],
        help="landscape: along the top two Hessian eigenvectors, along two random "
        "filter-normalised directions (Li et al. 2018), or both (default: both)",
    )
    metrics.add_argument(
        "--landscape-points",
        type=positive_int,
        metavar="N",
        default=31,
        help="landscape: points of each 1D curve, one forward pass over the "
        "samples each (default: 31)",
    )
    metrics.add_argument(
        "--landscape-grid",
        type=non_negative_int,
        metavar="N",
        default=15,
        help="landscape: points per axis of each 2D grid, N^2 forward passes; "
        "0 skips the 2D landscape (default: 15)",
    )
    metrics.add_argument(
        "--landscape-radius",
        type=positive_float,
        metavar="R",
        default=0.5,
        help="landscape: largest step along the unit eigenvectors, a Euclidean "
        "distance in parameter space (default: 0.5)",
    )
    metrics.add_argument(
        "--random-radius",
        type=positive_float,
        metavar="R",
        default=1.0,
        help="landscape: largest step along the random directions, in units of "
        "the filter norms, so 1 moves every filter by its own norm (default: 1)",
    )
    metrics.add_argument(
        "--perturb-bias-bn",
        action="store_true",
        help="landscape: also perturb biases and BatchNorm parameters along the "
        "random directions (Li et al. leave them fixed by default)",
    )


def validate(parser: argparse.ArgumentParser, args: Any) -> None:
    """Reject option combinations that no single option's type can catch."""
    minimum = 2 * args.top_k + 1
    if args.eig_max_matvecs < minimum:
        parser.error(
            f"--eig-max-matvecs must be at least 2 * --top-k + 1 = {minimum}, "
            f"got {args.eig_max_matvecs}"
        )
    if "landscape" in args.metrics and "eigen" in args.landscape_directions:
        if args.eig_max_matvecs < 5:
            parser.error("--eig-max-matvecs must be at least 5 for the landscape")
    if args.block_eig_max_matvecs < 3:
        parser.error(
            f"--block-eig-max-matvecs must be at least 3, got "
            f"{args.block_eig_max_matvecs}"
        )

    if args.landscape_points < 2:
        parser.error(
            f"--landscape-points must be at least 2, got {args.landscape_points}"
        )
    if args.landscape_grid == 1:
        parser.error("--landscape-grid must be 0 (no 2D landscape) or at least 2")

    if args.trace_rtol is not None and args.trace_method != "hutchinson":
        parser.error("--trace-rtol works only with --trace-method hutchinson")
    if args.trace_rtol is not None and args.trace_matvecs < 10:
        parser.error("--trace-rtol needs --trace-matvecs of at least 10")
    minimum_trace = {"hutchinson": 1, "hutch++": 3, "xtrace": 4}[args.trace_method]
    for option, value in (
        ("--trace-matvecs", args.trace_matvecs),
        ("--block-trace-matvecs", args.block_trace_matvecs),
    ):
        if value < minimum_trace:
            parser.error(
                f"{option} must be at least {minimum_trace} for --trace-method "
                f"{args.trace_method}, got {value}"
            )

    if args.weights is not None and args.lr_milestones is not None:
        parser.error("--lr-milestones applies to training, not to --weights")
    if args.lr_milestones is not None:
        epochs = args.lr_milestones
        if any(later <= earlier for earlier, later in itertools.pairwise(epochs)):
            parser.error("--lr-milestones must be strictly increasing")

    # Metrics and directions run in a fixed order, whatever the order given.
    args.metrics = [metric for metric in METRICS if metric in args.metrics]
    args.landscape_directions = [
        kind for kind in ("eigen", "random") if kind in args.landscape_directions
    ]
