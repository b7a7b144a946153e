"""Projected-gradient attacks on explanations, fully batched.

Every attack here perturbs an input ``x`` inside an ``eps``-ball (l_inf or l_2) and inside the
valid input box ``bounds`` so that its saliency scores ``s(x')`` (from an
:class:`~r2et.Explainer`) move away from the clean scores ``s(x)``: it minimises a registered
objective (:mod:`r2et.attacks.objectives`) by projected gradient descent (Madry et al., ICLR
2018) or by APGD's adaptive step size with momentum (Croce & Hein, ICML 2020):

* :class:`ExplanationPGD` — any objective, raw or scale-free scores, ``schedule="apgd"``;
* :class:`ERAttack` (explanation-ranking attack, Chen et al., NeurIPS 2024) — objective
  ``er-next``: lower the clean top-k, raise the features ranked just below them; fixed steps;
* :class:`MSEAttack` — objective ``mse``: maximise ``‖s(x') − s(x)‖²`` (Ghorbani et al., AAAI
  2019); fixed steps.

Fixed steps: ``δ ← Π(δ − α·d)``, ``d = sign(∇L)`` (l_inf) or ``∇L/‖∇L‖₂`` (l_2), ``Π`` the
projection onto the ball followed by clipping into ``bounds``, ``α = 2.5·eps/steps``.
APGD: ``z = Π(x_t − η_t d_t)``, ``x_{t+1} = Π(x_t + 0.75(z − x_t) + 0.25(x_t − x_{t−1}))``,
``η_0 = 2·eps``; at the checkpoints ``w_j`` (0.22, 0.41, 0.55, ... of the steps) a row halves
``η`` and restarts from its best iterate when fewer than 75% of the steps since the last
checkpoint improved the loss, or when neither ``η`` nor the best loss changed.

Every iterate is measured on the original model. Each sample returns the iterate with the
lowest P@k = ``|topk(s(x)) ∩ topk(s(x'))|/k`` seen (ties: the lower objective on the original
model), among iterates that keep the predicted class when ``keep_prediction``. An iterate that
would change the prediction is *rejected*: the row goes back to its last label-preserving
iterate and halves its step size (it is not frozen). A sample whose P@k reaches 0 stops
(``early_stop``), in every restart.

Piecewise-linear models: a ReLU network's logit gradient is constant inside each linear region,
so ``∂s(x')/∂x' = 0`` almost everywhere and a gradient attack on ``output="logit"`` saliency does
not move. Following Dombrowski et al. ("Explanations can be manipulated and geometry is to
blame", NeurIPS 2019) the attack's gradients flow through a copy of the model whose ReLUs are
replaced by ``Softplus(β)`` (``surrogate_beta``); P@k, the prediction check and the returned
scores always use the original model. Gradient masking of any kind is what the gradient-free
:class:`~r2et.attacks.RandomSearchAttack` is for.

All samples and restarts are processed as one batch on the inputs' device; per-sample state
lives in tensors, and finished rows are dropped from the batch. Per-sample gradients come from
one backward pass over the summed batch objective, exact when samples do not interact (the
attack runs the model in eval mode and restores its previous mode afterwards). Random draws are
made for the whole batch up front, so a row's trajectory does not depend on which other rows
are still running.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from r2et._ball import NORMS, sample_in_ball
from r2et._checks import (
    check_batch,
    check_choice,
    check_int,
    check_k,
    check_positive,
)
from r2et._kwargs import repeat_rows
from r2et._threads import thread_budget
from r2et.attacks._common import (
    as_bounds,
    check_bounds_pair,
    clip_into,
    feasible,
    model_inputs,
    pick_best,
    rescore_moved,
    rowwise,
    to_caller,
)
from r2et.attacks.base import AttackResult, SingleAttack
from r2et.attacks.objectives import SCALES, get_objective, scale_scores

# re-exported; the loop reads them from r2et.attacks.trajectories (patch them there)
from r2et.attacks.trajectories import CPU_CHUNK_ELEMENTS as CPU_CHUNK_ELEMENTS
from r2et.attacks.trajectories import CPU_CHUNK_MIN_ENTRIES as CPU_CHUNK_MIN_ENTRIES
from r2et.attacks.trajectories import Trajectories
from r2et.attacks.trajectories import apgd_checkpoints as apgd_checkpoints
from r2et.explain import Explainer, as_explainer, check_second_order, repeat_batch
from r2et.models import eval_mode, has_relu, relu_to_softplus

DEFAULT_SURROGATE_BETA = 10.0
SCHEDULES = ("fixed", "apgd")
DIRECTIONS = ("sign", "normalized")


def random_points(
    x: torch.Tensor,
    radius: float,
    norm: str,
    n_samples: int,
    gen: torch.Generator | None,
    box: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """``n_samples`` random starting points per row, ``(n_samples, *x.shape)``: uniform in the
    part of the l_inf ball that lies inside ``box`` (``U[max(lo, x−r), min(hi, x+r)]`` per
    coordinate, so no probability mass piles up on the box's faces), or uniform in the l_2
    ball (then clipped by the caller)."""
    if norm != "linf":
        return sample_in_ball(x, radius, norm, n_samples, gen)
    lo, hi = x - radius, x + radius
    if box is not None:
        lo, hi = torch.maximum(lo, box[0]), torch.minimum(hi, box[1])
    u = torch.rand((n_samples, *x.shape), generator=gen, dtype=x.dtype, device=x.device)
    return lo.unsqueeze(0) + u * (hi - lo).clamp_min(0).unsqueeze(0)


def halving_schedule(steps: int, restarts: int, rounds: int, keep: float) -> dict[int, int]:
    """Successive halving of ``restarts`` runs of ``steps`` steps in ``rounds`` rounds:
    ``{round(steps · j / rounds): n_j}`` for ``j = 1..rounds−1``, with ``n_0 = restarts`` and
    ``n_j = max(1, ceil(keep · n_{j−1}))`` the restarts per input that continue from that
    iteration on (empty for one round)."""
    out: dict[int, int] = {}
    n = restarts
    for j in range(1, rounds):
        n = max(1, math.ceil(round(keep * n, 9)))
        out[round(steps * j / rounds)] = n
    return out


def halving_cost(steps: int, restarts: int, rounds: int = 1, keep: float = 0.25) -> int:
    """Gradient evaluations per input of a run with successive halving (no early stop):
    ``Σ_j n_j · (b_{j+1} − b_j)`` over the rounds' boundaries ``b`` (``restarts · steps`` for
    one round)."""
    sched = halving_schedule(steps, restarts, rounds, keep)
    bounds = [0, *sched, steps]
    counts = [restarts, *sched.values()]
    return sum(c * (hi - lo) for c, lo, hi in zip(counts, bounds, bounds[1:]))


def check_skip(skip: Any, n: int) -> torch.Tensor:
    """``skip`` as an ``(n,)`` bool tensor (``ValueError`` otherwise)."""
    if not isinstance(skip, torch.Tensor) or skip.dtype != torch.bool or skip.shape != (n,):
        raise ValueError(f"skip must be a bool tensor of shape ({n},)")
    return skip


def check_explainer(ex: Any, gradient: str | None = None) -> None:
    """``ex`` must expose ``scores`` and ``resolve_target``; with ``gradient`` (the name of a
    gradient attack, which differentiates the explanation) it must also be second-order
    capable (:func:`r2et.explain.check_second_order`): a first-order explainer (e.g. a Captum
    attribution) is refused instead of silently giving a weaker attack."""
    if not (hasattr(ex, "scores") and hasattr(ex, "resolve_target")):
        raise ValueError(f"ex must be an r2et Explainer, got {type(ex).__name__}")
    if gradient is not None:
        check_second_order(
            ex,
            gradient,
            "use r2et.Explainer (e.g. Explainer('ig') for integrated gradients) or the "
            "gradient-free RandomSearchAttack (EnsembleAttack: members=[Member('search', "
            "1000)])",
        )


#: ``inner="auto"``: the options of a cheaper explanation for the gradient steps, per method
#: (issue 26; ``benchmarks/attack_inner.py`` measures it against the exact one).
INNER_AUTO: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ig": lambda kw: {"n_steps": max(4, int(kw["n_steps"]) // 4)},
    "smoothgrad": lambda kw: {"n_samples": max(5, int(kw["n_samples"]) // 5)},
}


def resolve_inner(inner: Any, ex: Any) -> dict[str, Any] | None:
    """The inner-loop options ``inner`` stands for with explainer ``ex`` (None: none)."""
    if inner is None or isinstance(inner, dict):
        return dict(inner) if inner else None
    if not isinstance(inner, str):
        raise ValueError(
            f"inner must be None, 'auto' or a dict of explainer options, got {inner!r}"
        )
    check_choice("inner", inner, ("auto",))
    rule = INNER_AUTO.get(getattr(ex, "method", None))
    if rule is None or not hasattr(ex, "with_options"):
        return None
    options = rule(ex.kwargs)
    same = all(ex.kwargs.get(key) == value for key, value in options.items())
    return None if same else options


def inner_explainer(ex: Any, inner: Any) -> tuple[dict[str, Any] | None, Any]:
    """``(inner, explainer)``: the checked ``inner`` options (``"auto"`` resolved by
    :func:`resolve_inner`) and the copy of ``ex`` they build (``(None, None)`` for none)."""
    inner = resolve_inner(inner, ex)
    if inner is None:
        return None, None
    if not hasattr(ex, "with_options"):
        raise ValueError(f"inner needs an r2et Explainer, got {type(ex).__name__}")
    cheap = ex.with_options(**inner)
    check_explainer(cheap, gradient="the inner explainer")
    return inner, cheap


def resolve_surrogate(
    surrogate_beta: float | str | None, model: Any, ex: Explainer
) -> float | None:
    """The Softplus β of the gradient surrogate for ``model`` (None: no surrogate).

    ``"auto"``: β = 10 when the model has ``nn.ReLU`` modules and the explainer explains the
    logit (whose saliency is piecewise constant), None otherwise. A float β is used only when
    the model has ReLU modules to replace (None otherwise: the model itself is smooth or has no
    ReLU to smooth).
    """
    relu = isinstance(model, nn.Module) and has_relu(model)
    if surrogate_beta == "auto":
        return DEFAULT_SURROGATE_BETA if relu and ex.output == "logit" else None
    if surrogate_beta is not None and not isinstance(model, nn.Module):
        raise ValueError("surrogate_beta needs an nn.Module model (its ReLUs are replaced)")
    return surrogate_beta if relu else None


class ExplanationPGD(SingleAttack):
    """Projected-gradient attack on an explanation's top-k (see the module docstring).

    Minimises the objective ``objective`` (:func:`~r2et.attacks.objectives.list_objectives`) of
    the perturbed scores over ``‖x' − x‖ ≤ eps`` (``norm`` ``"linf"`` or ``"l2"``) and
    ``x' ∈ bounds`` (a pair of scalars, or of per-feature tensors shaped like one input).
    An input outside ``bounds`` is refused, unless ``clip_inputs=True`` clips it into the box
    first (then the clean explanation is the clipped input's).

    Parameters
    ----------
    ex : the explainer whose scores are attacked (or its name, e.g. ``"grad"``).
    k : the top-k size (1..F−1, checked on the first call).
    eps : the budget (> 0). steps : gradient steps (>= 1).
    step_size : fixed schedule: the step (default ``2.5·eps/steps``); APGD: the initial step
        (default ``2·eps``).
    keep_prediction : only label-preserving iterates count; an iterate that changes the
        prediction is rejected (the row returns to its last label-preserving iterate and halves
        its step size).
    random_start : start from a uniform point of the ball (seeded by ``seed``) instead of x
        (with ``keep_prediction``, a start that changes the prediction is replaced by x).
    restarts : independent runs per sample (batched together); restart 0 starts at x unless
        ``random_start``, the others at random points; the best one is returned.
    surrogate_beta : ``"auto"`` (β = 10 for ReLU models explained through the logit, else no
        surrogate), a float β to use a Softplus(β) gradient surrogate of a ReLU model, or None.
    seed : seeds random starts and random first steps (None: the global RNG).
    n_bottom : ``er-next``'s number of features below the top-k (None: k; ``"all"``).
    objective : the loss to minimise (default ``"er-next"``). scale : ``"raw"`` scores or
        scale-free ``"mean"`` (``s / mean(s)``).
    schedule : ``"apgd"`` (adaptive step size, momentum, restarts from the best point) or
        ``"fixed"``. direction : ``"sign"`` (l_inf default) or ``"normalized"``
        (``√D · ∇L/‖∇L‖₂`` under l_inf, the official code's PGD_m step).
    tau : temperature of ``minmax``/``overlap``, relative to the mean clean score.
    early_stop : stop a sample once its P@k is 0.
    inner : None, ``"auto"`` (:data:`INNER_AUTO`), or keyword arguments of the explainer's
        method for the gradient steps only (e.g. ``{"n_steps": 8}`` for ``ig``,
        ``{"n_samples": 5}`` for ``smoothgrad``; :meth:`~r2et.Explainer.with_options`): the
        steps and the choice of each restart's best iterate use that cheaper explanation; then
        every restart's best point is scored with ``ex`` itself and the restart with the lowest
        exact P@k is returned, so the reported scores and P@k are always ``ex``'s (issue 26:
        the inner loop of an IG attack costs about ``n_steps`` gradients per step).
    rounds, keep : successive halving of the restarts (default ``rounds=1``: none). With
        ``rounds = m > 1`` the ``steps`` are split into ``m`` rounds at the iterations
        ``round(steps · j / m)``, ``j = 1..m−1``; at the start of each later round every input
        keeps only ``max(1, ceil(keep · n))`` of its ``n`` still-running restarts, the best by
        the criterion of the returned point (lowest P@k so far, then lowest objective on the
        original model, then the first restart), and the others stop where they are (their
        best points still count). Many short starts thus cost about
        ``restarts · steps / m`` gradient steps plus the survivors' (:func:`halving_cost`),
        instead of ``restarts · steps``. ``last_grad_evals`` holds the gradient evaluations
        (rows × steps) of the last call.

    Calling ``atk(model, x, y=None, **forward_kwargs)`` returns an :class:`AttackResult`.
    """

    name = "pgd"
    default_objective = "er-next"
    default_schedule = "apgd"

    def __init__(
        self,
        ex: Explainer,
        k: int,
        eps: float,
        steps: int = 100,
        step_size: float | None = None,
        norm: str = "linf",
        keep_prediction: bool = True,
        bounds: tuple[Any, Any] | None = None,
        random_start: bool = False,
        surrogate_beta: float | str | None = "auto",
        seed: int | None = None,
        n_bottom: int | str | None = None,
        restarts: int = 1,
        *,
        objective: str | None = None,
        scale: str = "raw",
        schedule: str | None = None,
        direction: str = "sign",
        tau: float = 0.1,
        early_stop: bool = True,
        clip_inputs: bool = False,
        rounds: int = 1,
        keep: float = 0.25,
        inner: str | dict[str, Any] | None = None,
    ) -> None:
        ex = as_explainer(ex)
        check_explainer(ex, gradient=type(self).__name__)
        self.ex = ex
        self.inner, self.inner_explainer = inner_explainer(ex, inner)
        self.k = check_int("k", k, 1)
        check_positive("eps", eps)
        self.eps = float(eps)
        self.steps = check_int("steps", steps, 1)
        self.schedule = self.default_schedule if schedule is None else schedule
        check_choice("schedule", self.schedule, SCHEDULES)
        if step_size is None:
            step_size = 2.0 * self.eps if self.schedule == "apgd" else 2.5 * self.eps / self.steps
        check_positive("step_size", step_size)
        self.step_size = float(step_size)
        check_choice("norm", norm, NORMS)
        self.norm = norm
        for flag, value in (
            ("keep_prediction", keep_prediction),
            ("random_start", random_start),
            ("early_stop", early_stop),
        ):
            check_choice(flag, value, (True, False))
        self.keep_prediction = bool(keep_prediction)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        if isinstance(surrogate_beta, str):
            check_choice("surrogate_beta", surrogate_beta, ("auto",))
        elif surrogate_beta is not None:
            check_positive("surrogate_beta", surrogate_beta)
            surrogate_beta = float(surrogate_beta)
        self.surrogate_beta = surrogate_beta
        self.seed = check_int("seed", seed, 0, allow_none=True)
        if n_bottom is not None and n_bottom != "all":
            if isinstance(n_bottom, bool) or not isinstance(n_bottom, int) or n_bottom < 1:
                raise ValueError(f"n_bottom must be None, 'all' or an int >= 1, got {n_bottom!r}")
        self.n_bottom = n_bottom
        self.restarts = check_int("restarts", restarts, 1)
        check_choice("clip_inputs", clip_inputs, (True, False))
        self.clip_inputs = bool(clip_inputs)
        self.bounds = check_bounds_pair(bounds)
        self.objective = self.default_objective if objective is None else objective
        get_objective(self.objective)
        check_choice("scale", scale, SCALES)
        self.scale = scale
        check_choice("direction", direction, DIRECTIONS)
        self.direction = direction
        check_positive("tau", tau)
        self.tau = float(tau)
        self.rounds = check_int("rounds", rounds, 1)
        if self.rounds > self.steps:
            raise ValueError(f"rounds ({rounds}) must be at most steps ({steps})")
        check_positive("keep", keep)
        if keep > 1:
            raise ValueError(f"keep must be in (0, 1], got {keep!r}")
        self.keep = float(keep)
        self.last_grad_evals = 0

    def halving_schedule(self) -> dict[int, int]:
        """``{iteration: restarts kept per input}`` of the successive halving (empty when
        ``rounds == 1``)."""
        return halving_schedule(self.steps, self.restarts, self.rounds, self.keep)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    def config(self) -> dict[str, Any]:
        """JSON-ready description of the attack (the explainer and bounds excluded)."""
        return {
            "attack": self.name,
            "k": self.k,
            "eps": self.eps,
            "steps": self.steps,
            "step_size": self.step_size,
            "norm": self.norm,
            "keep_prediction": self.keep_prediction,
            "random_start": self.random_start,
            "surrogate_beta": self.surrogate_beta,
            "seed": self.seed,
            "n_bottom": self.n_bottom,
            "restarts": self.restarts,
            "objective": self.objective,
            "scale": self.scale,
            "schedule": self.schedule,
            "direction": self.direction,
            "tau": self.tau,
            "early_stop": self.early_stop,
            "box": self.bounds is not None,
            **({"rounds": self.rounds, "keep": self.keep} if self.rounds > 1 else {}),
            **({"inner": dict(self.inner)} if self.inner else {}),
        }

    @property
    def loop_explainer(self) -> Any:
        """The explainer of the gradient steps: the ``inner`` copy, else ``ex`` itself."""
        return self.ex if self.inner_explainer is None else self.inner_explainer

    def resolve_beta(self, model: Any) -> float | None:
        """The Softplus β of the gradient surrogate for ``model`` (None: no surrogate); see
        :func:`resolve_surrogate`."""
        return resolve_surrogate(self.surrogate_beta, model, self.ex)

    # -------------------------------------------------------------- main entry
    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None = None,
        *,
        skip: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
        start_radius: float = 0.5,
        **forward_kwargs: Any,
    ) -> AttackResult:
        """Attack the explanations of ``model`` at every row of ``x``.

        ``y`` is the class whose explanation is attacked (``target`` of the explainer; None:
        the predicted class at ``x``; pass the labels for ``output="loss"``). Tensor
        ``forward_kwargs`` whose first dimension is N are per-sample. ``skip`` (an ``(N,)``
        bool tensor) leaves those rows unattacked (returned at x with P@k 1) while every random
        draw stays the same as without it (the ensemble skips inputs already at P@k 0). The
        model runs in eval mode and its previous mode is restored; attention runs on the math
        kernel where the saliency is differentiated (the explainer enters
        :func:`r2et.models.second_order` for ``create_graph=True``). Random starts are drawn for
        the whole batch from ``seed`` (restart-major), so with ``random_start`` a row's start
        depends on its position in the batch; without it the attack is deterministic per row.
        ``start`` (shape of ``x``, inside the feasible set) moves the starts: the first restart
        starts there (unless ``random_start``), random restarts uniformly within
        ``start_radius · eps`` of it (the ensemble refines its best points this way).

        Inputs follow the model: ``x`` (and tensor ``y``, ``forward_kwargs``) are moved to the
        model's device and cast to its floating dtype (a float64 input of a float32 model is
        attacked in float32); the result comes back on ``x``'s device and in its dtype, with
        ``x_adv`` projected again in that precision (:func:`~r2et.attacks._common.to_caller`).
        """
        check_batch("x", x)
        x = clip_into(self.bounds, x.detach()) if self.clip_inputs else x.detach()
        caller = x
        with eval_mode(model), thread_budget(model, x, **forward_kwargs):
            x, y, forward_kwargs = model_inputs(model, x, y, forward_kwargs)
            box = as_bounds(self.bounds, x)
            beta = self.resolve_beta(model)
            grad_model = model
            if beta is not None:
                grad_model = relu_to_softplus(model, beta).eval()
                grad_model.requires_grad_(False)
            res = self._attack(
                model, grad_model, beta is not None, x, y, box, forward_kwargs, skip, start,
                start_radius,
            )  # fmt: skip
        return to_caller(res, caller, self.eps, self.norm, self.bounds)

    def _attack(
        self,
        model: Callable[..., torch.Tensor],
        grad_model: Callable[..., torch.Tensor],
        surrogate: bool,
        x: torch.Tensor,
        y: torch.Tensor | int | None,
        box: tuple[torch.Tensor, torch.Tensor] | None,
        fkw: dict[str, Any],
        skip: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
        start_radius: float = 0.5,
    ) -> AttackResult:
        ex = self.ex
        if start is not None and start.shape != x.shape:
            raise ValueError(f"start must have the shape of x {tuple(x.shape)}")
        n = x.shape[0]
        with torch.no_grad():
            pred0 = model(x, **fkw).argmax(1)
        tgt = pred0 if y is None else ex.resolve_target(model, x, y, **fkw)
        s0 = ex.scores(model, x, tgt, **fkw).detach()
        k = check_k(self.k, s0.shape[1])
        obj = get_objective(self.objective)
        ctx = obj.setup(scale_scores(s0, self.scale), k, self._options())

        r = self.restarts
        gen = None
        if self.seed is not None:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
        n_random = r if self.random_start else r - 1
        center = x if start is None else start.detach().to(dtype=x.dtype, device=x.device)
        starts = [] if self.random_start else [center.unsqueeze(0)]
        if n_random > 0:
            radius = self.eps if start is None else self.eps * start_radius
            starts.append(random_points(center, radius, self.norm, n_random, gen, box))
        xr = repeat_batch(x, r)
        xs = feasible(xr, torch.cat(starts).reshape(r * n, *x.shape[1:]), self.eps, self.norm, box)
        pred_r = repeat_batch(pred0, r)
        kw = repeat_rows(fkw, n, r) if r > 1 else fkw
        if self.keep_prediction and n_random > 0:
            with torch.no_grad():  # a random start that changes the prediction starts at x
                moved = model(xs, **kw).argmax(1) != pred_r
            xs = torch.where(rowwise(moved, xs), xr, xs)
        noise = None
        if obj.stationary_at_clean:  # drawn up front: independent of which rows still run
            noise = torch.randn(xr.shape, generator=gen, dtype=x.dtype, device=x.device)
        state = Trajectories(
            self, model, grad_model, surrogate, obj, xr, xs, repeat_batch(tgt, r), pred_r,
            repeat_batch(s0, r), repeat_rows(ctx, n, r), k, box, kw, noise, n, r,
        )  # fmt: skip
        if skip is not None:
            state.active &= ~check_skip(skip, n).to(x.device).repeat(r)
        state.run(self.halving_schedule())
        self.last_grad_evals = state.grad_evals
        if self.inner_explainer is not None:  # every restart's best point, exactly
            state.best_s, state.best_p = rescore_moved(
                ex, model, state.best_x, state.x, state.s0, state.top0, state.tgt, kw, k
            )
        rows = pick_best(state.best_p, state.best_obj, r, n) if r > 1 else slice(None)
        best_x = state.best_x[rows]
        if not self.keep_prediction:
            with torch.no_grad():
                flipped = model(best_x, **fkw).argmax(1) != pred0
        else:
            flipped = torch.zeros(n, dtype=torch.bool, device=x.device)
        return AttackResult(
            best_x, s0, state.best_s[rows], state.best_p[rows], flipped,
            state.steps_taken[rows], k=k,
        )  # fmt: skip

    def _options(self) -> dict[str, Any]:
        return {"n_bottom": self.n_bottom, "tau": self.tau}


class ERAttack(ExplanationPGD):
    """Explanation-ranking attack (Chen et al., "Training for Stable Explanation for Free",
    NeurIPS 2024), the paper's attack with fixed PGD steps.

    Minimises ``L(x') = mean_{i∈T} s_i(x') − mean_{j∈B} s_j(x')`` over ``‖x' − x‖ ≤ eps``
    and ``x' ∈ bounds``: T is the top-k of the clean scores ``s(x)``, B the ``n_bottom``
    features ranked just below T (None: k; ``"all"``: every non-top-k feature; capped at
    F − k). Steps of size ``step_size`` (default ``2.5·eps/steps``, Madry et al. 2018): sign
    steps for l_inf, unit-l2 steps for l_2; explanations inside the attack use
    ``create_graph=True``. Same parameters as :class:`ExplanationPGD` (its ``schedule``
    defaults to ``"fixed"`` here); a stronger evaluation is :class:`~r2et.EnsembleAttack`.
    """

    name = "erattack"
    default_objective = "er-next"
    default_schedule = "fixed"


class MSEAttack(ExplanationPGD):
    """Mean-squared-error explanation attack: maximises ``‖s(x') − s(x)‖²`` (the untargeted
    saliency attack of Ghorbani et al., AAAI 2019, with a squared-error dissimilarity; used as
    a baseline by Chen et al., NeurIPS 2024).

    Same budget, steps, projection, ``keep_prediction``, surrogate and restarts as
    :class:`ERAttack`, and P@k reported with the same ``k`` (it selects, per sample, the
    iterate with the lowest P@k, ties broken by the larger error). The reference ``s(x)`` is
    the original model's. The objective is stationary at ``x' = x`` (its gradient
    ``−2 Jᵀ(s(x') − s(x))`` vanishes there), so a sample whose gradient is exactly zero takes
    a step along a random direction (drawn from ``seed``) instead; with a surrogate the start
    is usually not stationary, since the surrogate's scores differ slightly from ``s(x)``.
    ``n_bottom`` is ignored.
    """

    name = "mse"
    default_objective = "mse"
    default_schedule = "fixed"
