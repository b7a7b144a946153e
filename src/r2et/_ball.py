"""Norm balls: uniform sampling and projection (internal; used by metrics and attacks)."""

from __future__ import annotations

import torch

from r2et._checks import check_choice

NORMS = ("linf", "l2")


def sample_in_ball(
    x: torch.Tensor,
    radius: float,
    norm: str = "linf",
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_samples`` points drawn uniformly from the ``radius`` ball around each row of ``x``.

    l_inf: ``x + U[−r, r]^d``. l_2: ``x + r · u^{1/d} · z/‖z‖`` with ``z ~ N(0, I)`` and
    ``u ~ U[0, 1]`` (uniform in volume). Returns shape ``(n_samples, *x.shape)``.
    """
    check_choice("norm", norm, NORMS)
    shape = (n_samples, *x.shape)
    if norm == "linf":
        u = torch.rand(shape, generator=generator, dtype=x.dtype, device=x.device)
        return x.unsqueeze(0) + (2 * u - 1) * radius
    z = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    flat = z.flatten(2)
    d = flat.shape[-1]
    u = torch.rand((n_samples, x.shape[0]), generator=generator, dtype=x.dtype, device=x.device)
    scale = radius * u.pow(1.0 / d) / flat.norm(dim=-1).clamp_min(1e-12)
    return x.unsqueeze(0) + z * scale.view(n_samples, x.shape[0], *([1] * (x.dim() - 1)))


def project_ball(delta: torch.Tensor, radius: float, norm: str = "linf") -> torch.Tensor:
    """Project each row of a perturbation onto the ``radius`` ball: clamp (l_inf) or rescale
    rows with ``‖δ‖₂ > r`` to norm ``r`` (l_2)."""
    check_choice("norm", norm, NORMS)
    if norm == "linf":
        return delta.clamp(-radius, radius)
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = torch.clamp(radius / n, max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
