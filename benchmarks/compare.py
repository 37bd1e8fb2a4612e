"""Compare hessop with PyHessian, curvlinops and hessian-eigenthings side by side.

Every tool works on the same CIFAR ResNet-20 (BatchNorm in eval mode), the
same data, the same thread count and float32. The model is first trained
for 80 SGD steps on random images labelled by a second, randomly
initialised ResNet-20 (the teacher), so that its Hessian has the spread
spectrum of a network in training rather than the one at initialisation.

Each measurement runs in its own process, started by this script, so that
peak memory is per tool and no tool inherits another's caches. The script
writes ``compare.json`` and ``compare.md`` into ``--out``.

Timings are reported as ratios to the time of one gradient (forward and
backward pass) measured in the same process, because the absolute times on
a shared machine drift by several times between minutes. Where several
cases share a process they are timed in interleaved rounds, and each ratio
is the median over rounds of the case's time divided by the gradient's time
in that round.

Run ``python benchmarks/compare.py`` for the full run and
``python benchmarks/compare.py --quick`` for a smaller one (batches of 32,
fewer repeats).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Every configuration the run uses; --quick shrinks the batches and repeats.
FULL = {
    "batch_size": 128,
    "full_batches": 8,
    "train_steps": 80,
    "repeats": 7,
    "full_repeats": 5,
    "matmat_columns": 16,
    "lanczos_steps": 40,
    "trace_budgets": [20, 40, 80],
    "trace_seeds": 2,
    "trace_reference_matvecs": 400,
    "digits_trace_budgets": [4, 8, 12, 16, 24, 32, 48, 64, 96, 128],
    "digits_trace_seeds": 10,
    "slq_steps": 90,
    "pyhessian_yardstick_iterations": 60,
    "memory_columns": [1, 4, 16, 64],
    "compile": True,
    "skip": [],
}
QUICK = {
    **FULL,
    "batch_size": 16,
    "repeats": 3,
    "full_repeats": 2,
    "lanczos_steps": 30,
    "trace_budgets": [10, 20, 40],
    "trace_seeds": 1,
    "trace_reference_matvecs": 150,
    "digits_trace_budgets": [4, 8, 16, 32, 64],
    "digits_trace_seeds": 3,
    "slq_steps": 40,
    "memory_columns": [16, 64],
    "compile": False,
    "skip": [
        "eigen_hessop_power",
        "eigen_curvlinops",
        "slq_eigenthings",
        "slq_curvlinops",
        "memory_gradient",
        "memory_hessop_pytorch_rules",
        "memory_hessop_func",
        "memory_curvlinops",
        "memory_eigenthings",
        "memory_matmat_64_one_block",
    ],
}
WORKER_TIMEOUT_S = 3600
# Version of the recipe in prepare_problem; a saved problem of another version
# is rebuilt.
RECIPE = 2
# Accuracy the top eigenvalue must reach, relative to the reference.
EIGEN_RTOL = 1e-3
# Relative error of a trace estimate counted as reaching the reference.
TRACE_RTOL = 0.05
# Block size of the matmat memory measurement, hessop's default.
MATMAT_BLOCK_SIZE = 16
# Parameters of CIFAR ResNet-20 with 10 classes.
PARAMETERS = 269_722


# ---------------------------------------------------------------------------
# The problem: model, data and the independent reference product


def prepare_problem(path: Path, config: dict[str, Any], threads: int) -> None:
    """Train the model and save it with the data, unless ``path`` contains them."""
    import torch
    from torch.utils.data import TensorDataset

    from hessop.models import build_model
    from hessop.training import train

    if path.exists():
        saved = torch.load(path, weights_only=False)
        if saved["config"] == config and saved.get("recipe") == RECIPE:
            return
    torch.set_num_threads(threads)
    batch_size = config["batch_size"]
    num_samples = batch_size * config["full_batches"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_samples, 3, 32, 32, generator=generator)
    teacher = build_model("resnet20", num_classes=10, in_channels=3, seed=1).eval()
    with torch.no_grad():
        logits = teacher(images)
    # A random network gives most inputs the same top class; standardising each
    # logit over the data spreads the labels over all classes.
    labels = ((logits - logits.mean(0)) / logits.std(0)).argmax(dim=1)
    model = build_model("resnet20", num_classes=10, in_channels=3, seed=0)
    steps_per_epoch = config["full_batches"]
    train(
        model,
        TensorDataset(images, labels),
        epochs=config["train_steps"] // steps_per_epoch,
        batch_size=batch_size,
        lr=0.05,
        seed=0,
    )
    torch.save(
        {
            "config": config,
            "recipe": RECIPE,
            "state": model.state_dict(),
            "images": images,
            "labels": labels,
        },
        path,
    )


class Problem:
    """The trained model in eval mode, one batch and the full data."""

    def __init__(self, path: Path, threads: int, device: str, dtype: Any = None):
        import torch
        from torch import nn

        from hessop.models import build_model

        self.path, self.threads, self.device = path, threads, device
        torch.set_num_threads(threads)
        saved = torch.load(path, weights_only=False)
        self.config = saved["config"]
        dtype = dtype or torch.float32
        self.model = build_model("resnet20", num_classes=10, in_channels=3)
        self.model.load_state_dict(saved["state"])
        self.model = self.model.to(device=device, dtype=dtype).eval()
        self.criterion = nn.CrossEntropyLoss()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.n = sum(p.numel() for p in self.params)
        b = self.config["batch_size"]
        images = saved["images"].to(device=device, dtype=dtype)
        labels = saved["labels"].to(device)
        self.x, self.y = images[:b], labels[:b]
        self.batches = [
            (images[i : i + b], labels[i : i + b]) for i in range(0, len(labels), b)
        ]

    def gradient(self, batches: list | None = None) -> None:
        """Compute the loss gradient over ``batches`` (default: the one batch)."""
        import torch

        for x, y in batches or [(self.x, self.y)]:
            loss = self.criterion(self.model(x), y)
            torch.autograd.grad(loss, self.params)

    def gradient_time(self, repeats: int = 5) -> float:
        """Return the median time of the one-batch gradient."""
        self.gradient()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.gradient()
            self.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def vector(self, seed: int = 0, columns: int | None = None) -> Any:
        import numpy as np

        rng = np.random.default_rng(seed)
        shape = (self.n,) if columns is None else (self.n, columns)
        return rng.standard_normal(shape).astype(np.float32)

    def tensor(self, v: Any) -> Any:
        """Return a numpy array as a torch tensor on the problem's device."""
        import torch

        return torch.from_numpy(v).to(self.device)

    def synchronize(self) -> None:
        """Wait for the device to finish, so that a timer measures all of the work."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def split(self, v: Any) -> list:
        """Split a flat torch vector into parameter-shaped pieces."""
        pieces, start = [], 0
        for p in self.params:
            pieces.append(v[start : start + p.numel()].view_as(p))
            start += p.numel()
        return pieces


def plain_hessian(problem: Problem) -> Any:
    """Return the one-batch Hessian as a scipy LinearOperator built without hessop.

    The product is double backpropagation on a kept first-order graph, written
    here from :func:`torch.autograd.grad` alone, so that the reference shares
    no code with any tool it judges.
    """
    import numpy as np
    import torch
    from scipy.sparse.linalg import LinearOperator

    loss = problem.criterion(problem.model(problem.x), problem.y)
    grads = torch.autograd.grad(loss, problem.params, create_graph=True)
    dtype = problem.params[0].dtype
    counter = {"matvecs": 0}

    def matvec(v):
        counter["matvecs"] += 1
        t = torch.as_tensor(np.asarray(v).reshape(-1), dtype=dtype)
        hv = torch.autograd.grad(
            grads, problem.params, grad_outputs=problem.split(t), retain_graph=True
        )
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    operator = LinearOperator(
        (problem.n, problem.n), matvec=matvec, rmatvec=matvec, dtype=numpy_dtype
    )
    operator.counter = counter
    return operator


def residual(operator: Any, eigenvalue: float, vector: Any) -> float:
    """Return ``||H v - lambda v|| / |lambda|`` for a unit-normalised ``v``."""
    import numpy as np

    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    v /= np.linalg.norm(v)
    Hv = operator.matvec(v.astype(operator.dtype)).astype(np.float64)
    return float(np.linalg.norm(Hv - eigenvalue * v) / abs(eigenvalue))


def flatten(pieces: list) -> Any:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in pieces]).numpy()


# ---------------------------------------------------------------------------
# Timing helpers


def time_cases(
    problem: Problem,
    cases: dict[str, Any],
    repeats: int,
    columns: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Time ``cases`` in interleaved rounds against the case named 'gradient'.

    Returns, for each case, the median time over rounds and the median over
    rounds of its time divided by the gradient's time in the same round. Both
    are per column for the cases listed in ``columns``.
    """
    columns = columns or {}
    for case in cases.values():
        case()
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            cases[name]()
            problem.synchronize()
            times[name].append((time.perf_counter() - start) / columns.get(name, 1))
    unit = times["gradient"]
    return {
        name: {
            "median_s": statistics.median(times[name]),
            "ratio": statistics.median(
                t / u for t, u in zip(times[name], unit, strict=True)
            ),
            "times_s": times[name],
            "columns": columns.get(name, 1),
        }
        for name in names
    }


