"""Check hessop's CUDA products against float64 on the CPU, then benchmark on the GPU.

Run ``python benchmarks/gpu_check.py`` on a machine with CUDA. It

1. multiplies random vectors with the Hessian of a small convolutional
   network and of CIFAR ResNet-20 on the GPU, in float64 and float32. It
   covers each product option (layer rules on and off, ``backend='func'``)
   on one batch and on two batches with cached graphs, and compares every
   product with the same product in float64 on the CPU;
2. compares the top eigenvalue on the GPU with the one on the CPU;
3. runs ``benchmarks/compare.py --device cuda`` to record the comparison
   table on the GPU (skip it with ``--no-compare``).

It writes ``gpu_check.json`` into ``--out`` and exits with status 1 if a
product misses its tolerance. Without CUDA it prints that it skipped the
check and exits with status 0, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Relative error allowed against float64 on the CPU. Float64 on the GPU
# differs only in the order of its roundings. Float32 carries about 1e-7
# relative rounding per operation, which the depth of ResNet-20 amplifies.
TOLERANCE = {"float64": 1e-10, "float32": 1e-3}
EIGENVALUE_TOLERANCE = 1e-3
OPTIONS = {
    "default": {},
    "layer_rules=False": {"layer_rules": False},
    "backend='func'": {"backend": "func"},
}


def problems() -> dict[str, tuple[Any, Any]]:
    """Return the models and data the check runs on, in float64 on the CPU."""
    import torch
    from torch import nn

    from hessop.models import build_model

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    small = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    resnet = build_model("resnet20", num_classes=10, in_channels=3, seed=0)
    out = {}
    for name, model, size in (("small CNN", small, 8), ("ResNet-20", resnet, 32)):
        x = torch.randn(16, 3, size, size, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 10, (16,), generator=generator)
        out[name] = (model.double().eval(), [(x[:8], y[:8]), (x[8:], y[8:])])
    return out


def check_products() -> list[dict[str, Any]]:
    """Compare every CUDA product with float64 on the CPU."""
    import numpy as np
    import torch
    from torch import nn

    import hessop

    records = []
    for name, (model, batches) in problems().items():
        criterion = nn.CrossEntropyLoss()
        cpu = hessop.HessianOperator(model, criterion, batches)
        X = np.random.default_rng(0).standard_normal((cpu.shape[0], 3))
        expected = cpu.matmat(X)
        scale = np.abs(expected).max()
        for dtype_name, dtype in (
            ("float64", torch.float64),
            ("float32", torch.float32),
        ):
            for option_name, options in OPTIONS.items():
                for data_name, data, budget in (
                    ("one batch", batches[0], 0),
                    ("two batches, cached", batches, "unlimited"),
                ):
                    reference = (
                        expected
                        if data_name != "one batch"
                        else hessop.HessianOperator(model, criterion, data).matmat(X)
                    )
                    start = time.perf_counter()
                    H = hessop.HessianOperator(
                        model,
                        criterion,
                        data,
                        device="cuda",
                        dtype=dtype,
                        cache_budget=budget,
                        **options,
                    )
                    product = H.matmat(X.astype(H.dtype))
                    torch.cuda.synchronize()
                    error = float(np.abs(product - reference).max() / scale)
                    records.append(
                        {
                            "model": name,
                            "dtype": dtype_name,
                            "options": option_name,
                            "data": data_name,
                            "relative_error": error,
                            "tolerance": TOLERANCE[dtype_name],
                            "passed": error <= TOLERANCE[dtype_name],
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    print(
                        f"{name:10s} {dtype_name} {option_name:18s} {data_name:20s} "
                        f"error {error:.1e} "
                        f"({'ok' if error <= TOLERANCE[dtype_name] else 'FAILED'})",
                        flush=True,
                    )
    return records


def check_eigenvalue() -> dict[str, Any]:
    """Compare the top eigenvalue of ResNet-20 on the GPU with the CPU's."""
    import torch
    from torch import nn

    import hessop

    model, batches = problems()["ResNet-20"]
    criterion = nn.CrossEntropyLoss()
    cpu = hessop.eigenvalues(
        hessop.HessianOperator(model, criterion, batches[0]), seed=0
    ).eigenvalues[0]
    H = hessop.HessianOperator(
        model, criterion, batches[0], device="cuda", dtype=torch.float32
    )
    gpu = hessop.eigenvalues(H, seed=0).eigenvalues[0]
    error = abs(gpu - cpu) / abs(cpu)
    print(
        f"top eigenvalue: CPU float64 {cpu:.8g}, CUDA float32 {gpu:.8g}, "
        f"error {error:.1e}"
    )
    return {
        "cpu_float64": float(cpu),
        "cuda_float32": float(gpu),
        "relative_error": float(error),
        "tolerance": EIGENVALUE_TOLERANCE,
        "passed": bool(error <= EIGENVALUE_TOLERANCE),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmark-results/gpu"),
        help="output directory (default benchmark-results/gpu)",
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip benchmarks/compare.py"
    )
    parser.add_argument(
        "--quick", action="store_true", help="pass --quick to benchmarks/compare.py"
    )
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("CUDA is not available; the GPU check needs a CUDA device, skipping it")
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "products": check_products(),
        "eigenvalue": check_eigenvalue(),
    }
    passed = (
        all(r["passed"] for r in record["products"]) and record["eigenvalue"]["passed"]
    )
    record["passed"] = passed
    (args.out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"correctness: {'passed' if passed else 'FAILED'}")

    if not args.no_compare:
        command = [
            sys.executable,
            str(Path(__file__).resolve().parent / "compare.py"),
            "--device",
            "cuda",
            "--out",
            str(args.out / "compare"),
        ]
        if args.quick:
            command.append("--quick")
        subprocess.run(command, check=False)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
