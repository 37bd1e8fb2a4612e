"""Top Hessian eigenvalues with the data split across MPI ranks.

Every rank loads the digits data, keeps its own share of the batches, and
builds the operator with the communicator; eigsh runs identically on every
rank because every product returns the same vector everywhere. Only rank 0
prints.

Run it with ``mpiexec -n 2 python -m mpi4py examples/mpi_eigsh.py``.
"""

import numpy as np
import scipy.sparse.linalg
import torch
from mpi4py import MPI
from sklearn.datasets import load_digits
from torch import nn

from hessop import HessianOperator, partition


def main() -> None:
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target, dtype=torch.long)
    batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(y), 128)]

    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    H = HessianOperator(
        model, nn.CrossEntropyLoss(), partition(batches, comm), comm=comm
    )

    v0 = np.random.default_rng(0).standard_normal(H.shape[0])  # the same on every rank
    values = scipy.sparse.linalg.eigsh(
        H, k=3, which="LA", v0=v0, tol=1e-8, return_eigenvectors=False
    )
    digests = comm.allgather(np.sort(values).tobytes())
    if comm.Get_rank() == 0:
        print(
            f"{comm.Get_size()} ranks, {H.num_samples} samples, "
            f"{H.num_matvecs} products"
        )
        print(f"top eigenvalues: {np.sort(values)[::-1]}")
        print(f"identical on every rank: {all(d == digests[0] for d in digests)}")


if __name__ == "__main__":
    main()
