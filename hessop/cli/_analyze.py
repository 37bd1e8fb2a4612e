"""``hessop analyze``: the Hessian metrics of a model on a dataset."""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

import hessop
from hessop._mpi import get_rank, get_size
from hessop.cli import _metrics, _plots
from hessop.cli._console import configured_logging, show_progress, summary_table
from hessop.cli._errors import CommandError, run_on_all_ranks
from hessop.cli._options import (
    DESCRIPTION,
    EPILOG,
    RUN_ONLY_OPTIONS,
    add_options,
    validate,
)
from hessop.cli._report import (
    REPORT_FORMAT,
    REPORT_NAME,
    REPORT_VERSION,
    check_resumable,
    load_previous,
    prepare_output_directory,
    sha256_of,
    to_json,
    write_json,
)
from hessop.cli._setup import (
    MODEL_FILE,
    build,
    load_data,
    load_weights,
    loss_and_accuracy,
    make_batches,
    save_model_file,
    train_model,
)

logger = logging.getLogger(__name__)

# Environment variables through which MPI launchers announce the job size:
# MPICH and Intel MPI (Hydra), Open MPI, MVAPICH and PMIx.
_MPI_SIZE_VARIABLES = (
    "PMI_SIZE",
    "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_SIZE",
    "PMIX_SIZE",
)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``analyze`` on the ``hessop`` subcommand parsers."""
    parser = subparsers.add_parser(
        "analyze",
        help="Hessian metrics of a model on a dataset, with a JSON report and plots",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser)
    parser.set_defaults(handler=run, validate=validate)
    return parser


def communicator(mode: str) -> Any:
    """Return MPI's COMM_WORLD when this process is one of several MPI ranks."""
    if mode == "off":
        return None
    if mode == "auto":
        sizes = [os.environ.get(name, "") for name in _MPI_SIZE_VARIABLES]
        if not any(size.isdigit() and int(size) > 1 for size in sizes):
            return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CommandError(
            "running under MPI needs mpi4py; install it with "
            "`pip install hessop[mpi]`, or pass --mpi off"
        ) from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 or mode == "on" else None


