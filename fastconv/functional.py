"""torch.nn.functional's conv2d and max_pool2d, running on fastconv's kernels.

All argument normalisation (int vs tuple, 'same' / 'valid', stride=None, unbatched input) lives here, once;
the ops below take explicit 4D tensors and explicit per-dim values.
"""
from collections.abc import Sequence

import torch

from ._ops import ops

__all__ = ["conv2d", "max_pool2d", "max_pool2d_with_indices"]


def _pair(value, name, op="the convolution dimensions"):
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = [int(v) for v in value]
        if len(values) == 1:
            return values * 2
        if len(values) == 2:
            return values
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of 2 values to match {op}, "
            f"but got {name}={values}"
        )
    return [int(value)] * 2


def _conv_padding(padding, weight, stride, dilation):
    """[top, left, bottom, right] for an int, a pair, 'valid' or 'same' (extra padding of an even kernel
    goes to the bottom/right, as in torch)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}'")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        begin = [t // 2 for t in total]
        return begin + [t - b for t, b in zip(total, begin)]
    pad = _pair(padding, "padding")
    return pad + pad


def _batched(input, op):
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}(): argument 'input' must be Tensor, not {type(input).__name__}")
    return input.dim() == 4


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same arguments, result, layout and errors as torch.nn.functional.conv2d."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"conv2d(): argument 'weight' must be Tensor, not {type(weight).__name__}")
    batched = _batched(input, "conv2d")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    padding = _conv_padding(padding, weight, stride, dilation)
    x = input if batched else input.unsqueeze(0)
    x, weight, bias = _autocast(x, weight, bias)
    out = _conv2d_any_dtype(x, weight, bias, stride, padding, dilation, int(groups))
    return out if batched else out.squeeze(0)


def _autocast(x, weight, bias):
    """Under torch.autocast a conv runs in the autocast dtype, as torch's does (max_pool keeps its dtype)."""
    device = x.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device) or not x.is_floating_point():
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)
    return tuple(None if t is None else t.to(dtype) for t in (x, weight, bias))


def _conv2d_any_dtype(x, weight, bias, stride, padding, dilation, groups):
    """Floating types run on the kernels as they are; like torch, complex and integer convs work too:
    complex as four real convs, integers exactly in float64 (|sums| < 2**53), wrapping like torch's."""
    if isinstance(bias, torch.Tensor) and bias.dtype != x.dtype:
        raise RuntimeError(f"Input type ({x.dtype}) and bias type ({bias.dtype}) should be the same")
    if x.is_complex() and weight.is_complex() and x.dtype == weight.dtype:
        def conv(a, b, bias_part):
            return ops.conv2d(a, b, bias_part, stride, padding, dilation, groups)
        real = conv(x.real, weight.real, None if bias is None else bias.real) - conv(x.imag, weight.imag, None)
        imag = conv(x.real, weight.imag, None if bias is None else bias.imag) + conv(x.imag, weight.real, None)
        return torch.complex(real, imag)
    if not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool and x.dtype == weight.dtype:
        as_double = [None if t is None else t.double() for t in (x, weight, bias)]
        out = ops.conv2d(*as_double, stride, padding, dilation, groups)
        return out.round().long().to(x.dtype)
    return ops.conv2d(x, weight, bias, stride, padding, dilation, groups)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(output, indices) of max_pool2d; indices count h * W + w within each input plane, as torch's."""
    batched = _batched(input, "max_pool2d")
    if input.dim() not in (3, 4):
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    op = "max_pool2d"
    kernel = _pool_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or (isinstance(stride, Sequence) and len(stride) == 0) else _pool_pair(stride, "stride", op)
    if any(s == 0 for s in stride):
        raise RuntimeError("stride should not be zero")
    padding = _pool_pair(padding, "padding", op)
    dilation = _pool_pair(dilation, "dilation", op)
    x = input if batched else input.unsqueeze(0)
    out, indices = ops.max_pool2d(x, kernel, stride, padding, dilation, bool(ceil_mode))
    return (out, indices) if batched else (out.squeeze(0), indices.squeeze(0))


def _pool_pair(value, name, op):
    if isinstance(value, Sequence):
        if len(value) not in (1, 2):
            raise RuntimeError(f"{op}: {name} must either be a single int, or a tuple of two ints")
        return [int(value[0]), int(value[-1])]
    return [int(value)] * 2


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Same arguments, result, layout and errors as torch.nn.functional.max_pool2d."""
    out, indices = max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out
