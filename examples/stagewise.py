"""Stage-wise Hessian analysis: top eigenvalue and trace per ResNet stage.

The operator restricted to one block of parameters (here each stage of a
CIFAR-style ResNet-8) is the Hessian with respect to that block with the other
parameters held fixed. Comparing blocks shows where the curvature sits, as in
PyHessian's stage-wise study of BatchNorm and residual connections.

Run it with ``python examples/stagewise.py``.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import hessop
from hessop.datasets import load_dataset
from hessop.models import build_model
from hessop.stages import default_blocks
from hessop.training import train


def main() -> None:
    torch.set_num_threads(1)
    dataset, _ = load_dataset("digits", split="train")
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    train(model, dataset, epochs=3, batch_size=64, lr=0.1, seed=0)
    loader = DataLoader(Subset(dataset, range(300)), batch_size=150)

    print(f"{'block':>10} {'parameters':>10} {'top eigenvalue':>15} {'trace':>18}")
    for label, names in default_blocks(model).items():
        H = hessop.HessianOperator(
            model, nn.CrossEntropyLoss(), loader, names, cache_budget="1GiB"
        )
        top = hessop.eigenvalues(H, k=1, rtol=1e-3, max_matvecs=60, seed=0)
        trace = hessop.trace(H, num_matvecs=20, seed=0)
        print(
            f"{label:>10} {H.shape[0]:>10} {top.eigenvalues[0]:>15.4f} "
            f"{trace.estimate:>10.3f} +/- {trace.stderr:.3f}"
        )


if __name__ == "__main__":
    main()
