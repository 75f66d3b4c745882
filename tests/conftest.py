"""Shared fixtures and case generators for the fastconv core test suite.

* `isa`: parametrizes a test over the CPU micro-kernel ISAs (scalar, avx2, avx512), forcing each through
  FASTCONV_ISA (read by fastconv at every call) and skipping the ones this CPU lacks.
* `sample_inputs(dtype, ...)`: a seeded list of conv2d cases (`ConvCase`) covering every argument form of
  torch.nn.functional.conv2d: odd sizes, strides, int / tuple / 'same' / 'valid' padding (also 'same' with
  dilation and even kernels), dilation, groups (depthwise and channel multipliers included), bias or None,
  unbatched 3-D input, zero-size batch, non-contiguous views and channels_last input and/or weight.
"""
import dataclasses
import random

import pytest
import torch

import fastconv

ALL_ISAS = ("scalar", "avx2", "avx512")


# avx512_bf16 runs the float32 kernels of avx512 and multiplies bfloat16 operands in bfloat16; amx_bf16 (never
# chosen unasked) is avx512_bf16 with every bfloat16 GEMM on AMX tiles and no Winograd for bfloat16: tests of
# bfloat16 inputs add both (isa_bf16). On a CPU with AVX512-BF16 but no AMX, amx_bf16 runs with its tile
# instructions emulated (FASTCONV_AMX_EMULATION=1).
BF16_PRODUCT_ISAS = ("avx512_bf16", "amx_bf16")
BF16_ISAS = ALL_ISAS + BF16_PRODUCT_ISAS


def amx_emulated():
    """Whether amx_bf16 runs here only through the tile emulation."""
    have = fastconv.cpu_info()[1].strip("]").split("[")[-1].split(",")
    return "amx_bf16" not in have and "avx512_bf16" in have


def available_isas(isas=ALL_ISAS):
    """ISAs this CPU runs: scalar always, the others when cpu_info()'s description lists them (amx_bf16 also
    where it can be emulated)."""
    have = fastconv.cpu_info()[1].strip("]").split("[")[-1].split(",")
    return [isa for isa in isas if isa == "scalar" or isa in have or (isa == "amx_bf16" and amx_emulated())]


def isa_params(isas=ALL_ISAS):
    """One pytest.param per ISA, the ones this CPU lacks skipped (so every machine shows the same ids)."""
    have = available_isas(isas)
    return [
        pytest.param(isa, id=isa, marks=pytest.mark.skipif(isa not in have, reason=f"CPU has no {isa}"))
        for isa in isas
    ]


def _force_isa(request, monkeypatch):
    if request.param == "amx_bf16" and amx_emulated():
        monkeypatch.setenv("FASTCONV_AMX_EMULATION", "1")
    monkeypatch.setenv("FASTCONV_ISA", request.param)
    assert fastconv.cpu_info()[0] == request.param
    return request.param


@pytest.fixture(params=isa_params())
def isa(request, monkeypatch):
    """Force fastconv's CPU micro-kernel ISA for the test (monkeypatch restores FASTCONV_ISA after)."""
    return _force_isa(request, monkeypatch)


@pytest.fixture(params=isa_params(BF16_ISAS))
def isa_bf16(request, monkeypatch):
    """The ISAs of `isa`, avx512_bf16 and amx_bf16 (emulated where the CPU lacks AMX), for tests of bfloat16
    inputs."""
    return _force_isa(request, monkeypatch)


@pytest.fixture
def restore_num_threads():
    """Tests that change torch.set_num_threads get the original count back, pass or fail."""
    n = torch.get_num_threads()
    yield n
    torch.set_num_threads(n)


@pytest.fixture
def one_thread(restore_num_threads):
    """Tiny tensors: one thread is faster, and 2-thread OpenMP spins badly on a busy 2-core machine."""
    torch.set_num_threads(1)


# --- conv2d cases --------------------------------------------------------------------------------------

LAYOUTS = ("contiguous", "cl_input", "cl_weight", "cl_both", "transposed", "sliced")


@dataclasses.dataclass
class ConvSpec:
    """One conv2d problem, described without tensors; `make_case` builds them."""
    N: int
    C: int
    K: int
    H: int
    W: int
    R: int
    S: int
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True
    unbatched: bool = False
    layout: str = "contiguous"  # one of LAYOUTS

    def id(self):
        n = "unbatched" if self.unbatched else f"N{self.N}"
        pad = self.padding if isinstance(self.padding, str) else str(self.padding).replace(" ", "")
        return (f"{n}-C{self.C}K{self.K}-{self.H}x{self.W}-k{self.R}x{self.S}-s{str(self.stride).replace(' ', '')}"
                f"-p{pad}-d{str(self.dilation).replace(' ', '')}-g{self.groups}-{'b' if self.bias else 'nob'}"
                f"-{self.layout}")


