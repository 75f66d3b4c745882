"""torch.nn.functional's conv2d and max_pool2d, running on fastconv's kernels.

All argument normalisation (int vs tuple, 'same' / 'valid', stride=None, unbatched input) lives here, once;
the ops below take explicit 4D tensors and explicit per-dim values.
"""
import operator

import torch
import torch.autograd.forward_ad as _forward_ad

from ._ops import ops

__all__ = ["conv2d", "max_pool2d", "max_pool2d_with_indices"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int(value, name, op):
    """One integer argument as torch's argument parser takes it: a Python or numpy integer, or a one-element
    integer tensor; never a bool, a float or a string (TypeError), nor a value outside int64 (ValueError)."""
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "ndarray"):
        raise TypeError(f"{op}(): argument '{name}' must be int or tuple of ints, not {type(value).__name__}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{op}(): argument '{name}' must be int or tuple of ints, not {type(value).__name__}"
        ) from None
    if not _INT64_MIN <= result <= _INT64_MAX:
        raise ValueError(f"{op}(): argument '{name}' is out of the int64 range (Overflow when unpacking long long)")
    return result


def _ints(value, name, op):
    """A list of integers from an int or a tuple / list of them, each as `_int`."""
    if isinstance(value, (tuple, list)):
        return [_int(v, name, op) for v in value]
    return [_int(value, name, op)]


def _pair(value, name, op="conv2d"):
    values = _ints(value, name, op)
    if not isinstance(value, (tuple, list)) or len(values) == 1:
        return values * 2
    if len(values) == 2:
        return values
    raise RuntimeError(
        f"expected {name} to be a single integer value or a list of 2 values to match the convolution "
        f"dimensions, but got {name}={values}"
    )


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


def _refuse_transforms(op, *tensors):
    """The ops' autograd (torch.library.register_autograd) is backward mode only, and torch.func cannot see
    through it: under forward-mode AD (torch.func.jvp, jacfwd, torch.autograd.forward_ad) the tangent would be
    dropped without a word, and torch.func's grad transforms refuse with a message about autograd.Function. Say so
    plainly instead. (torch.func.vmap alone works: torch loops over the batch.)"""
    if torch.compiler.is_compiling():
        return
    present = [t for t in tensors if isinstance(t, torch.Tensor)]
    if _forward_ad._current_level >= 0 and any(_forward_ad.unpack_dual(t).tangent is not None for t in present):
        mode = "forward-mode AD (torch.func.jvp / jacfwd, torch.autograd.forward_ad)"
    elif any(torch._C._functorch.is_gradtrackingtensor(t) for t in present):
        mode = "torch.func's grad transforms (grad, vjp, jacrev, hessian)"
    else:
        return
    raise NotImplementedError(
        f"fastconv's {op} does not support {mode}: its autograd is backward mode only (loss.backward(), "
        "torch.autograd.grad). Use torch.nn.functional's, or fastconv.revert(model) for a model.")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same arguments, result, layout and errors as torch.nn.functional.conv2d."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"conv2d(): argument 'weight' must be Tensor, not {type(weight).__name__}")
    batched = _batched(input, "conv2d")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"conv2d(): argument 'bias' must be Tensor or None, not {type(bias).__name__}")
    stride = _pair(stride, "stride")
    dilation = _pair(dilation, "dilation")
    padding = _conv_padding(padding, weight, stride, dilation)
    groups = _int(groups, "groups", "conv2d")
    _refuse_transforms("conv2d", input, weight, bias)
    x = input if batched else input.unsqueeze(0)
    x, weight, bias = _autocast(x, weight, bias)
    out = _conv2d_any_dtype(x, weight, bias, stride, padding, dilation, groups)
    if x.shape[1] == 0:
        # Over zero input channels the op returns the bias (or zeros), but torch's conv2d returns no output
        # channels at all: (N, 0, P, Q). Same shape as torch; the weight and bias gradients are still zeros.
        out = out.narrow(1, 0, 0)
    return out if batched else out.squeeze(0)


def _autocast(x, weight, bias):
    """Under torch.autocast a conv runs in the autocast dtype, as torch's does (max_pool keeps its dtype):
    like torch's autocast, only floating tensors other than float64 are cast."""
    device = x.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)

    def cast(t):
        eligible = t is not None and t.is_floating_point() and t.dtype != torch.float64
        return t.to(dtype) if eligible else t

    return cast(x), cast(weight), cast(bias)


# The dtypes torch's conv2d computes (its slow_conv2d on the CPU); for any other input dtype it raises
# NotImplementedError whatever the weight's, named as below.
_CONV_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
                torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64}
