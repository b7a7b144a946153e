"""The method object and its constructors: :class:`TrainingMethod` (``prepare``, ``loss``,
``optimizer_kwargs``), :func:`get_method` (a registered row with its hyperparameters resolved
and checked, and its explainer) and :func:`method_from_config`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from r2et._checks import check_batch, check_choice, check_labels
from r2et._second_order import second_order
from r2et.explain import Explainer, check_second_order
from r2et.methods.base import (
    METHODS,
    MethodRow,
    Part,
    Step,
    Term,
    Weighting,
    check_hyperparameter,
    list_methods,
)
from r2et.methods.saliency import warn_batch_statistics


class TrainingMethod:
    """A named training recipe: ``prepare(model)``, ``loss(model, x, y)``, ``optimizer_kwargs``.

    Build one with :func:`get_method`. Attributes: ``name``, ``k`` (top-k size of ranking terms,
    None for methods without one), ``explainer`` (the saliency the regularisers use),
    ``hyperparameters`` (every hyperparameter, defaults included), ``weight_name`` (the main
    regularisation weight a grid sweep varies, None for ``vanilla``), ``summary`` (one line,
    also as ``description``), ``row`` (the registered :class:`MethodRow`) and ``terms``.
    """

    def __init__(
        self,
        name: str,
        k: int | None,
        explainer: Explainer,
        hyperparameters: dict[str, Any],
    ) -> None:
        self.name = name
        self.k = k
        self.explainer = explainer
        self.hyperparameters = hyperparameters
        self.row = METHODS.get(name)
        self.weight_name = self.row.weight_name
        self.summary = self.row.summary
        self.description = self.row.summary  # alias used by ``r2et methods``
        self.anchor: nn.Module | None = None

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"TrainingMethod({self.name!r}, k={self.k}, {hp}, explainer={self.explainer!r})"

    @property
    def terms(self) -> tuple[Term, ...]:
        return self.row.terms

    # ------------------------------------------------------------------ public API
    def config(self) -> dict[str, Any]:
        """JSON-ready description; :func:`method_from_config` rebuilds the method from it."""
        return {
            "name": self.name,
            "k": self.k,
            "explainer": self.explainer.config(),
            "hyperparameters": dict(self.hyperparameters),
        }

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """Extra optimiser arguments (``{"weight_decay": ...}`` for ``wd``, else empty)."""
        out: dict[str, Any] = {}
        for term in self.terms:
            out.update(term.optimizer_kwargs(self.hyperparameters))
        return out

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model to train: ``model`` passed through every term's ``prepare`` (``sp``: a
        Softplus copy, :class:`SoftplusActivations`); ``model`` itself for the others. A
        method with an anchored term (``r2et-anchor``) also keeps a frozen copy of it as
        :attr:`anchor` (replacing any earlier one)."""
        for term in self.terms:
            model = term.prepare(model, self.hyperparameters)
        self.anchor = None
        if any(t.needs_anchor for t in self.terms):
            self.anchor = _frozen_copy(model)
        return model

    def anchor_for(self, model: nn.Module, x: torch.Tensor) -> nn.Module:
        """The anchor model on ``x``'s device and dtype: the frozen copy :meth:`prepare` took
        (in eval mode, no parameter gradients), or a copy of ``model`` taken now, at the
        first loss, when ``prepare`` was not called."""
        if self.anchor is None:
            self.anchor = _frozen_copy(model)
        p = next(self.anchor.parameters(), None)
        if p is not None and (p.device != x.device or p.dtype != x.dtype):
            self.anchor.to(device=x.device, dtype=x.dtype)
        return self.anchor

    def loss(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor, **forward_kwargs
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch and its parts as floats (``ce``, the terms, ``accuracy``).

        ``y`` holds the labels. Saliency terms explain the model's predicted class (outputs
        ``"logit"``/``"prob"``) or the labels (``"loss"``); the saliency of the step is computed
        once (with ``create_graph=True``) and reused for the top-k indices, the gap and the
        finite-difference Hessian term.

        Methods with saliency terms run inside :func:`r2et.models.second_order` (the math
        attention kernel: fused attention has no double backward), and warn once per model
        when its BatchNorm layers normalise with batch statistics (see
        :func:`warn_batch_statistics`); ``vanilla``, ``wd`` and ``sp`` are left as they are.
        """
        if not self.row.second_order:
            return self._loss(model, x, y, forward_kwargs)
        warn_batch_statistics(model, self.name)
        with second_order():
            return self._loss(model, x, y, forward_kwargs)

    # ------------------------------------------------------------------ internals
    def _loss(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        forward_kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`loss` without the context and the BatchNorm check:
        ``c · CE + Σ_terms w_t · R_t`` on one :class:`Step` (set up by every term first; the
        cross-entropy is formed before the terms)."""
        _check_inputs(model, x, y)
        hp, terms = self.hyperparameters, self.terms
        step = Step(self, model, x, y, forward_kwargs, terms)
        for term in terms:
            term.setup(step)
        ce = step.ce
        parts = [Part(t.name, *t.affine(step), t.weight(hp)) for t in terms if t.adds_loss]
        c = math.prod(t.ce_weight(hp) for t in terms)
        total = ce if c == 1 else c * ce
        weighting = Weighting(adaptive=bool(hp.get("adaptive", False)))
        for part in parts:
            total = weighting.add(total, part, ce)
        return total, _logs(step, ce, parts)

    def _saliency(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        fkw: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, attribution, target)`` at ``x`` (:attr:`Step.saliency`)."""
        return Step(self, model, x, y, fkw, self.terms).saliency


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode whose parameters need no gradient."""
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"an anchored method needs an nn.Module to copy, got {type(model).__name__}"
        )
    return copy.deepcopy(model).eval().requires_grad_(False)


