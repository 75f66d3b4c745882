"""The registered ops: loads fastconv._C (which defines torch.ops.fastconv.*), adds their fake kernels, so
shapes propagate under torch.compile / FakeTensor, and their autograd formulas.

Every backward formula is itself written with fastconv ops, which have autograd of their own, so double
backward (gradgradcheck, gradient penalties) works through the same kernels.
"""
import torch
from torch._prims_common import suggest_memory_format

from . import _C  # noqa: F401  (loading it registers the ops)

ops = torch.ops.fastconv

_MAX_PADDING = 2**62 - 1  # torch's (and csrc/ops.cpp's) limit
_FLOAT_TYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _conv_layout(input, weight):
    """torch's rule: the result is channels_last when input or weight is, except over an empty batch."""
    if input.shape[0] == 0:
        return torch.contiguous_format
    if torch.channels_last in (suggest_memory_format(input), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def _conv_output_size(size, pad_begin, pad_end, kernel, stride, dilation):
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _check_conv(input, weight, stride, padding, dilation, groups):
    """The C++ checks of make_conv_params (csrc/ops.cpp), word for word where it matters; returns (P, Q)."""
    torch._check(input.dim() == 4, lambda: f"Expected 4D (batched) input to fastconv::conv2d, but got input of size: {list(input.shape)}")
    torch._check(weight.dim() == 4, lambda: f"Expected 4D weight to conv2d, but got weight of size: {list(weight.shape)}")
    torch._check(input.dtype in _FLOAT_TYPES, lambda: f"fastconv: input must be a floating point tensor, got {input.dtype}")
    torch._check(input.dtype == weight.dtype, lambda: f"expected scalar type {input.dtype} but found {weight.dtype}")
    torch._check(input.device == weight.device, lambda: "Expected input and weight to be on the same device")
    torch._check(all(s > 0 for s in stride), lambda: "non-positive stride is not supported")
    torch._check(all(d > 0 for d in dilation), lambda: "non-positive dilation is not supported")
    torch._check(all(p >= 0 for p in padding), lambda: "negative padding is not supported")
    torch._check(all(p <= _MAX_PADDING for p in padding), lambda: f"expected padding to be at most {_MAX_PADDING}")
    torch._check(groups > 0, lambda: "non-positive groups is not supported")
    n, c, h, w = input.shape
    k, cg, r, s = weight.shape
    torch._check(k >= groups and k % groups == 0, lambda: f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0")
    torch._check(c == cg * groups, lambda: f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(input.shape)} to have {cg * groups} channels, but got {c} channels instead")
    p = _conv_output_size(h, padding[0], padding[2], r, stride[0], dilation[0])
    q = _conv_output_size(w, padding[1], padding[3], s, stride[1], dilation[1])
    torch._check(p > 0 and q > 0, lambda: "Kernel size can't be greater than actual input size")
    return p, q


@torch.library.register_fake("fastconv::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    p, q = _check_conv(input, weight, stride, padding, dilation, groups)
    if bias is not None:
        torch._check(bias.shape == (weight.shape[0],), lambda: "expected bias to be 1-dimensional with one element per output channel")
    shape = (input.shape[0], weight.shape[0], p, q)
    return input.new_empty(shape).contiguous(memory_format=_conv_layout(input, weight))


@torch.library.register_fake("fastconv::conv2d_grad_input")
def _conv2d_grad_input_fake(grad_output, input, weight, stride, padding, dilation, groups):
    _check_conv(input, weight, stride, padding, dilation, groups)
    return grad_output.new_empty(input.shape).contiguous(memory_format=_conv_layout(input, weight))


@torch.library.register_fake("fastconv::conv2d_grad_weight")
def _conv2d_grad_weight_fake(grad_output, input, weight, stride, padding, dilation, groups):
    _check_conv(input, weight, stride, padding, dilation, groups)
    return grad_output.new_empty(weight.shape).contiguous(memory_format=_conv_layout(input, weight))


@torch.library.register_fake("fastconv::conv2d_grad_bias")
def _conv2d_grad_bias_fake(grad_output):
    torch._check(grad_output.dim() == 4, lambda: "fastconv: expected a 4D grad_output")
    return grad_output.new_empty((grad_output.shape[1],))


def _pool_output_size(size, kernel, pad, stride, dilation, ceil_mode):
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@torch.library.register_fake("fastconv::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(input.dim() == 4, lambda: "Expected 4D (batched) input to fastconv::max_pool2d")
    torch._check(all(k > 0 for k in kernel_size) and all(s > 0 for s in stride) and all(d > 0 for d in dilation),
                 lambda: "kernel size, stride and dilation should be greater than zero")
    torch._check(all(-(2**31) <= v < 2**31 for v in (*kernel_size, *stride, *padding, *dilation)),
                 lambda: "value cannot be converted to type int without overflow")
    torch._check(all(0 <= p <= k // 2 for p, k in zip(padding, kernel_size)),
                 lambda: "pad should be smaller than or equal to half of kernel size")
    n, c, h, w = input.shape
    p = _pool_output_size(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    q = _pool_output_size(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    torch._check(p >= 1 and q >= 1, lambda: "Output size is too small")
    layout = suggest_memory_format(input)
    out = input.new_empty((n, c, p, q)).contiguous(memory_format=layout)
    indices = input.new_empty((n, c, p, q), dtype=torch.int64).contiguous(memory_format=layout)
    return out, indices


@torch.library.register_fake("fastconv::max_pool2d_grad")
def _max_pool2d_grad_fake(grad_output, input, indices):
    return grad_output.new_empty(input.shape).contiguous(memory_format=suggest_memory_format(input))


# --- autograd -------------------------------------------------------------------------------------------

def _save_conv_args(ctx, stride, padding, dilation, groups):
    ctx.conv_args = (stride, padding, dilation, groups)


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None
    _save_conv_args(ctx, stride, padding, dilation, groups)


def _conv2d_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    args = ctx.conv_args
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    if input.shape[0] == 0:  # an empty batch: torch's gradients are zeros in the input's and weight's own strides
        grad_input = torch.zeros_like(input) if need_input else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
    else:
        grad_input = ops.conv2d_grad_input(grad, input, weight, *args) if need_input else None
        grad_weight = ops.conv2d_grad_weight(grad, input, weight, *args) if need_weight else None
    grad_bias = ops.conv2d_grad_bias(grad) if ctx.has_bias and need_bias else None
    return grad_input, grad_weight, grad_bias, None, None, None, None


# grad_input is bilinear in (grad_output, weight): its adjoints are the forward conv and the weight gradient.
def _grad_input_setup(ctx, inputs, output):
    grad_output, input, weight, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, weight)
    _save_conv_args(ctx, stride, padding, dilation, groups)


def _grad_input_backward(ctx, upstream):
    grad_output, weight = ctx.saved_tensors
    args = ctx.conv_args
    d_grad_output = ops.conv2d(upstream, weight, None, *args) if ctx.needs_input_grad[0] else None
    d_weight = ops.conv2d_grad_weight(grad_output, upstream, weight, *args) if ctx.needs_input_grad[2] else None
    return d_grad_output, None, d_weight, None, None, None, None


# grad_weight is bilinear in (grad_output, input): its adjoints are the forward conv and the input gradient.
def _grad_weight_setup(ctx, inputs, output):
    grad_output, input, weight, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, input, weight)
    _save_conv_args(ctx, stride, padding, dilation, groups)


def _grad_weight_backward(ctx, upstream):
    grad_output, input, weight = ctx.saved_tensors
    args = ctx.conv_args
    d_grad_output = ops.conv2d(input, upstream, None, *args) if ctx.needs_input_grad[0] else None
    d_input = ops.conv2d_grad_input(grad_output, input, upstream, *args) if ctx.needs_input_grad[1] else None
    return d_grad_output, d_input, None, None, None, None, None


def _grad_bias_setup(ctx, inputs, output):
    ctx.grad_output_shape = inputs[0].shape


def _grad_bias_backward(ctx, upstream):
    return upstream.view(1, -1, 1, 1).expand(ctx.grad_output_shape)


def _max_pool2d_setup(ctx, inputs, output):
    input = inputs[0]
    indices = output[1]
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(input, indices)
    # The indices never have a gradient: without this, autograd would allocate and zero one of their size (int64)
    # every backward, to hand in as _grad_indices.
    ctx.set_materialize_grads(False)


def _max_pool2d_backward(ctx, grad, _grad_indices):
    if grad is None:  # (the output is not used by what is differentiated, only its indices)
        return None, None, None, None, None, None
    input, indices = ctx.saved_tensors
    return ops.max_pool2d_grad(grad, input, indices), None, None, None, None, None


# max_pool2d_grad is linear in grad_output: its adjoint gathers the upstream gradient at the argmax indices.
def _max_pool2d_grad_setup(ctx, inputs, output):
    grad_output, input, indices = inputs
    ctx.save_for_backward(indices)


def _max_pool2d_grad_backward(ctx, upstream):
    (indices,) = ctx.saved_tensors
    gathered = upstream.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
    return gathered, None, None


torch.library.register_autograd("fastconv::conv2d", _conv2d_backward, setup_context=_conv2d_setup)
torch.library.register_autograd("fastconv::conv2d_grad_input", _grad_input_backward, setup_context=_grad_input_setup)
torch.library.register_autograd("fastconv::conv2d_grad_weight", _grad_weight_backward, setup_context=_grad_weight_setup)
torch.library.register_autograd("fastconv::conv2d_grad_bias", _grad_bias_backward, setup_context=_grad_bias_setup)
torch.library.register_autograd("fastconv::max_pool2d", _max_pool2d_backward, setup_context=_max_pool2d_setup)
torch.library.register_autograd("fastconv::max_pool2d_grad", _max_pool2d_grad_backward, setup_context=_max_pool2d_grad_setup)


def cpu_conv2d_algorithms(input, weight, stride=1, padding=0, dilation=1, groups=1):
    """The CPU algorithm each pass of this conv2d runs now, as {"forward", "grad_input", "grad_weight"}: one of
    none, depthwise, winograd_tile_lanes, winograd_image_lanes, winograd_f4_image_lanes, direct_few_outputs,
    direct_few_taps, gemm, gemm_col2im, gemm_bf16_pairs; a stride-1 grad-input computed as a forward reads
    "flipped_forward:<algorithm>". Arguments as torch.nn.functional.conv2d's (only the shapes, dtypes and memory
    formats of input and weight are read); the choice depends on FASTCONV_WINOGRAD as the ops' does."""
    from . import functional

    x = input if functional._batched(input, "conv2d") else input.unsqueeze(0)
    stride = functional._pair(stride, "stride")
    dilation = functional._pair(dilation, "dilation")
    padding = functional._conv_padding(padding, weight, stride, dilation)
    names = ops.conv2d_algorithms(x, weight, stride, padding, dilation, groups)
    return dict(zip(("forward", "grad_input", "grad_weight"), names))


def cpu_info():
    """(ISA the CPU kernels use now, description of the CPU with the ISAs it supports)."""
    isa, description = ops.cpu_info()
    return isa, description