def timed(function: Any) -> tuple[Any, float]:
    import torch

    start = time.perf_counter()
    result = function()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


class Trajectory:
    """Records ``(time, Rayleigh quotient)`` at each product of a power iteration."""

    def __init__(self):
        self.start = time.perf_counter()
        self.points: list[tuple[float, float]] = []
        self.matvecs = 0

    def record(self, v: Any, Hv: Any) -> None:
        self.matvecs += 1
        estimate = float((v * Hv).sum() / (v * v).sum())
        self.points.append((time.perf_counter() - self.start, estimate))


# ---------------------------------------------------------------------------
# Tasks, each run in its own process


def task_products(problem: Problem) -> dict[str, Any]:
    """Time one product of every tool on the one batch, interleaved."""
    import numpy as np
    import torch
    from curvlinops import HessianLinearOperator
    from hessian_eigenthings import HessianOperator as EigenthingsOperator
    from hessian_eigenthings import supervised_loss
    from pyhessian import hessian as PyHessian
    from pyhessian.utils import hessian_vector_product

    from hessop import HessianOperator

    config = problem.config
    model, crit, data = problem.model, problem.criterion, (problem.x, problem.y)
    k = config["matmat_columns"]
    v, V = problem.vector(), problem.vector(1, k)
    v_torch, V_torch = problem.tensor(v), problem.tensor(V)
    v_pieces = problem.split(v_torch)

    H = HessianOperator(model, crit, data)
    H_pytorch = HessianOperator(model, crit, data, layer_rules=False)
    H_func = HessianOperator(model, crit, data, backend="func")
    H_jvp = HessianOperator(model, crit, [data], backend="func", cache_budget=0)

    def double_backward_with_forward():
        loss = crit(model(problem.x), problem.y)
        grads = torch.autograd.grad(loss, problem.params, create_graph=True)
        torch.autograd.grad(grads, problem.params, grad_outputs=v_pieces)

    pyhessian = PyHessian(model, crit, data=data, cuda=problem.device == "cuda")
    curvlinops = HessianLinearOperator(
        model, crit, problem.params, [data], check_deterministic=False
    )
    eigenthings = EigenthingsOperator(model, [data], supervised_loss(crit))

    cases = {
        "gradient": problem.gradient,
        "hessop": lambda: H.matvec(v),
        "hessop, PyTorch second-derivative rules": lambda: H_pytorch.matvec(v),
        "hessop matmat, per vector": lambda: H.matmat(V),
        "hessop backend='func' (linearised)": lambda: H_func.matvec(v),
        "hessop backend='func', no cache (jvp per vector)": lambda: H_jvp.matvec(v),
        "double backward, forward included": double_backward_with_forward,
        "PyHessian": lambda: hessian_vector_product(
            pyhessian.gradsH, pyhessian.params, v_pieces
        ),
        "curvlinops": lambda: curvlinops @ v_torch,
        "curvlinops matmat, per vector": lambda: curvlinops @ V_torch,
        "hessian-eigenthings": lambda: eigenthings.matvec(v_torch),
    }
    compile_s = compile_error = None
    if config["compile"]:
        try:
            H_compiled = HessianOperator(
                model,
                crit,
                data,
                backend="func",
                compile=True,
                check_deterministic=False,
            )
            _, compile_s = timed(lambda: H_compiled.matvec(v))
            cases["hessop backend='func', compile=True"] = lambda: H_compiled.matvec(v)
        except Exception as error:  # a failed compilation is a result to report
            compile_error = f"{type(error).__name__}: {error}".splitlines()[0]
    columns = {"hessop matmat, per vector": k, "curvlinops matmat, per vector": k}
    result = time_cases(problem, cases, config["repeats"], columns)

    # Agreement of every product with hessop's default one, relative.
    reference = H.matvec(v)
    scale = float(np.linalg.norm(reference))
    agreement = {
        "PyHessian": flatten(
            hessian_vector_product(pyhessian.gradsH, pyhessian.params, v_pieces)
        ),
        "curvlinops": (curvlinops @ v_torch).cpu().numpy(),
        "hessian-eigenthings": eigenthings.matvec(v_torch).cpu().numpy(),
        "hessop, PyTorch second-derivative rules": H_pytorch.matvec(v),
        "hessop backend='func' (linearised)": H_func.matvec(v),
    }
    differences = {
        name: float(np.linalg.norm(value - reference)) / scale
        for name, value in agreement.items()
    }
    return {
        "cases": result,
        "compile_s": compile_s,
        "compile_error": compile_error,
        "differences": differences,
    }


