"""What a certificate returns: :class:`CertificateResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CertificateResult"]


@dataclass
class CertificateResult:
    """What :func:`certified_radius` certified, per input.

    ``radius`` ``(N,)``: the largest radius (norm ``norm``: ``"linf"`` deterministic, ``"l2"``
    smoothed) at which the whole top-k set is certified, 0 where nothing is. ``topk`` ``(N, k)``:
    the certified set (deterministic: top-k of ``s(x)``; smoothed: top-k of the estimated
    membership frequencies). ``radii`` ``(R,)`` and ``p_at_k`` ``(N, R)``: the certified P@k lower
    bound at each radius. ``prediction_certified`` (deterministic, ``(N,)``): the predicted
    class is fixed within ``radius`` (None when a target was given). Smoothed: ``membership``
    ``(N, F)`` (estimated ``m_j(x)``), ``label_in`` ``(N, F)`` (selected labels), ``p_lower``
    ``(N, F)`` (Clopper-Pearson bound of each label's probability; 0 where the label won at
    most half of the estimation samples, which cannot certify), ``feature_radius``
    ``(N, F)`` (``σ Φ⁻¹(p_j)``, 0 when abstained). ``params``: the settings used.
    """

    method: str
    norm: str
    k: int
    radius: torch.Tensor
    topk: torch.Tensor
    radii: torch.Tensor
    p_at_k: torch.Tensor
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    prediction_certified: torch.Tensor | None = None
    membership: torch.Tensor | None = None
    label_in: torch.Tensor | None = None
    p_lower: torch.Tensor | None = None
    feature_radius: torch.Tensor | None = None

    def p_at_k_mean(self) -> list[float]:
        """Mean certified P@k lower bound at each of ``radii``."""
        return self.p_at_k.double().mean(0).tolist()

    def summary(self) -> dict[str, Any]:
        """JSON-ready means: ``{"method", "norm", "radius_mean", "radius_median",
        "certified_fraction", "radii", "p_at_k_mean", "seconds", **params}``."""
        r = self.radius.double().cpu()
        return {
            "method": self.method,
            "norm": self.norm,
            "radius_mean": float(r.mean()),
            "radius_median": float(r.median()),
            "certified_fraction": float((r > 0).double().mean()),
            "radii": self.radii.tolist(),
            "p_at_k_mean": self.p_at_k_mean(),
            "seconds": self.seconds,
            **self.params,
        }

    @staticmethod
    def cat(results: Sequence[CertificateResult]) -> CertificateResult:
        """Concatenate results of batches (same method, k and radii) along the batch."""
        if not results:
            raise ValueError("results must not be empty")
        first = results[0]

        def cat(name: str) -> torch.Tensor | None:
            vals = [getattr(r, name) for r in results]
            return None if vals[0] is None else torch.cat(vals)

        return CertificateResult(
            method=first.method,
            norm=first.norm,
            k=first.k,
            radius=cat("radius"),
            topk=cat("topk"),
            radii=first.radii,
            p_at_k=cat("p_at_k"),
            seconds=sum(r.seconds for r in results),
            params=dict(first.params),
            prediction_certified=cat("prediction_certified"),
            membership=cat("membership"),
            label_in=cat("label_in"),
            p_lower=cat("p_lower"),
            feature_radius=cat("feature_radius"),
        )