@dataclasses.dataclass
class ConvCase:
    input: torch.Tensor
    weight: torch.Tensor
    bias: object  # Tensor or None
    kwargs: dict  # stride, padding, dilation, groups, in the form the caller should pass them
    spec: ConvSpec

    def args(self):
        return (self.input, self.weight, self.bias)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _strided_view(shape, dtype, gen, how):
    """A non-contiguous tensor of `shape`: a transposed (last two dims) or a sliced view of a bigger one."""
    if how == "transposed":
        base = torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype, generator=gen)
        return base.transpose(-1, -2)
    # sliced: every other channel (dim -3) and a window of the last dim
    big = list(shape)
    big[-3] = 2 * shape[-3]
    big[-1] = shape[-1] + 3
    base = torch.randn(*big, dtype=dtype, generator=gen)
    return base[..., ::2, :, 1:shape[-1] + 1]


def make_case(spec, dtype=torch.float32, seed=0):
    """Tensors for `spec`, deterministic in `seed`."""
    gen = torch.Generator().manual_seed(seed)
    xshape = (spec.C, spec.H, spec.W) if spec.unbatched else (spec.N, spec.C, spec.H, spec.W)
    wshape = (spec.K, spec.C // spec.groups, spec.R, spec.S)
    if spec.layout in ("transposed", "sliced"):
        x = _strided_view(xshape, dtype, gen, spec.layout)
        w = _strided_view(wshape, dtype, gen, spec.layout)
        assert not x.is_contiguous() and not w.is_contiguous() or min(xshape + wshape) <= 1
    else:
        x = torch.randn(xshape, dtype=dtype, generator=gen)
        w = torch.randn(wshape, dtype=dtype, generator=gen)
        if spec.layout in ("cl_input", "cl_both") and not spec.unbatched:
            x = x.contiguous(memory_format=torch.channels_last)
        if spec.layout in ("cl_weight", "cl_both"):
            w = w.contiguous(memory_format=torch.channels_last)
    b = torch.randn(spec.K, dtype=dtype, generator=gen) if spec.bias else None
    kwargs = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)
    return ConvCase(x, w, b, kwargs, spec)