def task_full_data(problem: Problem) -> dict[str, Any]:
    """Time a full-data product against a full-data gradient pass."""
    from curvlinops import HessianLinearOperator
    from hessian_eigenthings import HessianOperator as EigenthingsOperator
    from hessian_eigenthings import supervised_loss
    from pyhessian import hessian as PyHessian

    from hessop import HessianOperator

    config = problem.config
    model, crit, batches = problem.model, problem.criterion, problem.batches
    v = problem.vector()
    v_torch = problem.tensor(v)
    v_pieces = problem.split(v_torch)

    cached = HessianOperator(model, crit, batches, cache_budget="unlimited")
    uncached = HessianOperator(model, crit, batches)
    pyhessian = PyHessian(
        model, crit, dataloader=batches, cuda=problem.device == "cuda"
    )
    curvlinops = HessianLinearOperator(
        model, crit, problem.params, batches, check_deterministic=False
    )
    eigenthings = EigenthingsOperator(model, batches, supervised_loss(crit))
    cases = {
        "gradient": lambda: problem.gradient(batches),
        "hessop, cache_budget='unlimited'": lambda: cached.matvec(v),
        "hessop, no cache": lambda: uncached.matvec(v),
        "PyHessian": lambda: pyhessian.dataloader_hv_product(v_pieces),
        "curvlinops": lambda: curvlinops @ v_torch,
        "hessian-eigenthings": lambda: eigenthings.matvec(v_torch),
    }
    result = time_cases(problem, cases, config["full_repeats"])
    return {
        "cases": result,
        "num_samples": sum(len(y) for _, y in batches),
        "num_batches": len(batches),
        "cached_graph_bytes": cached._graph_cache.nbytes,
    }


def task_eigen_reference(problem: Problem) -> dict[str, Any]:
    """Compute the top two eigenvalues in float64 by scipy's eigsh, tolerance 1e-10."""
    import torch
    from scipy.sparse.linalg import eigsh

    double = Problem(problem.path, problem.threads, problem.device, dtype=torch.float64)
    operator = plain_hessian(double)
    (values, vectors), seconds = timed(
        lambda: eigsh(operator, k=2, which="LA", tol=1e-10, ncv=24, v0=None)
    )
    order = values.argsort()[::-1]
    values = values[order]
    return {
        "eigenvalues": [float(x) for x in values],
        "matvecs": operator.counter["matvecs"],
        "seconds": seconds,
        "residual": residual(operator, float(values[0]), vectors[:, order[0]]),
    }


def task_eigen_hessop(problem: Problem, method: str = "lanczos") -> dict[str, Any]:
    """Top eigenvalue with hessop.eigenvalues, construction included."""
    import hessop

    def run():
        H = hessop.HessianOperator(
            problem.model, problem.criterion, (problem.x, problem.y)
        )
        return H, hessop.eigenvalues(H, k=1, method=method, seed=0)

    (H, result), seconds = timed(run)
    eigenvalue = float(result.eigenvalues[0])
    return {
        "eigenvalue": eigenvalue,
        "matvecs": H.num_matvecs + 2,  # the determinism check multiplies twice
        "seconds": seconds,
        "converged": bool(result.converged[0]),
        "residual": residual(
            plain_hessian(problem), eigenvalue, result.eigenvectors[:, 0]
        ),
    }


def task_eigen_hessop_power(problem: Problem) -> dict[str, Any]:
    return task_eigen_hessop(problem, method="power")


def task_eigen_hessop_steps(problem: Problem) -> dict[str, Any]:
    """Record the top Ritz value after each step of one Lanczos run, with its time.

    The Ritz values of the first ``j`` steps are those of the leading
    ``j x j`` block of the tridiagonal matrix, so one run of
    :func:`hessop.lanczos` gives the estimate after every product. The clock
    starts before the operator is built.
    """
    from scipy.linalg import eigvalsh_tridiagonal

    import hessop

    times = []
    start = time.perf_counter()
    H = hessop.HessianOperator(problem.model, problem.criterion, (problem.x, problem.y))
    original = H._apply

    def timed_apply(Vt):
        result = original(Vt)
        times.append(time.perf_counter() - start)
        return result

    H._apply = timed_apply
    steps = problem.config["lanczos_steps"]
    result = hessop.lanczos(H, steps, seed=0)
    trajectory = [
        [
            times[j - 1],
            float(eigvalsh_tridiagonal(result.alpha[:j], result.beta[: j - 1])[-1]),
        ]
        for j in range(1, len(result.alpha) + 1)
    ]
    return {
        "eigenvalue": trajectory[-1][1],
        "matvecs": len(times) + 2,  # the determinism check multiplies twice
        "seconds": times[-1],
        "trajectory": trajectory,
        "products_before_first_step": 2,
    }


def task_eigen_pyhessian(problem: Problem) -> dict[str, Any]:
    """PyHessian's power iteration: its defaults, then a fixed number of iterations."""
    import torch

    module = importlib.import_module("pyhessian.hessian")

    original = module.hessian_vector_product
    runs = {}
    for seed, (name, kwargs) in enumerate(
        (
            ("defaults", {}),
            (
                "yardstick",
                {
                    "maxIter": problem.config["pyhessian_yardstick_iterations"],
                    "tol": 0.0,
                },
            ),
        )
    ):
        # PyHessian draws its start vector from torch's global generator.
        torch.manual_seed(seed)
        trajectory = Trajectory()

        def counted(gradsH, params, v, trajectory=trajectory):
            Hv = original(gradsH, params, v)
            trajectory.record(flatten(v), flatten(Hv))
            return Hv

        module.hessian_vector_product = counted
        trajectory.start = time.perf_counter()

        def run(kwargs=kwargs):
            comp = module.hessian(
                problem.model,
                problem.criterion,
                data=(problem.x, problem.y),
                cuda=problem.device == "cuda",
            )
            return comp.eigenvalues(top_n=1, **kwargs)

        (values, vectors), seconds = timed(run)
        eigenvalue = float(values[0])
        runs[name] = {
            "eigenvalue": eigenvalue,
            "matvecs": trajectory.matvecs,
            "seconds": seconds,
            "trajectory": trajectory.points,
            "residual": residual(
                plain_hessian(problem), eigenvalue, flatten(vectors[0])
            ),
        }
    module.hessian_vector_product = original
    return {**runs}


def task_eigen_eigenthings(problem: Problem) -> dict[str, Any]:
    """hessian-eigenthings' power iteration with its defaults."""
    from hessian_eigenthings import HessianOperator as EigenthingsOperator
    from hessian_eigenthings import power_iteration_one, supervised_loss

    trajectory = Trajectory()

    def run():
        operator = EigenthingsOperator(
            problem.model, [(problem.x, problem.y)], supervised_loss(problem.criterion)
        )
        original = operator.matvec

        def counted(v):
            Hv = original(v)
            trajectory.record(v.cpu().numpy(), Hv.cpu().numpy())
            return Hv

        operator.matvec = counted
        trajectory.start = time.perf_counter()
        return power_iteration_one(operator, seed=0)

    (eigenvalue, vector, _, _, converged), seconds = timed(run)
    return {
        "eigenvalue": float(eigenvalue),
        "matvecs": trajectory.matvecs,
        "seconds": seconds,
        "converged": bool(converged),
        "trajectory": trajectory.points,
        "residual": residual(
            plain_hessian(problem), float(eigenvalue), vector.cpu().numpy()
        ),
    }


