"""r2et: saliency explanations whose top-k ranking stays stable under attack.

Implements R2ET (Chen et al., "Training for Stable Explanation for Free", NeurIPS 2024):
differentiable explainers, ranking metrics and explanation thickness, attacks on explanations,
and training methods that make the top-k explanation robust.
"""

from r2et.attacks import AttackResult, EnsembleAttack, ERAttack, MSEAttack, RandomSearchAttack
from r2et.certify import CertificateResult, certified_radius
from r2et.data import Dataset, from_tensors, list_datasets, load_dataset
from r2et.explain import Explainer
from r2et.methods import get_method, list_methods
from r2et.metrics import (
    cosine_distance,
    deletion,
    locality,
    occlusion_agreement,
    precision_at_k,
    thickness,
    topk_kendall,
    topk_spearman,
)
from r2et.models import build_model, relu_to_softplus
from r2et.train import evaluate, fit, load_run, save_run

__version__ = "0.1.0"

__all__ = [
    "AttackResult",
    "CertificateResult",
    "Dataset",
    "ERAttack",
    "EnsembleAttack",
    "Explainer",
    "MSEAttack",
    "RandomSearchAttack",
    "build_model",
    "certified_radius",
    "cosine_distance",
    "deletion",
    "evaluate",
    "fit",
    "from_tensors",
    "get_method",
    "list_datasets",
    "list_methods",
    "load_dataset",
    "load_run",
    "locality",
    "occlusion_agreement",
    "precision_at_k",
    "relu_to_softplus",
    "save_run",
    "thickness",
    "topk_kendall",
    "topk_spearman",
]
