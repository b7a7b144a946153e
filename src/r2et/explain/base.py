"""The contract of an explainer entry, and the registry that holds the entries.

Contract. An explainer is an :class:`AttributionRule` subclass registered with
:func:`register_explainer` (a class decorator) in a file of its own under ``r2et/explain/``
(imported by the package ``__init__`` in registration order, or from a plugin). A registration
provides:

* ``name``: the name ``Explainer(method=name)`` accepts (case-insensitive, unique; listed by
  :func:`list_explainers` in registration order);
* ``defaults``: every keyword argument the rule takes, with its default (``Explainer(name,
  **kwargs)`` refuses any other keyword); :meth:`AttributionRule.validate` checks
  ``self.kwargs`` and raises one ``ValueError`` naming the bad one;
* ``attribute(grad, x, create_graph)``: the attribution ``a(x)``, shaped like ``x``, computed
  only through ``grad`` (a :data:`GradientFn`, the engine's ``∂f_c/∂points`` for whole
  stacked copies of the batch, see :func:`weighted_sum`), so the rule is batched, keeps
  per-sample forward keywords and stays differentiable with ``create_graph=True``; or, for a
  rule that needs only the gradient at ``x``, ``local = True`` and ``from_gradient(x, g)``;
* ``fixes_target = True`` when gradients are taken at points other than ``x`` (noise, paths),
  so the explained class is fixed at ``x`` first.

The rule never runs the model itself: the :class:`~r2et.explain.engine.Explainer` owns the
forward pass, the target, the explained output (logit, probability, loss), the second-order
context and the fast path.

The one test every entry must pass: on a tiny model (the float64 MLP and CNN of
``tests/conftest.py``) its attribution agrees with an independent computation of the same
quantity: the reference implementation (Captum's ``Saliency``, ``InputXGradient``,
``IntegratedGradients``, ``NoiseTunnel``), a ``torch.func`` per-sample computation or a direct
formula; and with ``create_graph=True`` the input gradient of its scores matches a central
finite difference (``tests/test_explain.py``: ``test_*_match*_captum``,
``test_create_graph_input_gradient_matches_finite_differences``, ``test_batch_invariance``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch

from r2et._registry import Registry

#: ``grad(points, create_graph)``: the engine's ``∂f_c/∂points`` for ``points`` made of whole
#: copies of the explained batch stacked copy-major (``(R·N, ...)``; targets and per-sample
#: forward keywords follow their rows). Every rule computes its attribution through it.
GradientFn = Callable[[torch.Tensor, bool], torch.Tensor]


class AttributionRule:
    """An attribution method, registered by name (``Explainer(name, **kwargs)`` builds it).

    A rule only says *where* to take the gradient of the explained output and how to combine
    the gradients; the :class:`Explainer` owns the one gradient computation (forward, target,
    output, second-order context, fast path), so every rule is batched, works with forward
    keywords and with ``create_graph`` alike. Subclass it, set ``name`` and ``defaults`` (the
    keyword arguments it takes), validate in :meth:`validate` and register it with
    :func:`register_explainer` to add an explainer.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: True when the explained class must be fixed at ``x`` before gradients are taken at
    #: other points (noisy copies, path points); plain gradients resolve it in their forward.
    fixes_target: ClassVar[bool] = False
    #: True when the attribution needs only the gradient at ``x`` (:meth:`from_gradient`).
    local: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown keyword(s) {unknown} for method={self.name!r}; "
                f"allowed: {sorted(self.defaults)}"
            )
        self.kwargs: dict[str, Any] = {**self.defaults, **kwargs}
        self.validate()

    def validate(self) -> None:
        """Check ``self.kwargs`` (``ValueError`` naming the bad one)."""

    def attribute(self, grad: GradientFn, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """The attribution ``a(x)``, shaped like ``x`` (a ``local`` rule: :meth:`from_gradient`
        of the gradient at ``x``; other rules override it)."""
        if not self.local:
            raise NotImplementedError(f"explainer {self.name!r} must define attribute()")
        return self.from_gradient(x, grad(x, create_graph))

    def from_gradient(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``a(x)`` from the gradient at ``x`` alone, for ``local`` rules (then
        :meth:`Explainer.logits_and_attribution` takes logits and attribution from one
        forward)."""
        raise NotImplementedError(f"explainer {self.name!r} is not local to x")


EXPLAINERS: Registry[type[AttributionRule]] = Registry("explainer")


def register_explainer(rule: type[AttributionRule]) -> type[AttributionRule]:
    """Register an :class:`AttributionRule` subclass under its ``name`` (a class decorator)."""
    if not (isinstance(rule, type) and issubclass(rule, AttributionRule)) or not rule.name:
        raise ValueError(
            f"register_explainer needs an AttributionRule subclass with a name, got {rule!r}"
        )
    EXPLAINERS.register(rule.name, rule)
    return rule


def list_explainers() -> list[str]:
    """Names accepted by ``Explainer(method=...)``, in registration order."""
    return EXPLAINERS.names()


def check_internal_batch_size(ibs: Any) -> None:
    if ibs is not None and (isinstance(ibs, bool) or not isinstance(ibs, int) or ibs < 1):
        raise ValueError(f"internal_batch_size must be None or an int >= 1, got {ibs!r}")


def weighted_sum(
    grad: GradientFn, points: Callable[[int, int], torch.Tensor], weights: torch.Tensor,
    x: torch.Tensor, ibs: int | None, create_graph: bool,
    rule: Callable[[GradientFn, torch.Tensor, bool], torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """``Σ_r w_r a_r`` over ``len(weights)`` stacked copies of the batch, in chunks of whole
    copies of at most ``ibs`` rows; ``points(lo, hi)`` builds copies ``lo..hi-1`` and ``a_r``
    is ``grad`` there (or ``rule(grad, points, create_graph)``: a wrapped attribution)."""
    n, reps = x.shape[0], len(weights)
    total = torch.zeros_like(x)
    for lo, hi in _chunks(reps, n, ibs):
        pts = points(lo, hi)
        a = grad(pts, create_graph) if rule is None else rule(grad, pts, create_graph)
        w = weights[lo:hi].to(dtype=x.dtype, device=x.device).view(-1, *([1] * x.dim()))
        total = total + (w * a.view(hi - lo, *x.shape)).sum(0)
    return total


def _chunks(reps: int, n: int, internal_batch_size: int | None) -> Iterator[tuple[int, int]]:
    """Split ``reps`` copies of an ``n``-row batch into chunks of at most ``internal_batch_size``
    rows (at least one whole copy each)."""
    per = reps if internal_batch_size is None else max(1, int(internal_batch_size) // n)
    for start in range(0, reps, per):
        yield start, min(reps, start + per)
