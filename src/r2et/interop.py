"""Captum and Quantus interoperability (optional: ``pip install "r2et[interop]"``).

* :class:`CaptumExplainer` — any Captum attribution (``Saliency``, ``IntegratedGradients``,
  ``DeepLift``, ``Occlusion``, ``NoiseTunnel(...)``, ...) as an r2et explainer for
  *evaluation*: clean scores, P@k, thickness, deletion and occlusion, and the gradient-free
  :class:`~r2et.attacks.RandomSearchAttack`. Captum computes its attributions without
  ``create_graph`` (pytorch/captum#361), so they carry no graph to the input: the gradient
  attacks (ERAttack, MSEAttack, ExplanationPGD, the APGD members of EnsembleAttack) and the
  training methods refuse it with one line, rather than run a silently weaker first-order
  attack (``supports_second_order = False``, :func:`r2et.explain.check_second_order`).
* :func:`quantus_explain_func` — an r2et explainer as a Quantus ``explain_func``
  ``(model, inputs, targets, **kwargs) -> np.ndarray``, e.g. inside ``quantus.MaxSensitivity``.
* :class:`PrecisionAtKUnderAttack` and :class:`Thickness` — r2et's P@k under an attack that
  keeps the prediction and the explanation thickness Θ as Quantus-style metrics:
  ``metric(model=, x_batch=, y_batch=, a_batch=None, ...) -> list[float]`` (one score per
  input), usable in ``quantus.evaluate``. They need neither Quantus nor Captum.

Captum is imported when a :class:`CaptumExplainer` is built; Quantus is never imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r2et._checks import check_batch, check_choice, check_int, check_positive
from r2et._kwargs import split_kwargs
from r2et.attacks._common import LogitRecorder
from r2et.explain import Explainer, check_second_order
from r2et.metrics import thickness
from r2et.models import eval_mode

__all__ = [
    "CaptumExplainer",
    "PrecisionAtKUnderAttack",
    "Thickness",
    "quantus_explain_func",
]

#: Why a Captum attribution cannot be differentiated again (shown by every refusal).
CAPTUM_FIRST_ORDER = (
    "Captum computes attributions without create_graph, so they carry no graph to the "
    "input (pytorch/captum#361)"
)
#: Keywords of Captum's ``attribute`` that the adapter sets itself.
_RESERVED = ("inputs", "target", "additional_forward_args")
#: Keywords Quantus passes to an ``explain_func`` besides its own (``method``: a name).
_QUANTUS_KWARGS = ("device", "method")


# ---------------------------------------------------------------------------- Captum
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


# ---------------------------------------------------------------------------- Quantus
def _check_explainer(explainer: Any, who: str) -> None:
    if not all(hasattr(explainer, a) for a in ("attribute", "scores", "resolve_target")):
        raise TypeError(
            f"{who} needs an r2et explainer (r2et.Explainer or CaptumExplainer), got "
            f"{type(explainer).__name__}"
        )


def _model_place(model: Any, device: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of ``model``'s first floating parameter (the default dtype and
    the CPU without one); ``device`` (Quantus' ``"cpu"``/``"cuda"``) overrides the device."""
    dtype, dev = torch.get_default_dtype(), torch.device("cpu")
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                dtype, dev = p.dtype, p.device
                break
    return dtype, (dev if device is None else torch.device(device))


def _as_inputs(inputs: Any, model: Any, device: Any) -> torch.Tensor:
    """Quantus' ``x_batch`` (a NumPy array or a tensor) as a floating tensor of the model."""
    dtype, dev = _model_place(model, device)
    if isinstance(inputs, torch.Tensor):
        x = inputs.detach()
    else:
        try:
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(inputs)))
        except TypeError:
            raise TypeError(
                f"inputs must be a NumPy array or a tensor, got {type(inputs).__name__}"
            ) from None
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise TypeError(f"inputs must hold numbers, got dtype {x.dtype}")
    return x.to(device=dev, dtype=dtype)


