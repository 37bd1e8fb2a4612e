"""Validation of the Hessian operator's arguments, losses and vectors."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from hessop._model import HALF_DTYPES, batch_norm_modules, random_modules

NUMPY_DTYPES = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def resolve_reduction(loss_fn: Any, reduction: str | None) -> str:
    declared = getattr(loss_fn, "reduction", None)
    if declared is not None and declared not in ("mean", "sum"):
        raise ValueError(
            f"loss_fn has reduction={declared!r}; the operator needs a scalar "
            "loss, so construct the loss with reduction='mean' or 'sum'"
        )
    if reduction is None:
        return declared or "mean"
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if declared is not None and declared != reduction:
        raise ValueError(
            f"reduction={reduction!r} contradicts loss_fn.reduction={declared!r}; "
            "pass reduction=None to use the loss module's setting"
        )
    return reduction


def resolve_dtype(selected: list[torch.Tensor], dtype: Any) -> torch.dtype:
    if dtype is None:
        dtypes = {p.dtype for p in selected}
        if len(dtypes) > 1:
            raise ValueError(
                "the selected parameters have several dtypes "
                f"{sorted(map(str, dtypes))}; "
                "pass dtype=torch.float32 or torch.float64"
            )
        (resolved,) = dtypes
        if resolved in HALF_DTYPES:
            warnings.warn(
                f"the model's parameters are {resolved}; the Hessian is computed in "
                "torch.float32 on a converted copy of the model, because second "
                "derivatives in half precision are too inaccurate",
                UserWarning,
                stacklevel=3,
            )
            return torch.float32
        if resolved not in NUMPY_DTYPES:
            raise TypeError(
                f"the selected parameters have dtype {resolved}; the Hessian needs "
                "floating-point parameters (float32 or float64)"
            )
        return resolved
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, dtype)
    elif isinstance(dtype, (np.dtype, type)) and not isinstance(dtype, torch.dtype):
        dtype = {
            np.dtype(np.float32): torch.float32,
            np.dtype(np.float64): torch.float64,
        }.get(np.dtype(dtype), dtype)
    if dtype not in NUMPY_DTYPES:
        raise ValueError(
            f"dtype must be torch.float32 or torch.float64, got {dtype!r}; "
            "half precision is not supported for second derivatives"
        )
    return dtype


def resolve_device(selected: list[torch.Tensor], device: Any) -> torch.device:
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device
    devices = {p.device for p in selected}
    if len(devices) > 1:
        raise ValueError(
            "the selected parameters lie on several devices "
            f"{sorted(map(str, devices))}; "
            "pass device=... to run the products on one of them"
        )
    (resolved,) = devices
    return resolved


def check_loss(loss: Any, index: int) -> None:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"loss_fn returned {type(loss).__name__} for batch {index}; it must "
            "return a scalar torch.Tensor"
        )
    if loss.numel() != 1:
        raise ValueError(
            f"loss_fn returned a tensor of shape {tuple(loss.shape)} for batch "
            f"{index}; it must return a scalar, so use reduction='mean' or 'sum'"
        )
    if not bool(torch.isfinite(loss).all()):
        raise ValueError(
            f"the loss of batch {index} is not finite ({loss.item()}); check the "
            "data of that batch and the model's weights"
        )


def check_numeric(x: np.ndarray, name: str) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{name} contains NaN or inf; the Hessian-vector product needs "
            "finite entries"
        )


def nondeterminism_message(
    model: nn.Module, train_mode: bool, relative: float, tolerance: float
) -> str:
    """Return the error message for an operator that changed between products."""
    causes = []
    if train_mode:
        dropout = random_modules(model)
        if dropout:
            causes.append(f"dropout in train mode (train_mode=True; modules {dropout})")
        norms = batch_norm_modules(model)
        if norms:
            causes.append(
                f"BatchNorm in train mode (train_mode=True; modules {norms}) "
                "over batches that change between passes"
            )
    causes.append("a DataLoader with shuffle=True and drop_last=True")
    causes.append("random data augmentation in the dataset")
    causes.append("other randomness in the model or loss")
    return (
        "the Hessian is not a fixed matrix: two products of the same vector "
        f"differ by {relative:.3g} relative (tolerance {tolerance:.3g}). "
        f"Likely causes: {'; '.join(causes)}. Fix: use eval mode "
        "(train_mode=False), fixed batches without augmentation, or pass "
        "check_deterministic=False to skip this check"
    )
