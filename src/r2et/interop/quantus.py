"""r2et explainers and robustness measures in Quantus' shapes (see :mod:`r2et.interop`).

* :func:`quantus_explain_func` — an r2et explainer as a Quantus ``explain_func``
  ``(model, inputs, targets, **kwargs) -> np.ndarray``, e.g. inside ``quantus.MaxSensitivity``.
* :class:`PrecisionAtKUnderAttack` and :class:`Thickness` — r2et's P@k under an attack that
  keeps the prediction and the explanation thickness Θ as Quantus-style metrics:
  ``metric(model=, x_batch=, y_batch=, a_batch=None, ...) -> list[float]`` (one score per
  input), usable in ``quantus.evaluate``. They need neither Quantus nor Captum.

Quantus is never imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from r2et._checks import check_batch, check_choice, check_int, check_positive
from r2et.metrics import thickness
from r2et.models import eval_mode

__all__ = ["PrecisionAtKUnderAttack", "Thickness", "quantus_explain_func"]

#: Keywords Quantus passes to an ``explain_func`` besides its own (``method``: a name).
_QUANTUS_KWARGS = ("device", "method")


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
