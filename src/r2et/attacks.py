"""Attacks on explanations: the explanation-ranking attack and the MSE attack, fully batched.

Both attacks perturb an input ``x`` inside an ``eps``-ball (l_inf or l_2) and inside the valid
input box ``bounds`` so that its saliency scores ``s(x')`` (from an :class:`~r2et.Explainer`)
move away from the clean scores ``s(x)``, by projected gradient descent (Madry et al., ICLR
2018):

* :class:`ERAttack` (explanation-ranking attack, Chen et al., "Training for Stable Explanation
  for Free", NeurIPS 2024) lowers the clean top-k features and raises the features ranked just
  below them: it minimises ``mean_{i∈T} s_i(x') − mean_{j∈B} s_j(x')``, T the top-k of
  ``s(x)`` and B the ``n_bottom`` features ranked right after T.
* :class:`MSEAttack` maximises ``‖s(x') − s(x)‖²`` (the untargeted attack of Ghorbani et al.,
  AAAI 2019, with the squared-error dissimilarity).
* :class:`RandomNoiseAttack` is the baseline any attack must beat: the best of ``steps``
  uniform draws from the same ball.

Each step is ``δ ← Π(δ − α·sign(∇_δ L))`` (l_inf) or ``δ ← Π(δ − α·∇_δ L/‖∇_δ L‖₂)`` (l_2),
``Π`` the projection onto the ball followed by clipping ``x + δ`` into ``bounds``. Every iterate
is measured on the original model, and each sample returns the iterate with the lowest
P@k = ``|topk(s(x)) ∩ topk(s(x'))|/k`` seen (ties: the better attack objective), among the
iterates that keep the predicted class when ``keep_prediction`` (a sample whose prediction would
change stops at its last label-preserving iterate).

Piecewise-linear models: a ReLU network's logit gradient is constant inside each linear region,
so ``∂s(x')/∂x' = 0`` almost everywhere and a gradient attack on ``output="logit"`` saliency does
not move. Following Dombrowski et al. ("Explanations can be manipulated and geometry is to
blame", NeurIPS 2019) the attack's gradients flow through a copy of the model whose ReLUs are
replaced by ``Softplus(β)`` (``surrogate_beta``); P@k, the prediction check and the returned
scores always use the original model. The ``"prob"`` and ``"loss"`` outputs have curvature
through the softmax and need no surrogate.

All samples (and restarts) are processed as one batch on the inputs' device; per-sample state
(best P@k, frozen flags, step counts) lives in tensors. Per-sample gradients come from one
backward pass over the summed batch objective, exact when samples do not interact (the attack
runs the model in eval mode and restores its previous mode afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from r2et._ball import NORMS, project_ball, sample_in_ball
from r2et._checks import check_batch, check_choice, check_int, check_k, check_positive
from r2et.explain import Explainer, repeat_batch, repeat_forward_kwargs
from r2et.metrics import (
    cosine_distance,
    precision_at_k,
    topk_kendall,
    topk_mask,
    topk_spearman,
)
from r2et.models import has_relu, relu_to_softplus

DEFAULT_SURROGATE_BETA = 10.0

__all__ = ["AttackResult", "ERAttack", "MSEAttack", "RandomNoiseAttack", "summarize_metrics"]


# ---------------------------------------------------------------------------------- result
@dataclass
class AttackResult:
    """Outcome of an attack on a batch of ``N`` inputs.

    Attributes
    ----------
    x_adv : the returned adversarial inputs, shape of ``x`` (inside the ball and the bounds).
    scores_clean : ``s(x)``, shape ``(N, F)``, on the original model.
    scores_adv : ``s(x_adv)``, shape ``(N, F)``, on the original model.
    p_at_k : ``|topk(s(x)) ∩ topk(s(x_adv))| / k``, shape ``(N,)``.
    flipped : ``(N,)`` bool, the predicted class at ``x_adv`` differs from the one at ``x``
        (always False with ``keep_prediction``).
    steps_taken : ``(N,)`` long, the number of gradient steps a sample made before it stopped:
        ``steps`` unless ``keep_prediction`` froze it at its last label-preserving iterate.
    k : the k the attack used for P@k (None when unknown).
    """

    x_adv: torch.Tensor
    scores_clean: torch.Tensor
    scores_adv: torch.Tensor
    p_at_k: torch.Tensor
    flipped: torch.Tensor
    steps_taken: torch.Tensor
    k: int | None = None

    def __len__(self) -> int:
        return int(self.p_at_k.shape[0])

    def per_sample(self, k: int | None = None) -> dict[str, torch.Tensor]:
        """Per-sample ranking metrics between ``scores_clean`` and ``scores_adv``, each ``(N,)``.

        ``p_at_k`` (P@k, :func:`~r2et.precision_at_k`), ``kendall`` and ``spearman`` (top-k
        Kendall τ_b and Spearman ρ on the clean top-k features, NaN where a side is constant),
        ``cosine`` (cosine distance ``1 − ⟨s, s'⟩/(‖s‖‖s'‖)``) and ``flipped`` (as float).
        ``k=None`` uses the attack's k.
        """
        k = self._k(k)
        return {
            "p_at_k": precision_at_k(self.scores_clean, self.scores_adv, k),
            "kendall": topk_kendall(self.scores_clean, self.scores_adv, k),
            "spearman": topk_spearman(self.scores_clean, self.scores_adv, k),
            "cosine": cosine_distance(self.scores_clean, self.scores_adv),
            "flipped": self.flipped.to(self.scores_clean.dtype),
        }

    def metrics(self, k: int | None = None) -> dict[str, float | None]:
        """JSON-ready summary of :meth:`per_sample`: ``p_at_k_mean``, ``p_at_k_std``
        (population std), ``kendall_mean``, ``spearman_mean`` (NaN-ignoring means),
        ``cosine_mean`` and ``flipped_rate``; see :func:`summarize_metrics`."""
        return summarize_metrics(self.per_sample(k))

    def _k(self, k: int | None) -> int:
        if k is None:
            k = self.k
        if k is None:
            raise ValueError("k is required: this AttackResult does not record the attack's k")
        return check_k(k, self.scores_clean.shape[1])

    @classmethod
    def cat(cls, results: Sequence[AttackResult]) -> AttackResult:
        """Concatenate the results of consecutive batches along dimension 0."""
        if not results:
            raise ValueError("results must be a non-empty sequence of AttackResult")
        ks = {r.k for r in results}
        if len(ks) != 1:
            raise ValueError(f"results were computed with different k values: {sorted(ks)}")
        tensors = {
            f.name: torch.cat([getattr(r, f.name) for r in results])
            for f in fields(cls)
            if f.name != "k"
        }
        return cls(**tensors, k=results[0].k)


def _nanmean(v: torch.Tensor) -> float | None:
    v = v.detach().double()
    ok = ~torch.isnan(v)
    if not bool(ok.any()):
        return None
    return float(v[ok].mean())


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def summarize_metrics(per_sample: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Aggregate :meth:`AttackResult.per_sample` tensors into plain floats.

    ``p_at_k_mean``/``p_at_k_std`` (population standard deviation, 0 for one sample),
    ``kendall_mean``/``spearman_mean`` (means ignoring NaN rows, None when every row is NaN),
    ``cosine_mean`` and ``flipped_rate`` (fraction of samples whose prediction changed).
    """
    p = per_sample["p_at_k"].detach().double()
    return {
        "p_at_k_mean": float(p.mean()),
        "p_at_k_std": float(p.std(correction=0)),
        "kendall_mean": _nanmean(per_sample["kendall"]),
        "spearman_mean": _nanmean(per_sample["spearman"]),
        "cosine_mean": _finite_or_none(float(per_sample["cosine"].detach().double().mean())),
        "flipped_rate": float(per_sample["flipped"].detach().double().mean()),
    }


