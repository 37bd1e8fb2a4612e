"""Trace and spectral density of a ResNet's Hessian on handwritten digits.

A CIFAR-style ResNet-8 is trained briefly on scikit-learn's digits (native
1x8x8 images). The Hessian of its loss over 400 training images then gets a
trace estimate (Hutchinson and Hutch++ at the same product budget) and a
spectral density by Stochastic Lanczos Quadrature. The density is saved as a
PNG on a log scale, as in PyHessian's figures.

Run it with ``python examples/resnet_trace_density.py [--out DIR]``.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import hessop
from hessop.datasets import load_dataset
from hessop.models import build_model
from hessop.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the PNG"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset, _ = load_dataset("digits", split="train")
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    history = train(model, dataset, epochs=3, batch_size=64, lr=0.1, seed=0)
    print(f"trained 3 epochs, training accuracy {history.train_accuracy[-1]:.3f}")

    subset = Subset(dataset, range(400))
    loader = DataLoader(subset, batch_size=200)
    H = hessop.HessianOperator(
        model, nn.CrossEntropyLoss(), loader, cache_budget="1GiB"
    )
    print(f"Hessian of {H.shape[0]} parameters over {H.num_samples} images")

    for method in ("hutchinson", "hutch++"):
        result = hessop.trace(H, method=method, num_matvecs=30, seed=0)
        error = f" +/- {result.stderr:.3f}" if result.stderr is not None else ""
        print(f"trace ({method}, 30 products): {result.estimate:.3f}{error}")

    density = hessop.slq(H, num_steps=40, num_probes=1, seed=0)
    curve = density.density()
    nodes = np.concatenate(density.nodes)
    low, high = nodes.min(), nodes.max()
    print(f"SLQ: {density.num_matvecs} products, nodes from {low:.3g} to {high:.3g}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.semilogy(curve.grid, np.maximum(curve.values, 1e-12))
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density (log scale)")
    axes.set_title(f"ResNet-8 on digits: Hessian ESD (sigma = {curve.sigma:.2g})")
    figure.tight_layout()
    path = args.out / "resnet8_digits_density.png"
    figure.savefig(path, dpi=100)
    print(f"density plot: {path}")


if __name__ == "__main__":
    main()