def resolve_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise CommandError(
            f"--device {text!r} is not a device; use cpu, cuda or cuda:INDEX"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CommandError(
                f"--device {text}: CUDA is not available in this PyTorch build "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CommandError(
                f"--device {text}: there are only {torch.cuda.device_count()} "
                "CUDA devices"
            )
    elif device.type != "cpu":
        raise CommandError(f"--device {text}: only cpu and cuda are supported")
    return device


def settings_of(args: Any) -> dict[str, Any]:
    """Return the options that affect the numbers of the report."""
    return {
        key: value
        for key, value in sorted(vars(args).items())
        if key not in RUN_ONLY_OPTIONS
    }


def versions(comm: Any) -> dict[str, Any]:
    """Return the versions of the software that produced the numbers."""
    found = {
        "hessop": hessop.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }
    try:
        import matplotlib

        found["matplotlib"] = matplotlib.__version__
    except ImportError:
        found["matplotlib"] = None
    if comm is not None:
        import mpi4py
        from mpi4py import MPI

        found["mpi4py"] = mpi4py.__version__
        found["mpi"] = " ".join(MPI.Get_library_version().split()[:3])
    return found


class _Run:
    """State of one ``hessop analyze`` invocation."""

    def __init__(self, args: Any):
        self.args = args
        self.started = time.perf_counter()
        self.comm = communicator(args.mpi)
        self.is_root = get_rank(self.comm) == 0
        self.out = Path(args.out).expanduser()
        self.report: dict[str, Any] | None = None

    def collectively(self, function: Any, operation: str) -> Any:
        return run_on_all_ranks(self.comm, function, operation)

    def write_report(self) -> None:
        """Write ``report.json`` on rank 0; every rank learns if that failed."""
        report = self.report

        def write() -> None:
            if self.is_root and report is not None:
                write_json(self.out / REPORT_NAME, report)

        self.collectively(write, f"writing {self.out / REPORT_NAME}")

    def save_partial(self, name: str, record: dict[str, Any]) -> None:
        """Store an unfinished metric record in the report and write it."""
        assert self.report is not None
        self.report["metrics"][name] = to_json({**record, "status": "partial"})
        self.write_report()

    def execute(self) -> int:
        """Run the whole analysis and return the exit status."""
        args = self.args
        progress = show_progress(quiet=args.quiet, is_root=self.is_root)
        self.set_threads()
        device = resolve_device(args.device)
        dtype = _DTYPES[args.dtype]
        settings = settings_of(args)

        # Data, model and a given weights file come first: they are cheap to
        # check, so a wrong input fails before anything is written.
        timings: dict[str, Any] = {}
        clock = time.perf_counter()
        dataset, info = self.collectively(
            lambda: load_data(args, args.split, args.num_samples), "loading the data"
        )
        model, model_record = self.collectively(
            lambda: build(args, info), "building the model"
        )
        if args.weights is not None:
            path = Path(args.weights).expanduser()
            self.collectively(
                lambda: load_weights(model, path, args.model), "loading the weights"
            )
            model_record["weights"] = {"file": str(path), "sha256": sha256_of(path)}
        timings["setup_seconds"] = time.perf_counter() - clock
        previous = self.prepare_output(settings, model_record)

        clock = time.perf_counter()
        checkpoint = self.prepare_weights(model, model_record, previous, progress)
        timings["training_seconds"] = time.perf_counter() - clock
        model.to(device=device, dtype=dtype)
        model.eval()
        data, num_samples, local_samples = make_batches(
            dataset, args.batch_size, device, dtype, self.comm
        )
        samples_per_rank = (
            [local_samples] if self.comm is None else self.comm.allgather(local_samples)
        )
        loss, accuracy = loss_and_accuracy(model, data, num_samples, self.comm)

        data_label = f"{info.name} {info.split} split, {info.num_samples} samples" + (
            "" if args.num_samples is None else f" (seed {args.seed})"
        )
        self.report = {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "status": "running",
            "settings": settings,
            "seed": args.seed,
            "versions": versions(self.comm),
            "environment": {
                "device": str(device),
                "dtype": args.dtype,
                "torch_threads": torch.get_num_threads(),
                "mpi_ranks": get_size(self.comm),
            },
            "description": {
                "title": f"{model_record['label']} on {data_label}",
                "checkpoint": checkpoint,
            },
            "model": model_record,
            "data": info.to_dict()
            | {"batch_size": args.batch_size, "samples_per_rank": samples_per_rank},
            "loss": {"value": loss, "accuracy": accuracy},
            "metrics": dict((previous or {}).get("metrics", {})),
            "runs": list((previous or {}).get("runs", [])),
        }
        run_record = {
            "started": _now(),
            "command": ["hessop", *sys.argv[1:]],
            "metrics_requested": args.metrics,
            "metrics_computed": [],
        }
        self.report["runs"].append(run_record)
        self.write_report()

        context = _metrics.Context(
            args=args,
            model=model,
            data=data,
            comm=self.comm,
            progress=progress,
            out=self.out,
            is_root=self.is_root,
            save_partial=self.save_partial,
        )
        self.restore_eigenpairs(context, previous)
        timings["metrics_seconds"] = self.run_metrics(context, run_record)

        clock = time.perf_counter()
        self.report["plots"] = self.draw_plots()
        timings["plots_seconds"] = time.perf_counter() - clock
        timings["total_seconds"] = time.perf_counter() - self.started
        self.report["timings"] = timings
        self.report["num_matvecs"] = self.count_matvecs()
        self.report["status"] = "complete"
        run_record["finished"] = _now()
        run_record["seconds"] = timings["total_seconds"]
        self.write_report()
        if self.is_root:
            print(summary_table(self.report))
            print(f"report: {self.out / REPORT_NAME}")
        return 0

    def set_threads(self) -> None:
        """Apply ``--threads``, or share the cores among the ranks of a node."""
        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
            return
        if self.comm is None:
            return
        # PyTorch starts one thread per core in every process, so ranks that
        # share a node would oversubscribe its cores many times over.
        from mpi4py import MPI

        local_ranks = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        threads = max(1, torch.get_num_threads() // local_ranks)
        torch.set_num_threads(threads)
        logger.info("%d ranks on this node: %d thread(s) each", local_ranks, threads)

    def prepare_output(
        self, settings: dict[str, Any], model_record: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create the output directory; with ``--resume``, return the old report."""
        args = self.args

        def prepare() -> dict[str, Any] | None:
            if not self.is_root:
                return None
            prepare_output_directory(self.out)
            if not args.resume:
                return None
            previous = load_previous(self.out)
            if previous is None:
                logger.info("no report in %s yet; starting a new one", self.out)
                return None
            check_resumable(previous, settings)
            earlier = previous.get("model", {}).get("weights", {}).get("sha256")
            current = model_record.get("weights", {}).get("sha256")
            if earlier != current:
                raise CommandError(
                    f"cannot resume: the weights file {args.weights} changed since "
                    "the report in this directory was computed (its SHA-256 "
                    "differs); use another --out"
                )
            return previous

        previous = self.collectively(prepare, "preparing the output directory")
        if self.comm is not None:
            previous = self.comm.bcast(previous, root=0)
        return previous

    def run_metrics(
        self, context: _metrics.Context, run_record: dict[str, Any]
    ) -> dict[str, float]:
        """Compute the selected metrics not yet done, saving the report after each.

        Returns the wall time of each metric computed in this run.
        """
        assert self.report is not None
        seconds: dict[str, float] = {}
        for name in self.args.metrics:
            earlier = self.report["metrics"].get(name)
            if earlier is not None and earlier.get("status") == "complete":
                logger.info("%s: kept from the earlier run", name)
                continue
            logger.info("%s: computing", name)
            clock = time.perf_counter()
            # Looked up at call time, so that tests can replace a metric.
            compute = getattr(_metrics, f"compute_{name}")
            record = compute(context, earlier)
            record["status"] = "complete"
            self.report["metrics"][name] = to_json(record)
            seconds[name] = time.perf_counter() - clock
            run_record["metrics_computed"].append(name)
            self.report["num_matvecs"] = self.count_matvecs()
            self.write_report()
            logger.info("%s: done in %.1f s", name, seconds[name])

        if context.operator_matvecs is not None:
            # Products of the full-parameter operator in this run. The two
            # products of its determinism check at construction are extra.
            run_record["operator_matvecs"] = context.operator_matvecs
            run_record["determinism_check_matvecs"] = 2
        return seconds

    def prepare_weights(
        self,
        model: torch.nn.Module,
        record: dict[str, Any],
        previous: dict[str, Any] | None,
        progress: bool,
    ) -> str:
        """Reuse or train the weights unless a file gave them; return their label."""
        args = self.args
        if args.weights is not None:
            return f"weights: {Path(args.weights).name}"
        if args.epochs == 0:
            record["weights"] = {"initialisation_seed": args.seed}
            return f"untrained: initial weights of seed {args.seed}"

        path = self.out / MODEL_FILE
        earlier = (previous or {}).get("model", {}).get("training")
        if earlier is not None and path.is_file():
            if sha256_of(path) == earlier.get("model_sha256"):
                logger.info("model: weights of the earlier run read from %s", path)
                self.collectively(
                    lambda: load_weights(model, path, args.model), "loading the weights"
                )
                record["training"] = earlier
                return _trained_label(earlier)
            logger.warning("%s changed since the earlier run; training again", path)

        training, state = train_model(model, args, self.comm, progress)

        def save() -> str | None:
            return save_model_file(path, state, record) if self.is_root else None

        training["model_file"] = MODEL_FILE
        training["model_sha256"] = self.collectively(save, f"writing {path}")
        record["training"] = training
        return _trained_label(training)

    def restore_eigenpairs(
        self, context: _metrics.Context, previous: dict[str, Any] | None
    ) -> None:
        """On resume, read the eigenvectors that an unfinished landscape needs."""
        metrics = (previous or {}).get("metrics", {})
        landscape = metrics.get("landscape", {})
        if (
            "landscape" not in self.args.metrics
            or landscape.get("status") == "complete"
        ):
            return
        for source in (metrics.get("eigenvalues", {}), landscape.get("eigen", {})):
            digest = source.get("eigenvectors_sha256")
            path = self.out / _metrics.EIGENVECTOR_FILE
            if digest and path.is_file() and sha256_of(path) == digest:
                context.eigenpairs = _metrics.read_eigenvectors(path, context.operator)
                return

    def draw_plots(self) -> dict[str, str]:
        if self.args.no_plots:
            return {}
        if not _plots.available():
            logger.warning(
                "matplotlib is not installed, so no figures are drawn; install it "
                "with `pip install hessop[plot]`"
            )
            return {}
        report = self.report
        assert report is not None
        logger.info("drawing the figures")
        return self.collectively(
            lambda: _plots.draw_all(report, self.out) if self.is_root else {},
            "drawing the figures",
        )

    def count_matvecs(self) -> int:
        assert self.report is not None
        total = 0
        for record in self.report["metrics"].values():
            total += int(record.get("num_matvecs") or 0)
            total += int((record.get("eigen") or {}).get("num_matvecs") or 0)
        return total

    def fail(self, error: BaseException) -> None:
        """Record an interrupted or failed run in the report, if one was started."""
        if self.report is None:
            return
        interrupted = isinstance(error, KeyboardInterrupt)
        self.report["status"] = "interrupted" if interrupted else "failed"
        self.report["runs"][-1]["error"] = (
            "interrupted" if interrupted else f"{type(error).__name__}: {error}"
        )
        try:
            if self.is_root:
                write_json(self.out / REPORT_NAME, self.report)
        except OSError:
            logger.warning("could not record the failure in the report")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _trained_label(training: dict[str, Any]) -> str:
    settings = training["settings"]
    history = training.get("history", {})
    accuracy = history.get("test_accuracy") or [None]
    epochs = settings["epochs"]
    text = (
        f"trained here: {epochs} epoch{'s' if epochs != 1 else ''} of SGD "
        f"(lr {settings['lr']:g}, seed {settings['seed']})"
    )
    if accuracy[-1] is not None:
        text += f", test accuracy {100 * accuracy[-1]:.1f} %"
    return text


def run(args: Any) -> int:
    """Run ``hessop analyze`` with parsed arguments and return the exit status."""
    state = _Run(args)
    logging_options = {"quiet": args.quiet, "verbose": args.verbose}
    with configured_logging(**logging_options, is_root=state.is_root):
        try:
            return state.execute()
        except BaseException as error:
            state.fail(error)
            raise
