"""The metrics of ``hessop analyze``, each turned into a JSON record.

Every metric draws its random numbers from its own stream,
``numpy.random.default_rng([seed, stream])``, so its result does not depend
on which other metrics ran before it in the same process. This is what lets
a resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.integrate import trapezoid
from scipy.sparse.linalg import LinearOperator
from torch import nn
from tqdm.auto import tqdm

import hessop
from hessop.cli._errors import CommandError
from hessop.cli._report import sha256_of, write_with
from hessop.landscape import (
    filter_normalized_direction,
    loss_gradient,
    loss_landscape_1d,
    loss_landscape_2d,
)
from hessop.stages import parameter_blocks

logger = logging.getLogger(__name__)

METRICS = ("eigenvalues", "trace", "density", "blocks", "landscape")
EIGENVECTOR_FILE = "eigenvectors.npz"
# Random stream of each metric. Block i of the blocks metric uses stream
# BLOCK_STREAM + i.
_STREAMS = {"eigenvalues": 1, "trace": 2, "density": 3, "landscape": 5}
BLOCK_STREAM = 100


@dataclass
class Context:
    """Model, data, settings and output callbacks that every metric uses."""

    args: Any
    model: nn.Module
    data: Any
    comm: Any
    progress: bool
    out: Path
    is_root: bool
    save_partial: Callable[[str, dict[str, Any]], None]
    eigenpairs: tuple[np.ndarray, np.ndarray] | None = None
    _operator: hessop.HessianOperator | None = None

    @property
    def operator(self) -> hessop.HessianOperator:
        """The Hessian of the loss over all parameters, built on first use."""
        if self._operator is None:
            self._operator = self.block_operator(None, check=True)
        return self._operator

    @property
    def operator_matvecs(self) -> int | None:
        """Products of the full operator so far, None if it was never built."""
        return None if self._operator is None else self._operator.num_matvecs

    def block_operator(
        self, names: list[str] | None, *, check: bool = False
    ) -> hessop.HessianOperator:
        """Return the Hessian with respect to ``names`` (all when None)."""
        return hessop.HessianOperator(
            self.model,
            nn.CrossEntropyLoss(),
            self.data,
            params=names,
            check_deterministic=check,
            comm=self.comm,
            cache_budget=self.args.cache_budget,
        )

    def rng(self, stream: int) -> np.random.Generator:
        """Return the generator of one metric's random stream."""
        return np.random.default_rng([self.args.seed, stream])


class _CountedOperator(LinearOperator):
    """Forward products to an operator and advance a progress bar per product."""

    def __init__(self, operator: hessop.HessianOperator, bar: tqdm):
        super().__init__(dtype=operator.dtype, shape=operator.shape)
        self.operator = operator
        self.comm = operator.comm
        self.bar = bar

    def _matvec(self, x):
        y = self.operator.matvec(x)
        self.bar.update(1)
        return y

    def _matmat(self, X):
        Y = self.operator.matmat(X)
        self.bar.update(X.shape[1])
        return Y

    def _rmatvec(self, x):
        return self._matvec(x)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self


def _bar(ctx: Context, total: int, description: str) -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit="matvec",
        disable=not ctx.progress,
        leave=False,
    )


def compute_eigenvalues(ctx: Context, previous: dict | None) -> dict[str, Any]:
    """Compute the top-k eigenvalues of the Hessian by thick-restart Lanczos."""
    args = ctx.args
    H = ctx.operator
    started = time.perf_counter()
    with _bar(ctx, args.eig_max_matvecs, "top eigenvalues") as bar:
        result = hessop.eigenvalues(
            _CountedOperator(H, bar),
            args.top_k,
            which="LA",
            method="lanczos",
            rtol=args.eig_rtol,
            max_matvecs=args.eig_max_matvecs,
            seed=ctx.rng(_STREAMS["eigenvalues"]),
        )
    record = _eigen_record(result)
    record["seconds"] = time.perf_counter() - started
    ctx.eigenpairs = (result.eigenvalues, result.eigenvectors)
    if args.save_eigenvectors or "landscape" in args.metrics:
        record["eigenvectors_file"] = EIGENVECTOR_FILE
        record["eigenvectors_sha256"] = _save_eigenvectors(ctx, H, result)
    return record


