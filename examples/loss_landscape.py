"""The loss along the top Hessian eigenvector and along a random direction.

Along the top eigenvector the loss curves upward fastest: its second
derivative is the top eigenvalue. A random direction, drawn with filter
normalisation (Li et al. 2018) and then scaled to unit length so that both
profiles share one axis, curves by about trace / n, far less. The script
checks the curvature read off the eigenvector's profile against the
eigenvalue and saves both profiles as a PNG.

Run it with ``python examples/loss_landscape.py [--out DIR]``.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import hessop
from hessop.datasets import load_dataset
from hessop.landscape import filter_normalized_direction, loss_landscape_1d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder for the PNG"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset, _ = load_dataset("digits", split="train", num_samples=500)
    x, y = dataset.tensors
    x = x.flatten(1).double()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    loss_fn = nn.CrossEntropyLoss()
    H = hessop.HessianOperator(model, loss_fn, (x, y))
    top = hessop.eigenvalues(H, k=1, seed=0)
    eigenvector = H.unflatten(torch.as_tensor(top.eigenvectors[:, 0]))
    random = filter_normalized_direction(model, seed=0)
    length = torch.sqrt(sum((d**2).sum() for d in random.values()))
    random = {name: d / length for name, d in random.items()}

    alphas = np.linspace(-1.0, 1.0, 21)
    along_eigen = loss_landscape_1d(model, loss_fn, (x, y), eigenvector, alphas)
    along_random = loss_landscape_1d(model, loss_fn, (x, y), random, alphas)

    # The central second difference of the loss along a unit eigenvector
    # approximates its eigenvalue to O(step^2). A step of 0.01 keeps that
    # error far below the gap between the eigenvector and random profiles.
    step = 0.01
    near = loss_landscape_1d(model, loss_fn, (x, y), eigenvector, [-step, 0.0, step])
    below, center, above = np.asarray(near.losses)
    curvature = (above - 2 * center + below) / step**2
    print(f"top eigenvalue {top.eigenvalues[0]:.4f} ({top.num_matvecs} products)")
    print(f"second difference of the loss along it: {curvature:.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(alphas, along_eigen.losses, label="top eigenvector")
    axes.plot(alphas, along_random.losses, label="random (unit length)")
    axes.set_xlabel("step along the unit direction")
    axes.set_ylabel("training loss")
    axes.set_title("Loss along a direction, MLP on 500 digits")
    axes.legend()
    figure.tight_layout()
    path = args.out / "loss_landscape_1d.png"
    figure.savefig(path, dpi=100)
    print(f"profiles: {path}")


if __name__ == "__main__":
    main()
