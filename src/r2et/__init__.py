"""r2et: saliency explanations whose top-k ranking stays stable under attack.

Implements R2ET (Chen et al., "Training for Stable Explanation for Free", NeurIPS 2024):
differentiable explainers, ranking metrics and explanation thickness, attacks on explanations,
and training methods that make the top-k explanation robust.
"""

from r2et.attacks import (
    AttackResult,
    EnsembleAttack,
    ERAttack,
    MSEAttack,
    RandomSearchAttack,
    create_attack,
    list_attacks,
    register_attack,
)
from r2et.certify import CertificateResult, certified_radius
from r2et.data import Dataset, from_tensors, list_datasets, load_dataset
from r2et.data.registry import register_dataset
from r2et.explain import Explainer, list_explainers, register_explainer
from r2et.methods import get_method, list_methods, register_method
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
from r2et.models import build_model, list_models, register_model, relu_to_softplus
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
    "create_attack",
    "deletion",
    "evaluate",
    "fit",
    "from_tensors",
    "get_method",
    "list_attacks",
    "list_datasets",
    "list_explainers",
    "list_methods",
    "list_models",
    "load_dataset",
    "load_run",
    "locality",
    "occlusion_agreement",
    "precision_at_k",
    "register_attack",
    "register_dataset",
    "register_explainer",
    "register_method",
    "register_model",
    "relu_to_softplus",
    "save_run",
    "thickness",
    "topk_kendall",
    "topk_spearman",
]
