"""Muon (fastconv/train/muon.py): the orthogonalised update and the optimizer step."""

import pytest
import torch

from fastconv.train.muon import Muon, orthogonalize

COEFFS = (3.4445, -4.7750, 2.0315)


def reference_orthogonalize(g: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """The same polynomial applied to the singular values of g / |g|_F, through an SVD in float64."""
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    s = s / torch.linalg.norm(g.double())
    a, b, c = COEFFS
    for _ in range(steps):
        s = a * s + b * s ** 3 + c * s ** 5
    return (u * s) @ vh


@pytest.mark.parametrize("shape", [(64, 216), (256, 2304), (300, 20), (16, 16), (1, 9)])
def test_orthogonalize_is_the_polynomial_of_the_singular_values(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    got = orthogonalize(g)
    assert got.shape == g.shape and got.dtype == torch.float32
    want = reference_orthogonalize(g)
    assert torch.allclose(got.double(), want, atol=2e-4 * want.abs().max().item()), (got.double() - want).abs().max()
    s = torch.linalg.svdvals(got)
    # the directions end up of similar size, whatever g's spread (a square Gaussian's smallest few stay small)
    assert s.max() < 1.3 and (s > 0.5).float().mean() >= 0.9, s


def test_orthogonalize_rejects_non_matrices():
    with pytest.raises(ValueError, match="matrix"):
        orthogonalize(torch.randn(3, 3, 3))


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_muon_steps_match_a_reference(nesterov, memory_format):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(8, 4, 3, 3, generator=gen)
    grads = [torch.randn(8, 4, 3, 3, generator=gen) for _ in range(3)]
    p = torch.nn.Parameter(w.clone().contiguous(memory_format=memory_format))
    opt = Muon([p], lr=0.1, momentum=0.6, nesterov=nesterov)
    ref, buf = w.double(), torch.zeros_like(w, dtype=torch.float64)
    for g in grads:
        p.grad = g.clone().contiguous(memory_format=memory_format)
        opt.step()
        buf = 0.6 * buf + g.double()
        d = g.double() + 0.6 * buf if nesterov else buf
        ref = ref * (8 ** 0.5 / torch.linalg.norm(ref))
        ref = ref - 0.1 * reference_orthogonalize(d.reshape(8, -1)).reshape(ref.shape)
    assert torch.allclose(p.detach().double(), ref, atol=1e-4)
    assert p.is_contiguous(memory_format=memory_format)


def test_muon_skips_parameters_without_grad_and_rejects_vectors():
    a, b = torch.nn.Parameter(torch.randn(4, 6)), torch.nn.Parameter(torch.randn(4, 6))
    before = b.detach().clone()
    a.grad = torch.randn(4, 6)
    Muon([a, b]).step()
    assert torch.equal(b, before)
    with pytest.raises(ValueError, match="shape"):
        Muon([torch.nn.Parameter(torch.randn(5))])
    with pytest.raises(ValueError, match="momentum"):
        Muon([a], momentum=1.0)
