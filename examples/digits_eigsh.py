"""Top Hessian eigenvalues of a small network trained on handwritten digits.

The network is trained briefly on scikit-learn's digits data (1797 real 8x8
images, shipped with scikit-learn), then ``scipy.sparse.linalg.eigsh`` runs on
the Hessian of the training loss over the whole dataset.

Run it with ``python examples/digits_eigsh.py``; it takes a few seconds on a
laptop CPU.
"""

import argparse
import time

import numpy as np
import scipy.sparse.linalg
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hessop import HessianOperator


def load_data() -> TensorDataset:
    digits = load_digits()
    images = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    images = (images - images.mean(0)) / (images.std(0) + 1e-6)
    labels = torch.tensor(digits.target, dtype=torch.long)
    return TensorDataset(images, labels)


def train(model: nn.Module, dataset: TensorDataset, epochs: int, seed: int) -> float:
    """Train with SGD and momentum; return the final training accuracy."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    model.eval()
    images, labels = dataset.tensors
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=5, help="training epochs (default 5)"
    )
    parser.add_argument(
        "--k", type=int, default=5, help="eigenvalues to compute (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    dataset = load_data()
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    accuracy = train(model, dataset, args.epochs, args.seed)
    print(f"trained {args.epochs} epochs: training accuracy {accuracy:.3f}")

    # The loss over all 1797 images, in batches of 256 (the last one is short).
    loader = DataLoader(dataset, batch_size=256, shuffle=False)
    H = HessianOperator(model, nn.CrossEntropyLoss(), loader, dtype=torch.float64)
    print(f"Hessian: {H.shape[0]} x {H.shape[1]}, {H.num_samples} samples")

    start = time.perf_counter()
    eigenvalues, eigenvectors = scipy.sparse.linalg.eigsh(
        H, k=args.k, which="LA", tol=1e-6
    )
    elapsed = time.perf_counter() - start
    num_products = H.num_matvecs
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    residuals = np.linalg.norm(H @ eigenvectors - eigenvectors * eigenvalues, axis=0)

    print(f"eigsh: {num_products} Hessian-vector products, {elapsed:.1f} s")
    print(" rank   eigenvalue   residual ||Hv - lambda v||")
    for rank, (value, residual) in enumerate(
        zip(eigenvalues, residuals, strict=True), 1
    ):
        print(f"{rank:5d} {value:12.6f}   {residual:.2e}")


if __name__ == "__main__":
    main()