def counted_curvlinops(problem: Problem, counter: dict[str, int]) -> Any:
    """Return curvlinops' Hessian of the one batch, counting its products."""
    from curvlinops import HessianLinearOperator

    H = HessianLinearOperator(
        problem.model, problem.criterion, problem.params, [(problem.x, problem.y)]
    )
    original = H._matmat

    def counted(M):
        counter["matvecs"] += M[0].shape[-1]
        return original(M)

    H._matmat = counted
    return H


def task_eigen_curvlinops(problem: Problem) -> dict[str, Any]:
    """curvlinops' operator with scipy's eigsh, its documented route."""
    from scipy.sparse.linalg import eigsh

    counter = {"matvecs": 0}

    def run():
        H = counted_curvlinops(problem, counter)
        return eigsh(H.to_scipy(), k=1, which="LA", tol=EIGEN_RTOL)

    (values, vectors), seconds = timed(run)
    eigenvalue = float(values[0])
    return {
        "eigenvalue": eigenvalue,
        "matvecs": counter["matvecs"],
        "seconds": seconds,
        "residual": residual(plain_hessian(problem), eigenvalue, vectors[:, 0]),
    }


def task_trace_reference(problem: Problem) -> dict[str, Any]:
    """Estimate the trace with XTrace and many probes on the independent product."""
    import hessop

    operator = plain_hessian(problem)
    budget = problem.config["trace_reference_matvecs"]
    result, seconds = timed(
        lambda: hessop.trace(operator, method="xtrace", num_matvecs=budget, seed=123)
    )
    return {
        "estimate": result.estimate,
        "stderr": result.stderr,
        "matvecs": result.num_matvecs,
        "seconds": seconds,
    }


def task_trace_hessop(problem: Problem) -> dict[str, Any]:
    """Trace estimates of hessop's three methods at each budget and seed."""
    import hessop

    config = problem.config
    H = hessop.HessianOperator(problem.model, problem.criterion, (problem.x, problem.y))
    budgets, seeds = config["trace_budgets"], range(config["trace_seeds"])
    runs: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    # Hutchinson's estimate after m probes is the mean of its first m samples,
    # so one long run per seed gives every budget.
    start = time.perf_counter()
    runs["hutchinson"] = {str(m): [] for m in budgets}
    for seed in seeds:
        samples = hessop.hutchinson(H, num_matvecs=max(budgets), seed=seed).samples
        for m in budgets:
            runs["hutchinson"][str(m)].append(float(samples[:m].mean()))
    seconds["hutchinson"] = time.perf_counter() - start
    for method in ("hutch++", "xtrace"):
        start = time.perf_counter()
        runs[method] = {str(m): [] for m in budgets}
        for seed in seeds:
            for m in budgets:
                estimate = hessop.trace(H, method=method, num_matvecs=m, seed=seed)
                runs[method][str(m)].append(float(estimate.estimate))
        seconds[method] = time.perf_counter() - start
    matvecs = {
        "hutchinson": max(budgets) * len(seeds),
        "hutch++": sum(budgets) * len(seeds),
        "xtrace": sum(budgets) * len(seeds),
    }
    return {
        "estimates": runs,
        "seconds": seconds,
        "matvecs": matvecs,
    }


