"""Differentiable, batched saliency explanations.

An :class:`Explainer` turns a model and a batch of inputs into attributions (same shape as
the input) and into per-feature importance *scores* ``s(x)`` of shape ``(N, F)``:

* ``grad`` (gradient saliency, Simonyan et al. 2014):   ``a(x) = ∂f_c(x)/∂x``
* ``grad_x_input`` (Shrikumar et al. 2016):             ``a(x) = x ⊙ ∂f_c(x)/∂x``
* ``smoothgrad`` (Smilkov et al. 2017):                 ``a(x) = 1/S Σ_s ∂f_c(x + ε_s)/∂x``,
  ``ε_s ~ N(0, σ²)``
* ``ig`` (integrated gradients, Sundararajan et al. 2017):
  ``a(x) = (x − x̄) ⊙ Σ_m w_m ∂f_c(x̄ + α_m (x − x̄))/∂x`` with quadrature nodes ``α_m`` and
  weights ``w_m`` (Riemann rules or Gauss-Legendre, as in Captum).

``f_c`` is the *output* being explained: the logit of the target class (default), its softmax
probability, or the cross-entropy loss of the target. The importance of a feature is
``|a(x)|``, summed over the channel axis of images ``(N, C, H, W)`` and over the node-feature
axis of graphs ``(N, nodes, d)``. With feature ``groups`` (a partition of the columns, e.g. the
one-hot columns of one tabular attribute) the score of a group is the sum of its columns' scores,
``s_g(x) = Σ_{j∈g} |a_j(x)|``, so what is ranked is the attributes, not the columns.

Every method accepts ``create_graph=True``, so a loss of the explanation (R2ET's ranking
regulariser, an attack objective) can be back-propagated to the input and to the parameters.
Per-sample gradients come from one backward pass over the summed batch output; this is exact
when samples do not interact (eval mode, no batch statistics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from r2et._checks import (
    check_batch,
    check_choice,
    check_finite_output,
    check_model_input,
    check_positive,
)
from r2et._kwargs import repeat_batch, repeat_rows
from r2et._registry import Registry
from r2et._second_order import second_order
from r2et.fastpath import saliency as explicit_saliency

OUTPUTS = ("logit", "prob", "loss")
REDUCTIONS = ("auto", "channel", "last", None)
IG_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(n_steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``α_m`` in [0, 1] and weights ``w_m`` (summing to 1) of an ``n_steps``-point rule.

    Riemann rules use ``w_m = 1/n`` at the left/right/middle points; the trapezoid rule puts
    ``1/(2(n−1))`` on the end points and ``1/(n−1)`` inside; Gauss-Legendre maps the Legendre
    nodes ``ξ_m`` on [−1, 1] to ``α_m = (ξ_m + 1)/2`` with weights ``w_m/2``, exact for
    polynomials of degree ``2n − 1``. Returned as float64 CPU tensors. (Captum's
    ``riemann_trapezoid`` uses ``1/n`` with halved end points, weights summing to ``(n−1)/n``;
    ours sum to 1, so its attributions are ours times ``(n−1)/n``.)
    """
    check_choice("rule", rule, IG_RULES)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    n = n_steps
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    if rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("the trapezoid rule needs n_steps >= 2")
        alphas = torch.linspace(0, 1, n, dtype=torch.float64)
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
        return alphas, w
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_left":
        return torch.linspace(0, 1 - 1 / n, n, dtype=torch.float64), w
    if rule == "riemann_right":
        return torch.linspace(1 / n, 1, n, dtype=torch.float64), w
    return torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n, dtype=torch.float64), w