def _eigen_record(result: hessop.EigenResult) -> dict[str, Any]:
    values = result.eigenvalues
    scale = np.where(values != 0, np.abs(values), 1.0)
    return {
        "k": int(values.size),
        "eigenvalues": values,
        "converged": result.converged,
        "all_converged": bool(np.all(result.converged)),
        "residual_norms": result.residual_norms,
        "relative_residuals": result.residual_norms / scale,
        "rtol": result.rtol,
        "method": result.method,
        "which": result.which,
        "num_matvecs": result.num_matvecs,
    }


def _save_eigenvectors(
    ctx: Context, H: hessop.HessianOperator, result: hessop.EigenResult
) -> str | None:
    """Write eigenvalues, eigenvectors and the parameter layout as ``.npz``."""
    if not ctx.is_root:
        return None
    path = ctx.out / EIGENVECTOR_FILE
    layout = H.layout
    write_with(
        path,
        lambda file: np.savez(
            file,
            eigenvalues=result.eigenvalues,
            eigenvectors=result.eigenvectors,
            parameter_names=np.array(layout.names),
            parameter_offsets=np.array(layout.offsets, dtype=np.int64),
            parameter_sizes=np.array([e.numel for e in layout], dtype=np.int64),
        ),
    )
    return sha256_of(path)


def compute_trace(ctx: Context, previous: dict | None) -> dict[str, Any]:
    """Estimate the trace of the Hessian and its standard error."""
    args = ctx.args
    H = ctx.operator
    started = time.perf_counter()
    with _bar(ctx, args.trace_matvecs, "trace") as bar:
        result = hessop.trace(
            _CountedOperator(H, bar),
            method=args.trace_method,
            num_matvecs=args.trace_matvecs,
            rtol=args.trace_rtol,
            seed=ctx.rng(_STREAMS["trace"]),
        )
    record = _trace_record(result, H.shape[0])
    record["seconds"] = time.perf_counter() - started
    return record


def _trace_record(result: hessop.TraceResult, n: int) -> dict[str, Any]:
    return {
        "estimate": result.estimate,
        "stderr": result.stderr,
        "relative_stderr": (
            None
            if result.stderr is None or result.estimate == 0
            else result.stderr / abs(result.estimate)
        ),
        "per_parameter": result.estimate / n,
        "method": result.method,
        "distribution": result.distribution,
        "rtol": result.rtol,
        "converged": result.converged,
        "num_matvecs": result.num_matvecs,
        "samples": result.samples,
    }


def compute_density(ctx: Context, previous: dict | None) -> dict[str, Any]:
    """Compute the spectral density by stochastic Lanczos quadrature."""
    args = ctx.args
    H = ctx.operator
    started = time.perf_counter()
    total = args.density_steps * args.density_probes
    with _bar(ctx, total, "spectral density") as bar:
        result = hessop.slq(
            _CountedOperator(H, bar),
            num_steps=args.density_steps,
            num_probes=args.density_probes,
            seed=ctx.rng(_STREAMS["density"]),
        )
    curve = result.density(sigma=args.density_sigma)
    grid, values = curve
    return {
        "num_steps": args.density_steps,
        "num_probes": result.num_probes,
        "sigma": curve.sigma,
        "sigma_rule": (
            "given" if args.density_sigma is not None else "1% of the node range"
        ),
        "grid": grid,
        "density": values,
        "integral": float(trapezoid(values, grid)),
        "nodes": [nodes for nodes in result.nodes],
        "weights": [weights for weights in result.weights],
        "breakdown": result.breakdown,
        "dimension": result.dimension,
        "trace_estimate": result.trace_estimate(),
        "num_matvecs": result.num_matvecs,
        "seconds": time.perf_counter() - started,
    }


def compute_blocks(ctx: Context, previous: dict | None) -> dict[str, Any]:
    """Compute the top eigenvalue and trace of each parameter block's Hessian.

    Each finished block is saved at once, and a resumed run keeps the
    blocks of ``previous`` whose label and parameters are unchanged.
    """
    args = ctx.args
    try:
        blocks = parameter_blocks(ctx.model, args.blocks)
    except ValueError as error:
        raise CommandError(f"--blocks: {error}") from None
    done = {
        entry["label"]: entry
        for entry in (previous or {}).get("blocks", [])
        if isinstance(entry, dict)
    }
    record: dict[str, Any] = {
        "patterns": args.blocks,
        "blocks": [],
        "num_matvecs": 0,
        "seconds": 0.0,
    }
    for index, (label, names) in enumerate(blocks.items()):
        earlier = done.get(label)
        if earlier is not None and earlier.get("parameters") == names:
            logger.info("block %s: kept from the earlier run", label)
            entry = earlier
        else:
            entry = _compute_block(ctx, index, label, names)
        record["blocks"].append(entry)
        record["num_matvecs"] += entry["eigen"]["num_matvecs"]
        record["num_matvecs"] += entry["trace_details"]["num_matvecs"]
        record["seconds"] += entry["seconds"]
        ctx.save_partial("blocks", record)
    return record