def _check_inputs(model: Any, x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` a finite floating batch, ``y`` labels of the same batch size (and within the
    model's ``r2et_spec`` class count when it has one)."""
    check_batch("x", x)
    if isinstance(y, torch.Tensor) and y.dim() >= 1 and x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {len(x)} and {len(y)}")
    spec = getattr(model, "r2et_spec", None)
    n_classes = spec.get("n_classes") if isinstance(spec, dict) else None
    check_labels("y", y, int(x.shape[0]), n_classes)


#: What a training method uses of its explainer (besides ``supports_second_order = True``).
_EXPLAINER_PROTOCOL = ("attribute", "scores", "reduce_attr", "resolve_target", "output",
                       "method", "config")  # fmt: skip


def get_method(
    name: str,
    k: int | None = None,
    explainer: Explainer | dict[str, Any] | str | None = None,
    groups: Any = None,
    **hyperparameters: Any,
) -> TrainingMethod:
    """The training recipe ``name`` (see :func:`list_methods`) with its hyperparameters.

    ``k`` is the top-k size of the ranking terms (required by ``at`` and the ``r2et`` family,
    checked against the number of features F as ``1 <= k <= F-1`` when the loss first sees
    data). ``explainer``: an :class:`Explainer`, its ``config()`` dict, a registered explainer
    name (``"grad_x_input"``: that explainer of the method's default output), or None for
    gradient saliency of the method's default output (see the module docstring), or any explainer
    object with r2et's protocol (``attribute(..., create_graph=True)``, ``scores``,
    ``reduce_attr``, ``resolve_target``, ``output``, ``method``, ``config``) that declares
    ``supports_second_order = True``; a first-order one (e.g. a Captum attribution through
    :class:`r2et.interop.CaptumExplainer`) is refused: the regularisers differentiate the
    saliency. ``groups`` (e.g. ``ds.groups``) makes the ranking terms rank feature groups,
    each scored by the sum of its columns' scores (:func:`r2et.explain.group_index`); k then
    counts groups. Unknown
    hyperparameters, negative weights and bad values raise ``ValueError``.

    Hyperparameters (the defaults were chosen on Adult, see ``CHANGELOG.md``): ``lam`` (gap
    weight), ``mu`` (Hessian-term weight), ``h`` (the
    l_inf finite-difference step, on the scale of the attack budget: 0.3 suits standardised
    tabular features; use about the attack's eps for images in [0, 1]), ``m`` (R2ET-mm's
    number of boundary features), ``normalize`` (``"mean"``, ``"l2"`` or ``"none"``: the
    scale-free gap), ``adaptive``, ``weight_decay`` (wd), ``beta`` (sp's Softplus β, ssr's
    weight), ``alpha`` (ssr's CE/regulariser mix), ``max_features`` (exact-h's input-size
    limit), ``at_steps``/``at_eps``/``at_step_size`` (at's inner ERAttack).
    """
    check_choice("name", name, list_methods())
    row = METHODS.get(name)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be an int >= 1 (and <= F-1), got {k!r}")
    if k is None and row.needs_k:
        raise ValueError(f"method {name!r} ranks features: pass k (an int in 1..F-1)")
    hp = _resolve_hyperparameters(name, row, k, hyperparameters)
    explainer = _resolve_explainer(name, explainer, row.output)
    if groups is not None:
        explainer = explainer.with_groups(groups)
    return TrainingMethod(name, k, explainer, hp)


def _resolve_hyperparameters(
    name: str, row: MethodRow, k: int | None, given: dict[str, Any]
) -> dict[str, Any]:
    """The row's defaults updated by ``given``, every value checked."""
    defaults = row.hyperparameters()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for method {name!r}; allowed: {sorted(defaults)}"
        )
    hp = {key: check_hyperparameter(name, key, v) for key, v in defaults.items()}
    hp.update({key: check_hyperparameter(name, key, v) for key, v in given.items()})
    if "m" in hp and k is not None and hp["m"] > k:
        raise ValueError(f"m={hp['m']} must not exceed k={k}")
    return hp


def _resolve_explainer(name: str, explainer: Any, output: str) -> Any:
    """An :class:`Explainer` from None (gradient saliency of ``output``), an explainer name (that
    explainer of ``output``) or a config dict, or a second-order explainer object with r2et's
    protocol."""
    if explainer is None:
        return Explainer("grad", output=output)
    if isinstance(explainer, str):
        return Explainer(explainer, output=output)
    if isinstance(explainer, dict):
        return Explainer(**explainer)
    missing = [a for a in _EXPLAINER_PROTOCOL if not hasattr(explainer, a)]
    if missing:
        raise ValueError(
            "explainer must be an Explainer, its config dict, None, or an object with "
            f"{', '.join(_EXPLAINER_PROTOCOL)}; {type(explainer).__name__} lacks {missing}"
        )
    check_second_order(
        explainer,
        f"training method {name!r}",
        "train with r2et.Explainer (e.g. Explainer('ig') for integrated gradients) and "
        "evaluate with any explainer",
    )
    return explainer


def method_from_config(config: dict[str, Any]) -> TrainingMethod:
    """Rebuild a method from :meth:`TrainingMethod.config` output."""
    try:
        return get_method(
            config["name"],
            k=config.get("k"),
            explainer=config.get("explainer"),
            **config.get("hyperparameters", {}),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a method config: {err}") from None


def _logs(step: Step, ce: torch.Tensor, parts: list[Part]) -> dict[str, float]:
    """``ce``, every term's value ``a·t + b`` and the batch accuracy as floats, in one device
    transfer."""
    acc = (step.prediction == step.y).to(ce.dtype).mean()
    floats = torch.stack([ce, *(p.stat for p in parts), acc]).detach().tolist()
    logs = {"ce": floats[0]}
    for p, f in zip(parts, floats[1:-1]):
        logs[p.name] = p.a * f + p.b
    logs["accuracy"] = floats[-1]
    return logs