def group_index(groups: Any, n_features: int | None = None) -> torch.Tensor:
    """Feature groups as a ``(F,)`` long tensor mapping each column to its group ``0..G−1``.

    ``groups`` is either such a tensor/sequence of ints (one group id per column, every id in
    ``0..G−1`` used) or a sequence of column-index lists that partitions ``0..F−1`` (each column
    in exactly one group). ``n_features`` (F), when given, is checked. Raises ``ValueError``
    for anything that is not a partition.
    """
    if isinstance(groups, torch.Tensor):
        gid = groups.detach().to("cpu")
        if gid.dim() != 1 or gid.is_floating_point() or gid.dtype == torch.bool:
            raise ValueError("groups as a tensor must be a 1-D integer tensor of group ids")
        gid = gid.long()
    else:
        try:
            items = list(groups)
        except TypeError:
            raise ValueError(
                f"groups must be a list of column-index lists or one group id per column, "
                f"got {type(groups).__name__}"
            ) from None
        if not items:
            raise ValueError("groups must not be empty")
        if all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in items):
            gid = torch.tensor([int(g) for g in items], dtype=torch.long)
        else:
            cols: list[int] = []
            ids: list[int] = []
            for i, g in enumerate(items):
                try:
                    members = [int(c) for c in g]
                except (TypeError, ValueError):
                    raise ValueError(
                        f"groups[{i}] must be a list of column indices, got {g!r}"
                    ) from None
                if not members:
                    raise ValueError(f"groups[{i}] is empty")
                cols += members
                ids += [i] * len(members)
            f = max(cols) + 1
            if min(cols) < 0 or len(cols) != f or len(set(cols)) != f:
                raise ValueError(
                    "groups must partition the columns 0..F-1: every column in exactly one group"
                )
            gid = torch.empty(f, dtype=torch.long)
            gid[torch.tensor(cols)] = torch.tensor(ids)
    if gid.numel() == 0 or int(gid.min()) < 0:
        raise ValueError("group ids must be >= 0")
    n_groups = int(gid.max()) + 1
    if torch.bincount(gid, minlength=n_groups).min() == 0:
        raise ValueError(f"group ids must use every value in 0..{n_groups - 1}")
    if n_features is not None and gid.numel() != n_features:
        raise ValueError(f"groups cover {gid.numel()} columns, but there are {n_features} features")
    return gid


def reduce_scores(
    attr: torch.Tensor, reduce: str | None = "auto", groups: Any = None
) -> torch.Tensor:
    """Per-feature importance ``s = |a|`` reduced to shape ``(N, F)``.

    ``reduce="auto"``: 2-D tabular ``(N, F)`` is kept; 3-D graphs ``(N, nodes, d)`` sum over
    ``d`` (F = nodes); 4-D images ``(N, C, H, W)`` sum over ``C`` (F = H·W). ``"channel"`` sums
    dimension 1, ``"last"`` the last dimension; ``None`` flattens ``|a|`` unchanged.
    ``groups`` (see :func:`group_index`) then sums the columns of each group:
    ``s_g = Σ_{j∈g} s_j``, shape ``(N, G)``.
    """
    s = _reduce(attr, reduce)
    if groups is None:
        return s
    return sum_columns(s, group_index(groups, s.shape[1]))