def _compute_block(
    ctx: Context, index: int, label: str, names: list[str]
) -> dict[str, Any]:
    args = ctx.args
    started = time.perf_counter()
    H = ctx.block_operator(names)
    rng = ctx.rng(BLOCK_STREAM + index)
    total = args.block_eig_max_matvecs + args.block_trace_matvecs
    with _bar(ctx, total, f"block {label}") as bar:
        counted = _CountedOperator(H, bar)
        eigen = hessop.eigenvalues(
            counted,
            1,
            which="LA",
            rtol=args.eig_rtol,
            max_matvecs=args.block_eig_max_matvecs,
            seed=rng,
        )
        trace = hessop.trace(
            counted,
            method=args.trace_method,
            num_matvecs=args.block_trace_matvecs,
            seed=rng,
        )
    eigen_record = _eigen_record(eigen)
    trace_record = _trace_record(trace, H.shape[0])
    logger.info(
        "block %s: top eigenvalue %.6g, trace %.6g +- %s",
        label,
        eigen.eigenvalues[0],
        trace.estimate,
        "n/a" if trace.stderr is None else f"{trace.stderr:.3g}",
    )
    return {
        "label": label,
        "parameters": names,
        "num_parameters": H.shape[0],
        "top_eigenvalue": float(eigen.eigenvalues[0]),
        "trace": trace.estimate,
        "trace_stderr": trace.stderr,
        "eigen": eigen_record,
        "trace_details": trace_record,
        "seconds": time.perf_counter() - started,
    }


def compute_landscape(ctx: Context, previous: dict | None) -> dict[str, Any]:
    """Evaluate the loss along the top two eigenvectors and two random directions.

    Each finished line or plane is saved at once; a resumed run computes
    only the parts that ``previous`` lacks.
    """
    args = ctx.args
    started = time.perf_counter()
    record: dict[str, Any] = dict(previous or {})
    parts = record.setdefault("parts", {})
    record["settings"] = {
        "directions": args.landscape_directions,
        "eigen_radius": args.landscape_radius,
        "random_radius": args.random_radius,
        "points_1d": args.landscape_points,
        "points_2d": args.landscape_grid,
        "ignore_bias_bn": not args.perturb_bias_bn,
    }
    kinds = [("eigen", args.landscape_radius), ("random", args.random_radius)]
    for kind, radius in kinds:
        if kind not in args.landscape_directions:
            continue
        needed = [f"{kind}_1d"] + ([f"{kind}_2d"] if args.landscape_grid > 0 else [])
        if all(name in parts for name in needed) and kind in record:
            continue
        if kind == "eigen":
            directions = _eigen_directions(ctx, record)
        else:
            directions = _random_directions(ctx, record)
        ctx.save_partial("landscape", record)
        _evaluate_parts(ctx, record, kind, directions, radius)

    record["num_evaluations"] = sum(part["num_evaluations"] for part in parts.values())
    record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - started
    return record


def _evaluate_parts(
    ctx: Context,
    record: dict[str, Any],
    kind: str,
    directions: list[dict[str, torch.Tensor]],
    radius: float,
) -> None:
    """Compute the missing line and plane of one direction pair, saving each."""
    args = ctx.args
    parts = record["parts"]
    loss_fn = nn.CrossEntropyLoss()
    if f"{kind}_1d" not in parts:
        alphas = np.linspace(-radius, radius, args.landscape_points)
        line = loss_landscape_1d(
            ctx.model,
            loss_fn,
            ctx.data,
            directions[0],
            alphas,
            comm=ctx.comm,
            progress=ctx.progress,
        )
        parts[f"{kind}_1d"] = {
            "alphas": alphas,
            "losses": line.losses,
            "center_loss": line.center_loss,
            "num_evaluations": line.num_evaluations,
        }
        ctx.save_partial("landscape", record)
    if args.landscape_grid > 0 and f"{kind}_2d" not in parts:
        axis = np.linspace(-radius, radius, args.landscape_grid)
        plane = loss_landscape_2d(
            ctx.model,
            loss_fn,
            ctx.data,
            directions,
            axis,
            axis,
            comm=ctx.comm,
            progress=ctx.progress,
        )
        parts[f"{kind}_2d"] = {
            "alphas": axis,
            "betas": axis,
            "losses": plane.losses,
            "center_loss": plane.center_loss,
            "num_evaluations": plane.num_evaluations,
        }
        ctx.save_partial("landscape", record)


