"""The model side of the operator: parameter selection, modes and state."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

ParamsArg = Iterable[nn.Parameter | torch.Tensor | str] | nn.Parameter | str | None

HALF_DTYPES = (torch.float16, torch.bfloat16)


def select_parameters(model: nn.Module, params: ParamsArg) -> list[str]:
    """Return the names of the selected parameters, each tensor once.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters are selected.
    params : None, or iterable of parameters and names
        ``None`` selects every parameter with ``requires_grad``. Otherwise
        each item is a parameter of ``model``, a parameter name, or the name
        of a submodule, which selects that submodule's parameters with
        ``requires_grad``. Parameters given by tensor or by full name are
        selected whatever their ``requires_grad`` flag.

    Returns
    -------
    list of str
        Names in ``model.named_parameters()`` of the selected parameters, in
        the order given (for ``None``, the model's order). A tensor
        registered under several names (tied weights) appears once, under the
        first name ``named_parameters`` reports.
    """
    named = dict(model.named_parameters())
    name_of = {id(tensor): name for name, tensor in named.items()}

    if params is None:
        return [name for name, tensor in named.items() if tensor.requires_grad]

    if isinstance(params, (str, torch.Tensor)):
        params = [params]
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            "params must be None, or an iterable of parameters or parameter "
            f"names, got {type(params).__name__}"
        ) from None

    all_names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    modules = dict(model.named_modules())
    selected: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            if id(item) not in name_of:
                raise ValueError(
                    f"params[{index}] (a tensor of shape {tuple(item.shape)}) is "
                    "not a parameter of the model; pass tensors from "
                    "model.parameters() or parameter names"
                )
            selected.append(name_of[id(item)])
        elif isinstance(item, str):
            if item in all_names:
                tensor = model.get_parameter(item)
                selected.append(name_of[id(tensor)])
            elif item in modules and item != "":
                found = [
                    name_of[id(tensor)]
                    for tensor in modules[item].parameters()
                    if tensor.requires_grad
                ]
                if not found:
                    raise ValueError(
                        f"submodule {item!r} has no parameters with "
                        "requires_grad=True to select"
                    )
                selected.extend(found)
            else:
                close = difflib.get_close_matches(item, sorted(all_names), n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise ValueError(
                    f"params[{index}] = {item!r} is neither a parameter nor a "
                    f"submodule name of the model{hint} (see "
                    "model.named_parameters())"
                )
        else:
            raise TypeError(
                f"params[{index}] must be a parameter or a name, got "
                f"{type(item).__name__}"
            )
    return list(dict.fromkeys(selected))


def state_fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Return a cheap fingerprint that changes when parameters or buffers do.

    It holds each tensor's identity and its version counter, which PyTorch
    increments on every in-place change (an optimiser step, ``copy_`` in
    ``load_state_dict``). Replacing a tensor changes its identity.
    """
    parts: list[tuple[str, int, int]] = []
    for name, tensor in model.named_parameters(remove_duplicate=False):
        parts.append((name, id(tensor), tensor._version))
    for name, tensor in model.named_buffers(remove_duplicate=False):
        parts.append((name, id(tensor), tensor._version))
    return tuple(parts)


@contextmanager
def evaluation_mode(model: nn.Module, train_mode: bool) -> Iterator[None]:
    """Set every module to train or eval mode, then restore each one's flag."""
    saved = [(module, module.training) for module in model.modules()]
    model.train(train_mode)
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training


def twice_differentiable() -> AbstractContextManager[Any]:
    """Restrict scaled dot-product attention to its math kernel.

    The fused attention kernels (flash, memory-efficient) have no second
    derivative in PyTorch (2.13 raises "derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented"), so Hessian-vector products run attention through the
    composite math kernel, which autograd differentiates twice.
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # PyTorch before 2.3 has no sdpa_kernel
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def random_modules(model: nn.Module) -> list[str]:
    """Return names of submodules that draw random numbers in train mode."""
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, kinds) and module.p > 0:
            names.append(name or type(module).__name__)
        elif isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            names.append(name or type(module).__name__)
    return names


def batch_norm_modules(model: nn.Module) -> list[str]:
    """Return names of BatchNorm submodules."""
    return [
        name or type(module).__name__
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