def sum_columns(s: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(N, F)`` scores summed into ``(N, G)`` units: column ``j`` goes to unit ``index[j]``
    (ids ``0..G−1``), ``out_g = Σ_{j: index_j = g} s_j``."""
    index = index.to(s.device)
    return s.new_zeros(s.shape[0], int(index.max()) + 1).index_add(1, index, s)


def _unit_columns(shape: tuple[int, ...], reduce: str | None) -> torch.Tensor:
    """For one input of ``shape``, the score column each entry is summed into by ``reduce``
    (mirrors :func:`_reduce`)."""
    check_choice("reduce", reduce, REDUCTIONS)
    if not shape:
        raise ValueError("inputs need at least one feature dimension")

    def spread(lead: tuple[int, ...], inner: tuple[int, ...]) -> torch.Tensor:
        # columns numbered over ``inner``, repeated over the summed ``lead`` dimensions
        idx = torch.arange(int(np.prod(inner)) if inner else 1).view(inner)
        return idx.expand(*lead, *inner)

    if reduce == "auto":
        if len(shape) == 1:
            return torch.arange(shape[0])
        if len(shape) == 2:  # graphs (nodes, d): one column per node
            return torch.arange(shape[0])[:, None].expand(shape).contiguous()
        if len(shape) == 3:  # images (C, H, W): one column per pixel
            return spread(shape[:1], shape[1:]).contiguous()
        raise ValueError(f"reduce='auto' handles 2-D, 3-D and 4-D inputs, got {shape}")
    if reduce == "channel":
        return spread(shape[:1], shape[1:]).contiguous()
    if reduce == "last":
        idx = torch.arange(int(np.prod(shape[:-1])) if shape[:-1] else 1).view(*shape[:-1], 1)
        return idx.expand(shape).contiguous()
    return torch.arange(int(np.prod(shape))).view(shape)


def _reduce(attr: torch.Tensor, reduce: str | None) -> torch.Tensor:
    check_choice("reduce", reduce, REDUCTIONS)
    s = attr.abs()
    if reduce == "auto":
        if s.dim() == 2:
            return s
        if s.dim() == 3:
            return s.sum(-1)
        if s.dim() == 4:
            return s.sum(1).flatten(1)
        raise ValueError(
            f"reduce='auto' handles 2-D, 3-D and 4-D inputs, got shape {tuple(s.shape)}; "
            "pass reduce=None to flatten"
        )
    if reduce == "channel":
        return s.sum(1).flatten(1)
    if reduce == "last":
        return s.sum(-1).flatten(1)
    return s.flatten(1)


#: Public name of :func:`r2et._kwargs.repeat_rows` (per-sample keywords follow expanded batches).
repeat_forward_kwargs = repeat_rows


def check_second_order(ex: Any, user: str, instead: str) -> None:
    """Refuse, with one ``ValueError`` line, an explainer that cannot be differentiated twice.

    ``user`` (an attack or a training method) differentiates the explanation itself, e.g.
    ``∂L(s(x'))/∂x'`` for an attack loss ``L``: that needs an attribution built with
    ``create_graph=True``. An explainer declares this with ``supports_second_order = True``
    (r2et's :class:`Explainer` does); anything else (a Captum attribution through
    :class:`r2et.interop.CaptumExplainer`, an explainer that does not declare it) is refused
    instead of silently yielding zero or first-order gradients. The message says why
    (``ex.first_order_reason`` when the explainer gives one) and what to use ``instead``.
    """
    if getattr(ex, "supports_second_order", False) is True:
        return
    name = getattr(ex, "method", None) or type(ex).__name__
    reason = getattr(ex, "first_order_reason", None) or (
        "it does not declare supports_second_order = True (set it on an explainer whose "
        "attribute(..., create_graph=True) is differentiable)"
    )
    raise ValueError(
        f"{user} differentiates the explanation (a second-order gradient), but explainer "
        f"{name!r} is first-order: {reason}; {instead}"
    )


def _chunks(reps: int, n: int, internal_batch_size: int | None) -> Iterator[tuple[int, int]]:
    """Split ``reps`` copies of an ``n``-row batch into chunks of at most ``internal_batch_size``
    rows (at least one whole copy each)."""
    per = reps if internal_batch_size is None else max(1, int(internal_batch_size) // n)
    for start in range(0, reps, per):
        yield start, min(reps, start + per)


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


def _check_ibs(ibs: Any) -> None:
    if ibs is not None and (isinstance(ibs, bool) or not isinstance(ibs, int) or ibs < 1):
        raise ValueError(f"internal_batch_size must be None or an int >= 1, got {ibs!r}")


def _weighted_sum(
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


@register_explainer
class Gradient(AttributionRule):
    """Gradient saliency (Simonyan et al., 2014): ``a(x) = ∂f_c(x)/∂x``."""

    name = "grad"
    local = True

    def from_gradient(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g


@register_explainer
class GradientXInput(AttributionRule):
    """Gradient × input (Shrikumar et al., 2016): ``a(x) = x ⊙ ∂f_c(x)/∂x``."""

    name = "grad_x_input"
    local = True

    def from_gradient(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * g


@register_explainer
class IntegratedGradients(AttributionRule):
    """Integrated Gradients (Sundararajan et al., 2017):
    ``a(x) = (x − b) ⊙ Σ_m w_m ∂f_c(b + α_m (x − b))/∂x`` with the nodes and weights of
    :func:`quadrature` (``n_steps``, ``rule``) and baseline ``b`` (``baseline``: a number or a
    tensor broadcastable to x); ``internal_batch_size`` rows per forward pass."""

    name = "ig"
    defaults: ClassVar[dict[str, Any]] = {
        "n_steps": 32, "baseline": 0.0, "rule": "gausslegendre", "internal_batch_size": None,
    }  # fmt: skip
    fixes_target = True

    def validate(self) -> None:
        quadrature(self.kwargs["n_steps"], self.kwargs["rule"])  # validates both
        _check_ig_baseline(self.kwargs["baseline"])
        _check_ibs(self.kwargs["internal_batch_size"])

    def attribute(self, grad: GradientFn, x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        alphas, weights = quadrature(self.kwargs["n_steps"], self.kwargs["rule"])
        base = torch.as_tensor(self.kwargs["baseline"], dtype=x.dtype, device=x.device)
        try:
            ok = torch.broadcast_shapes(base.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"ig baseline of shape {tuple(base.shape)} does not broadcast to the inputs' "
                f"shape {tuple(x.shape)}; pass a scalar or a tensor of shape {tuple(x.shape[1:])}"
            )
        base = base.expand_as(x)
        delta = x - base
        a = alphas.to(dtype=x.dtype, device=x.device)

        def points(lo: int, hi: int) -> torch.Tensor:
            al = a[lo:hi].view(-1, *([1] * x.dim()))
            return (base.unsqueeze(0) + al * delta.unsqueeze(0)).reshape(-1, *x.shape[1:])

        ibs = self.kwargs["internal_batch_size"]
        return delta * _weighted_sum(grad, points, weights, x, ibs, create_graph)


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
        _check_ibs(self.kwargs["internal_batch_size"])
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
        return _weighted_sum(grad, points, weights, x, ibs, create_graph, self.base.attribute)


class Explainer:
    """A saliency explainer shared by training regularisers, attacks and metrics.

    Parameters
    ----------
    method : ``"grad"`` | ``"grad_x_input"`` | ``"smoothgrad"`` | ``"ig"``
    output : ``"logit"`` (target-class logit, default) | ``"prob"`` (softmax probability) |
        ``"loss"`` (cross-entropy with the target as label)
    reduce : how ``|attribution|`` becomes one score per feature, see :func:`reduce_scores`.
    groups : None, or feature groups (see :func:`group_index`): the ranked units become the
        groups, each scored by the sum of its columns' scores (e.g. ``ds.groups``: the 14
        attributes of Adult instead of its 108 one-hot and numeric columns).
    **method_kwargs :
        smoothgrad: ``n_samples`` (25), ``sigma`` (0.15), ``sigma_mode`` (``"relative"``: σ is
        a fraction of each input's value range max−min, as in Smilkov et al., treated as a
        constant under differentiation; ``"absolute"``),
        ``seed`` (None: global RNG), ``internal_batch_size`` (rows per forward pass).
        ig: ``n_steps`` (32), ``baseline`` (0.0; a scalar or a tensor broadcastable to x),
        ``rule`` (``"gausslegendre"`` or a Riemann rule), ``internal_batch_size``.
    fast : True (default): with ``create_graph=True``, ``grad``/``grad_x_input`` of a
        piecewise-linear model (ReLU MLPs and CNNs) are computed explicitly by
        :func:`r2et.fastpath.saliency` (same values and gradients, one backward instead of a
        double backward); False: always autograd.

    A ReLU network's logit gradient is piecewise constant in x, so its saliency has zero
    input-gradient almost everywhere; ``output="prob"``/``"loss"`` keep curvature through the
    softmax. Attacks handle this with a softplus surrogate (see :mod:`r2et.attacks`).

    ``supports_second_order`` (True) declares that ``attribute(..., create_graph=True)`` is
    differentiable w.r.t. the input and the parameters: the gradient attacks and the training
    methods require it (:func:`check_second_order`).
    """

    #: ``attribute(..., create_graph=True)`` is differentiable (attacks and training need it).
    supports_second_order: bool = True

    def __init__(
        self,
        method: str = "grad",
        output: str = "logit",
        reduce: str | None = "auto",
        groups: Any = None,
        fast: bool = True,
        **method_kwargs,
    ) -> None:
        if method not in EXPLAINERS:
            raise ValueError(
                f"method={method!r} is not a known explainer; allowed: {list_explainers()}"
            )
        if not isinstance(fast, bool):
            raise ValueError(f"fast must be True or False, got {fast!r}")
        self.fast = fast
        check_choice("output", output, OUTPUTS)
        check_choice("reduce", reduce, REDUCTIONS)
        self.groups: torch.Tensor | None = None if groups is None else group_index(groups)
        self.rule = EXPLAINERS.get(method)(**method_kwargs)
        self.method = str(method).strip().lower()
        self.output = output
        self.reduce = reduce
        self.kwargs: dict[str, Any] = self.rule.kwargs

    def __repr__(self) -> str:
        kw = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        if self.groups is not None:
            kw += f", groups=<{self.n_groups} groups of {self.groups.numel()} columns>"
        if not self.fast:
            kw += ", fast=False"
        return (
            f"Explainer(method={self.method!r}, output={self.output!r}, reduce={self.reduce!r}{kw})"
        )

    @property
    def n_groups(self) -> int | None:
        """Number of feature groups G (None without groups)."""
        return None if self.groups is None else int(self.groups.max()) + 1

    def config(self) -> dict[str, Any]:
        """JSON-ready description; ``Explainer(**ex.config())`` rebuilds it."""
        kw = {k: v for k, v in self.kwargs.items() if not isinstance(v, torch.Tensor)}
        out = {"method": self.method, "output": self.output, "reduce": self.reduce, **kw}
        if self.groups is not None:
            out["groups"] = self.groups.tolist()
        if not self.fast:
            out["fast"] = False
        return out

    def with_groups(self, groups: Any) -> Explainer:
        """A copy of this explainer that ranks ``groups`` (None: the plain features)."""
        cfg = {k: v for k, v in self.config().items() if k != "groups"}
        tensors = {k: v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)}
        return Explainer(**cfg, **tensors, groups=groups)

    def reduce_attr(self, attr: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, F)`` (or ``(N, G)`` with groups) of an attribution: ``|a|`` reduced
        by ``reduce``, then summed per group (:func:`reduce_scores`; the groups were checked
        when the explainer was built, so this hot path only sums)."""
        s = _reduce(attr, self.reduce)
        if self.groups is None:
            return s
        if self.groups.numel() != s.shape[1]:
            raise ValueError(
                f"groups cover {self.groups.numel()} columns, but there are {s.shape[1]} features"
            )
        return sum_columns(s, self.groups)

    def unit_index(self, input_shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """The ranked unit (score column) of every entry of one input, as a long tensor of
        shape ``input_shape``: column ``j`` for tabular data, pixel ``h·W + w`` for every
        channel of an image, node ``n`` for every feature of a graph node, then its group.
        Deletion and occlusion replace whole units, so they replace exactly what is ranked."""
        shape = tuple(int(d) for d in input_shape)
        cols = _unit_columns(shape, self.reduce)
        if self.groups is not None:
            gid = self.groups
            n_cols = int(cols.max()) + 1
            if gid.numel() != n_cols:
                raise ValueError(
                    f"groups cover {gid.numel()} columns, but inputs of shape {shape} have "
                    f"{n_cols} features"
                )
            cols = gid[cols]
        return cols.view(shape)

    def output_of(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """The explained scalar ``f_c(x)`` of every row, shape ``(N,)``: the target's logit,
        softmax probability or cross-entropy (``output``); ``target=None``: predicted class."""
        check_batch("x", x)
        return self._selected(model, x, target, forward_kwargs)

    # ------------------------------------------------------------------ public API
    def attribute(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        create_graph: bool = False,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """Attribution ``a(x)`` of the chosen output, same shape as ``x``.

        ``target=None`` explains the model's predicted class (argmax of the logits at ``x``);
        an int explains that class for every row; an ``(N,)`` tensor gives one class per row.
        With ``create_graph=True`` the result is differentiable w.r.t. ``x`` and the model's
        parameters, and the forward passes run inside :func:`r2et.models.second_order` (the
        math attention kernel: fused attention kernels have no double backward). Tensor
        ``forward_kwargs`` whose first dimension is N are per-sample.
        """
        check_batch("x", x)
        # a graph that will be differentiated again needs the math attention kernel
        second = second_order() if create_graph else contextlib.nullcontext()
        with torch.enable_grad(), second:
            if self.rule.fixes_target:
                target = self.resolve_target(model, x, target, **forward_kwargs)
            grad = self._gradient_fn(model, x, target, forward_kwargs)
            return self.rule.attribute(grad, x, create_graph)

    def scores(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        create_graph: bool = False,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """Feature importance ``s(x) = reduce(|a(x)|)`` of shape ``(N, F)`` (``(N, G)`` with
        groups: ``s_g = Σ_{j∈g} s_j``), all ``>= 0``."""
        attr = self.attribute(model, x, target, create_graph=create_graph, **forward_kwargs)
        return self.reduce_attr(attr)

    def logits_and_attribution(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | None = None,
        create_graph: bool = False,
        need_logits: bool = True,
        **forward_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``(logits, target, a(x))`` from one forward pass where the rule allows it: the
        saliency engine that training terms call (logits for the cross-entropy, the explained
        class, the attribution with ``create_graph``).

        For rules local to ``x`` (``grad``, ``grad_x_input``) the logits and ``∂f_c/∂x`` come
        from the same forward (for a piecewise-linear model with ``create_graph`` and
        ``fast``: the explicit computation of :func:`r2et.fastpath.saliency`, one backward
        instead of a double backward); other rules run one forward for the logits and
        :meth:`attribute`. ``target``: None (predicted class), an int, an ``(N,)`` tensor
        (used as given) or a callable of the detached logits. ``need_logits=False`` lets the
        fast path skip the logits (then None may be returned for them).
        """
        check_batch("x", x)
        second = second_order() if create_graph else contextlib.nullcontext()
        with torch.enable_grad(), second:
            if self.rule.local:
                logits, t, g = self._forward_gradient(
                    model, x, target, create_graph, forward_kwargs, need_logits
                )
                return logits, t, self.rule.from_gradient(x, g)
            logits = None
            if need_logits or callable(target) or target is None:
                logits = model(x, **forward_kwargs)
            t = _resolve(logits, target) if logits is not None else target
            attr = self.attribute(model, x.detach(), t, create_graph, **forward_kwargs)
            return logits, t, attr

    def resolve_target(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """``target`` as an ``(N,)`` long tensor on ``x``'s device (None: predicted class)."""
        check_batch("x", x)
        n = x.shape[0]
        if target is None:
            with torch.no_grad():
                return _logits(model, x, forward_kwargs).argmax(1)
        return _target_tensor(target, n, x.device)

    # ------------------------------------------------------------------ internals
    def _selected(
        self, model: Callable[..., torch.Tensor], x: torch.Tensor, target: Any, fkw: dict[str, Any]
    ) -> torch.Tensor:
        """Per-row scalar output ``f_c(x)``, shape (N,)."""
        logits = _logits(model, x, fkw)
        return select_output(logits, _selected_target(logits, target), self.output)

    def _gradient(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: Any,
        create_graph: bool,
        fkw: dict[str, Any],
    ) -> torch.Tensor:
        """``∂f_c/∂x`` for every row from one backward pass over the summed batch output; with
        ``create_graph`` and a piecewise-linear model, the explicit computation of
        :func:`r2et.fastpath.saliency` instead (same values and gradients, one backward)."""
        check_model_input(model, x)
        pick = lambda lg: _selected_target(_checked_logits(lg, x), target)  # noqa: E731
        return self._forward_gradient(model, x, pick, create_graph, fkw, False)[2]

    def _forward_gradient(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: Any,
        create_graph: bool,
        fkw: dict[str, Any],
        need_logits: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``(logits, target, ∂f_c/∂x)`` from one forward: the one place r2et differentiates
        an explained output (explicitly on the fast path, else by autograd, where the logit's
        backward is seeded with the one-hot targets, ``Jᵀ e_c``)."""
        if create_graph and self.fast:
            picked: list[torch.Tensor] = []

            def pick(logits: torch.Tensor) -> torch.Tensor:
                picked.append(_resolve(logits, target))
                return picked[0]

            fast = explicit_saliency(model, x, pick, self.output, fkw, need_logits)
            if fast is not None:
                return fast[0], picked[0], fast[1]
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        logits = model(xg, **fkw)
        t = _resolve(logits, target)
        return logits, t, _output_grad(logits, xg, t, self.output, create_graph)

    def _gradient_fn(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: Any,
        fkw: dict[str, Any],
    ) -> GradientFn:
        """The engine's gradient for this batch (see :data:`GradientFn`): at ``x``'s own rows
        :meth:`_gradient` (with its fast path); at ``R`` stacked copies one backward over
        the summed outputs, targets and per-sample keywords repeated copy-major."""
        n = x.shape[0]

        def grad(points: torch.Tensor, create_graph: bool) -> torch.Tensor:
            reps = points.shape[0] // n
            if reps == 1:
                return self._gradient(model, points, target, create_graph, fkw)
            pts = points if points.requires_grad else points.detach().requires_grad_(True)
            kw = repeat_rows(fkw, n, reps)
            out = self._selected(model, pts, repeat_batch(target, reps), kw)
            (g,) = torch.autograd.grad(out.sum(), pts, create_graph=create_graph)
            return g

        return grad


def as_explainer(value: Any) -> Any:
    """An explainer name (``"grad"``) or ``Explainer.config()`` dict as an
    :class:`~r2et.Explainer`, as :func:`~r2et.get_method` accepts them; anything else is
    returned unchanged (the caller checks the explainer protocol)."""
    if isinstance(value, str):
        return Explainer(value)
    if isinstance(value, dict):
        try:
            return Explainer(**value)
        except TypeError as err:
            raise ValueError(
                f"explainer config {value!r} does not describe an Explainer ({err})"
            ) from None
    return value


def _resolve(logits: torch.Tensor, target: Any) -> torch.Tensor:
    """The explained classes: ``target(logits)`` for a callable, a tensor as given, else
    (None or an int) checked against the logits by :func:`_selected_target`."""
    if callable(target):
        return target(logits.detach())
    if isinstance(target, torch.Tensor) and target.dim() == 1:
        return target
    return _selected_target(logits, target)


def select_output(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The explained scalar per row: the target's logit, its softmax probability or its CE."""
    if output == "logit":
        return logits.gather(1, target[:, None]).squeeze(1)
    if output == "prob":
        return logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    return F.cross_entropy(logits, target, reduction="none")


def _output_grad(
    logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor, output: str, create_graph: bool
) -> torch.Tensor:
    """``∂f_c/∂x`` for every row. For the logit the backward is seeded with the one-hot
    targets directly (``Jᵀ e_c``), which saves the gather/sum nodes of the double-backward
    graph; other outputs differentiate ``Σ_n f_{c_n}(x_n)``."""
    if output == "logit":
        seed = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        (g,) = torch.autograd.grad(logits, x, grad_outputs=seed, create_graph=create_graph)
        return g
    out = select_output(logits, target, output).sum()
    (g,) = torch.autograd.grad(out, x, create_graph=create_graph)
    return g


def _check_ig_baseline(baseline: Any) -> None:
    """An IG baseline is a finite number or a finite floating tensor."""
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point() and baseline.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"ig baseline must be a number or a tensor, got dtype {baseline.dtype}"
            )
        if baseline.is_floating_point() and not bool(torch.isfinite(baseline).all()):
            raise ValueError("ig baseline contains NaN or Inf values")
        return
    ok = isinstance(baseline, (int, float)) and not isinstance(baseline, bool)
    if not ok or not np.isfinite(baseline):
        raise ValueError(f"ig baseline must be a finite number or a tensor, got {baseline!r}")


def _logits(
    model: Callable[..., torch.Tensor], x: torch.Tensor, fkw: dict[str, Any]
) -> torch.Tensor:
    check_model_input(model, x)
    return _checked_logits(model(x, **fkw), x)


def _checked_logits(out: Any, x: torch.Tensor) -> torch.Tensor:
    """``out`` if it is a finite ``(N, n_classes)`` logits tensor for the batch ``x``."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must return (N, n_classes) logits for x of batch {x.shape[0]}, got {shape}"
        )
    check_finite_output("the model", out)
    return out


def _selected_target(logits: torch.Tensor, target: Any) -> torch.Tensor:
    """The explained class of every row: ``target`` as an ``(N,)`` tensor checked against
    the number of classes, or the predicted class for None."""
    if target is None:
        return logits.detach().argmax(1)
    t = _target_tensor(target, logits.shape[0], logits.device)
    if int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
        raise ValueError(f"target classes must lie in 0..{logits.shape[1] - 1}")
    return t


def _target_tensor(target: int | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"target must hold integer classes, got dtype {target.dtype}")
        t = target.to(device=device).long()
        if t.numel() and int(t.min()) < 0:
            raise ValueError(f"target classes must be >= 0, got {int(t.min())}")
        if t.dim() == 0:
            return t.expand(n)
        if t.shape != (n,):
            raise ValueError(
                f"target must be an int or an (N,)=({n},) tensor, got shape {tuple(t.shape)}"
            )
        return t
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise ValueError(
            f"target must be None, an int or an (N,) tensor, got {type(target).__name__}"
        )
    if int(target) < 0:
        raise ValueError(f"target classes must be >= 0, got {int(target)}")
    return torch.full((n,), int(target), dtype=torch.long, device=device)