def _random_directions(
    ctx: Context, record: dict[str, Any]
) -> list[dict[str, torch.Tensor]]:
    """Draw two filter-normalised directions from the landscape's stream."""
    ignore_bias_bn = not ctx.args.perturb_bias_bn
    seeds = [
        int(seed)
        for seed in ctx.rng(_STREAMS["landscape"]).integers(0, 2**31 - 1, size=2)
    ]
    directions = [
        filter_normalized_direction(ctx.model, seed=seed, ignore_bias_bn=ignore_bias_bn)
        for seed in seeds
    ]
    norms = [
        float(torch.sqrt(sum((t.double() ** 2).sum() for t in d.values())))
        for d in directions
    ]
    record["random"] = {"seeds": seeds, "direction_norms": norms}
    return directions


def _eigen_directions(
    ctx: Context, record: dict[str, Any]
) -> list[dict[str, torch.Tensor]]:
    """Return the top two Hessian eigenvectors as parameter-shaped directions.

    They are those of the eigenvalues metric when it found two or more, and
    are computed here otherwise (and saved, so a resumed run reads them).
    Also stores in ``record["eigen"]`` their eigenvalues and the slope
    :math:`\\nabla L^\\top v_1` of the second-order Taylor model.
    """
    args = ctx.args
    H = ctx.operator
    earlier = record.get("eigen")
    if ctx.eigenpairs is not None and ctx.eigenpairs[1].shape[1] >= 2:
        values, columns = ctx.eigenpairs
        info = dict(earlier) if earlier else {"source": "eigenvalues metric"}
    else:
        started = time.perf_counter()
        with _bar(ctx, args.eig_max_matvecs, "top-2 eigenvectors") as bar:
            result = hessop.eigenvalues(
                _CountedOperator(H, bar),
                2,
                which="LA",
                rtol=args.eig_rtol,
                max_matvecs=args.eig_max_matvecs,
                seed=ctx.rng(_STREAMS["eigenvalues"]),
            )
        info = _eigen_record(result) | {"seconds": time.perf_counter() - started}
        info["source"] = "computed for the landscape"
        info["eigenvectors_file"] = EIGENVECTOR_FILE
        info["eigenvectors_sha256"] = _save_eigenvectors(ctx, H, result)
        values, columns = result.eigenvalues, result.eigenvectors
    directions = [
        H.unflatten(torch.from_numpy(np.ascontiguousarray(columns[:, j])))
        for j in range(2)
    ]

    gradient = loss_gradient(ctx.model, nn.CrossEntropyLoss(), ctx.data, comm=ctx.comm)
    slope = sum(
        float((gradient[name].double() * tensor.double()).sum())
        for name, tensor in directions[0].items()
    )
    info["eigenvalues_used"] = values[:2]
    info["gradient_dot_v1"] = slope
    info["gradient_norm"] = float(
        torch.sqrt(sum((g.double() ** 2).sum() for g in gradient.values()))
    )
    record["eigen"] = info
    return directions


def read_eigenvectors(
    path: Path, H: hessop.HessianOperator
) -> tuple[np.ndarray, np.ndarray]:
    """Read an eigenvector file written by an earlier run into this directory."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = [str(name) for name in stored["parameter_names"]]
            values = np.asarray(stored["eigenvalues"])
            columns = np.asarray(stored["eigenvectors"])
    except (OSError, KeyError, ValueError) as error:
        raise CommandError(f"cannot read {path} to resume: {error}") from None
    if names != H.layout.names or columns.shape[0] != H.shape[0]:
        raise CommandError(
            f"{path} contains eigenvectors of other parameters; remove it or use "
            "another --out"
        )
    return values, columns
