"""r2et: saliency explanations whose top-k ranking stays stable under attack.

Implements R2ET (Chen et al., "Training for Stable Explanation for Free", NeurIPS 2024):
differentiable explainers, ranking metrics and explanation thickness, attacks on explanations,
and training methods that make the top-k explanation robust.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from r2et._version import __version__ as __version__  # the one runtime import: a leaf

if TYPE_CHECKING:  # static type checkers see every name; at run time they load on first use
    from r2et._threads import set_threads
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
    from r2et.runs import load_run, save_run
    from r2et.train import evaluate, fit


# Public name -> the submodule that defines it. The package root imports nothing heavy (no
# torch): ``import r2et.cli`` starts fast, so a Ctrl-C during start-up reaches the CLI's
# handler; each name is imported on first access (PEP 562) and then cached here.
_LAZY = {
    **dict.fromkeys(
        [
            "AttackResult",
            "EnsembleAttack",
            "ERAttack",
            "MSEAttack",
            "RandomSearchAttack",
            "create_attack",
            "list_attacks",
            "register_attack",
        ],
        "r2et.attacks",
    ),
    **dict.fromkeys(["CertificateResult", "certified_radius"], "r2et.certify"),
    **dict.fromkeys(["Dataset", "from_tensors", "list_datasets", "load_dataset"], "r2et.data"),
    "register_dataset": "r2et.data.registry",
    **dict.fromkeys(["Explainer", "list_explainers", "register_explainer"], "r2et.explain"),
    **dict.fromkeys(["get_method", "list_methods", "register_method"], "r2et.methods"),
    **dict.fromkeys(
        [
            "cosine_distance",
            "deletion",
            "locality",
            "occlusion_agreement",
            "precision_at_k",
            "thickness",
            "topk_kendall",
            "topk_spearman",
        ],
        "r2et.metrics",
    ),
    **dict.fromkeys(
        ["build_model", "list_models", "register_model", "relu_to_softplus"], "r2et.models"
    ),
    **dict.fromkeys(["load_run", "save_run"], "r2et.runs"),
    **dict.fromkeys(["evaluate", "fit"], "r2et.train"),
    "set_threads": "r2et._threads",
}

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
    "set_threads",
    "thickness",
    "topk_kendall",
    "topk_spearman",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access (PEP 562) and cache the name."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'r2et' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
