"""``hessop study``: the BatchNorm and residual-connection study through training.

For each variant of a CIFAR ResNet (the baseline, without BatchNorm, without
residual connections, or without either in one stage) and each seed, the
command trains the network with :func:`hessop.cli._train.run_training`,
then runs ``hessop analyze`` on every checkpoint, each in its own directory
``OUT/VARIANT/seed-S/epoch-NNNN``. The study's tables and figures are built
from those reports alone. Every step is skipped when its output is already
complete, so rerunning the same command resumes an interrupted study.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hessop._mpi import get_rank
from hessop.cli import _analyze, _study_plots, _study_tables
from hessop.cli._console import configured_logging, show_progress
from hessop.cli._errors import run_on_all_ranks
from hessop.cli._report import (
    REPORT_NAME,
    load_previous,
    prepare_output_directory,
    sha256_of,
    to_json,
    write_json,
)
from hessop.cli._setup import STAGES, model_label
from hessop.cli._study_options import (
    DESCRIPTION,
    EPILOG,
    add_options,
    checkpoint_epochs,
    validate,
)
from hessop.cli._train import checkpoint_name, run_training

logger = logging.getLogger(__name__)

STUDY_FORMAT = "hessop-study"
STUDY_VERSION = 1
STUDY_NAME = "study.json"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``study`` on the ``hessop`` subcommand parsers."""
    parser = subparsers.add_parser(
        "study",
        help="train ResNet variants with and without BatchNorm and residual "
        "connections, and follow their Hessian through training",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser)
    parser.set_defaults(handler=run, validate=validate)
    return parser


def variant_namespace(args: Any, variant: dict[str, Any], seed: int) -> Any:
    """Return the ``hessop train`` options of one variant and seed."""
    # Only the variant without any BatchNorm needs the smaller learning rate:
    # on digits, ResNet-20 without BatchNorm in one stage trains at 0.1.
    removes_all_bn = variant["no_batch_norm"] == []
    lr = variant["lr"] or (args.no_bn_lr if removes_all_bn else args.lr)
    options = vars(args) | {
        "no_batch_norm": variant["no_batch_norm"],
        "no_residual": variant["no_residual"],
        "lr": lr,
        "seed": seed,
    }
    return argparse.Namespace(**options)


def analyze_arguments(
    args: Any, variant_args: Any, weights: Path, out: Path, metrics: list[str]
) -> list[str]:
    """Return the ``hessop analyze`` command line for one checkpoint."""
    arguments = ["--model", args.model]
    for flag, stages in (
        ("--no-batch-norm", variant_args.no_batch_norm),
        ("--no-residual", variant_args.no_residual),
    ):
        if stages is not None:
            arguments += [flag, *stages]
    for item in args.model_option or ():
        arguments += ["--model-option", item]
    arguments += ["--data", args.data]
    if args.data_dir is not None:
        arguments += ["--data-dir", args.data_dir]
    arguments += [
        "--weights", str(weights),
        "--split", "train",
        "--num-samples", str(args.num_samples),
        "--batch-size", str(args.batch_size),
        "--seed", str(variant_args.seed),
        "--metrics", *metrics,
        "--top-k", "2",
        "--eig-max-matvecs", str(args.eig_max_matvecs),
        "--trace-matvecs", str(args.trace_matvecs),
        "--block-eig-max-matvecs", str(args.block_eig_max_matvecs),
        "--block-trace-matvecs", str(args.block_trace_matvecs),
        "--density-steps", str(args.density_steps),
        "--landscape-directions", "eigen",
        "--landscape-points", str(args.landscape_points),
        "--landscape-grid", str(args.landscape_grid),
        "--landscape-radius", str(args.landscape_radius),
        "--device", args.device,
        "--dtype", args.dtype,
        "--mpi", args.mpi,
        "--out", str(out),
        "--resume",
    ]  # fmt: skip
    if args.threads is not None:
        arguments += ["--threads", str(args.threads)]
    if args.quiet:
        arguments.append("--quiet")
    return arguments


