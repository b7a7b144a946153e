"""The contract of a training term and of a method row; the registry of training methods.

A training method is a registered :class:`MethodRow`: a one-line ``summary``, the
:class:`Term` pieces it is made of, hyperparameter ``defaults``, the ``weight_name`` a grid
sweep varies and the ``output`` its default explainer differentiates.
:func:`r2et.methods.get_method` builds a :class:`~r2et.methods.training.TrainingMethod` from a
row; the loss of a batch is ``c · CE + Σ_terms w_t · R_t``, computed on one shared
:class:`Step` (which computes logits, cross-entropy and saliency once, on demand), each loss
term added as a :class:`Part` by :class:`Weighting`.

A :class:`Term` subclass provides (every item has a default on :class:`Term`):

* ``name``: non-empty for a *loss term* (the key of its value in the logs; ``adds_loss`` is
  ``bool(name)``), empty for a piece that acts through a hook only;
* ``defaults()``: the hyperparameters it reads, with their defaults (a row naming the term gets
  them unless it sets them), and ``optional()``: those it reads only when the row has them;
* the loss computation: ``value(step)``, the term ``R`` as a scalar tensor, or ``affine(step)``
  returning ``(t, a, b)`` with ``R = a·t + b`` (subclass :class:`AffineTerm`, which keeps
  constants out of the double-backward graph); the weight ``w = sign · hp[weight_key]``
  (class attributes ``weight_key``, ``sign``) or its own ``weight(hp)``;
* hooks, for pieces other than loss terms: ``setup(step)`` (validate, or move the evaluation
  point with :meth:`Step.move_to`), ``ce_weight(hp)`` (a factor of the cross-entropy),
  ``prepare(model, hp)`` (the model to train), ``optimizer_kwargs(hp)``;
* flags: ``needs_k`` (ranks features: ``get_method`` requires ``k``), ``uses_saliency`` (reads
  ``step.saliency``, whose forward pass then gives the logits), ``input_graph`` (needs logits
  with a graph to ``step.x_input``), ``second_order`` (differentiates a saliency or a Hessian:
  the loss runs under :func:`r2et.models.second_order` and warns about BatchNorm layers that
  use batch statistics), ``needs_anchor`` (reads a frozen copy of the model taken when training
  starts, :meth:`TrainingMethod.anchor_for`).

The built-in terms are frozen dataclasses (compared by value) and keep no state between steps:
what a batch needs lives on its :class:`Step`.

:func:`register_method` refuses (``ValueError``): an empty or taken name (unless
``replace=True``; names are case-insensitive), a row that is not a :class:`MethodRow` of
:class:`Term` objects, an ``output`` other than ``"logit"``, ``"prob"``, ``"loss"``, two loss
terms logged under one name, a default no term reads (``defaults()``, ``optional()``, or
``adaptive``), a ``weight_name`` that is not a hyperparameter of the row, and a default that
:func:`check_hyperparameter` rejects. :func:`method_row` returns a registered row (metadata is
read from it, no method is built), :func:`list_methods` lists the names in registration order
(the built-in rows of :mod:`r2et.methods.table` first), :func:`registered_method` registers a
row for the duration of a ``with`` block.

The one test every registered method must pass (as ``tests/test_methods.py`` does for the
built-in rows and for rows registered by the tests): built by ``get_method(name, k=...)`` on a
tiny batch, its loss is a finite scalar whose backward reaches every parameter with finite
gradients, and the loss, its logged parts and its parameter gradient equal an independent
computation of ``c · CE + Σ_terms w_t · R_t`` from the explainer's own saliency.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from r2et._checks import check_choice, check_k
from r2et._registry import Registry
from r2et.methods.gaps import NORMALIZATIONS
from r2et.methods.saliency import Target, graph_attribution

if TYPE_CHECKING:
    from r2et.methods.training import TrainingMethod


class Step:
    """One batch of one method's loss: the evaluation point and what the terms share.

    Every quantity is computed on first use and cached, so the saliency of the step is
    computed once (with ``create_graph=True``) and reused by the gap, the finite-difference and
    the certified terms. Attributes: ``method`` (the :class:`TrainingMethod`), ``explainer``,
    ``hp`` (its hyperparameters), ``model``, ``x`` (the evaluation point: the batch, or the
    point a :meth:`Term.setup` moved it to with :meth:`move_to`), ``y`` (labels), ``fkw``
    (forward keywords), ``fixed_target`` / ``fixed_mask`` (set by :meth:`move_to`: the
    explained class and the top-k set ``T`` taken from another point, else None).

    Cached: :attr:`saliency` ``(logits, a(x), target)``; :attr:`logits` (from the saliency's
    forward pass when a term uses the saliency, from a forward at :attr:`x_input` when a term
    needs a graph to the input, else a plain forward); :attr:`ce` ``= CE(logits, y)``;
    :attr:`target` (the explained class: the labels for ``output="loss"``, else the prediction);
    :attr:`scores` ``s = reduce(|a(x)|)``; :attr:`k` (the method's k checked against F).
    """

    def __init__(
        self,
        method: TrainingMethod,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        fkw: dict[str, Any],
        terms: tuple[Term, ...] = (),
    ) -> None:
        self.method = method
        self.explainer = method.explainer
        self.hp = method.hyperparameters
        self.model, self.x, self.y, self.fkw = model, x, y, fkw
        self.fixed_target: torch.Tensor | None = None
        self.fixed_mask: torch.Tensor | None = None
        self._saliency_logits = any(t.uses_saliency for t in terms)
        self._input_graph = any(t.input_graph for t in terms)

    def move_to(
        self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Evaluate the loss at ``x`` instead, explaining ``target`` and (when given) ranking
        against the top-k set ``mask``; only before anything was computed."""
        if any(key in self.__dict__ for key in ("saliency", "logits", "x_input")):
            raise RuntimeError("Step.move_to must run before the step computes anything")
        self.x, self.fixed_target, self.fixed_mask = x, target, mask

    def explained_class(self, logits: torch.Tensor) -> torch.Tensor:
        """The class a term explains: the label for ``output="loss"``, else the prediction."""
        return self.y if self.explainer.output == "loss" else logits.detach().argmax(1)

    @cached_property
    def saliency(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, a(x), target)`` at :attr:`x`, differentiable w.r.t. the parameters; for
        gradient saliency from one forward and one ``create_graph`` backward (or the explicit
        fast path, :func:`r2et.fastpath.saliency`)."""
        target: Target = self.explained_class if self.fixed_target is None else self.fixed_target
        logits, t, attr = graph_attribution(self.explainer, self.model, self.x, target, self.fkw)
        assert logits is not None
        return logits, attr, t

    @cached_property
    def x_input(self) -> torch.Tensor:
        """A detached copy of :attr:`x` with ``requires_grad`` (input-Jacobian terms)."""
        return self.x.detach().requires_grad_(True)

    @cached_property
    def logits(self) -> torch.Tensor:
        if self._saliency_logits:
            return self.saliency[0]
        if self._input_graph:
            return self.model(self.x_input, **self.fkw)
        return self.model(self.x, **self.fkw)

    @cached_property
    def ce(self) -> torch.Tensor:
        return F.cross_entropy(self.logits, self.y)

    @cached_property
    def target(self) -> torch.Tensor:
        if self.fixed_target is not None:
            return self.fixed_target
        if self._saliency_logits:
            return self.saliency[2]
        return self.explained_class(self.logits)

    @property
    def attribution(self) -> torch.Tensor:
        return self.saliency[1]

    @cached_property
    def scores(self) -> torch.Tensor:
        return self.explainer.reduce_attr(self.attribution)

    @cached_property
    def k(self) -> int:
        return check_k(self.method.k, self.scores.shape[1])

    @property
    def prediction(self) -> torch.Tensor:
        """The predicted class at :attr:`x` (the explained class when that is the prediction,
        which saves an ``argmax``)."""
        if self.fixed_target is None and self.explainer.output != "loss":
            if self._saliency_logits and "saliency" in self.__dict__:
                return self.saliency[2]
            if "target" in self.__dict__:
                return self.target
        return self.logits.detach().argmax(1)

    def attribution_at(self, x: torch.Tensor) -> torch.Tensor:
        """The attribution of :attr:`target` at another point ``x`` (with a graph; the logits
        there are not computed)."""
        return graph_attribution(self.explainer, self.model, x, self.target, self.fkw, False)[2]


class Term:
    """One piece of a training recipe (subclass it to add a kind of term).

    A *loss term* (``name`` non-empty, the key of its value in the logs) adds ``w · R`` to the
    loss, with ``R = value(step)`` and ``w = weight(hp)`` (``sign · hp[weight_key]`` by
    default); ``affine(step)`` may return ``(t, a, b)`` with ``R = a·t + b`` instead, which keeps
    constants out of the double-backward graph. Other pieces act through one hook:
    ``setup(step)`` (move the evaluation point, validate), ``ce_weight(hp)`` (a factor of the
    cross-entropy), ``prepare(model, hp)`` (the model to train), ``optimizer_kwargs(hp)``.

    ``defaults()`` are the hyperparameters it reads, with defaults (a row that names the term
    gets them unless it sets them); ``optional()`` those it reads only when the row has them
    (every value is checked by :func:`check_hyperparameter`). Flags: ``needs_k`` (ranks
    features: ``k`` required), ``uses_saliency`` (reads ``step.saliency``: the logits come from
    its forward),
    ``input_graph`` (needs ``step.logits`` with a graph to ``step.x_input``),
    ``second_order`` (differentiates a saliency or Hessian: runs under
    :func:`r2et.models.second_order` and warns about BatchNorm batch statistics).
    """

    name: ClassVar[str] = ""
    weight_key: ClassVar[str | None] = None
    sign: ClassVar[float] = 1.0
    needs_k: ClassVar[bool] = False
    uses_saliency: ClassVar[bool] = False
    input_graph: ClassVar[bool] = False
    second_order: ClassVar[bool] = False
    needs_anchor: ClassVar[bool] = False

    @property
    def adds_loss(self) -> bool:
        return bool(self.name)

    def defaults(self) -> dict[str, Any]:
        return {}

    def optional(self) -> tuple[str, ...]:
        return ()

    def setup(self, step: Step) -> None:
        """Called for every piece before the loss is computed."""

    def weight(self, hp: Mapping[str, Any]) -> float:
        return 0.0 if self.weight_key is None else self.sign * hp[self.weight_key]

    def value(self, step: Step) -> torch.Tensor:
        """The term's value ``R`` (a scalar tensor) on the step."""
        raise NotImplementedError(f"{type(self).__name__} adds no loss term")

    def affine(self, step: Step) -> tuple[torch.Tensor, float, float]:
        """``(t, a, b)`` with ``R = a·t + b``; by default ``(value(step), 1, 0)``."""
        return self.value(step), 1.0, 0.0

    def ce_weight(self, hp: Mapping[str, Any]) -> float:
        return 1.0

    def prepare(self, model: nn.Module, hp: Mapping[str, Any]) -> nn.Module:
        return model

    def optimizer_kwargs(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        return {}


class AffineTerm(Term):
    """A loss term defined by :meth:`affine`; its value is ``a·t + b``."""

    def value(self, step: Step) -> torch.Tensor:
        t, a, b = self.affine(step)
        return t * a + b


class Part(NamedTuple):
    """A loss term's contribution on one step: ``weight · (a · stat + b)``, logged as ``name``."""

    name: str
    stat: torch.Tensor
    a: float
    b: float
    weight: float


@dataclass(frozen=True)
class Weighting:
    """Adds a :class:`Part` to the loss, the same way for every term: ``w · R`` with
    ``R = a·t + b`` (constants folded into floats: ``(w a)·t + w b``); with ``adaptive`` the
    weight becomes ``w · (CE + 1) / |R|`` (detached), which keeps each term on the scale of the
    cross-entropy as the authors' code does. Zero weights add nothing."""

    adaptive: bool = False

    def add(self, total: torch.Tensor, part: Part, ce: torch.Tensor) -> torch.Tensor:
        w = part.weight
        if w == 0:
            return total
        if self.adaptive:
            value = part.stat * part.a + part.b
            scale = (ce.detach() + 1) / value.detach().abs().clamp_min(1e-12)
            return total + w * scale * value
        total = total + (w * part.a) * part.stat
        return total + w * part.b if part.b != 0 else total


@dataclass(frozen=True)
class MethodRow:
    """One registered training recipe: its terms and defaults.

    ``summary`` (one line), ``terms`` (the :class:`Term` pieces), ``defaults`` (hyperparameter
    defaults; the terms' own defaults fill in the rest, and ``adaptive=False`` is added when the
    row has a loss term), ``weight_name`` (the main weight a grid sweep varies, None for none),
    ``output`` (the default explainer's output: ``"logit"``, ``"prob"`` or ``"loss"``).
    """

    summary: str
    terms: tuple[Term, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    weight_name: str | None = None
    output: str = "logit"

    @property
    def needs_k(self) -> bool:
        """Whether a term ranks features (then ``get_method`` requires ``k``)."""
        return any(t.needs_k for t in self.terms)

    @property
    def second_order(self) -> bool:
        """Whether a term differentiates a saliency (second-order context, BatchNorm check)."""
        return any(t.second_order for t in self.terms)

    @property
    def needs_anchor(self) -> bool:
        """Whether a term reads the model as training started (then the method fine-tunes a
        trained model: ``r2et train`` requires ``--pretrained``)."""
        return any(t.needs_anchor for t in self.terms)

    def hyperparameters(self) -> dict[str, Any]:
        """Every default: the row's, then the terms' it does not set, then ``adaptive``."""
        hp = dict(self.defaults)
        for term in self.terms:
            for key, value in term.defaults().items():
                hp.setdefault(key, value)
        if any(t.adds_loss for t in self.terms):
            hp.setdefault("adaptive", False)
        return hp


METHODS: Registry[MethodRow] = Registry("training method")


def register_method(name: str, row: MethodRow, *, replace: bool = False) -> None:
    """Register the training recipe ``row`` as ``name`` (then :func:`get_method` builds it and
    :func:`list_methods` lists it last). Refused (``ValueError``): a taken name unless
    ``replace``, terms that are not :class:`Term` objects, two loss terms logged under one name,
    a default no term reads, a ``weight_name`` that is not a hyperparameter, bad defaults."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    if name in METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True)")
    if not isinstance(row, MethodRow) or not all(isinstance(t, Term) for t in row.terms):
        raise ValueError(f"method {name!r}: row must be a MethodRow of Term objects")
    check_choice("output", row.output, ("logit", "prob", "loss"))
    logged = [t.name for t in row.terms if t.adds_loss]
    if len(set(logged)) != len(logged):
        raise ValueError(f"method {name!r}: two loss terms are logged as one name in {logged}")
    hp = row.hyperparameters()
    read = {"adaptive"}.union(*([*t.defaults(), *t.optional()] for t in row.terms))
    unread = sorted(set(row.defaults) - read)
    if unread:
        raise ValueError(f"method {name!r}: no term reads the default(s) {unread}")
    if row.weight_name is not None and row.weight_name not in hp:
        raise ValueError(f"method {name!r}: weight_name {row.weight_name!r} is no hyperparameter")
    for key, value in hp.items():
        check_hyperparameter(name, key, value)
    METHODS.register(name, row, overwrite=replace)


def unregister_method(name: str) -> MethodRow:
    """Remove the recipe ``name`` from the registry and return its row."""
    check_choice("name", name, list_methods())
    row = METHODS.get(name)
    METHODS.unregister(name)
    return row


@contextlib.contextmanager
def registered_method(name: str, row: MethodRow) -> Iterator[MethodRow]:
    """Register ``row`` as ``name`` inside the block and unregister it after (tests)."""
    register_method(name, row)
    try:
        yield row
    finally:
        if name in METHODS:
            METHODS.unregister(name)


def method_row(name: str) -> MethodRow:
    """The registered row of method ``name`` (case-insensitive): its ``summary``, ``terms``,
    ``defaults``, ``weight_name``, ``output``, ``needs_k`` and ``second_order``, read without
    building a method. An unknown name raises ``ValueError`` naming the allowed ones."""
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Names of the training recipes, in the design's order (then later registrations)."""
    return METHODS.names()


_POSITIVE = ("h", "beta", "at_eps", "at_step_size", "cert_eps", "tx_radius")


def check_hyperparameter(name: str, key: str, value: Any) -> Any:
    """Validate one hyperparameter of method ``name``; returns the normalised value (the rules
    below; unknown keys: a finite number >= 0)."""
    if key in ("adaptive",):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be True or False, got {value!r}")
        return value
    if key == "normalize":
        check_choice("normalize", value, NORMALIZATIONS)
        return value
    if key in ("m", "at_steps", "max_features"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        return int(value)
    if key == "at_step_size" and value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (key in _POSITIVE and value == 0):
        bound = "> 0" if key in _POSITIVE else ">= 0"
        raise ValueError(f"{key} of method {name!r} must be a finite number {bound}, got {value!r}")
    if key == "alpha" and value > 1:
        raise ValueError(f"alpha of method {name!r} must lie in [0, 1], got {value!r}")
    return float(value)