# ---------------------------------------------------------------------------------- helpers
class _LogitRecorder:
    """Wraps a model and keeps the logits of its last call (saves a forward pass when the
    explainer calls the model once, at ``x`` itself: the ``grad`` and ``grad_x_input``
    methods)."""

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        self.model = model
        self.logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, **kw: Any) -> torch.Tensor:
        out = self.model(x, **kw)
        self.logits = out.detach() if isinstance(out, torch.Tensor) else None
        return out


def _as_bounds(bounds: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``bounds`` as two tensors broadcastable to ``x``, validated against ``x``."""
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(
            "bounds must be None or a pair (low, high) of scalars or tensors shaped like one "
            f"input {tuple(x.shape[1:])}, got {type(bounds).__name__}"
        )
    lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
    for name, b in (("low", lo), ("high", hi)):
        try:
            torch.broadcast_shapes(b.shape, x.shape[1:])
        except RuntimeError:
            raise ValueError(
                f"bounds {name} of shape {tuple(b.shape)} does not broadcast to one input of "
                f"shape {tuple(x.shape[1:])}"
            ) from None
        if not bool(torch.isfinite(b).all()):
            raise ValueError(f"bounds {name} contains NaN or Inf")
    if bool((lo > hi).any()):
        raise ValueError("bounds must satisfy low <= high everywhere")
    tol = 1e-6 * (1 + torch.maximum(lo.abs(), hi.abs()))
    if bool((x < lo - tol).any() or (x > hi + tol).any()):
        below = float((lo - x).clamp_min(0).max())
        above = float((x - hi).clamp_min(0).max())
        raise ValueError(
            "x lies outside bounds (the attack's valid input box): up to "
            f"{below:.3g} below low and {above:.3g} above high; clip x or widen bounds"
        )
    return lo, hi


# ---------------------------------------------------------------------------------- attacks
class _PGDExplanationAttack:
    """Projected-gradient attack on an explanation; subclasses define the objective."""

    name = "base"
    _gradient_free = False
    _kick_stationary = False

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
    ) -> None:
        if not (hasattr(ex, "scores") and hasattr(ex, "resolve_target")):
            raise ValueError(f"ex must be an r2et Explainer, got {type(ex).__name__}")
        self.ex = ex
        self.k = check_int("k", k, 1)
        check_positive("eps", eps)
        self.eps = float(eps)
        self.steps = check_int("steps", steps, 1)
        if step_size is None:
            step_size = 2.5 * self.eps / self.steps
        check_positive("step_size", step_size)
        self.step_size = float(step_size)
        check_choice("norm", norm, NORMS)
        self.norm = norm
        check_choice("keep_prediction", keep_prediction, (True, False))
        self.keep_prediction = bool(keep_prediction)
        check_choice("random_start", random_start, (True, False))
        self.random_start = bool(random_start)
        if isinstance(surrogate_beta, str):
            check_choice("surrogate_beta", surrogate_beta, ("auto",))
        elif surrogate_beta is not None:
            check_positive("surrogate_beta", surrogate_beta)
            surrogate_beta = float(surrogate_beta)
        self.surrogate_beta = surrogate_beta
        if seed is not None:
            seed = check_int("seed", seed, 0)
        self.seed = seed
        if n_bottom is not None and n_bottom != "all":
            if isinstance(n_bottom, bool) or not isinstance(n_bottom, int) or n_bottom < 1:
                raise ValueError(f"n_bottom must be None, 'all' or an int >= 1, got {n_bottom!r}")
        self.n_bottom = n_bottom
        self.restarts = check_int("restarts", restarts, 1)
        if bounds is not None and (not isinstance(bounds, (tuple, list)) or len(bounds) != 2):
            raise ValueError(
                f"bounds must be None or a pair (low, high), got {type(bounds).__name__}"
            )
        self.bounds = bounds

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(k={self.k}, eps={self.eps}, steps={self.steps}, "
            f"step_size={self.step_size}, norm={self.norm!r}, "
            f"keep_prediction={self.keep_prediction}, random_start={self.random_start}, "
            f"surrogate_beta={self.surrogate_beta!r}, seed={self.seed}, "
            f"n_bottom={self.n_bottom!r}, restarts={self.restarts})"
        )

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
        }

    def resolve_beta(self, model: Any) -> float | None:
        """The Softplus β of the gradient surrogate for ``model`` (None: no surrogate).

        ``"auto"``: β = 10 when the model has ``nn.ReLU`` modules and the explainer explains the
        logit (whose saliency is piecewise constant), None otherwise.
        """
        if self.surrogate_beta == "auto":
            relu = isinstance(model, nn.Module) and has_relu(model)
            return DEFAULT_SURROGATE_BETA if relu and self.ex.output == "logit" else None
        if self.surrogate_beta is not None and not isinstance(model, nn.Module):
            raise ValueError("surrogate_beta needs an nn.Module model (its ReLUs are replaced)")
        return self.surrogate_beta

    # -------------------------------------------------------------- objective (subclasses)
    def _setup(self, s0: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _objective(self, s: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-row loss to minimise, shape (N,)."""
        raise NotImplementedError

    # -------------------------------------------------------------- main entry
    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None = None,
        **forward_kwargs: Any,
    ) -> AttackResult:
        """Attack the explanations of ``model`` at every row of ``x``.

        ``y`` is the class whose explanation is attacked (``target`` of the explainer; None:
        the predicted class at ``x``; pass the labels for ``output="loss"``). Tensor
        ``forward_kwargs`` whose first dimension is N are per-sample. The model runs in eval
        mode and its previous mode is restored. Random starts are drawn for the whole batch
        from ``seed`` (restart-major), so with ``random_start`` a row's start depends on its
        position in the batch; without it the attack is deterministic per row.
        """
        check_batch("x", x)
        x = x.detach()
        box = _as_bounds(self.bounds, x)
        was_training = getattr(model, "training", None)
        if isinstance(model, nn.Module):
            model.eval()
        try:
            beta = None if self._gradient_free else self.resolve_beta(model)
            grad_model = model
            if beta is not None:
                grad_model = relu_to_softplus(model, beta).eval()
                grad_model.requires_grad_(False)
            return self._attack(model, grad_model, beta is not None, x, y, box, forward_kwargs)
        finally:
            if isinstance(model, nn.Module) and was_training is not None:
                model.train(was_training)

    def _attack(
        self,
        model: Callable[..., torch.Tensor],
        grad_model: Callable[..., torch.Tensor],
        surrogate: bool,
        x: torch.Tensor,
        y: torch.Tensor | int | None,
        box: tuple[torch.Tensor, torch.Tensor] | None,
        fkw: dict[str, Any],
    ) -> AttackResult:
        ex = self.ex
        n = x.shape[0]
        with torch.no_grad():
            logits0 = model(x, **fkw)
        pred0 = logits0.argmax(1)
        tgt = pred0 if y is None else ex.resolve_target(model, x, y, **fkw)
        s0 = ex.scores(model, x, tgt, **fkw).detach()
        k = check_k(self.k, s0.shape[1])
        ctx = self._setup(s0, k)

        r = self.restarts
        gen = None
        if self.seed is not None:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
        n_random = r if self.random_start else r - 1
        starts = [x.unsqueeze(0)] if not self.random_start else []
        if n_random > 0:
            starts.append(sample_in_ball(x, self.eps, self.norm, n_random, gen))
        xs = torch.cat(starts).reshape(r * n, *x.shape[1:])
        xr = repeat_batch(x, r)
        xs = self._feasible(xr, xs, box)
        pred0_r = repeat_batch(pred0, r)
        kw = repeat_forward_kwargs(fkw, n, r) if r > 1 else fkw
        if self.keep_prediction and n_random > 0 and not self._gradient_free:
            with torch.no_grad():  # a random start that changes the prediction starts at x
                moved = model(xs, **kw).argmax(1) != pred0_r
            xs = torch.where(moved.view(-1, *([1] * (x.dim() - 1))), xr, xs)
        ctx_r = {key: repeat_batch(v, r) for key, v in ctx.items()} if r > 1 else ctx
        best_x, best_s, best_p, best_obj, steps_taken, flipped = self._pgd(
            model,
            grad_model,
            surrogate,
            xr,
            xs,
            repeat_batch(tgt, r),
            pred0_r,
            repeat_batch(s0, r),
            ctx_r,
            k,
            box,
            kw,
            gen,
        )
        if r > 1:  # keep the best restart per sample: lowest P@k, then lowest objective
            p, o = best_p.view(r, n), best_obj.view(r, n)
            pick = torch.zeros(n, dtype=torch.long, device=x.device)
            bp, bo = p[0], o[0]
            for j in range(1, r):  # a loop over restarts, not samples
                better = (p[j] < bp) | ((p[j] == bp) & (o[j] < bo))
                pick = torch.where(better, torch.full_like(pick, j), pick)
                bp, bo = torch.where(better, p[j], bp), torch.where(better, o[j], bo)
            rows = pick * n + torch.arange(n, device=x.device)
            best_x, best_s, best_p = best_x[rows], best_s[rows], best_p[rows]
            steps_taken, flipped = steps_taken[rows], flipped[rows]
        return AttackResult(best_x, s0, best_s, best_p, flipped, steps_taken, k=k)

    def _feasible(
        self, x: torch.Tensor, z: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        """Project ``z`` onto the ``eps``-ball around ``x``, clip into ``box``, and make the
        constraints hold exactly in floating point: ``‖z − x‖ <= eps`` as computed in the
        dtype of ``x`` (rounding of ``x + δ`` can overshoot by an ulp; such entries are
        pulled towards ``x``)."""
        z = x + project_ball(z - x, self.eps, self.norm)
        if box is not None:
            z = torch.maximum(torch.minimum(z, box[1]), box[0])
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(4):  # almost always 0 or 1 pass
            d = z - x
            if self.norm == "linf":
                bad = d.abs() > self.eps
                if not bool(bad.any()):
                    break
                z = torch.where(bad, torch.nextafter(z, x), z)
            else:
                nrm = d.flatten(1).norm(dim=1)
                bad = nrm > self.eps
                if not bool(bad.any()):
                    break
                shrink = self.eps / nrm * (1 - 16 * torch.finfo(x.dtype).eps)
                z = torch.where(bad.view(shape), x + d * shrink.view(shape), z)
            if box is not None:
                z = torch.maximum(torch.minimum(z, box[1]), box[0])
        return z

    def _pgd(
        self,
        model: Callable[..., torch.Tensor],
        grad_model: Callable[..., torch.Tensor],
        surrogate: bool,
        x: torch.Tensor,
        start: torch.Tensor,
        tgt: torch.Tensor,
        pred0: torch.Tensor,
        s0: torch.Tensor,
        ctx: dict[str, torch.Tensor],
        k: int,
        box: tuple[torch.Tensor, torch.Tensor] | None,
        fkw: dict[str, Any],
        gen: torch.Generator | None,
    ) -> tuple[torch.Tensor, ...]:
        """Batched PGD from ``start``; returns the best iterate's (x, s, P@k, objective),
        the steps taken and the flipped flags, all per row."""
        ex = self.ex
        n = x.shape[0]
        dev = x.device
        bshape = (n, *([1] * (x.dim() - 1)))
        recorder = _LogitRecorder(model)
        reuse_logits = ex.method in ("grad", "grad_x_input")

        best_x = x.clone()
        best_s = s0.clone()
        best_p = torch.ones(n, dtype=s0.dtype, device=dev)
        best_obj = self._objective(s0, ctx).detach()
        top0 = topk_mask(s0, k)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        steps_taken = torch.zeros(n, dtype=torch.long, device=dev)
        cur = start.clone()

        for t in range(self.steps + 1):
            more = t < self.steps
            need_grad = more and not self._gradient_free
            # ---- measure the iterate on the original model (and get the gradient if no surrogate)
            xg = cur.detach().requires_grad_(need_grad and not surrogate)
            s_graph = None
            if need_grad and not surrogate:
                s_graph = ex.scores(recorder, xg, tgt, create_graph=True, **fkw)
                s = s_graph.detach()
            else:
                s = ex.scores(recorder, xg.detach(), tgt, **fkw).detach()
            if reuse_logits and recorder.logits is not None:
                logits = recorder.logits
            else:
                with torch.no_grad():
                    logits = model(cur, **fkw)
            pred = logits.argmax(1)
            ok = pred == pred0
            cand = active
            if self.keep_prediction:
                if self._gradient_free:  # independent draws: skip the label-changing ones
                    cand = active & ok
                else:  # a trajectory: stop at the last label-preserving iterate
                    active = active & ok
                    cand = active
            p = (topk_mask(s, k) & top0).sum(1).to(s.dtype) / k  # P@k against s(x)
            obj = self._objective(s, ctx).detach()
            better = cand & ((p < best_p) | ((p == best_p) & (obj < best_obj)))
            best_x = torch.where(better.view(bshape), cur, best_x)
            best_s = torch.where(better[:, None], s, best_s)
            best_p = torch.where(better, p, best_p)
            best_obj = torch.where(better, obj, best_obj)
            steps_taken = torch.where(active, torch.full_like(steps_taken, t), steps_taken)
            if not more or not bool(active.any()):
                break
            if self._gradient_free:
                draw = sample_in_ball(x, self.eps, self.norm, 1, gen)[0]
                cur = self._feasible(x, draw, box)
                continue
            # ---- gradient of the objective w.r.t. the input
            if surrogate:
                xg = cur.detach().requires_grad_(True)
                s_graph = ex.scores(grad_model, xg, tgt, create_graph=True, **fkw)
            loss = self._objective(s_graph, ctx).sum()
            (g,) = torch.autograd.grad(loss, xg)
            g = torch.nan_to_num(g.detach())
            if self._kick_stationary:  # rows at a stationary point take a random direction
                still = g.flatten(1).abs().amax(1) == 0
                if bool(still.any()):
                    noise = torch.randn(g.shape, generator=gen, dtype=g.dtype, device=g.device)
                    g = torch.where(still.view(bshape), noise, g)
            if self.norm == "linf":
                step = g.sign()
            else:
                gn = g.flatten(1).norm(dim=1).clamp_min(1e-12)
                step = g / gn.view(bshape)
            nxt = self._feasible(x, cur - self.step_size * step, box)
            cur = torch.where(active.view(bshape), nxt, cur)

        if not self.keep_prediction:
            with torch.no_grad():
                flipped = model(best_x, **fkw).argmax(1) != pred0
        else:
            flipped = torch.zeros(n, dtype=torch.bool, device=dev)
        return best_x, best_s, best_p, best_obj, steps_taken, flipped


class ERAttack(_PGDExplanationAttack):
    """Explanation-ranking attack (Chen et al., "Training for Stable Explanation for Free",
    NeurIPS 2024).

    Minimises ``L(x') = mean_{i∈T} s_i(x') − mean_{j∈B} s_j(x')`` over ``‖x' − x‖ ≤ eps``
    (``norm`` ``"linf"`` or ``"l2"``) and ``x' ∈ bounds``: T is the top-k of the clean scores
    ``s(x)``, B the ``n_bottom`` features ranked just below T (None: k; ``"all"``: every
    non-top-k feature; capped at F − k). Projected gradient steps of size ``step_size``
    (default ``2.5·eps/steps``, Madry et al. 2018): sign steps for l_inf, unit-l2 steps for l_2,
    projection onto the ball and clipping into ``bounds`` (a pair of scalars, or of per-feature
    tensors shaped like one input). Explanations inside the attack use ``create_graph=True``.

    Parameters
    ----------
    ex : the explainer whose scores are attacked.
    k : the top-k size (1..F−1, checked on the first call).
    eps : the budget (> 0). steps : the number of gradient steps (>= 1).
    keep_prediction : a sample whose predicted class would change keeps its last
        label-preserving iterate and stops moving (default).
    random_start : start from a uniform point of the ball (seeded by ``seed``) instead of x
        (with ``keep_prediction``, a start that changes the prediction is replaced by x).
    restarts : independent runs per sample (batched together); restart 0 starts at x unless
        ``random_start``, the others at random points; the best one is returned.
    surrogate_beta : ``"auto"`` (β = 10 for ReLU models explained through the logit, else no
        surrogate), a float β to force a Softplus(β) gradient surrogate, or None for none. The
        logit saliency of a ReLU network has zero input-gradient almost everywhere; the
        ``"prob"``/``"loss"`` outputs are curved through the softmax and work without one.
        P@k, the prediction check and the returned scores always use the original model.
    seed : seeds the random starts (None: the global RNG).

    Calling ``atk(model, x, y=None, **forward_kwargs)`` returns an :class:`AttackResult` holding,
    per sample, the (label-preserving) iterate with the lowest P@k seen.
    """

    name = "erattack"

    def _setup(self, s0: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        f = s0.shape[1]
        if self.n_bottom == "all":
            nb = f - k
        else:
            nb = min(k if self.n_bottom is None else int(self.n_bottom), f - k)
        order = s0.topk(k + nb, dim=1).indices
        top = torch.zeros_like(s0).scatter_(1, order[:, :k], 1.0 / k)
        bottom = torch.zeros_like(s0).scatter_(1, order[:, k:], 1.0 / nb)
        return {"w": top - bottom}

    def _objective(self, s: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        return (s * ctx["w"]).sum(1)


class MSEAttack(_PGDExplanationAttack):
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
    _kick_stationary = True

    def _setup(self, s0: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        return {"s0": s0}

    def _objective(self, s: torch.Tensor, ctx: dict[str, torch.Tensor]) -> torch.Tensor:
        return -(s - ctx["s0"]).pow(2).sum(1)


class RandomNoiseAttack(ERAttack):
    """Random-noise baseline with the budget of an attack: ``steps`` independent points drawn
    uniformly from the ``eps``-ball around x (l_inf: ``x + U[−eps, eps]^d``; l_2: uniform in
    volume), clipped into ``bounds``; each sample keeps the draw with the lowest P@k (ties: the
    lower ERAttack objective), among the draws that keep its prediction when
    ``keep_prediction`` (draws that change it are skipped, not followed). No gradients, so
    ``step_size``, ``random_start`` and ``surrogate_beta`` have no effect; ``seed`` seeds the
    draws. A strong attack must beat this at the same ``eps`` and ``steps``.
    """

    name = "random"
    _gradient_free = True
