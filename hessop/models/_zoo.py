"""Build a model of the zoo from its name."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn

from hessop.models._resnet import CifarResNet, blocks_per_stage
from hessop.models._small import MLP, SmallCNN
from hessop.models._validation import check_positive_int

__all__ = ["MODEL_NAMES", "build_model"]

#: Names that :func:`build_model` documents. Any ``"resnet<depth>"`` with a
#: depth of the form 6n + 2 is accepted as well, for example ``"resnet8"``.
MODEL_NAMES: tuple[str, ...] = (
    "resnet20",
    "resnet32",
    "resnet38",
    "resnet56",
    "mlp",
    "cnn",
)

_RESNET_NAME = re.compile(r"resnet(\d+)")


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int | tuple[int, int] | None = None,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model of the zoo by name.

    Parameters
    ----------
    name : str
        ``"resnet<depth>"`` for a :class:`CifarResNet` of depth 6n + 2 (the
        usual ones are ``"resnet20"``, ``"resnet32"``, ``"resnet38"`` and
        ``"resnet56"``), ``"mlp"`` for an :class:`MLP` or ``"cnn"`` for a
        :class:`SmallCNN`.
    num_classes : int
        Number of outputs.
    in_channels : int
        Channels of the input images.
    image_size : int or (int, int), optional
        Height and width of the input images (an int for square images).
        The MLP needs it to size its first layer. The ResNets and the CNN
        accept any image size and ignore it.
    seed : int, optional
        If given, the weights are initialised from ``torch.manual_seed(seed)``
        inside :func:`torch.random.fork_rng`, so the same seed gives the same
        weights and the caller's global random state does not change. If
        omitted, the global random state is used.
    **options
        Keyword arguments of the model class: ``batch_norm``, ``residual``
        and ``stem_batch_norm`` for ResNets, ``hidden`` and ``activation``
        for the MLP, ``channels`` and ``activation`` for the CNN.

    Returns
    -------
    torch.nn.Module
        The model on the CPU in float32 and in training mode.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names), a ResNet
        depth that is not 6n + 2, an invalid option value or an option that
        the model does not take.

    Examples
    --------
    >>> from hessop.models import build_model
    >>> model = build_model(
    ...     "resnet20", num_classes=10, in_channels=1, residual=False, seed=0
    ... )
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(in_channels, "in_channels")
    model_class, depth = _find_model_class(name)
    _check_options(name, model_class, options)

    if seed is None:
        return _construct(
            model_class, depth, num_classes, in_channels, image_size, options
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(
            model_class, depth, num_classes, in_channels, image_size, options
        )


def _find_model_class(name: str) -> tuple[type[nn.Module], int | None]:
    """Return the class that ``name`` denotes and, for a ResNet, its depth."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a str, got {name!r}")

    match = _RESNET_NAME.fullmatch(name)
    if match is not None:
        depth = int(match.group(1))
        blocks_per_stage(depth)
        return CifarResNet, depth
    if name == "mlp":
        return MLP, None
    if name == "cnn":
        return SmallCNN, None
    raise ValueError(
        f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)} "
        "(or resnet<depth> for any depth 6n + 2, such as resnet8)"
    )


def _check_options(
    name: str, model_class: type[nn.Module], options: dict[str, Any]
) -> None:
    """Raise ValueError for options that are not keyword arguments of the class."""
    parameters = inspect.signature(model_class).parameters
    set_by_build_model = {"num_classes", "in_channels"}
    allowed = sorted(
        key
        for key, parameter in parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and key not in set_by_build_model
    )
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take the option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(allowed)}"
        )


def _construct(
    model_class: type[nn.Module],
    depth: int | None,
    num_classes: int,
    in_channels: int,
    image_size: int | tuple[int, int] | None,
    options: dict[str, Any],
) -> nn.Module:
    if model_class is CifarResNet:
        return CifarResNet(
            depth, num_classes=num_classes, in_channels=in_channels, **options
        )
    if model_class is SmallCNN:
        return SmallCNN(in_channels, num_classes=num_classes, **options)

    if image_size is None:
        raise ValueError(
            "model 'mlp' needs image_size (an int or a (height, width) pair) "
            "to size its first layer"
        )
    height, width = _resolve_image_size(image_size)
    return MLP(in_channels * height * width, num_classes=num_classes, **options)


def _resolve_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        check_positive_int(image_size, "image_size")
        return image_size, image_size
    if isinstance(image_size, tuple | list) and len(image_size) == 2:
        check_positive_int(image_size[0], "image_size height")
        check_positive_int(image_size[1], "image_size width")
        return image_size[0], image_size[1]
    raise ValueError(
        f"image_size must be an int or a (height, width) pair, got {image_size!r}"
    )
