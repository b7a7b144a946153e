"""r2et: saliency explanations whose top-k ranking stays stable under attack.

Implements R2ET (Chen et al., "Training for Stable Explanation for Free", NeurIPS 2024):
differentiable explainers, ranking metrics and explanation thickness, attacks on explanations,
and training methods that make the top-k explanation robust.
"""

from r2et.explain import Explainer
from r2et.metrics import cosine_distance, precision_at_k, thickness, topk_kendall, topk_spearman
from r2et.models import build_model, relu_to_softplus

__version__ = "0.1.0"

__all__ = [
    "Explainer",
    "build_model",
    "cosine_distance",
    "precision_at_k",
    "relu_to_softplus",
    "thickness",
    "topk_kendall",
    "topk_spearman",
]
