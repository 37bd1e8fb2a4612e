"""Time a full-data Hessian-vector product on 1 and on 2 MPI ranks.

Run ``python benchmarks/mpi_speedup.py``: it launches itself under
``mpiexec -n 1`` and ``mpiexec -n 2`` (one thread per rank), times the same
product on the same data, and writes ``mpi_speedup.json`` and
``mpi_speedup.md`` into ``--out`` with the speedup and the parallel
efficiency (speedup divided by the number of ranks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from mpi4py import MPI
    from torch import nn

    from hessop import HessianOperator, partition

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.samples, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (args.samples,), generator=generator)
    batches = [
        (images[i : i + args.batch_size], labels[i : i + args.batch_size])
        for i in range(0, args.samples, args.batch_size)
    ]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(16 * 64, 10),
    )
    H = HessianOperator(
        model,
        nn.CrossEntropyLoss(),
        partition(batches, comm),
        comm=comm,
        check_deterministic=False,
    )
    v = np.random.default_rng(0).standard_normal(H.shape[0]).astype(np.float32)
    H.matvec(v)  # warm-up
    times = []
    for _ in range(args.repeats):
        comm.Barrier()
        start = time.perf_counter()
        H.matvec(v)
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        times.append(elapsed)
    if comm.Get_rank() == 0:
        print(json.dumps({"ranks": comm.Get_size(), "n": H.shape[0], "times": times}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=1792, help="samples (default 1792)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed products (default 7)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    results = {}
    for ranks in (1, 2):
        command = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker"]
        command += [
            "--samples",
            str(args.samples),
            "--batch-size",
            str(args.batch_size),
        ]
        command += ["--repeats", str(args.repeats)]
        output = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=environment,
            timeout=600,
            check=True,
        ).stdout
        record = json.loads(output.strip().splitlines()[-1])
        record["median_s"] = statistics.median(record["times"])
        results[ranks] = record

    speedup = results[1]["median_s"] / results[2]["median_s"]
    report = {
        "what": "full-data Hessian-vector product, float32, one thread per rank",
        "samples": args.samples,
        "batch_size": args.batch_size,
        "parameters": results[1]["n"],
        "median_s": {str(k): r["median_s"] for k, r in results.items()},
        "speedup_2_ranks": speedup,
        "parallel_efficiency": speedup / 2,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mpi_speedup.json").write_text(json.dumps(report, indent=2) + "\n")
    table = (
        "| ranks | median time per product (s) |\n|---|---|\n"
        + "".join(f"| {k} | {r['median_s']:.4f} |\n" for k, r in results.items())
        + f"\nSpeedup on 2 ranks: {speedup:.2f}x, "
        f"parallel efficiency {speedup / 2:.0%}.\n"
    )
    (args.out / "mpi_speedup.md").write_text(table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