_TORCH_DTYPE_NAMES = {torch.bool: "Bool", torch.uint16: "UInt16", torch.uint32: "UInt32", torch.uint64: "UInt64",
                      torch.float8_e4m3fn: "Float8_e4m3fn", torch.float8_e5m2: "Float8_e5m2",
                      torch.complex32: "ComplexHalf"}


def _conv2d_any_dtype(x, weight, bias, stride, padding, dilation, groups):
    """Floating types run on the kernels as they are; like torch, complex and integer convs work too:
    complex as four real convs, integers exactly (see _integer_conv2d)."""
    if x.layout != torch.strided or weight.layout != torch.strided:
        raise RuntimeError(f"conv2d: expected dense (strided) input and weight, got {x.layout} and {weight.layout}")
    if isinstance(bias, torch.Tensor) and bias.dtype != x.dtype:
        raise RuntimeError(f"Input type ({x.dtype}) and bias type ({bias.dtype}) should be the same")
    if x.dtype not in _CONV_DTYPES:  # (mixed supported dtypes are the op's RuntimeError, as torch's)
        name = _TORCH_DTYPE_NAMES.get(x.dtype, str(x.dtype).replace("torch.", ""))
        raise NotImplementedError(f"\"conv2d\" not implemented for '{name}'")
    if x.is_complex() and weight.is_complex() and x.dtype == weight.dtype:
        def conv(a, b, bias_part):
            return ops.conv2d(a, b, bias_part, stride, padding, dilation, groups)
        real = conv(x.real, weight.real, None if bias is None else bias.real) - conv(x.imag, weight.imag, None)
        imag = conv(x.real, weight.imag, None if bias is None else bias.imag) + conv(x.imag, weight.real, None)
        return torch.complex(real, imag)
    if not x.is_floating_point() and not x.is_complex() and x.dtype == weight.dtype:
        return _integer_conv2d(x, weight, bias, stride, padding, dilation, groups)
    return ops.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _integer_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """Integer convs exactly, wrapping as torch's arithmetic in the dtype does (two's complement, modulo
    2**bits). Each operand's bits are split into 16-bit limbs; each pair of limbs whose product lands below bit
    `bits` is convolved in float64 (limb products < 2**32: sums exact up to 2**21 taps per group), and the limb
    sums are shifted into place and added in int64, which wraps modulo 2**64; the cast keeps the low bits."""
    bits = torch.iinfo(x.dtype).bits
    taps = weight.shape[1] * weight.shape[2] * weight.shape[3]
    if taps >= 2**21:
        raise NotImplementedError(f"conv2d of {x.dtype}: over 2**21 taps per output channel are not exact here")
    count = (bits + 15) // 16
    mask = (1 << min(bits, 16)) - 1

    def limbs(t):
        wide = t.long()
        return [((wide >> (16 * i)) & mask).double() for i in range(count)]

    x_limbs, w_limbs = limbs(x), limbs(weight)
    out = None
    for i in range(count):
        for j in range(count - i):
            part = ops.conv2d(x_limbs[i], w_limbs[j], None, stride, padding, dilation, groups).long() << (16 * (i + j))
            out = part if out is None else out + part
    if bias is not None:
        out = out + bias.long().view(1, -1, 1, 1)
    return out.to(x.dtype)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """(output, indices) of max_pool2d; indices count h * W + w within each input plane, as torch's."""
    batched = _batched(input, "max_pool2d")
    if input.dim() not in (3, 4):
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    op = "max_pool2d"
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}(): argument 'ceil_mode' must be bool, not {type(ceil_mode).__name__}")
    kernel = _pool_pair(kernel_size, "kernel_size", op)
    no_stride = stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
    stride = kernel if no_stride else _pool_pair(stride, "stride", op)
    if any(s == 0 for s in stride):
        raise RuntimeError("stride should not be zero")
    padding = _pool_pair(padding, "padding", op)
    dilation = _pool_pair(dilation, "dilation", op)
    _refuse_transforms(op, input)
    x = input if batched else input.unsqueeze(0)
    out, indices = ops.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    return (out, indices) if batched else (out.squeeze(0), indices.squeeze(0))


def _pool_pair(value, name, op):
    values = _ints(value, name, op)
    if len(values) not in (1, 2):
        raise RuntimeError(f"{op}: {name} must either be a single int, or a tuple of two ints")
    return [values[0], values[-1]]


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Same arguments, result, layout and errors as torch.nn.functional.max_pool2d."""
    out, indices = max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out
