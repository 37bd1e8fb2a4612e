"""Check a HessianOperator against the explicit Hessian of a small model.

The operator's dense matrix (built column by column from its products) is
compared with ``torch.func.hessian`` of the loss over all data at once. In
float64 the two agree to rounding error.

Run it with ``python examples/explicit_hessian_check.py``.
"""

import numpy as np
import torch
from torch import nn

from hessop import HessianOperator


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=generator)
    # Batches of 16: the last one has 2 samples and weighs 2/50.
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    loss_fn = nn.CrossEntropyLoss()
    H = HessianOperator(model, loss_fn, batches)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def risk(flat: torch.Tensor) -> torch.Tensor:
        parameters = H.unflatten(flat)
        return loss_fn(torch.func.functional_call(model, parameters, (x,)), y)

    explicit = torch.func.hessian(risk)(theta).numpy()
    dense = H.to_dense()
    error = np.abs(dense - explicit).max() / np.abs(explicit).max()
    asymmetry = np.abs(dense - dense.T).max() / np.abs(dense).max()
    print(f"n = {H.shape[0]}: max relative difference {error:.1e}")
    print(f"asymmetry of the dense matrix: {asymmetry:.1e}")
    if error > 1e-10:
        raise SystemExit(
            f"the operator differs from the explicit Hessian by {error:.1e}"
        )


if __name__ == "__main__":
    main()