def task_trace_digits(problem: Problem) -> dict[str, Any]:
    """Trace estimates on a digits MLP, whose exact trace a dense Hessian gives.

    The ResNet's trace sums large eigenvalues of both signs, so its relative
    error can be ill-defined. This operator (2410 parameters, 1438 samples in
    8 batches, float64, trained for 30 epochs) has a trace known exactly.
    """
    import numpy as np
    import torch
    from torch import nn

    import hessop
    from hessop.datasets import load_dataset
    from hessop.models import build_model
    from hessop.training import train

    dataset, _ = load_dataset("digits")
    model = build_model(
        "mlp", num_classes=10, in_channels=1, image_size=8, seed=0, hidden=(32,)
    )
    train(model, dataset, epochs=30, batch_size=128, lr=0.1, seed=0)
    model = model.double().eval()
    x = torch.stack([dataset[i][0] for i in range(len(dataset))]).double()
    y = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    size = -(-len(y) // 8)
    batches = [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
    H = hessop.HessianOperator(
        model, nn.CrossEntropyLoss(), batches, cache_budget="unlimited"
    )
    exact = float(np.trace(H.to_dense()))

    budgets = problem.config["digits_trace_budgets"]
    seeds = range(problem.config["digits_trace_seeds"])
    estimates: dict[str, dict[str, list[float]]] = {
        method: {str(m): [] for m in budgets}
        for method in ("hutchinson", "hutch++", "xtrace")
    }
    for seed in seeds:
        samples = hessop.hutchinson(H, num_matvecs=max(budgets), seed=seed).samples
        for m in budgets:
            estimates["hutchinson"][str(m)].append(float(samples[:m].mean()))
        for method in ("hutch++", "xtrace"):
            for m in budgets:
                result = hessop.trace(H, method=method, num_matvecs=m, seed=seed)
                estimates[method][str(m)].append(float(result.estimate))
    return {
        "exact": exact,
        "parameters": H.shape[0],
        "num_samples": len(y),
        "estimates": estimates,
    }


def task_trace_pyhessian(problem: Problem) -> dict[str, Any]:
    """PyHessian's Hutchinson trace with its defaults."""
    from pyhessian import hessian as PyHessian

    def run():
        comp = PyHessian(
            problem.model,
            problem.criterion,
            data=(problem.x, problem.y),
            cuda=problem.device == "cuda",
        )
        return comp.trace()

    samples, seconds = timed(run)
    return {
        "estimate": float(statistics.fmean(samples)),
        "matvecs": len(samples),
        "seconds": seconds,
    }


def task_slq_hessop(problem: Problem) -> dict[str, Any]:
    import hessop

    steps = problem.config["slq_steps"]

    def run():
        H = hessop.HessianOperator(
            problem.model, problem.criterion, (problem.x, problem.y)
        )
        density = hessop.slq(H, num_steps=steps, seed=0)
        density.density()
        return H.num_matvecs + 2

    matvecs, seconds = timed(run)
    return {"matvecs": matvecs, "seconds": seconds}


def task_slq_pyhessian(problem: Problem) -> dict[str, Any]:
    module = importlib.import_module("pyhessian.hessian")

    original = module.hessian_vector_product
    counter = {"matvecs": 0}

    def counted(gradsH, params, v):
        counter["matvecs"] += 1
        return original(gradsH, params, v)

    module.hessian_vector_product = counted

    def run():
        comp = module.hessian(
            problem.model,
            problem.criterion,
            data=(problem.x, problem.y),
            cuda=problem.device == "cuda",
        )
        try:
            comp.density(iter=problem.config["slq_steps"], n_v=1)
        except RuntimeError as error:
            # PyHessian 0.1 ends density() with torch.eig, which PyTorch 2
            # removed; the Lanczos steps before it have run.
            return str(error).splitlines()[0]
        return None

    failure, seconds = timed(run)
    record = {"matvecs": counter["matvecs"], "seconds": seconds}
    if failure is not None:
        record["note"] = f"density() raised after its Lanczos steps: {failure}"
    return record


def task_slq_eigenthings(problem: Problem) -> dict[str, Any]:
    from hessian_eigenthings import HessianOperator as EigenthingsOperator
    from hessian_eigenthings import spectral_density, supervised_loss

    counter = {"matvecs": 0}

    def run():
        operator = EigenthingsOperator(
            problem.model, [(problem.x, problem.y)], supervised_loss(problem.criterion)
        )
        original = operator.matvec

        def counted(v):
            counter["matvecs"] += 1
            return original(v)

        operator.matvec = counted
        return spectral_density(
            operator, num_runs=1, lanczos_steps=problem.config["slq_steps"], seed=0
        )

    _, seconds = timed(run)
    return {"matvecs": counter["matvecs"], "seconds": seconds}


def task_slq_curvlinops(problem: Problem) -> dict[str, Any]:
    """curvlinops' Lanczos spectrum; it first estimates the spectral boundaries."""
    from curvlinops import lanczos_approximate_spectrum

    counter = {"matvecs": 0}

    def run():
        H = counted_curvlinops(problem, counter)
        return lanczos_approximate_spectrum(H, ncv=problem.config["slq_steps"])

    _, seconds = timed(run)
    return {"matvecs": counter["matvecs"], "seconds": seconds}


def memory_task(build: Any, columns: int | None = None) -> Any:
    """Return a task that measures the peak memory of three products."""

    def task(problem: Problem) -> dict[str, Any]:
        import gc
        import resource

        import psutil
        import torch

        # The inputs exist before the baseline, so that only the products and
        # their results count.
        inputs = [problem.vector(seed, columns) for seed in range(3)]
        gc.collect()
        if problem.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
        else:
            baseline = psutil.Process().memory_info().rss
        apply = build(problem)
        for v in inputs:
            apply(v)
        if problem.device == "cuda":
            peak = torch.cuda.max_memory_allocated()
            kind = "CUDA memory allocated by torch"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            kind = "resident set size of the process"
        return {
            "baseline_bytes": baseline,
            "peak_bytes": peak,
            "columns": columns,
            "memory": kind,
        }

    return task


def _memory_gradient(problem):
    return lambda v: problem.gradient()


def _memory_hessop(**options):
    def build(problem):
        from hessop import HessianOperator

        data = (problem.x, problem.y)
        return HessianOperator(problem.model, problem.criterion, data, **options).matvec

    return build


def _memory_matmat(block_size):
    def build(problem):
        from hessop import HessianOperator

        data = (problem.x, problem.y)
        H = HessianOperator(
            problem.model, problem.criterion, data, block_size=block_size
        )
        return H.matmat

    return build


def _memory_pyhessian(problem):
    from pyhessian import hessian as PyHessian
    from pyhessian.utils import hessian_vector_product

    comp = PyHessian(
        problem.model,
        problem.criterion,
        data=(problem.x, problem.y),
        cuda=problem.device == "cuda",
    )
    return lambda v: hessian_vector_product(
        comp.gradsH, comp.params, problem.split(problem.tensor(v))
    )


def _memory_curvlinops(problem):
    from curvlinops import HessianLinearOperator

    H = HessianLinearOperator(
        problem.model,
        problem.criterion,
        problem.params,
        [(problem.x, problem.y)],
        check_deterministic=False,
    )
    return lambda v: H @ problem.tensor(v)


def _memory_eigenthings(problem):
    from hessian_eigenthings import HessianOperator as EigenthingsOperator
    from hessian_eigenthings import supervised_loss

    operator = EigenthingsOperator(
        problem.model, [(problem.x, problem.y)], supervised_loss(problem.criterion)
    )
    return lambda v: operator.matvec(problem.tensor(v))


TASKS: dict[str, Any] = {
    "products": task_products,
    "full_data": task_full_data,
    "eigen_reference": task_eigen_reference,
    "eigen_hessop": task_eigen_hessop,
    "eigen_hessop_power": task_eigen_hessop_power,
    "eigen_hessop_steps": task_eigen_hessop_steps,
    "eigen_pyhessian": task_eigen_pyhessian,
    "eigen_eigenthings": task_eigen_eigenthings,
    "eigen_curvlinops": task_eigen_curvlinops,
    "trace_reference": task_trace_reference,
    "trace_hessop": task_trace_hessop,
    "trace_pyhessian": task_trace_pyhessian,
    "trace_digits": task_trace_digits,
    "slq_hessop": task_slq_hessop,
    "slq_pyhessian": task_slq_pyhessian,
    "slq_eigenthings": task_slq_eigenthings,
    "slq_curvlinops": task_slq_curvlinops,
    "memory_gradient": memory_task(_memory_gradient),
    "memory_hessop": memory_task(_memory_hessop()),
    "memory_hessop_pytorch_rules": memory_task(_memory_hessop(layer_rules=False)),
    "memory_hessop_func": memory_task(_memory_hessop(backend="func")),
    "memory_pyhessian": memory_task(_memory_pyhessian),
    "memory_curvlinops": memory_task(_memory_curvlinops),
    "memory_eigenthings": memory_task(_memory_eigenthings),
}
for _columns in sorted(set(FULL["memory_columns"]) | set(QUICK["memory_columns"])):
    TASKS[f"memory_matmat_{_columns}"] = memory_task(
        _memory_matmat(MATMAT_BLOCK_SIZE), _columns
    )
TASKS["memory_matmat_64_one_block"] = memory_task(_memory_matmat(None), 64)


def tasks_for(config: dict[str, Any]) -> list[str]:
    """Return the tasks a configuration runs, in order."""
    skipped = {
        f"memory_matmat_{k}"
        for k in set(FULL["memory_columns"]) | set(QUICK["memory_columns"])
        if k not in config["memory_columns"]
    }
    return [name for name in TASKS if name not in skipped | set(config["skip"])]


def run_task(name: str, path: Path, threads: int, device: str) -> dict[str, Any]:
    """Run task ``name`` on the problem saved at ``path``."""
    import warnings

    # The peers' own warnings (deprecated torch calls) are not part of the record.
    warnings.simplefilter("ignore")
    problem = Problem(path, threads, device)
    if name.startswith(("eigen_", "trace_", "slq_")) and name != "eigen_reference":
        # A long task is measured in gradients timed just before and after it,
        # so that a change of the machine's load during the task shows in both.
        before = problem.gradient_time()
        record = TASKS[name](problem)
        after = problem.gradient_time()
        record["gradient_s"] = (before + after) / 2
        record["gradient_s_before_after"] = [before, after]
    else:
        record = TASKS[name](problem)
    record["task"] = name
    return record


# ---------------------------------------------------------------------------
# Analysis and report


def _relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


def _time_to_accuracy(
    trajectory: list[list[float]], reference: float
) -> tuple[float | None, int | None]:
    """Return the time and product count of the first estimate within EIGEN_RTOL."""
    for index, (seconds, estimate) in enumerate(trajectory):
        if _relative_error(estimate, reference) <= EIGEN_RTOL:
            return seconds, index + 1
    return None, None


def eigen_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per top-eigenvalue run, with errors and matched times."""
    reference = results.get("eigen_reference", {}).get("eigenvalues", [None])[0]
    rows = []

    def add(tool, record, run=None, yardstick_note=None):
        run = run or record
        if "error" in record or "eigenvalue" not in run:
            rows.append({"tool": tool, "error": record.get("error", "missing")})
            return
        unit = record["gradient_s"]
        row = {
            "tool": tool,
            "eigenvalue": run["eigenvalue"],
            "relative_error": (
                None
                if reference is None
                else _relative_error(run["eigenvalue"], reference)
            ),
            "residual": run.get("residual"),
            "matvecs": run["matvecs"],
            "seconds": run["seconds"],
            "gradients": run["seconds"] / unit,
        }
        if "trajectory" in run and reference is not None:
            seconds, matvecs = _time_to_accuracy(run["trajectory"], reference)
            if seconds is None:
                row["accurate_gradients"] = run["seconds"] / unit
                row["accurate_note"] = yardstick_note
            else:
                row["accurate_gradients"] = seconds / unit
                row["accurate_matvecs"] = matvecs + run.get(
                    "products_before_first_step", 0
                )
        elif row["relative_error"] is not None and row["relative_error"] <= EIGEN_RTOL:
            row["accurate_gradients"] = row["gradients"]
        rows.append(row)

    for tool, task in (
        ("hessop Lanczos, estimate after each step", "eigen_hessop_steps"),
        ("hessop eigenvalues (Lanczos)", "eigen_hessop"),
        ("hessop power_iteration", "eigen_hessop_power"),
        ("curvlinops + scipy eigsh", "eigen_curvlinops"),
    ):
        if task in results:
            add(tool, results[task])
    if "eigen_pyhessian" in results:
        record = results["eigen_pyhessian"]
        iterations = record.get("yardstick", {}).get("matvecs")
        add("PyHessian eigenvalues() defaults", record, record.get("defaults"))
        add(
            f"PyHessian eigenvalues(maxIter={iterations}, tol=0)",
            record,
            record.get("yardstick"),
            f"never within {EIGEN_RTOL:g}: time of all {iterations} iterations",
        )
    if "eigen_eigenthings" in results:
        add(
            "hessian-eigenthings power_iteration_one",
            results["eigen_eigenthings"],
            yardstick_note=f"never within {EIGEN_RTOL:g}: time of the whole run",
        )
    return rows


def trace_rows(results: dict[str, Any]) -> tuple[float | None, list[dict[str, Any]]]:
    """Return the reference trace and, per method, errors and products to TRACE_RTOL."""
    reference = results.get("trace_reference", {}).get("estimate")
    rows: list[dict[str, Any]] = []
    record = results.get("trace_hessop", {})
    for method, estimates in record.get("estimates", {}).items():
        errors = {}
        needed = None
        for budget, values in estimates.items():
            if reference is None:
                continue
            error = statistics.median(_relative_error(v, reference) for v in values)
            errors[budget] = error
            if needed is None and error <= TRACE_RTOL:
                needed = int(budget)
        rows.append(
            {
                "tool": f"hessop {method}",
                "median_relative_error": errors,
                "matvecs_to_rtol": needed,
                "largest_budget": max(int(b) for b in estimates),
                "seconds_per_matvec": record["seconds"][method]
                / record["matvecs"][method],
                "gradients_per_matvec": record["seconds"][method]
                / record["matvecs"][method]
                / record["gradient_s"],
            }
        )
    pyhessian = results.get("trace_pyhessian", {})
    if "estimate" in pyhessian:
        error = (
            None
            if reference is None
            else _relative_error(pyhessian["estimate"], reference)
        )
        rows.append(
            {
                "tool": "PyHessian trace() defaults",
                "estimate": pyhessian["estimate"],
                "relative_error": error,
                "matvecs": pyhessian["matvecs"],
                "gradients": pyhessian["seconds"] / pyhessian["gradient_s"],
            }
        )
    return reference, rows


def digits_trace_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Return, per method, the median error at each budget on the digits MLP."""
    record = results.get("trace_digits", {})
    rows = []
    for method, estimates in record.get("estimates", {}).items():
        errors = {
            budget: statistics.median(
                _relative_error(v, record["exact"]) for v in values
            )
            for budget, values in estimates.items()
        }
        needed = next(
            (int(b) for b, error in errors.items() if error <= TRACE_RTOL), None
        )
        rows.append(
            {
                "tool": f"hessop {method}",
                "median_relative_error": errors,
                "matvecs_to_rtol": needed,
                "largest_budget": max(int(b) for b in estimates),
            }
        )
    return rows


def memory_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for task, record in results.items():
        if task.startswith("memory_") and "peak_bytes" in record:
            rows.append(
                {
                    "case": task.removeprefix("memory_"),
                    "peak_mib": record["peak_bytes"] / 2**20,
                    "above_baseline_mib": (
                        record["peak_bytes"] - record["baseline_bytes"]
                    )
                    / 2**20,
                    "columns": record["columns"],
                }
            )
    return rows


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Judge each target of the benchmark: the number, the limit, met or not."""
    results = summary["results"]
    out = []

    def judge(name, value, limit, note=""):
        met = None if value is None else value <= limit
        out.append(
            {"target": name, "value": value, "limit": limit, "met": met, "note": note}
        )

    cases = results.get("products", {}).get("cases", {})
    if cases:
        judge(
            "one-batch product / gradient (matvec, graph reused)",
            cases["hessop"]["ratio"],
            2.0,
        )
        judge(
            "one-batch product / gradient (matmat, per vector)",
            cases["hessop matmat, per vector"]["ratio"],
            2.0,
        )
    full = results.get("full_data", {}).get("cases", {})
    if full:
        judge(
            "full-data product / full-data gradient pass (graphs cached)",
            full["hessop, cache_budget='unlimited'"]["ratio"],
            2.2,
        )

    rows = {row["tool"]: row for row in eigen_rows(results) if "error" not in row}
    default_row = rows.get("hessop eigenvalues (Lanczos)")
    if default_row is not None:
        judge(
            "hessop eigenvalues() defaults, relative error of the top eigenvalue",
            default_row["relative_error"],
            EIGEN_RTOL,
        )
    hessop_row = rows.get("hessop Lanczos, estimate after each step")
    if hessop_row is not None:
        for tool, limit in (("PyHessian", 0.5), ("hessian-eigenthings", 0.25)):
            candidates = [
                row
                for name, row in rows.items()
                if name.startswith(tool) and "accurate_gradients" in row
            ]
            if not candidates or "accurate_gradients" not in hessop_row:
                judge(f"top eigenvalue time, hessop / {tool}", None, limit, "not run")
                continue
            # PyHessian runs twice from different start vectors; the faster run
            # to the accuracy is its time.
            peer = min(candidates, key=lambda row: row["accurate_gradients"])
            note = peer.get("accurate_note") or (
                f"{peer['tool']} reached {EIGEN_RTOL:g} after "
                f"{peer.get('accurate_matvecs')} products"
            )
            note += (
                f"; hessop reached it after {hessop_row.get('accurate_matvecs')} "
                "products, 2 of them the determinism check"
            )
            judge(
                f"top eigenvalue time at {EIGEN_RTOL:g}, hessop / {tool}",
                hessop_row["accurate_gradients"] / peer["accurate_gradients"],
                limit,
                note,
            )

    for label, trace in (
        ("digits MLP, exact reference", digits_trace_rows(results)),
        ("ResNet-20", trace_rows(results)[1]),
    ):
        by_tool = {row["tool"]: row for row in trace}
        if "hessop hutchinson" not in by_tool:
            continue
        plain = by_tool["hessop hutchinson"]
        plain_count = plain["matvecs_to_rtol"]
        best = [
            by_tool[name]["matvecs_to_rtol"]
            for name in ("hessop hutch++", "hessop xtrace")
            if name in by_tool and by_tool[name]["matvecs_to_rtol"] is not None
        ]
        value = min(best) if best else None
        if plain_count is not None:
            note = f"Hutchinson needs {plain_count}"
            met = None if value is None else value < plain_count
        else:
            note = (
                f"Hutchinson does not reach {TRACE_RTOL:.0%} within "
                f"{plain['largest_budget']} products"
            )
            met = None if value is None else True
        if label == "ResNet-20":
            reference = results.get("trace_reference", {})
            estimate, stderr = reference.get("estimate"), reference.get("stderr")
            if estimate is not None and stderr is not None and stderr > abs(estimate):
                note += (
                    f"; the reference trace {estimate:.3g} is within its standard "
                    f"error {stderr:.3g} of zero, so a relative error is not defined"
                )
        out.append(
            {
                "target": f"trace products to {TRACE_RTOL:.0%}, best of Hutch++ "
                f"and XTrace ({label})",
                "value": value,
                "limit": plain_count
                if plain_count is not None
                else plain["largest_budget"],
                "met": met,
                "note": note,
            }
        )

    memory = {row["case"]: row for row in memory_rows(results)}
    if "hessop" in memory and "pyhessian" in memory:
        judge(
            "matvec memory above baseline, hessop / PyHessian",
            memory["hessop"]["above_baseline_mib"]
            / memory["pyhessian"]["above_baseline_mib"],
            1.3,
        )
    blocked = sorted(
        (row["columns"], row["above_baseline_mib"])
        for name, row in memory.items()
        if name.startswith("matmat_") and name != "matmat_64_one_block"
    )
    if len(blocked) >= 2:
        n = PARAMETERS
        (k0, m0), (k1, m1) = blocked[-2], blocked[-1]
        # Beyond the block only the result Y (float32) grows with the columns.
        # The limit is one block's working set, four float32 blocks of
        # MATMAT_BLOCK_SIZE vectors, which a pass may hold while the
        # allocator still keeps the previous block's memory.
        output = (k1 - k0) * n * 4 / 2**20
        block = 4 * MATMAT_BLOCK_SIZE * n * 4 / 2**20
        note = f"the result grows by {output:.0f} MiB"
        if "matmat_64_one_block" in memory and k1 == 64:
            one_block = memory["matmat_64_one_block"]["above_baseline_mib"]
            growth = one_block - m0 - output
            note += f"; in one block of 64 columns it is {growth:.0f} MiB"
        judge(
            f"matmat memory growth from {k0} to {k1} columns beyond the result (MiB)",
            m1 - m0 - output,
            block,
            note,
        )
    return out


def _format(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_format(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any]) -> str:
    """Render the summary as markdown tables."""
    results, config = summary["results"], summary["config"]
    machine_info = summary["machine"]
    parts = [
        "# hessop compared with PyHessian, curvlinops and hessian-eigenthings\n",
        f"Command: `{summary['command']}`; {machine_info['cpu']}, "
        f"{machine_info['cores']} cores, {summary['threads']} torch threads "
        f"(OMP_WAIT_POLICY={summary['omp_wait_policy']}), float32; wall time "
        f"{summary['wall_s']:.0f} s.\n",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in machine_info["versions"].items())
        + ".\n",
        f"CIFAR ResNet-20 after {config['train_steps']} SGD steps, BatchNorm in "
        f"eval mode; one batch of {config['batch_size']} images 3x32x32; full "
        f"data {config['batch_size'] * config['full_batches']} images in "
        f"{config['full_batches']} batches.\n",
    ]

    products = results.get("products", {})
    if "cases" in products:
        parts.append(
            f"\n## One-batch product ({config['repeats']} interleaved rounds)\n\n"
        )
        rows = [
            [name, case["median_s"], case["ratio"]]
            for name, case in products["cases"].items()
        ]
        parts.append(_table(["case", "median s", "/ gradient"], rows))
        if products.get("compile_error"):
            parts.append(f"\n`compile=True` failed: {products['compile_error']}\n")
        if products.get("compile_s") is not None:
            parts.append(
                f"\n`compile=True` spent {products['compile_s']:.0f} s on its first "
                "product.\n"
            )
        parts.append(
            "\nRelative difference of each product from hessop's default: "
            + ", ".join(f"{k} {v:.1e}" for k, v in products["differences"].items())
            + ".\n"
        )

    full = results.get("full_data", {})
    if "cases" in full:
        parts.append(
            f"\n## Full-data product ({full['num_samples']} samples in "
            f"{full['num_batches']} batches, {config['full_repeats']} rounds)\n\n"
        )
        rows = [
            [name, case["median_s"], case["ratio"]]
            for name, case in full["cases"].items()
        ]
        parts.append(_table(["case", "median s", "/ gradient pass"], rows))
        parts.append(
            f"\nThe cached graphs took an estimated "
            f"{full['cached_graph_bytes'] / 2**20:.0f} MiB.\n"
        )

    reference = results.get("eigen_reference", {})
    if "eigenvalues" in reference:
        l1, l2 = reference["eigenvalues"]
        parts.append(
            f"\n## Top eigenvalue\n\nReference (scipy eigsh, float64, tol 1e-10, "
            f"{reference['matvecs']} products): lambda_1 = {l1:.6g}, "
            f"lambda_2 = {l2:.6g}, residual {reference['residual']:.1e}.\n\n"
        )
        rows = [
            [
                row["tool"],
                row.get("eigenvalue"),
                row.get("relative_error"),
                row.get("residual"),
                row.get("matvecs"),
                row.get("gradients"),
                row.get("accurate_gradients"),
                row.get("accurate_note") or "",
            ]
            for row in eigen_rows(results)
        ]
        parts.append(
            _table(
                [
                    "tool",
                    "eigenvalue",
                    "rel. error",
                    "||Hv - lv|| / |l|",
                    "products",
                    "time / gradient",
                    f"time to {EIGEN_RTOL:g} / gradient",
                    "note",
                ],
                rows,
            )
        )

    trace_reference, trace = trace_rows(results)
    if trace:
        record = results.get("trace_reference", {})
        parts.append(
            f"\n## Trace\n\nReference: XTrace with {record.get('matvecs')} products "
            f"on the independent product, {_format(trace_reference)} "
            f"(standard error {_format(record.get('stderr'))}).\n\n"
        )
        budgets = config["trace_budgets"]
        rows = []
        for row in trace:
            errors = row.get("median_relative_error", {})
            rows.append(
                [row["tool"]]
                + [errors.get(str(b)) for b in budgets]
                + [
                    row.get("matvecs_to_rtol") or row.get("matvecs"),
                    row.get("gradients_per_matvec") or row.get("gradients"),
                ]
            )
        parts.append(
            _table(
                ["tool"]
                + [f"error at {b}" for b in budgets]
                + [
                    f"products to {TRACE_RTOL:.0%} (PyHessian: products used)",
                    "time per product / gradient (PyHessian: total)",
                ],
                rows,
            )
        )
        if "trace_pyhessian" in results and "estimate" in results["trace_pyhessian"]:
            row = trace[-1]
            parts.append(
                f"\nPyHessian's trace: {_format(row['estimate'])}, relative error "
                f"{_format(row['relative_error'])}.\n"
            )

    digits = digits_trace_rows(results)
    if digits:
        record = results["trace_digits"]
        parts.append(
            f"\n## Trace on the digits MLP\n\n{record['parameters']} parameters, "
            f"{record['num_samples']} samples in 8 batches, float64; exact trace "
            f"{record['exact']:.6g} from the dense Hessian. Median relative error "
            f"over {config['digits_trace_seeds']} seeds:\n\n"
        )
        budgets = config["digits_trace_budgets"]
        rows = [
            [row["tool"]]
            + [row["median_relative_error"].get(str(b)) for b in budgets]
            + [row["matvecs_to_rtol"]]
            for row in digits
        ]
        parts.append(
            _table(
                ["method"]
                + [str(b) for b in budgets]
                + [f"products to {TRACE_RTOL:.0%}"],
                rows,
            )
        )

    slq = [
        (tool, results[task])
        for tool, task in (
            ("hessop slq", "slq_hessop"),
            ("PyHessian density", "slq_pyhessian"),
            ("hessian-eigenthings spectral_density", "slq_eigenthings"),
            ("curvlinops lanczos_approximate_spectrum", "slq_curvlinops"),
        )
        if task in results and "seconds" in results[task]
    ]
    if slq:
        parts.append(f"\n## Spectral density, {config['slq_steps']} Lanczos steps\n\n")
        rows = [
            [
                tool,
                r["matvecs"],
                r["seconds"],
                r["seconds"] / r["gradient_s"],
                r.get("note", ""),
            ]
            for tool, r in slq
        ]
        parts.append(_table(["tool", "products", "s", "time / gradient", "note"], rows))

    memory = memory_rows(results)
    if memory:
        parts.append("\n## Peak memory, each case in its own process\n\n")
        rows = [
            [r["case"], r["columns"] or 1, r["peak_mib"], r["above_baseline_mib"]]
            for r in memory
        ]
        parts.append(
            _table(["case", "columns", "peak RSS MiB", "above baseline MiB"], rows)
        )

    parts.append("\n## Targets\n\n")
    rows = [
        [
            t["target"],
            t["value"],
            t["limit"],
            {True: "met", False: "missed", None: "not measured"}[t["met"]],
            t["note"],
        ]
        for t in summary["targets"]
    ]
    parts.append(_table(["target", "value", "limit", "", "note"], rows))
    failed = [task for task, r in results.items() if "error" in r]
    if failed:
        parts.append(f"\nTasks that failed: {', '.join(failed)}.\n")
    return "".join(parts)


def run_worker(task: str, args: argparse.Namespace, problem: Path) -> dict[str, Any]:
    """Run one task in a fresh process and return the record it prints."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        task,
        "--problem",
        str(problem),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    start = time.perf_counter()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        check=False,
    )
    elapsed = time.perf_counter() - start
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stderr[-4000:])
        return {"task": task, "error": completed.stderr.strip().splitlines()[-1:]}
    record = json.loads(lines[-1])
    record["process_wall_s"] = elapsed
    print(f"  {task}: {elapsed:.0f} s", flush=True)
    return record


