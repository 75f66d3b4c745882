"""Muon: momentum SGD whose update for each weight matrix is orthogonalised (Jordan et al., 2024).

Written from the public description (Keller Jordan, "Muon: An optimizer for hidden layers in neural networks",
2024, and airbench94_muon's notes).  For a conv weight ``(K, C, R, S)`` viewed as a ``K x CRS`` matrix ``G``
(the momentum of its gradient), the step is ``-lr * O`` where ``O`` has G's singular vectors and all singular
values near 1: every direction of the update moves by about the same amount, however unevenly the gradient
spreads over them.  ``O`` comes from a few Newton-Schulz iterations of an odd quintic polynomial, which needs only
matrix products (cheap next to a training step: ~0.1 GFLOP per 256 x 2304 matrix and iteration).

As in airbench94_muon, each weight is rescaled to Frobenius norm ``sqrt(K)`` before its step, so that the
orthogonal update has a fixed relative size and no weight decay is needed for these weights.  (torch.optim.Muon
takes 2-D parameters only and decays weights instead of rescaling them, hence this one.)
"""

from __future__ import annotations

from typing import Iterable

import torch

# The quintic's coefficients (Jordan's): a steep slope at 0 so that small singular values grow quickly in a few
# iterations; the iteration then leaves them spread around 1 (roughly 0.7..1.2) instead of converging exactly,
# which trains as well as the exact orthogonal factor.
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """``g`` (2-D) mapped to a matrix with its singular vectors and singular values near 1."""
    if g.dim() != 2:
        raise ValueError(f"orthogonalize needs a matrix, got shape {tuple(g.shape)}")
    a, b, c = _NS_COEFFS
    x = g.float() / (g.norm() + eps)       # singular values <= 1: inside the iteration's basin
    wide = x.shape[0] <= x.shape[1]
    if not wide:                            # iterate on the short side: x x^T is the small Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x if wide else x.T


class Muon(torch.optim.Optimizer):
    """Nesterov-momentum Muon for weights of 2 or more dimensions (dims after the first are flattened)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 0.24, momentum: float = 0.6,
                 nesterov: bool = True, ns_steps: int = 3, normalize_weights: bool = True) -> None:
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"ns_steps must be a positive int, got {ns_steps!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      normalize_weights=normalize_weights))
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() < 2:
                    raise ValueError(f"Muon updates matrices and conv weights; got a parameter of shape "
                                     f"{tuple(p.shape)} (give biases and norms to another optimizer)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(p.grad)
                g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                if group["normalize_weights"]:
                    p.mul_(p.shape[0] ** 0.5 / (p.norm() + 1e-12))
                update = orthogonalize(g.reshape(g.shape[0], -1), group["ns_steps"]).reshape(g.shape)
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss
