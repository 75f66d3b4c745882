"""PyTorch's own conformance samples (the OpInfo and ModuleInfo entries its test suite runs for conv2d,
max_pool2d, nn.Conv2d and nn.MaxPool2d) through fastconv: same values, gradients and errors as torch.

These are inputs nobody here chose: values in [-9, 9], unbatched inputs, 'same' padding with even kernels,
mixed dtypes, negative arguments. Tolerances are torch.testing.assert_close's defaults for the dtype; in float32,
where sums of such values cancel, a result outside them passes when it is as close to the float64 answer as
torch's own float32 answer is (the samples are not seeded: they differ from run to run)."""
import pytest
import torch

import fastconv
import fastconv.functional as FF


common_methods_invocations = pytest.importorskip("torch.testing._internal.common_methods_invocations")
common_modules = pytest.importorskip("torch.testing._internal.common_modules")

OURS = {"nn.functional.conv2d": FF.conv2d, "nn.functional.max_pool2d": FF.max_pool2d}
OPINFOS = {op.name: op for op in common_methods_invocations.op_db if op.name in OURS and not op.variant_test_name}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _float64(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().double().requires_grad_(value.requires_grad)
    return value


def _close_or_as_accurate_as_torch(got, expected, exact, where):
    """assert_close's defaults, or (``exact`` given: float32) no further from the float64 answer ``exact`` than
    twice torch's own error, or 2 ulp of the largest value."""
    try:
        torch.testing.assert_close(got, expected, check_stride=False, msg=lambda m: f"{where}: {m}")
        return
    except AssertionError:
        if exact is None or not got.is_floating_point():
            raise
    ours = (got.double() - exact).abs().max().item()
    theirs = (expected.double() - exact).abs().max().item()
    bound = 2 * theirs + 2 * torch.finfo(got.dtype).eps * exact.abs().max().item()
    assert ours <= bound, f"{where}: error vs float64 {ours:.3g}, torch's {theirs:.3g} (bound {bound:.3g})"


def test_both_opinfos_found():
    assert sorted(OPINFOS) == sorted(OURS)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("name", sorted(OURS))
def test_opinfo_samples_match_torch(name, dtype, isa):
    op = OPINFOS[name]
    differentiable = dtype in (torch.float32, torch.float64)
    samples = list(op.sample_inputs("cpu", dtype, requires_grad=differentiable))
    assert samples
    for sample in samples:
        args, kwargs = sample.args, sample.kwargs
        where = f"{name} input {tuple(sample.input.shape)} args {[getattr(a, 'shape', a) for a in args]} {kwargs}"
        expected = _as_tuple(op.op(sample.input, *args, **kwargs))
        got = _as_tuple(OURS[name](sample.input, *args, **kwargs))
        assert len(got) == len(expected), where
        exact = [None] * len(expected)
        if dtype == torch.float32:
            x64, args64 = _float64(sample.input), [_float64(a) for a in args]
            exact = _as_tuple(op.op(x64, *args64, **{k: _float64(v) for k, v in kwargs.items()}))
        for g, e, x in zip(got, expected, exact):
            _close_or_as_accurate_as_torch(g, e, None if x is None else x.detach(), where)
        if not differentiable:
            continue
        leaves = [sample.input] + [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grad_output = torch.randn_like(expected[0])
        expected_grads = torch.autograd.grad(expected[0], leaves, grad_output)
        got_grads = torch.autograd.grad(got[0], leaves, grad_output)
        exact_grads = [None] * len(leaves)
        if dtype == torch.float32:
            leaves64 = [x64] + [a for a in args64 if isinstance(a, torch.Tensor) and a.requires_grad]
            exact_grads = torch.autograd.grad(exact[0], leaves64, grad_output.double())
        for g, e, x in zip(got_grads, expected_grads, exact_grads):
            _close_or_as_accurate_as_torch(g, e, x, f"{where} (gradient)")


@pytest.mark.parametrize("name", sorted(OURS))
def test_opinfo_error_inputs_raise_like_torch(name):
    """Every call torch's suite expects to fail raises the same exception type from fastconv."""
    errors = list(OPINFOS[name].error_inputs("cpu"))
    assert errors
    for error in errors:
        sample = error.sample_input
        with pytest.raises(error.error_type):
            OURS[name](sample.input, *sample.args, **sample.kwargs)


MODULES = {torch.nn.Conv2d: fastconv.Conv2d, torch.nn.MaxPool2d: fastconv.MaxPool2d}
MODULEINFOS = [info for info in common_modules.module_db if info.module_cls in MODULES]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info", MODULEINFOS, ids=lambda info: info.module_cls.__name__)
def test_moduleinfo_samples_match_torch(info, dtype):
    """Each constructor form of torch's module samples builds our module with the same repr and state_dict
    keys; loaded with torch's weights it gives the same output and gradients."""
    module_inputs = [m for m in info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                                        training=True) if m.forward_input is not None]
    assert module_inputs
    for module_input in module_inputs:
        c_args, c_kwargs = module_input.constructor_input.args, module_input.constructor_input.kwargs
        theirs = info.module_cls(*c_args, **c_kwargs).to(dtype)
        ours = MODULES[info.module_cls](*c_args, **c_kwargs).to(dtype)
        assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
        ours.load_state_dict(theirs.state_dict())
        f_args, f_kwargs = module_input.forward_input.args, module_input.forward_input.kwargs
        expected = _as_tuple(theirs(*f_args, **f_kwargs))
        got = _as_tuple(ours(*f_args, **f_kwargs))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)
        leaves = [a for a in f_args if isinstance(a, torch.Tensor) and a.requires_grad]
        grad_output = torch.randn_like(expected[0])
        expected_grads = torch.autograd.grad(expected[0], leaves + list(theirs.parameters()), grad_output)
        got_grads = torch.autograd.grad(got[0], leaves + list(ours.parameters()), grad_output)
        for g, e in zip(got_grads, expected_grads):
            torch.testing.assert_close(g, e)