# Every argument form at least once, chosen by hand; the random ones below mix them.
FORM_SPECS = [
    ConvSpec(2, 3, 4, 7, 9, 3, 3),                                              # plain, odd sizes
    ConvSpec(1, 1, 1, 1, 1, 1, 1),                                              # 1x1 everything
    ConvSpec(3, 5, 7, 11, 6, 1, 1, bias=False),                                 # pointwise, no bias
    ConvSpec(2, 3, 5, 9, 8, 3, 2, stride=2, padding=1),                         # stride, even kernel width
    ConvSpec(2, 4, 6, 10, 11, 3, 3, stride=(2, 3), padding=(1, 2)),             # tuple stride / padding
    ConvSpec(1, 2, 3, 8, 7, 5, 4, stride=3, padding=2),                         # stride 3
    ConvSpec(2, 3, 4, 7, 7, 3, 3, padding="same"),                              # 'same', odd kernel
    ConvSpec(2, 3, 4, 7, 8, 4, 2, padding="same"),                              # 'same', even kernels
    ConvSpec(2, 3, 4, 9, 9, 2, 3, padding="same", dilation=2),                  # 'same' + dilation, even k
    ConvSpec(1, 2, 2, 10, 9, 4, 4, padding="same", dilation=(3, 2), bias=False),  # 'same', tuple dilation
    ConvSpec(2, 3, 4, 6, 7, 3, 3, padding="valid"),                             # 'valid'
    ConvSpec(2, 3, 4, 9, 10, 3, 3, dilation=2, padding=1),                      # dilation
    ConvSpec(2, 3, 4, 11, 9, 3, 2, dilation=(2, 3), stride=2, padding=(2, 1)),  # dilation + stride
    ConvSpec(2, 4, 6, 7, 6, 3, 3, groups=2, padding=1),                         # groups
    ConvSpec(2, 6, 9, 7, 6, 3, 3, groups=3, stride=2, padding=1, bias=False),   # groups 3, stride
    ConvSpec(2, 5, 5, 8, 7, 3, 3, groups=5, padding=1),                         # depthwise
    ConvSpec(2, 4, 12, 8, 7, 3, 3, groups=4, padding=1, stride=2),              # depthwise, multiplier 3
    ConvSpec(1, 3, 6, 9, 9, 5, 5, groups=3, padding=2, dilation=2),             # depthwise x2, dilation
    ConvSpec(0, 3, 4, 7, 7, 3, 3, padding=1),                                   # zero-size batch
    ConvSpec(0, 4, 4, 5, 6, 3, 3, groups=2, layout="cl_input"),                 # zero batch, channels_last
    ConvSpec(1, 3, 4, 7, 8, 3, 3, padding=1, unbatched=True),                   # unbatched 3-D input
    ConvSpec(1, 4, 4, 7, 8, 3, 3, groups=4, stride=2, unbatched=True, bias=False),  # unbatched depthwise
    ConvSpec(1, 3, 4, 7, 8, 2, 2, padding="same", unbatched=True, layout="cl_weight"),  # unbatched + cl weight
    ConvSpec(2, 3, 5, 7, 9, 3, 3, padding=1, layout="cl_input"),                # channels_last input
    ConvSpec(2, 3, 5, 7, 9, 3, 3, padding=1, layout="cl_weight"),               # channels_last weight
    ConvSpec(2, 6, 8, 7, 9, 3, 3, stride=2, padding=1, groups=2, layout="cl_both"),  # both, groups, stride
    ConvSpec(2, 4, 4, 6, 7, 3, 3, groups=4, padding=1, layout="cl_both"),       # channels_last depthwise
    ConvSpec(2, 3, 4, 8, 7, 3, 3, padding=1, layout="transposed"),              # transposed views
    ConvSpec(2, 4, 6, 8, 9, 3, 2, stride=2, groups=2, layout="sliced"),         # sliced views
    ConvSpec(2, 3, 4, 9, 8, 3, 3, padding="same", dilation=2, layout="sliced"),  # sliced + 'same'
    ConvSpec(2, 3, 4, 3, 3, 5, 5, padding=1),                                   # kernel = padded input
    ConvSpec(1, 2, 3, 4, 13, 1, 7, padding=(0, 3), stride=(1, 2)),              # 1xS kernel
    ConvSpec(1, 17, 19, 5, 5, 3, 3, padding=1),                                 # channel counts > micro tile
    # wide enough for the GEMM (and Winograd) in float32 in every pass, not only the thin direct kernels
    ConvSpec(2, 20, 24, 7, 9, 3, 3, padding=1),                                 # GEMM forward, flipped, wgrad
    ConvSpec(2, 20, 24, 9, 8, 3, 3, stride=2, padding=1, layout="cl_both"),     # NHWC GEMM, col2im
    ConvSpec(3, 18, 34, 6, 7, 1, 1, stride=(1, 2), layout="cl_input"),          # 1x1 NHWC, col2im
    ConvSpec(2, 24, 36, 8, 7, 3, 3, groups=2, dilation=2, padding=2),           # grouped, dilated GEMM
    ConvSpec(2, 32, 40, 6, 7, 3, 3, padding=1),                                 # Winograd, tile lanes
    ConvSpec(2, 32, 33, 5, 6, 3, 3, padding=1, layout="cl_both", bias=False),   # Winograd NHWC
]