def _as_targets(targets: Any, n: int, device: torch.device) -> torch.Tensor | None:
    """Quantus' ``y_batch`` (an int, a NumPy array or a tensor) as an ``(N,)`` long tensor."""
    if targets is None:
        return None
    if isinstance(targets, torch.Tensor):
        t = targets.detach().cpu()
    else:
        t = torch.as_tensor(np.asarray(targets))
    if t.is_floating_point():
        if not bool((t == t.round()).all()):
            raise ValueError("targets must be integer class indices")
        t = t.round()
    t = t.reshape(-1).long().to(device)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"targets must hold one class per input ({n}), got {t.numel()}")
    return t


def quantus_explain_func(explainer: Any) -> Callable[..., np.ndarray]:
    """An r2et explainer as a Quantus ``explain_func``.

    Returns ``explain_func(model, inputs, targets, **kwargs) -> np.ndarray``: the explainer's
    attribution ``a(x)`` (signed, shape of ``inputs``) of class ``targets`` (one per input;
    None: the predicted class), computed with the model in eval mode on the model's device and
    dtype. Quantus' keywords ``device`` (where to compute) and ``method`` (a name
    ``quantus.evaluate`` adds) are accepted; others raise ``TypeError``. Quantus metrics then
    apply their own ``abs``/``normalise`` options. The explainer is kept as
    ``explain_func.r2et_explainer`` (r2et's Quantus-style metrics find it there).

    Example::

        ms = quantus.MaxSensitivity(nr_samples=20, lower_bound=0.1)
        ms(model=model, x_batch=x, y_batch=y, explain_func=quantus_explain_func(Explainer("ig")))
    """
    _check_explainer(explainer, "quantus_explain_func")

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        unknown = sorted(set(kwargs) - set(_QUANTUS_KWARGS))
        if unknown:
            raise TypeError(
                f"unexpected keyword(s) {unknown} for an r2et explain_func; configure the "
                "r2et explainer instead"
            )
        x = _as_inputs(inputs, model, kwargs.get("device"))
        check_batch("inputs", x)
        t = _as_targets(targets, x.shape[0], x.device)
        with eval_mode(model):
            attr = explainer.attribute(model, x, t)
        return attr.detach().cpu().numpy()

    explain_func.r2et_explainer = explainer  # type: ignore[attr-defined]
    explain_func.__name__ = f"r2et_explain_{getattr(explainer, 'method', 'explainer')}"
    explain_func.__qualname__ = explain_func.__name__
    return explain_func


