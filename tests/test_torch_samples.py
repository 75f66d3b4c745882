"""PyTorch's own conformance samples (the OpInfo and ModuleInfo entries its test suite runs for conv2d,
max_pool2d, nn.Conv2d and nn.MaxPool2d) through fastconv: same values, gradients and errors as torch.

These are inputs nobody here chose: values in [-9, 9], unbatched inputs, 'same' padding with even kernels,
mixed dtypes, negative arguments. Tolerances are torch.testing.assert_close's defaults for the dtype."""
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
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, check_stride=False, msg=lambda m: f"{where}: {m}")
        if not differentiable:
            continue
        leaves = [sample.input] + [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grad_output = torch.randn_like(expected[0])
        expected_grads = torch.autograd.grad(expected[0], leaves, grad_output)
        got_grads = torch.autograd.grad(got[0], leaves, grad_output)
        for g, e in zip(got_grads, expected_grads):
            torch.testing.assert_close(g, e, msg=lambda m: f"{where} (gradient): {m}")


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
