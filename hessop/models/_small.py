"""Small networks for quick runs: a multilayer perceptron and a two-layer CNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hessop.models._validation import check_positive_int

__all__ = ["ACTIVATIONS", "MLP", "SmallCNN"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; known activations: "
            f"{', '.join(sorted(ACTIVATIONS))}"
        ) from None


def _check_widths(widths: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(widths, str) or not isinstance(widths, Sequence):
        raise ValueError(f"{name} must be a sequence of positive ints, got {widths!r}")
    for width in widths:
        check_positive_int(width, f"each entry of {name}")
    return tuple(widths)


class MLP(nn.Module):
    """Multilayer perceptron on flattened images.

    The network is ``flatten`` followed by a linear layer and an activation for
    each entry of ``hidden``, and a final linear layer. With ``hidden=()`` it
    is multinomial logistic regression, whose cross-entropy loss is convex in
    the parameters, so its Hessian is positive semidefinite.

    Parameters
    ----------
    in_features : int
        Number of input values per sample (channels x height x width).
    num_classes : int
        Number of outputs.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : {"relu", "tanh", "gelu"}
        Activation after each hidden layer. ``"tanh"`` and ``"gelu"`` give a
        loss that is twice differentiable everywhere.

    Notes
    -----
    The linear layers are in ``self.layers`` (an :class:`torch.nn.Sequential`),
    so parameter names are ``layers.<index>.weight`` and ``layers.<index>.bias``.

    Examples
    --------
    >>> import torch
    >>> from hessop.models import MLP
    >>> MLP(64, num_classes=10)(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    """

    def __init__(
        self,
        in_features: int,
        *,
        num_classes: int = 10,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(num_classes, "num_classes")
        widths = _check_widths(hidden, "hidden")

        layers: list[nn.Module] = []
        previous = in_features
        for width in widths:
            layers.append(nn.Linear(previous, width))
            layers.append(_make_activation(activation))
            previous = width
        layers.append(nn.Linear(previous, num_classes))

        self.in_features = in_features
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input values per sample, got "
                f"{x.shape[1]} (input shape {tuple(x.shape)}); build it with "
                "in_features = channels * height * width of the images"
            )
        return self.layers(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions, average pooling to 2x2 and a linear layer.

    The first convolution keeps the resolution and the second halves it with
    stride 2. Adaptive average pooling then reduces any height and width to
    2x2, so the network accepts images of any size.

    Parameters
    ----------
    in_channels : int
        Channels of the input images.
    num_classes : int
        Number of outputs.
    channels : sequence of 2 ints
        Output channels of the two convolutions.
    activation : {"relu", "tanh", "gelu"}
        Activation after each convolution.

    Notes
    -----
    Parameter names are ``conv1.*``, ``conv2.*`` and ``classifier.*``.

    Examples
    --------
    >>> import torch
    >>> from hessop.models import SmallCNN
    >>> SmallCNN(1, num_classes=10)(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    """

    POOLED_SIZE = 2

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_int(in_channels, "in_channels")
        check_positive_int(num_classes, "num_classes")
        widths = _check_widths(channels, "channels")
        if len(widths) != 2:
            raise ValueError(
                f"channels must have 2 entries (one per convolution), got {widths!r}"
            )

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.act1 = _make_activation(activation)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, stride=2, padding=1)
        self.act2 = _make_activation(activation)
        self.pool = nn.AdaptiveAvgPool2d(self.POOLED_SIZE)
        self.classifier = nn.Linear(widths[1] * self.POOLED_SIZE**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)