class _Study:
    """State of one ``hessop study`` invocation."""

    def __init__(self, args: Any, parser: argparse.ArgumentParser):
        self.args = args
        self.analyze_parser = parser
        self.started = time.perf_counter()
        self.comm = _analyze.communicator(args.mpi)
        self.is_root = get_rank(self.comm) == 0
        self.out = Path(args.out).expanduser()

    def collectively(self, function: Any, operation: str) -> Any:
        result = run_on_all_ranks(self.comm, function, operation)
        if self.comm is not None:
            result = self.comm.bcast(result, root=0)
        return result

    def execute(self) -> int:
        args = self.args
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        progress = show_progress(quiet=args.quiet, is_root=self.is_root)
        self.collectively(
            lambda: prepare_output_directory(self.out) if self.is_root else None,
            "preparing the output directory",
        )
        saved = checkpoint_epochs(args.epochs, args.checkpoint_every)
        runs = [
            (variant, seed) for variant in args.variant_specs for seed in args.seeds
        ]
        results: dict[str, Any] = {}
        bar = tqdm(
            total=len(runs) * len(saved),
            desc="study",
            unit="checkpoint",
            disable=not progress,
        )
        with bar:
            for variant, seed in runs:
                variant_args = variant_namespace(args, variant, seed)
                directory = self.out / variant["name"] / f"seed-{seed}"
                training = self.collectively(
                    functools.partial(
                        self.train, variant_args, directory / "training", progress
                    ),
                    f"training variant {variant['name']}",
                )
                reports = []
                for epoch in saved:
                    reports.append(
                        self.analyze(variant, variant_args, directory, epoch, saved)
                    )
                    bar.update()
                results.setdefault(variant["name"], {"seeds": []})["seeds"].append(
                    {"seed": seed, "training": training, "checkpoints": reports}
                )
                results[variant["name"]] |= {
                    "label": model_label(args.model, training["model"]["options"]),
                    "lr": variant_args.lr,
                    "num_parameters": training["model"]["num_parameters"],
                }
        if self.is_root:
            self.finish(results, saved)
        return 0

    def train(self, variant_args: Any, out: Path, progress: bool) -> Any:
        if not self.is_root:
            return None
        prepare_output_directory(out)
        return run_training(variant_args, out, progress=progress)

    def analyze(
        self,
        variant: dict[str, Any],
        variant_args: Any,
        directory: Path,
        epoch: int,
        saved: list[int],
    ) -> dict[str, Any]:
        """Run ``hessop analyze`` on one checkpoint unless its report is complete."""
        args = self.args
        metrics = ["eigenvalues", "trace", "blocks"]
        if epoch in args.density_epochs:
            metrics.insert(2, "density")
        if epoch == saved[-1]:
            metrics.append("landscape")
        weights = directory / "training" / checkpoint_name(epoch)
        out = directory / f"epoch-{epoch:04d}"
        argv = analyze_arguments(args, variant_args, weights, out, metrics)
        if epoch != saved[-1] or args.no_plots:
            argv.append("--no-plots")
        analyze_args = self.analyze_parser.parse_args(argv)
        _analyze.validate(self.analyze_parser, analyze_args)
        settings = _analyze.settings_of(analyze_args)

        def finished() -> dict[str, Any] | None:
            if not self.is_root:
                return None
            report = load_previous(out) if out.is_dir() else None
            if report is None or report.get("status") != "complete":
                return None
            digest = report.get("model", {}).get("weights", {}).get("sha256")
            if report.get("settings") != to_json(settings) or digest != sha256_of(
                weights
            ):
                return None
            if not all(
                report["metrics"].get(name, {}).get("status") == "complete"
                for name in metrics
            ):
                return None
            return report

        report = self.collectively(finished, "reading an earlier report")
        label = f"{variant['name']}, seed {variant_args.seed}, epoch {epoch}"
        if report is not None:
            logger.info("%s: Hessian metrics kept from %s", label, out / REPORT_NAME)
            return _study_tables.checkpoint_summary(report, epoch, out.name)

        logger.info("%s: computing %s", label, ", ".join(metrics))
        state = _analyze._Run(analyze_args)
        summary = io.StringIO()
        try:
            with contextlib.redirect_stdout(summary):
                state.execute()
        except BaseException as error:
            state.fail(error)
            raise
        if self.is_root:
            (out / "summary.txt").write_text(summary.getvalue())
        report = self.collectively(
            lambda: load_previous(out) if self.is_root else None,
            "reading the report",
        )
        return _study_tables.checkpoint_summary(report, epoch, out.name)

    def finish(self, results: dict[str, Any], saved: list[int]) -> None:
        """Write study.json, the tables and the figures, and print the tables."""
        args = self.args
        study = {
            "format": STUDY_FORMAT,
            "version": STUDY_VERSION,
            "command": ["hessop", *sys.argv[1:]],
            "settings": {
                key: value
                for key, value in sorted(vars(args).items())
                if key not in ("handler", "validate", "variant_specs")
            },
            "checkpoint_epochs": saved,
            "stages": list(STAGES),
            "variants": results,
            "environment": {
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
            },
        }
        tables = _study_tables.write_tables(study, self.out)
        figures = {}
        if not args.no_plots:
            figures = _study_plots.draw_study(study, self.out)
        study["figures"] = figures
        study["seconds"] = time.perf_counter() - self.started
        write_json(self.out / STUDY_NAME, study)
        print(tables)
        print(f"study: {self.out / STUDY_NAME} ({study['seconds']:.0f} s in this run)")


def run(args: Any) -> int:
    """Run ``hessop study`` with parsed arguments and return the exit status."""
    from hessop.cli import build_parser

    analyze_parser = build_parser()[1]["analyze"]
    state = _Study(args, analyze_parser)
    with configured_logging(
        quiet=args.quiet, verbose=args.verbose, is_root=state.is_root
    ):
        return state.execute()