def _random_spec(rng):
    groups_kind = rng.choice(["one", "one", "groups", "depthwise"])
    if groups_kind == "one":
        groups, C, K = 1, rng.randint(1, 6), rng.randint(1, 7)
    elif groups_kind == "groups":
        groups = rng.randint(2, 3)
        C, K = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    else:
        groups = rng.randint(1, 5)
        C, K = groups, groups * rng.randint(1, 3)
    R, S = rng.randint(1, 4), rng.randint(1, 4)
    dh, dw = rng.choice([(1, 1), (1, 1), (2, 2), (1, 2), (3, 1)])
    dilation = dh if dh == dw and rng.random() < 0.5 else (dh, dw)
    pad_kind = rng.choice(["int", "tuple", "same", "valid"])
    if pad_kind == "same":
        sh = sw = 1
        stride = rng.choice([1, (1, 1)])
    else:
        sh, sw = rng.randint(1, 3), rng.randint(1, 3)
        stride = sh if sh == sw and rng.random() < 0.5 else (sh, sw)
    if pad_kind == "int":
        p = rng.randint(0, 2)
        padding, ph, pw = p, p, p
    elif pad_kind == "tuple":
        ph, pw = rng.randint(0, 2), rng.randint(0, 3)
        padding = (ph, pw)
    else:
        padding, ph, pw = pad_kind, 0, 0
    # input at least as big as the dilated kernel minus the padding (torch rejects smaller)
    eff_r, eff_s = dh * (R - 1) + 1, dw * (S - 1) + 1
    H = max(rng.randint(1, 10), eff_r - 2 * ph, 1)
    W = max(rng.randint(1, 10), eff_s - 2 * pw, 1)
    unbatched = rng.random() < 0.1
    N = 1 if unbatched else rng.choice([0, 1, 2, 2, 3, 3])
    layout = rng.choice(LAYOUTS)
    if unbatched and layout in ("cl_input", "cl_both"):
        layout = "cl_weight"
    return ConvSpec(N, C, K, H, W, R, S, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    bias=rng.random() < 0.6, unbatched=unbatched, layout=layout)


def random_specs(count, seed):
    rng = random.Random(seed)
    return [_random_spec(rng) for _ in range(count)]


def conv_specs(n_random=40, seed=1234):
    """The hand-picked forms followed by `n_random` seeded random ones."""
    return FORM_SPECS + random_specs(n_random, seed)


def sample_inputs(dtype=torch.float32, n_random=40, seed=1234):
    """Yields seeded conv2d cases (ConvCase) over every argument form: the hand-picked forms, then
    `n_random` random mixes; the same sequence for the same arguments."""
    for i, spec in enumerate(conv_specs(n_random, seed)):
        yield make_case(spec, dtype, seed=i)


def memory_format_flags(t):
    """(contiguous?, channels_last-contiguous?) - compares layouts without guessing for ambiguous shapes."""
    if t.dim() != 4:
        return (t.is_contiguous(),)
    return (t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last))


def leaf_copies(case):
    """Fresh leaf views of the case's tensors (same strides), requiring grad."""
    x = case.input.detach().requires_grad_()
    w = case.weight.detach().requires_grad_()
    b = case.bias.detach().requires_grad_() if case.bias is not None else None
    return x, w, b


def run_case(fn, case, grad_output=None):
    """(output, grads of (input, weight[, bias]) for grad_output) of fn on fresh leaves of `case`."""
    x, w, b = leaf_copies(case)
    out = fn(x, w, b, **case.kwargs)
    if grad_output is None:
        return out, None
    inputs = [x, w] + ([b] if b is not None else [])
    grads = torch.autograd.grad(out, inputs, grad_output)
    return out, grads


# --- pairwise grids --------------------------------------------------------------------------------------

def pairwise(factors):
    """Rows (dicts name -> value) in which every pair of values of any two factors appears at least once: a
    greedy covering array, deterministic in the factors' order. Far fewer rows than the full product, each
    value of every factor still meeting each value of every other."""
    names = list(factors)
    sizes = [len(factors[n]) for n in names]

    def pairs_of(row):
        return {(a, row[a], b, row[b]) for a in range(len(names)) for b in range(a + 1, len(names))}

    uncovered = {(a, i, b, j) for a in range(len(names)) for b in range(a + 1, len(names))
                 for i in range(sizes[a]) for j in range(sizes[b])}
    rows = []
    while uncovered:
        a, i, b, j = min(uncovered)
        row = {a: i, b: j}
        for c in range(len(names)):
            if c in row:
                continue
            gain = lambda v: sum((min(x, c), row[x] if x < c else v, max(x, c), v if x < c else row[x]) in uncovered
                                 for x in row)
            row[c] = max(range(sizes[c]), key=lambda v: (gain(v), -v))
        uncovered -= pairs_of(row)
        rows.append({names[k]: factors[names[k]][row[k]] for k in range(len(names))})
    return rows


def uncovered_pairs(rows, factors):
    """The pairs of factor values (name, value, name, value) that no row holds: empty for a pairwise grid."""
    names = list(factors)
    want = {(a, repr(u), b, repr(v)) for ai, a in enumerate(names) for b in names[ai + 1:]
            for u in factors[a] for v in factors[b]}
    have = {(a, repr(r[a]), b, repr(r[b])) for r in rows for ai, a in enumerate(names) for b in names[ai + 1:]}
    return want - have
