"""Captum attributions as r2et explainers (evaluation only; see :mod:`r2et.interop`).

:class:`CaptumExplainer` — any Captum attribution (``Saliency``, ``IntegratedGradients``,
``DeepLift``, ``Occlusion``, ``NoiseTunnel(...)``, ...) as an r2et explainer for
*evaluation*: clean scores, P@k, thickness, deletion and occlusion, and the gradient-free
:class:`~r2et.attacks.RandomSearchAttack`. Captum computes its attributions without
``create_graph`` (pytorch/captum#361), so they carry no graph to the input: the gradient
attacks and the training methods refuse it with one line (``supports_second_order = False``,
:func:`r2et.explain.check_second_order`). Captum is imported when one is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from r2et._checks import check_batch
from r2et._kwargs import split_kwargs
from r2et.attacks.base import LogitRecorder
from r2et.explain import Explainer, check_second_order

__all__ = ["CAPTUM_FIRST_ORDER", "CaptumExplainer"]

#: Why a Captum attribution cannot be differentiated again (shown by every refusal).
CAPTUM_FIRST_ORDER = (
    "Captum computes attributions without create_graph, so they carry no graph to the "
    "input (pytorch/captum#361)"
)
#: Keywords of Captum's ``attribute`` that the adapter sets itself.
_RESERVED = ("inputs", "target", "additional_forward_args")


class CaptumExplainer:
    """A Captum attribution method as an r2et explainer (first-order: evaluation only).

    Parameters
    ----------
    attribution : a Captum attribution *class* (``captum.attr.Saliency``,
        ``IntegratedGradients``, ``DeepLift``, ``Occlusion``, ...), built as
        ``attribution(forward_func)`` at every call, or a *factory* ``forward_func ->
        Attribution`` for wrappers and extra constructor arguments (``lambda f:
        NoiseTunnel(Saliency(f))``). An already built instance is refused: it is bound to one
        forward function, while r2et calls explainers with other callables (wrapped models,
        surrogate copies).
    output : ``"logit"`` (default), ``"prob"`` or ``"loss"``, the explained scalar ``f_c(x)``
        as in :class:`r2et.Explainer`: the target's logit, its softmax probability, or the
        cross-entropy with the target as label.
    reduce, groups : how ``|attribution|`` becomes one score per feature (or group), exactly
        as in :class:`r2et.Explainer`.
    name : the name in ``method`` (``"captum:<name>"``); default: the class's name.
    **attribute_kwargs : passed to Captum's ``attribute`` (``abs=False`` for ``Saliency``,
        ``n_steps``/``method``/``baselines`` for ``IntegratedGradients``, ``sliding_window_shapes``
        for ``Occlusion``, ...). ``target`` and ``additional_forward_args`` are set by the
        adapter; ``return_convergence_delta=True`` is refused.

    ``attribute(model, x, target=None, **forward_kwargs)`` returns Captum's attribution of
    ``f_c`` for class ``target`` (None: the predicted class), detached, shape of ``x``; tensor
    ``forward_kwargs`` whose first dimension is N travel as Captum's per-sample
    ``additional_forward_args`` (so IG's and NoiseTunnel's expansions repeat them with their
    rows), other keywords are passed unchanged. With ``output="logit"`` and no forward
    keywords Captum sees ``model`` itself, so module-hooking methods (DeepLift, GuidedBackprop,
    LRP) work on an ``nn.Module``. ``create_graph=True`` is refused: Captum builds no
    second-order graph (``supports_second_order = False``).
    """

    supports_second_order: bool = False
    first_order_reason: str = CAPTUM_FIRST_ORDER

    def __init__(
        self,
        attribution: Any,
        *,
        output: str = "logit",
        reduce: str | None = "auto",
        groups: Any = None,
        name: str | None = None,
        **attribute_kwargs: Any,
    ) -> None:
        from captum.attr import Attribution

        if isinstance(attribution, Attribution):
            raise TypeError(
                f"pass the Captum class ({type(attribution).__name__}) or a factory "
                "(lambda f: NoiseTunnel(Saliency(f))), not a built instance: an instance is "
                "bound to one forward function"
            )
        if isinstance(attribution, type):
            if not issubclass(attribution, Attribution):
                raise TypeError(
                    f"attribution must be a captum.attr Attribution class or a factory, got "
                    f"class {attribution.__name__}"
                )
        elif not callable(attribution):
            raise TypeError(
                "attribution must be a captum.attr Attribution class or a factory "
                f"forward_func -> Attribution, got {type(attribution).__name__}"
            )
        bad = sorted(set(attribute_kwargs) & set(_RESERVED))
        if bad:
            raise ValueError(
                f"{bad} are set by CaptumExplainer (target from attribute(target=...), "
                "additional_forward_args from the forward keywords); do not pass them"
            )
        if attribute_kwargs.get("return_convergence_delta"):
            raise ValueError("return_convergence_delta=True is not supported: r2et needs only "
                             "the attributions")  # fmt: skip
        if name is None:
            name = getattr(attribution, "__name__", type(attribution).__name__)
            name = "custom" if name == "<lambda>" else name
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        # validates output, reduce and groups; answers targets, reductions and unit indices
        self._base = Explainer("grad", output=output, reduce=reduce, groups=groups)
        self.attribution = attribution
        self.name = name
        self.output = output
        self.reduce = reduce
        self.attribute_kwargs = dict(attribute_kwargs)

    # ------------------------------------------------------------------ description
    @property
    def method(self) -> str:
        """``"captum:<name>"``, e.g. ``"captum:IntegratedGradients"``."""
        return f"captum:{self.name}"

    @property
    def groups(self) -> torch.Tensor | None:
        """The ``(F,)`` group id of every column (None without groups)."""
        return self._base.groups

    @property
    def n_groups(self) -> int | None:
        """Number of feature groups G (None without groups)."""
        return self._base.n_groups

    def __repr__(self) -> str:
        kw = "".join(f", {k}={v!r}" for k, v in self.attribute_kwargs.items())
        if self.groups is not None:
            kw += f", groups=<{self.n_groups} groups>"
        return f"CaptumExplainer({self.name}, output={self.output!r}, reduce={self.reduce!r}{kw})"

    def config(self) -> dict[str, Any]:
        """JSON-ready description (records and reports; a Captum class cannot be rebuilt
        from JSON, and tensor keywords are left out)."""
        kw = {
            k: v
            for k, v in self.attribute_kwargs.items()
            if isinstance(v, (bool, int, float, str, type(None), list, tuple))
        }
        out = {"method": self.method, "output": self.output, "reduce": self.reduce, **kw}
        if self.groups is not None:
            out["groups"] = self.groups.tolist()
        return out

    def with_groups(self, groups: Any) -> CaptumExplainer:
        """A copy of this explainer that ranks ``groups`` (None: the plain features)."""
        return CaptumExplainer(
            self.attribution, output=self.output, reduce=self.reduce, groups=groups,
            name=self.name, **self.attribute_kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------ r2et's protocol
    def resolve_target(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """``target`` as an ``(N,)`` long tensor (None: the predicted class)."""
        return self._base.resolve_target(model, x, target, **forward_kwargs)

    def output_of(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """The explained scalar ``f_c(x)`` of every row, shape ``(N,)``."""
        return self._base.output_of(model, x, target, **forward_kwargs)

    def reduce_attr(self, attr: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, F)`` (``(N, G)`` with groups) of an attribution, as in
        :meth:`r2et.Explainer.reduce_attr`: ``s_j = |a_j|`` reduced, ``s_g = Σ_{j∈g} s_j``."""
        return self._base.reduce_attr(attr)

    def unit_index(self, input_shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """The ranked unit of every entry of one input (:meth:`r2et.Explainer.unit_index`)."""
        return self._base.unit_index(input_shape)

    def attribute(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        create_graph: bool = False,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """Captum's attribution of ``f_c`` at ``x`` (detached, shape of ``x``)."""
        if create_graph:
            check_second_order(
                self,
                "attribute(create_graph=True)",
                "use r2et.Explainer (e.g. Explainer('ig') for integrated gradients)",
            )
        check_batch("x", x)
        if isinstance(model, LogitRecorder):  # the attacks' logit cache: Captum needs the
            model = model.model  # module itself (hooks), and its logits are not reused here
        n = x.shape[0]
        t = self.resolve_target(model, x, target, **forward_kwargs)
        per, shared = split_kwargs(forward_kwargs, n)
        args: list[torch.Tensor] = [forward_kwargs[k] for k in per]
        output = self.output
        captum_target: torch.Tensor | None = t
        if output == "logit" and not forward_kwargs:
            forward_func: Callable[..., torch.Tensor] = model
        else:
            if output == "loss":  # per-row CE: the label travels with its row
                args.append(t)
                captum_target = None

            def forward_func(xx: torch.Tensor, *vals: torch.Tensor) -> torch.Tensor:
                labels = vals[-1] if output == "loss" else None
                kw = dict(zip(per, vals))
                logits = model(xx, **shared, **kw)
                if output == "logit":
                    return logits
                if output == "prob":
                    return logits.softmax(1)
                return F.cross_entropy(logits, labels, reduction="none")

        attr_obj = self.attribution(forward_func)  # a class or a factory: both take f
        with torch.enable_grad():
            out = attr_obj.attribute(
                x.detach().requires_grad_(True),  # Captum warns about inputs without grad
                target=captum_target,
                additional_forward_args=tuple(args) if args else None,
                **self.attribute_kwargs,
            )
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"Captum's {self.name} returned attributions of shape {got}, not the inputs' "
                f"{tuple(x.shape)}: r2et explains the inputs (layer and neuron methods are not "
                "supported)"
            )
        return out.detach()

    def scores(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        target: int | torch.Tensor | None = None,
        create_graph: bool = False,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """Feature importance ``s(x) = reduce(|a(x)|)``, ``(N, F)`` (``(N, G)`` with groups)."""
        attr = self.attribute(model, x, target, create_graph=create_graph, **forward_kwargs)
        return self.reduce_attr(attr)
