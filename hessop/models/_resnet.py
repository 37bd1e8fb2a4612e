"""The CIFAR ResNet family of He et al. (2016) with switches for its ablations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hessop.models._validation import check_positive_int

__all__ = ["BasicBlock", "CifarResNet", "StageSwitch", "resolve_stage_switch"]

NUM_STAGES = 3
STAGE_WIDTHS = (16, 32, 64)

StageSwitch = bool | Sequence[bool]


def resolve_stage_switch(value: StageSwitch, name: str) -> tuple[bool, bool, bool]:
    """Expand a per-network or per-stage switch to one bool per stage.

    Parameters
    ----------
    value : bool or sequence of 3 bools
        One bool for all stages, or one bool for each of ``stage1``, ``stage2``
        and ``stage3`` in that order.
    name : str
        Argument name used in error messages.

    Returns
    -------
    tuple of 3 bools

    Raises
    ------
    ValueError
        If ``value`` is neither a bool nor a sequence of exactly 3 bools.
    """
    if isinstance(value, bool):
        return (value,) * NUM_STAGES

    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(
            f"{name} must be a bool or a sequence of {NUM_STAGES} bools "
            f"(one per stage), got {value!r}"
        )
    if len(value) != NUM_STAGES:
        raise ValueError(
            f"{name} must have one entry per stage ({NUM_STAGES} entries for "
            f"stage1, stage2, stage3), got {len(value)} entries: {value!r}"
        )
    for entry in value:
        if not isinstance(entry, bool):
            raise ValueError(
                f"{name} entries must be bools, got {entry!r} of type "
                f"{type(entry).__name__} in {value!r}"
            )
    return (value[0], value[1], value[2])


def blocks_per_stage(depth: int) -> int:
    """Return n for a CIFAR ResNet of depth 6n + 2, validating the depth.

    Raises
    ------
    ValueError
        If ``depth`` is not an int of the form 6n + 2 with n >= 1.
    """
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"depth must be an int, got {depth!r}")
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"invalid CIFAR ResNet depth {depth}: the depth must be 6n + 2 with "
            "n >= 1 (8, 14, 20, 26, 32, 38, 44, 50, 56, ...)"
        )
    return (depth - 2) // 6


class _ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut that subsamples and appends zero channels.

    This is option A of He et al. (2016): the identity on the channels that
    exist, zeros for the new ones. Subsampling keeps every ``stride``-th pixel,
    which gives ``ceil(H / stride)`` rows, the same as a 3x3 convolution with
    padding 1 and the same stride, so any input size works.
    """

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad lists dimensions from the last one, so the third pair pads the
        # channel dimension: the new channels go after the existing ones.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an optional identity shortcut.

    The block computes ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.
    With ``residual=False`` the shortcut term is left out, and with
    ``batch_norm=False`` each BatchNorm layer is an identity and the
    convolutions get a bias instead.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the block's input and output.
    stride : int
        Stride of the first convolution (2 at the start of stages 2 and 3).
    batch_norm : bool
        Whether to use BatchNorm after each convolution.
    residual : bool
        Whether to add the shortcut.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        batch_norm: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.batch_norm = batch_norm
        self.residual = residual

        # A bias just before BatchNorm is cancelled by its mean subtraction.
        bias = not batch_norm
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, bias=bias
        )
        self.bn1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

        self.shortcut: nn.Module | None
        if not residual:
            self.shortcut = None
        elif stride != 1 or in_channels != out_channels:
            self.shortcut = _ZeroPadShortcut(out_channels - in_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class _Stem(nn.Module):
    """First 3x3 convolution of the network, followed by BatchNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, 3, padding=1, bias=not batch_norm
        )
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2 (He et al., 2016, Section 4.2).

    The network is a 3x3 convolution with 16 channels (``stem``), three stages
    of n basic blocks with 16, 32 and 64 channels (``stage1``, ``stage2``,
    ``stage3``), global average pooling and a linear layer (``classifier``).
    The first block of stages 2 and 3 halves the height and width with a
    stride-2 convolution. Each block has two 3x3 convolutions, so the depth is
    ``1 + 3 * 2n + 1 = 6n + 2`` layers with weights: ResNet-20, -32, -38 and
    -56 have n = 3, 5, 6 and 9, and ResNet-8 (n = 1) is the smallest.

    Parameter names start with the module names above, so a prefix such as
    ``"stage2."`` selects one stage for stage-wise (block) Hessian metrics.

    Parameters
    ----------
    depth : int
        6n + 2 with n >= 1.
    num_classes : int
        Number of outputs of the classifier.
    in_channels : int
        Channels of the input images (3 for CIFAR, 1 for digits).
    batch_norm : bool or sequence of 3 bools
        BatchNorm after every convolution of all stages (a bool) or of each
        stage (one bool per stage). Without BatchNorm a convolution has a bias.
    residual : bool or sequence of 3 bools
        Shortcut connections in all stages or in each stage. A block without
        them is two plain convolutional layers.
    stem_batch_norm : bool, optional
        BatchNorm after the stem convolution. The default keeps it unless
        ``batch_norm`` removes BatchNorm from every stage, so that
        ``batch_norm=False`` is a network without any BatchNorm.

    Notes
    -----
    The shortcuts use option A of He et al. (2016): where a block changes the
    number of channels or the resolution, the shortcut subsamples the input
    and appends zero channels, so it has no parameters. He et al. use this
    option in all their CIFAR-10 experiments. It also means that a network
    with and without residual connections has exactly the same parameters,
    so their Hessians act on the same space and their traces and spectra
    compare directly, stage by stage. Option B would add 1x1 projection
    convolutions to the residual networks only.

    The input may have any height and width. Digits images (1x8x8) give
    stages of 8x8, 4x4 and 2x2 pixels, CIFAR images 32x32, 16x16 and 8x8.

    Convolutions are initialised with He (Kaiming) normal initialisation
    for ReLU, BatchNorm layers with weight 1 and bias 0, biases with 0, and
    the classifier with the PyTorch default for :class:`torch.nn.Linear`.

    References
    ----------
    .. [1] K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for
       Image Recognition", CVPR 2016, https://doi.org/10.1109/CVPR.2016.90

    Examples
    --------
    >>> import torch
    >>> from hessop.models import CifarResNet
    >>> model = CifarResNet(20, num_classes=10, in_channels=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> no_bn_last_stage = CifarResNet(20, batch_norm=(True, True, False))
    """

    STAGE_NAMES = ("stage1", "stage2", "stage3")

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: StageSwitch = True,
        residual: StageSwitch = True,
        stem_batch_norm: bool | None = None,
    ) -> None:
        super().__init__()
        num_blocks = blocks_per_stage(depth)
        stage_batch_norm = resolve_stage_switch(batch_norm, "batch_norm")
        stage_residual = resolve_stage_switch(residual, "residual")
        if stem_batch_norm is None:
            stem_batch_norm = any(stage_batch_norm)
        elif not isinstance(stem_batch_norm, bool):
            raise ValueError(
                f"stem_batch_norm must be a bool or None, got {stem_batch_norm!r}"
            )
        check_positive_int(num_classes, "num_classes")
        check_positive_int(in_channels, "in_channels")

        self.depth = depth
        self.num_blocks = num_blocks
        self.batch_norm = stage_batch_norm
        self.residual = stage_residual
        self.stem_batch_norm = stem_batch_norm

        self.stem = _Stem(in_channels, STAGE_WIDTHS[0], stem_batch_norm)
        channels = STAGE_WIDTHS[0]
        for index, width in enumerate(STAGE_WIDTHS):
            blocks = []
            for position in range(num_blocks):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(
                    BasicBlock(
                        channels,
                        width,
                        stride,
                        batch_norm=stage_batch_norm[index],
                        residual=stage_residual[index],
                    )
                )
                channels = width
            self.add_module(self.STAGE_NAMES[index], nn.Sequential(*blocks))
        self.classifier = nn.Linear(channels, num_classes)

        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise all weights as described in the class notes."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_in", nonlinearity="relu"
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()
        self.classifier.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, batch_norm={self.batch_norm}, "
            f"residual={self.residual}, stem_batch_norm={self.stem_batch_norm}"
        )