def machine() -> dict[str, Any]:
    """Describe the machine and the software versions."""
    import importlib.metadata

    import numpy
    import scipy
    import torch

    cpu = platform.processor()
    try:
        lscpu = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True
        ).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    versions = {"python": platform.python_version()}
    versions["torch"] = torch.__version__
    versions["numpy"] = numpy.__version__
    versions["scipy"] = scipy.__version__
    for package in (
        "hessop",
        "pyhessian",
        "curvlinops-for-pytorch",
        "hessian-eigenthings",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {"cpu": cpu, "cores": os.cpu_count(), "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="batches of 32 and fewer repeats"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark-results"),
        help="output directory (default benchmark-results)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads per process (default 2)"
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device of the model and data (default cpu)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="run only these tasks (default all): " + ", ".join(TASKS),
    )
    parser.add_argument(
        "--render",
        type=Path,
        help="only rewrite the tables from an earlier run's compare.json",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--problem", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # GNU OpenMP threads spin while they wait for work. On a machine shared
    # with other processes a spinning thread occupies a core that another one
    # needs. That made a 2-thread gradient 20 times slower than a 1-thread one
    # in a measurement on a 2-core machine, and passive waiting avoids it.
    # Workers inherit the setting, and an explicit OMP_WAIT_POLICY is kept.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if args.render:
        render(args.render)
        return
    if args.worker:
        record = run_task(args.worker, args.problem, args.threads, args.device)
        print(json.dumps(record))
        return

    config = dict(QUICK if args.quick else FULL)
    args.out.mkdir(parents=True, exist_ok=True)
    problem = args.out / "problem.pt"
    start = time.perf_counter()
    print(f"preparing the problem in {problem}", flush=True)
    prepare_problem(problem, config, args.threads)

    selected = args.tasks or tasks_for(config)
    unknown = sorted(set(selected) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    results: dict[str, Any] = {}
    for task in TASKS:
        if task in selected:
            results[task] = run_worker(task, args, problem)
            # Each result is saved as it arrives, for a run that stops early.
            partial = {"config": config, "results": results}
            (args.out / "partial.json").write_text(json.dumps(partial) + "\n")

    command = "python benchmarks/compare.py" + (" --quick" if args.quick else "")
    if args.threads != 2:
        command += f" --threads {args.threads}"
    summary = {
        "command": command,
        "config": config,
        "threads": args.threads,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "dtype": "float32",
        "machine": machine(),
        "wall_s": time.perf_counter() - start,
        "results": results,
    }
    # The measurements are written before the analysis, so that an error in the
    # analysis loses no measurement; --render repeats the analysis.
    (args.out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    render(args.out / "compare.json")


def render(path: Path) -> None:
    """Add the targets to the summary in ``path`` and write the markdown table."""
    summary = json.loads(path.read_text())
    summary["targets"] = targets(summary)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    path.with_suffix(".md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