class _QuantusStyleMetric:
    """The call protocol of a Quantus metric, for r2et's robustness measures.

    ``metric(model, x_batch, y_batch, a_batch=None, s_batch=None, channel_first=None,
    explain_func=None, explain_func_kwargs=None, model_predict_kwargs=None, softmax=None,
    device=None, batch_size=64) -> list[float]``: one score per input (``[aggregate]`` with
    ``return_aggregate``), also kept as ``evaluation_scores``. ``y_batch`` is the explained
    class of each input, as in Quantus. The explainer is the constructor's ``explainer``, else
    the one behind an ``explain_func`` from :func:`quantus_explain_func`. ``a_batch`` and
    ``s_batch`` are accepted for Quantus' drivers and not used: both measures re-explain
    perturbed inputs with the explainer itself. Inputs are processed in chunks of
    ``batch_size``; the model runs in eval mode.
    """

    name = "r2et metric"
    score_direction = "higher"
    evaluation_category = "robustness"

    def __init__(
        self,
        explainer: Any = None,
        return_aggregate: bool = False,
        aggregate_func: Callable[[Any], float] | None = None,
    ) -> None:
        if explainer is not None:
            _check_explainer(explainer, type(self).__name__)
        check_choice("return_aggregate", return_aggregate, (True, False))
        if aggregate_func is not None and not callable(aggregate_func):
            raise TypeError("aggregate_func must be callable (e.g. np.mean)")
        self.explainer = explainer
        self.return_aggregate = bool(return_aggregate)
        self.aggregate_func = np.mean if aggregate_func is None else aggregate_func
        self.evaluation_scores: list[float] = []

    def _set_ball(self, k: int, radius_name: str, radius: float, norm: str, seed: int) -> float:
        """Check and keep the settings both measures share: top-``k``, the ``norm`` ball's
        radius (returned as a float, named ``radius_name`` in errors) and the ``seed``."""
        self.k = check_int("k", k, 1)
        check_positive(radius_name, radius)
        check_choice("norm", norm, ("linf", "l2"))
        self.norm = norm
        self.seed = check_int("seed", seed, 0)
        return float(radius)

    def _explainer_for(self, explain_func: Any) -> Any:
        if self.explainer is not None:
            return self.explainer
        ex = getattr(explain_func, "r2et_explainer", None)
        if ex is None:
            raise TypeError(
                f"{type(self).__name__} needs an r2et explainer: pass explainer=... or "
                "explain_func=r2et.interop.quantus_explain_func(explainer)"
            )
        return ex

    def __call__(
        self,
        model: Any,
        x_batch: Any,
        y_batch: Any,
        a_batch: Any = None,
        s_batch: Any = None,
        channel_first: bool | None = None,
        explain_func: Callable[..., Any] | None = None,
        explain_func_kwargs: Mapping[str, Any] | None = None,
        model_predict_kwargs: Mapping[str, Any] | None = None,
        softmax: bool | None = None,
        device: Any = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> list[float]:
        if kwargs:
            raise TypeError(f"unexpected keyword(s) {sorted(kwargs)} for {type(self).__name__}")
        check_int("batch_size", batch_size, 1)
        ex = self._explainer_for(explain_func)
        x = _as_inputs(x_batch, model, device)
        check_batch("x_batch", x)
        if channel_first is False and x.dim() >= 3:
            x = x.movedim(-1, 1)
        y = _as_targets(y_batch, x.shape[0], x.device)
        if y is None:
            raise ValueError("y_batch is required: the class explained for each input")
        fkw = dict(model_predict_kwargs or {})
        scores: list[torch.Tensor] = []
        with eval_mode(model):
            for i, lo in enumerate(range(0, x.shape[0], batch_size)):
                xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
                scores.append(self._batch(model, ex, xb, yb, i, fkw).detach().cpu())
        out = [float(v) for v in torch.cat(scores).tolist()]
        if self.return_aggregate:
            out = [float(self.aggregate_func(out))]
        self.evaluation_scores = out
        return out

    def _batch(
        self,
        model: Any,
        ex: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        index: int,
        fkw: dict[str, Any],
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class PrecisionAtKUnderAttack(_QuantusStyleMetric):
    """r2et's P@k under attack as a Quantus-style metric (higher is more robust).

    Per input ``P@k = |topk(s(x)) ∩ topk(s(x'))| / k``, where ``x'`` is the point the attack
    found in ``‖x' − x‖ ≤ eps`` (``norm``, inside ``bounds``) with the prediction kept, and
    ``s`` the explainer's scores of class ``y`` (Chen et al., NeurIPS 2024). An attacked P@k
    is an upper bound on the worst case.

    ``attack``: an :class:`~r2et.EnsembleAttack` preset (``"fast"`` default, ``"standard"``,
    ``"thorough"``; gradient members: r2et explainers only), ``"search"`` (the gradient-free
    :class:`~r2et.RandomSearchAttack`, ``search_steps`` queries: any explainer, Captum's
    included), or a built r2et attack (its own explainer and k are used; its k must equal
    ``k``). Batch ``i`` is attacked with seed ``seed + i``, so with ``batch_size >= N`` the
    scores equal ``EnsembleAttack(ex, k, eps, preset=attack, seed=seed)(model, x, y).p_at_k``.
    """

    name = "P@k under attack"

    def __init__(
        self,
        k: int,
        eps: float,
        *,
        attack: str | Callable[..., Any] = "fast",
        explainer: Any = None,
        norm: str = "linf",
        bounds: tuple[Any, Any] | None = None,
        seed: int = 0,
        search_steps: int = 1000,
        return_aggregate: bool = False,
        aggregate_func: Callable[[Any], float] | None = None,
    ) -> None:
        from r2et.attacks import list_presets

        super().__init__(explainer, return_aggregate, aggregate_func)
        self.eps = self._set_ball(k, "eps", eps, norm, seed)
        self.bounds = bounds
        self.search_steps = check_int("search_steps", search_steps, 1)
        if isinstance(attack, str):
            check_choice("attack", attack, (*list_presets(), "search"))
        elif not callable(attack):
            raise TypeError(f"attack must be a preset name, 'search' or an r2et attack, got "
                            f"{type(attack).__name__}")  # fmt: skip
        elif getattr(attack, "k", k) != k:
            raise ValueError(f"the attack was built with k={attack.k}, but the metric uses k={k}")
        self.attack = attack

    def _explainer_for(self, explain_func: Any) -> Any:
        if not isinstance(self.attack, str):
            return getattr(self.attack, "ex", None)
        return super()._explainer_for(explain_func)

    def _build(self, ex: Any, seed: int) -> Any:
        from r2et.attacks import EnsembleAttack, RandomSearchAttack

        if not isinstance(self.attack, str):
            return self.attack
        if self.attack == "search":
            return RandomSearchAttack(ex, self.k, self.eps, self.search_steps, norm=self.norm,
                                      bounds=self.bounds, seed=seed)  # fmt: skip
        return EnsembleAttack(ex, self.k, self.eps, norm=self.norm, bounds=self.bounds,
                              preset=self.attack, seed=seed)  # fmt: skip

    def _batch(
        self,
        model: Any,
        ex: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        index: int,
        fkw: dict[str, Any],
    ) -> torch.Tensor:
        return self._build(ex, self.seed + index)(model, x, y, **fkw).p_at_k


class Thickness(_QuantusStyleMetric):
    """r2et's explanation thickness Θ (Chen et al., NeurIPS 2024, Def. 4.1) as a
    Quantus-style metric (higher is more robust).

    ``Θ(x) = E_{x'} [ ∫₀¹ 1/(k(F−k)) Σ_{i∈T} Σ_{j∉T} (s_i(x_t) − s_j(x_t)) dt ]``,
    ``x_t = (1 − t)x + t x'``, T the top-k of ``s(x)``, ``x'`` uniform in the ``radius`` ball
    (``norm``, ``n_samples`` draws, ``n_steps`` Gauss-Legendre nodes), class ``y`` explained
    along the path: :func:`r2et.thickness` with ``target=y_batch``. Batch ``i`` is seeded with
    ``seed + i``, so with ``batch_size >= N`` the scores equal ``thickness(model, x, ex, k,
    radius=radius, target=y, seed=seed, ...)``. Any explainer works (first-order included).
    """

    name = "Explanation thickness"

    def __init__(
        self,
        k: int,
        radius: float,
        *,
        explainer: Any = None,
        norm: str = "linf",
        n_samples: int = 16,
        n_steps: int = 8,
        seed: int = 0,
        return_aggregate: bool = False,
        aggregate_func: Callable[[Any], float] | None = None,
    ) -> None:
        super().__init__(explainer, return_aggregate, aggregate_func)
        self.radius = self._set_ball(k, "radius", radius, norm, seed)
        self.n_samples = check_int("n_samples", n_samples, 1)
        self.n_steps = check_int("n_steps", n_steps, 1)

    def _batch(
        self,
        model: Any,
        ex: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        index: int,
        fkw: dict[str, Any],
    ) -> torch.Tensor:
        return thickness(
            model, x, ex, self.k, radius=self.radius, target=y, norm=self.norm,
            n_samples=self.n_samples, n_steps=self.n_steps, seed=self.seed + index, **fkw,
        )  # fmt: skip
