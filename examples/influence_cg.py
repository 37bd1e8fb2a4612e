"""A damped inverse-Hessian-vector product with SciPy's conjugate gradients.

Influence functions need ``(H + lambda I)^{-1} g`` for a gradient ``g``. The
operator's sum with a scaled identity is again a LinearOperator, so
``scipy.sparse.linalg.cg`` solves the system with one Hessian-vector product
per iteration. The damping ``lambda`` must make ``H + lambda I`` positive
definite, so it must exceed minus the smallest eigenvalue of ``H``. This
script computes that eigenvalue first with ``eigsh``.

Run it with ``python examples/influence_cg.py``.
"""

import numpy as np
import scipy.sparse.linalg
import torch
from sklearn.datasets import load_digits
from torch import nn

from hessop import HessianOperator


def main() -> None:
    digits = load_digits()
    x = torch.tensor(digits.data[:500] / 16.0, dtype=torch.float64)
    y = torch.tensor(digits.target[:500], dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    loss_fn = nn.CrossEntropyLoss()
    H = HessianOperator(model, loss_fn, (x, y))

    # The gradient of one test point's loss, flattened in the operator's layout.
    test_loss = loss_fn(model(x[:1]), y[:1])
    names = H.layout.names
    parameters = dict(model.named_parameters())
    grads = torch.autograd.grad(test_loss, [parameters[name] for name in names])
    g = H.flatten(dict(zip(names, grads, strict=True))).numpy()

    # The smallest eigenvalue sets the damping: H + damping * I then has its
    # smallest eigenvalue at 0.1, and cg converges at a rate set by the
    # condition number (largest + damping) / 0.1.
    smallest = scipy.sparse.linalg.eigsh(
        H, k=1, which="SA", tol=1e-6, return_eigenvectors=False
    )[0]
    damping = max(0.0, -smallest) + 0.1
    print(f"smallest eigenvalue {smallest:.4f}, damping {damping:.4f}")
    n = H.shape[0]
    damped = H + damping * scipy.sparse.linalg.aslinearoperator(np.eye(n))
    start = H.num_matvecs
    solution, info = scipy.sparse.linalg.cg(damped, g, rtol=1e-8, maxiter=300)
    residual = np.linalg.norm(damped @ solution - g) / np.linalg.norm(g)
    used = H.num_matvecs - start
    print(f"cg: info {info}, {used} products, relative residual {residual:.1e}")
    if info != 0:
        raise SystemExit("cg did not converge; raise the damping or maxiter")


if __name__ == "__main__":
    main()
