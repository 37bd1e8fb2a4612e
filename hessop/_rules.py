"""Second-derivative rules for convolutions, eval-mode BatchNorm and ReLU.

A Hessian-vector product by double backpropagation differentiates the
backward pass of every layer. For three common layers PyTorch's own rule for
that is slower than it needs to be (measured with torch 2.13 on CPU):

- The derivative of ``convolution_backward`` computes the weight gradient it
  needs as a forward convolution with batch and channels swapped, which
  copies activations and runs a kernel as large as the image. The rules
  here call ``convolution_backward`` itself, the kernel the first backward
  pass uses.
- BatchNorm in eval mode is a per-channel affine map, but the derivative of
  ``native_batch_norm_backward`` follows the general formula for batch
  statistics.
- The derivative of ``threshold_backward`` (ReLU) with respect to its input
  is zero, yet PyTorch materialises it as a tensor of zeros.

:func:`second_order_rules` routes these layers through
:class:`torch.autograd.Function` classes whose backward passes are
themselves differentiable once, with the minimal rule. The results agree
with PyTorch's to rounding error. Anything the rules do not cover (string
padding, transposed convolutions, BatchNorm on batch statistics, tensor
subclasses) runs PyTorch's own operator unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

__all__ = ["second_order_rules"]

_CONVOLUTIONS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _expand(value: int | Sequence[int], dims: int) -> list[int]:
    if isinstance(value, int):
        return [value] * dims
    return [int(item) for item in value]


class _Convolution(torch.autograd.Function):
    """``convolution(x, W)`` whose backward pass is :class:`_ConvolutionBackward`."""

    @staticmethod
    def forward(ctx, x, W, stride, padding, dilation, groups):
        ctx.save_for_backward(x, W)
        ctx.config = (stride, padding, dilation, groups)
        return torch.ops.aten.convolution(
            x, W, None, stride, padding, dilation, False, [0] * len(stride), groups
        )

    @staticmethod
    def backward(ctx, gy):
        x, W = ctx.saved_tensors
        gx, gW = _ConvolutionBackward.apply(
            gy, x, W, *ctx.needs_input_grad[:2], *ctx.config
        )
        return gx, gW, None, None, None, None


class _ConvolutionBackward(torch.autograd.Function):
    """The input and weight gradients of a convolution, differentiable once.

    Both gradients are bilinear: ``gx = conv_transpose(gy, W)`` and
    ``gW = wgrad(x, gy)``. So the derivative of ``<gx, ggx> + <gW, ggW>`` is
    ``conv(ggx, W) + conv(x, ggW)`` for ``gy``, ``conv_transpose(gy, ggW)``
    for ``x`` and ``wgrad(ggx, gy)`` for ``W``, each one call of
    ``convolution`` or ``convolution_backward``.
    """

    @staticmethod
    def forward(
        ctx, gy, x, W, input_grad, weight_grad, stride, padding, dilation, groups
    ):
        ctx.save_for_backward(gy, x, W)
        ctx.config = (stride, padding, dilation, groups)
        gx, gW, _ = torch.ops.aten.convolution_backward(
            gy,
            x,
            W,
            None,
            stride,
            padding,
            dilation,
            False,
            [0] * len(stride),
            groups,
            [input_grad, weight_grad, False],
        )
        return gx, gW

    @staticmethod
    @once_differentiable
    def backward(ctx, ggx, ggW):
        gy, x, W = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.config
        zeros = [0] * len(stride)
        d_gy = d_x = d_W = None
        if ggx is not None:
            d_gy = torch.ops.aten.convolution(
                ggx, W, None, stride, padding, dilation, False, zeros, groups
            )
            if ctx.needs_input_grad[2]:
                d_W = torch.ops.aten.convolution_backward(
                    gy,
                    ggx,
                    W,
                    None,
                    stride,
                    padding,
                    dilation,
                    False,
                    zeros,
                    groups,
                    [False, True, False],
                )[1]
        if ggW is not None:
            term = torch.ops.aten.convolution(
                x, ggW, None, stride, padding, dilation, False, zeros, groups
            )
            d_gy = term if d_gy is None else d_gy.add_(term)
            if ctx.needs_input_grad[1]:
                d_x = torch.ops.aten.convolution_backward(
                    gy,
                    x,
                    ggW,
                    None,
                    stride,
                    padding,
                    dilation,
                    False,
                    zeros,
                    groups,
                    [True, False, False],
                )[0]
        return d_gy, d_x, d_W, None, None, None, None, None, None


class _ChannelAffine(torch.autograd.Function):
    """``y = x * s + t`` with ``s`` and ``t`` broadcast along dimension 1."""

    @staticmethod
    def forward(ctx, x, s, t):
        ctx.save_for_backward(x, s)
        shape = _channel_shape(x)
        return torch.addcmul(t.reshape(shape), x, s.reshape(shape))

    @staticmethod
    def backward(ctx, gy):
        x, s = ctx.saved_tensors
        return _ChannelAffineBackward.apply(gy, x, s, *ctx.needs_input_grad)


class _ChannelAffineBackward(torch.autograd.Function):
    """``(gy * s, sum(gy * x), sum(gy))``, differentiable once.

    The sums run over every dimension but the channel dimension 1. A flag
    false skips its gradient, which is then None.
    """

    @staticmethod
    def forward(ctx, gy, x, s, x_grad, s_grad, t_grad):
        ctx.save_for_backward(gy, x, s)
        dims = _reduced_dims(x)
        gx = gy * s.reshape(_channel_shape(x)) if x_grad else None
        gs = (gy * x).sum(dims) if s_grad else None
        gt = gy.sum(dims) if t_grad else None
        return gx, gs, gt

    @staticmethod
    @once_differentiable
    def backward(ctx, ggx, ggs, ggt):
        gy, x, s = ctx.saved_tensors
        shape = _channel_shape(x)
        d_gy = d_x = d_s = None
        # d_gy = ggx * s + x * ggs + ggt, in at most two fused kernels.
        if ggs is not None:
            base = (
                ggt.reshape(shape).expand_as(x)
                if ggt is not None
                else torch.zeros((), dtype=x.dtype, device=x.device)
            )
            d_gy = torch.addcmul(base, x, ggs.reshape(shape))
            if ctx.needs_input_grad[1]:
                d_x = gy * ggs.reshape(shape)
        elif ggt is not None:
            d_gy = ggt.reshape(shape).expand_as(gy).clone()
        if ggx is not None:
            if d_gy is None:
                d_gy = ggx * s.reshape(shape)
            else:
                d_gy.addcmul_(ggx, s.reshape(shape))
            if ctx.needs_input_grad[2]:
                d_s = (ggx * gy).sum(_reduced_dims(x))
        return d_gy, d_x, d_s, None, None, None


class _ReLU(torch.autograd.Function):
    """``max(x, 0)`` whose backward pass is :class:`_ReLUBackward`."""

    @staticmethod
    def forward(ctx, x):
        y = torch.clamp_min(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return _ReLUBackward.apply(gy, y)


class _ReLUBackward(torch.autograd.Function):
    """``gy * (y > 0)``, differentiable once; its derivative in ``y`` is zero."""

    @staticmethod
    def forward(ctx, gy, y):
        ctx.save_for_backward(y)
        return torch.ops.aten.threshold_backward(gy, y, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, gg):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(gg, y, 0), None


def _channel_shape(x: torch.Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.ndim - 2)


def _reduced_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.ndim)]


def _plain(*tensors: Any) -> bool:
    """Return whether every argument is None or a floating-point tensor.

    Tensor subclasses other than parameters keep PyTorch's own operators,
    whose overrides the rules would bypass.
    """
    return all(
        t is None or (type(t) in _PLAIN_TYPES and t.is_floating_point())
        for t in tensors
    )


def _convolution(
    dims, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1
):
    if (
        isinstance(padding, str)
        or not _plain(input, weight, bias)
        or input.ndim != dims + 2
    ):
        return NotImplemented
    output = _Convolution.apply(
        input,
        weight,
        _expand(stride, dims),
        _expand(padding, dims),
        _expand(dilation, dims),
        groups,
    )
    if bias is not None:
        output = output + bias.reshape((1, -1) + (1,) * dims)
    return output


def _batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
):
    # In train mode, or without running statistics, BatchNorm normalises by
    # batch statistics, which is not an affine map of its input.
    if (
        training
        or running_mean is None
        or running_var is None
        or input.ndim < 2
        or not _plain(input, running_mean, running_var, weight, bias)
    ):
        return NotImplemented
    # The scale-and-shift form of PyTorch's CPU kernel for eval mode.
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return _ChannelAffine.apply(input, scale, shift)


def _relu(input, inplace=False):
    if inplace or not _plain(input):
        return NotImplemented
    return _ReLU.apply(input)


class _SecondOrderRules(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = NotImplemented
        if func in _CONVOLUTIONS:
            result = _convolution(_CONVOLUTIONS[func], *args, **kwargs)
        elif func is F.batch_norm:
            result = _batch_norm(*args, **kwargs)
        elif func is F.relu or func is torch.relu:
            result = _relu(*args, **kwargs)
        if result is NotImplemented:
            return func(*args, **kwargs)
        return result


def second_order_rules() -> TorchFunctionMode:
    """Return a context in which layers use the rules of this module.

    Inside the context, calls of :func:`torch.nn.functional.conv1d`,
    ``conv2d``, ``conv3d``, ``batch_norm`` in eval mode and ``relu`` (not in
    place), with plain tensors, build graphs whose second backward pass uses
    the minimal rules above. Every other call runs unchanged.
    """
    return _SecondOrderRules()


def rule_functions() -> tuple[Callable[..., Any], ...]:
    """Return the functions the rules replace, for tests and documentation."""
    return (*_CONVOLUTIONS, F.batch_norm, F.relu, torch.relu)
