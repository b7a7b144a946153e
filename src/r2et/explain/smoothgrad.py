"""SmoothGrad (Smilkov et al., 2017): any registered rule averaged over noisy copies of ``x``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from r2et._checks import check_choice, check_positive
from r2et.explain.base import (
    EXPLAINERS,
    AttributionRule,
    GradientFn,
    check_internal_batch_size,
    list_explainers,
    register_explainer,
    weighted_sum,
)


@register_explainer
class SmoothGrad(AttributionRule):
    """SmoothGrad (Smilkov et al., 2017) around any registered rule (``base``, default
    ``"grad"``, with ``base_kwargs``), as Captum's ``NoiseTunnel``:
    ``a(x) = (1/S) Σ_s base(x + ε_s)``, ``ε_s ~ N(0, σ²)``, ``S = n_samples``; ``sigma_mode
    "relative"``: σ is ``sigma`` times each input's value range max − min (treated as a
    constant under differentiation), ``"absolute"``: σ = ``sigma``; ``seed`` (None: the global
    RNG); ``internal_batch_size`` rows per forward pass."""

    name = "smoothgrad"
    defaults: ClassVar[dict[str, Any]] = {
        "n_samples": 25, "sigma": 0.15, "sigma_mode": "relative", "seed": None,
        "internal_batch_size": None, "base": "grad", "base_kwargs": {},
    }  # fmt: skip
    fixes_target = True

    def validate(self) -> None:
        n = self.kwargs["n_samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n!r}")
        check_positive("sigma", self.kwargs["sigma"], allow_zero=True)
        check_choice("sigma_mode", self.kwargs["sigma_mode"], ("relative", "absolute"))
        check_internal_batch_size(self.kwargs["internal_batch_size"])
        base, base_kwargs = self.kwargs["base"], self.kwargs["base_kwargs"]
        if base == self.name or base not in EXPLAINERS:
            allowed = [b for b in list_explainers() if b != self.name]
            raise ValueError(f"smoothgrad base={base!r} is not supported; allowed: {allowed}")
        if not isinstance(base_kwargs, dict):
            raise ValueError(f"smoothgrad base_kwargs must be a dict, got {base_kwargs!r}")
        self.base = EXPLAINERS.get(base)(**base_kwargs)

    def attribute(self, grad: GradientFn, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        s, sigma = self.kwargs["n_samples"], float(self.kwargs["sigma"])
        if self.kwargs["sigma_mode"] == "relative":
            flat = x.detach().flatten(1)
            rng = (flat.max(1).values - flat.min(1).values).clamp_min(0)
            rng = torch.where(rng > 0, rng, torch.ones_like(rng))
            std = (sigma * rng).view(1, -1, *([1] * (x.dim() - 1)))
        else:
            std = torch.tensor(sigma, dtype=x.dtype, device=x.device)
        seed = self.kwargs["seed"]
        gen = None if seed is None else torch.Generator(device=x.device).manual_seed(int(seed))
        noise = torch.randn((s, *x.shape), generator=gen, dtype=x.dtype, device=x.device) * std

        def points(lo: int, hi: int) -> torch.Tensor:
            return (x.unsqueeze(0) + noise[lo:hi]).reshape(-1, *x.shape[1:])

        weights = torch.full((s,), 1.0 / s, dtype=torch.float64)
        ibs = self.kwargs["internal_batch_size"]
        return weighted_sum(grad, points, weights, x, ibs, create_graph, self.base.attribute)
