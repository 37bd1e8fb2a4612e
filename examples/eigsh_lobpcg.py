"""SciPy's eigsh and lobpcg on the same HessianOperator.

Both solvers take the operator as it is. eigsh (ARPACK's implicitly restarted
Lanczos method) needs one product per step; lobpcg multiplies a block of
vectors at once, which the operator serves with one pass over the data per
block.

Run it with ``python examples/eigsh_lobpcg.py``.
"""

import numpy as np
import scipy.sparse.linalg
import torch
from sklearn.datasets import load_digits
from torch import nn

from hessop import HessianOperator


def main() -> None:
    digits = load_digits()
    x = torch.tensor(digits.data[:600] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[:600], dtype=torch.long)
    batches = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(y), 128)]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    H = HessianOperator(model, nn.CrossEntropyLoss(), batches)
    print(f"Hessian: {H.shape[0]} x {H.shape[1]} over {H.num_samples} samples")

    k = 3
    v0 = np.random.default_rng(0).standard_normal(H.shape[0])
    values_eigsh = scipy.sparse.linalg.eigsh(
        H, k=k, which="LA", v0=v0, tol=1e-10, return_eigenvectors=False
    )
    print(f"eigsh:  {np.sort(values_eigsh)[::-1]}  ({H.num_matvecs} products)")

    start = H.num_matvecs
    X = np.random.default_rng(1).standard_normal((H.shape[0], k))
    values_lobpcg, _ = scipy.sparse.linalg.lobpcg(
        H, X, largest=True, tol=1e-8, maxiter=300
    )
    used = H.num_matvecs - start
    print(f"lobpcg: {np.sort(values_lobpcg)[::-1]}  ({used} products)")

    gap = np.abs(np.sort(values_eigsh) - np.sort(values_lobpcg)).max()
    print(f"largest difference between the two: {gap:.2e}")


if __name__ == "__main__":
    main()
