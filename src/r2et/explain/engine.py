"""The saliency engine: :class:`Explainer` runs the model and takes the gradient every rule uses.

``f_c`` is the *output* being explained: the logit of the target class (default), its softmax
probability, or the cross-entropy loss of the target. Every method accepts
``create_graph=True``, so a loss of the explanation (R2ET's ranking regulariser, an attack
objective) can be back-propagated to the input and to the parameters. Per-sample gradients
come from one backward pass over the summed batch output; this is exact when samples do not
interact (eval mode, no batch statistics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from r2et._checks import (
    check_batch,
    check_choice,
    check_finite_output,
    check_model_input,
    not_logits,
)
from r2et._kwargs import repeat_batch, repeat_rows
from r2et._second_order import second_order
from r2et.explain.base import EXPLAINERS, GradientFn, list_explainers
from r2et.explain.units import REDUCTIONS, group_index, reduce_abs, sum_columns, unit_columns
from r2et.fastpath import saliency as explicit_saliency

OUTPUTS = ("logit", "prob", "loss")


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
        return self._copy(groups)

    def _copy(self, groups: Any, **options: Any) -> Explainer:
        """This explainer rebuilt from its config with ``groups`` and method ``options``."""
        cfg = {k: v for k, v in self.config().items() if k != "groups"}
        tensors = {k: v for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)}
        return Explainer(**{**cfg, **tensors, **options}, groups=groups)

    def with_options(self, **options: Any) -> Explainer:
        """A copy of this explainer with some of its method's keyword arguments changed (e.g.
        ``n_steps=8`` for ``ig``, ``n_samples=5`` for ``smoothgrad``); the output, reduction,
        groups and fast path stay. An attack's inner loop uses such a cheaper copy
        (:class:`~r2et.attacks.ExplanationPGD`'s ``inner``)."""
        unknown = sorted(set(options) - set(self.rule.defaults))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for explainer {self.method!r}; allowed: "
                f"{sorted(self.rule.defaults)}"
            )
        return self._copy(None if self.groups is None else self.groups.tolist(), **options)

    def reduce_attr(self, attr: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, F)`` (or ``(N, G)`` with groups) of an attribution: ``|a|`` reduced
        by ``reduce``, then summed per group (:func:`reduce_scores`; the groups were checked
        when the explainer was built, so this hot path only sums)."""
        s = reduce_abs(attr, self.reduce)
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
        cols = unit_columns(shape, self.reduce)
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
        logits = _checked_logits(model(xg, **fkw), xg)
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


def _logits(
    model: Callable[..., torch.Tensor], x: torch.Tensor, fkw: dict[str, Any]
) -> torch.Tensor:
    check_model_input(model, x)
    return _checked_logits(model(x, **fkw), x)


def _checked_logits(out: Any, x: torch.Tensor) -> torch.Tensor:
    """``out`` if it is a finite ``(N, n_classes)`` logits tensor for the batch ``x``."""
    if (msg := not_logits(out)) is not None:
        raise ValueError(msg)
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
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
