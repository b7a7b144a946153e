"""Gradient-free attacks on explanations: they query the original model only, so no gradient
masking (a ReLU network's piecewise-constant saliency, a saturated softmax, a surrogate that
is a poor copy) can hide an unstable explanation from them.

* :class:`RandomSearchAttack` — a random search in the style of the Square Attack
  (Andriushchenko et al., ECCV 2020) adapted to explanations: from a random vertex of the
  l_inf ball, each query re-draws the signs of a random subset of coordinates (tabular and
  graph data: each coordinate with probability ``p``; images: a random square of side
  ``√(p·H·W)`` over every channel) at ``x ± eps`` and keeps the proposal when it lowers P@k,
  or keeps P@k and does not raise the objective, and keeps the prediction. ``p`` starts at
  ``p_init`` and halves at the Square Attack's query fractions. Under l_2 a proposal adds
  Gaussian noise to the subset and projects back onto the ball.
* :class:`RandomNoiseAttack` — the baseline any attack must beat: the best of ``steps``
  independent uniform draws from the ball.

Both process all samples as one batch; random draws are made for the whole batch at every
query, so a row's search does not depend on which other rows are still running.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

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
    keep_best,
    measure,
    model_inputs,
    overlap_with,
    pick_best,
    rescore_moved,
    rowwise,
    take_rows,
    to_caller,
)
from r2et.attacks.base import AttackResult, SingleAttack
from r2et.attacks.objectives import SCALES, get_objective, scale_scores
from r2et.attacks.pgd import check_explainer, check_skip, inner_explainer
from r2et.explain import Explainer, as_explainer, repeat_batch
from r2et.metrics import topk_mask
from r2et.models import eval_mode

#: Query fractions at which the Square Attack halves ``p`` (of 10,000 queries).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_schedule(p_init: float, t: int, steps: int) -> float:
    """``p`` at query ``t`` of ``steps``: ``p_init`` halved at each of the Square Attack's
    breakpoints ``(10, 50, 200, ...)/10000`` of the budget passed."""
    frac = t / max(1, steps) * 10000
    return p_init / 2 ** sum(frac > h for h in _HALVINGS)


class _QueryAttack(SingleAttack):
    """Shared constructor and bookkeeping of the gradient-free attacks."""

    name = "query"

    def __init__(
        self,
        ex: Explainer,
        k: int,
        eps: float,
        steps: int = 100,
        *,
        norm: str = "linf",
        keep_prediction: bool = True,
        bounds: tuple[Any, Any] | None = None,
        seed: int | None = None,
        restarts: int = 1,
        objective: str = "overlap",
        scale: str = "raw",
        tau: float = 0.1,
        early_stop: bool = True,
        clip_inputs: bool = False,
        inner: str | dict[str, Any] | None = None,
    ) -> None:
        ex = as_explainer(ex)
        check_explainer(ex)
        self.ex = ex
        self.inner, self.inner_explainer = inner_explainer(ex, inner)
        self.k = check_int("k", k, 1)
        check_positive("eps", eps)
        self.eps = float(eps)
        self.steps = check_int("steps", steps, 1)
        check_choice("norm", norm, NORMS)
        self.norm = norm
        check_choice("keep_prediction", keep_prediction, (True, False))
        self.keep_prediction = bool(keep_prediction)
        check_choice("early_stop", early_stop, (True, False))
        self.early_stop = bool(early_stop)
        check_choice("clip_inputs", clip_inputs, (True, False))
        self.clip_inputs = bool(clip_inputs)
        self.bounds = check_bounds_pair(bounds)
        self.seed = check_int("seed", seed, 0, allow_none=True)
        self.restarts = check_int("restarts", restarts, 1)
        get_objective(objective)
        self.objective = objective
        check_choice("scale", scale, SCALES)
        self.scale = scale
        check_positive("tau", tau)
        self.tau = float(tau)

    def config(self) -> dict[str, Any]:
        """JSON-ready description of the attack (the explainer and bounds excluded)."""
        return {
            "attack": self.name,
            "k": self.k,
            "eps": self.eps,
            "steps": self.steps,
            "norm": self.norm,
            "keep_prediction": self.keep_prediction,
            "seed": self.seed,
            "restarts": self.restarts,
            "objective": self.objective,
            "scale": self.scale,
            "tau": self.tau,
            "early_stop": self.early_stop,
            "box": self.bounds is not None,
            **({"inner": dict(self.inner)} if self.inner else {}),
        }

    @property
    def loop_explainer(self) -> Any:
        """The explainer of the queries: the ``inner`` copy, else ``ex`` itself."""
        return self.ex if self.inner_explainer is None else self.inner_explainer

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    def resolve_beta(self, model: Any) -> None:
        """Gradient-free attacks use no surrogate."""
        return None

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None = None,
        *,
        skip: torch.Tensor | None = None,
        **forward_kwargs: Any,
    ) -> AttackResult:
        """Attack the explanations of ``model`` at every row of ``x`` (``y``: the explained
        class, None for the prediction; tensor ``forward_kwargs`` with first dimension N are
        per-sample; ``skip``: rows left unattacked, as in
        :meth:`~r2et.attacks.ExplanationPGD.__call__`). The model runs in eval mode and its
        previous mode is restored. Inputs follow the model's device and floating dtype; the
        result comes back on ``x``'s device and in its dtype (as
        :meth:`~r2et.attacks.ExplanationPGD.__call__`)."""
        check_batch("x", x)
        x = clip_into(self.bounds, x.detach()) if self.clip_inputs else x.detach()
        caller = x
        with eval_mode(model), thread_budget(model, x, **forward_kwargs):
            x, y, forward_kwargs = model_inputs(model, x, y, forward_kwargs)
            box = as_bounds(self.bounds, x)
            with torch.no_grad():
                pred0 = model(x, **forward_kwargs).argmax(1)
            tgt = pred0 if y is None else self.ex.resolve_target(model, x, y, **forward_kwargs)
            s0 = self.ex.scores(model, x, tgt, **forward_kwargs).detach()
            k = check_k(self.k, s0.shape[1])
            n, r = x.shape[0], self.restarts
            obj = get_objective(self.objective)
            ctx = repeat_rows(obj.setup(scale_scores(s0, self.scale), k, {"tau": self.tau}), n, r)
            gen = None
            if self.seed is not None:
                gen = torch.Generator(device=x.device).manual_seed(self.seed)
            run = _Search(self, model, obj, ctx, x, tgt, pred0, s0, k, box, forward_kwargs, gen)
            if skip is not None:
                run.active &= ~check_skip(skip, n).to(x.device).repeat(r)
            run.run()
            if self.inner_explainer is not None:  # every restart's best point, exactly
                run.best_s, run.best_p = rescore_moved(
                    self.ex, model, run.best_x, run.x, run.s0, run.top0, run.tgt, run.kw, k
                )
            rows = pick_best(run.best_p, run.best_obj, r, n) if r > 1 else slice(None)
            best_x = run.best_x[rows]
            if self.keep_prediction:
                flipped = torch.zeros(n, dtype=torch.bool, device=x.device)
            else:
                with torch.no_grad():
                    flipped = model(best_x, **forward_kwargs).argmax(1) != pred0
            res = AttackResult(
                best_x, s0, run.best_s[rows], run.best_p[rows], flipped,
                run.steps_taken[rows], k=k,
            )  # fmt: skip
        return to_caller(res, caller, self.eps, self.norm, self.bounds)

    # subclasses: the first points and the proposals
    def _start(self, x: torch.Tensor, gen: torch.Generator | None, box: Any) -> torch.Tensor:
        raise NotImplementedError

    def _propose(
        self, x: torch.Tensor, cur: torch.Tensor, t: int, gen: torch.Generator | None, box: Any
    ) -> torch.Tensor:
        raise NotImplementedError

    greedy = True  # keep the better of the current point and the proposal


class _Search:
    """One batched query loop: measure the start, then propose, measure and keep or reject."""

    def __init__(
        self,
        atk: _QueryAttack,
        model: Callable[..., torch.Tensor],
        obj: Any,
        ctx: dict[str, Any],
        x: torch.Tensor,
        tgt: torch.Tensor,
        pred0: torch.Tensor,
        s0: torch.Tensor,
        k: int,
        box: Any,
        fkw: dict[str, Any],
        gen: torch.Generator | None,
    ) -> None:
        n, r = x.shape[0], atk.restarts
        self.atk, self.model, self.obj, self.ctx, self.k, self.box = atk, model, obj, ctx, k, box
        self.gen, self.n, self.r = gen, n, r
        self.x = repeat_batch(x, r)
        self.tgt = repeat_batch(tgt, r)
        self.pred0 = repeat_batch(pred0, r)
        self.s0 = repeat_batch(s0, r)
        self.kw = repeat_rows(fkw, n, r) if r > 1 else fkw
        self.top0 = topk_mask(self.s0, k)
        rows = self.x.shape[0]
        dev = x.device
        self.best_x = self.x.clone()
        self.best_s = self.s0.clone()
        self.best_p = torch.ones(rows, dtype=s0.dtype, device=dev)
        self.best_obj = obj.value(scale_scores(self.s0, atk.scale), ctx).detach()
        self.steps_taken = torch.zeros(rows, dtype=torch.long, device=dev)
        self.active = torch.ones(rows, dtype=torch.bool, device=dev)

    def _measure(
        self, z: torch.Tensor, rows: torch.Tensor, full: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n_rows = self.x.shape[0]
        kw = self.kw if full else take_rows(self.kw, rows, n_rows)
        ctx = self.ctx if full else take_rows(self.ctx, rows, n_rows)
        tgt = self.tgt if full else self.tgt[rows]
        s, logits = measure(self.atk.loop_explainer, self.model, z, tgt, kw)
        ok = logits.argmax(1) == (self.pred0 if full else self.pred0[rows])
        if not self.atk.keep_prediction:
            ok = torch.ones_like(ok)
        p = overlap_with(s, self.top0 if full else self.top0[rows], self.k)
        o = self.obj.value(scale_scores(s, self.atk.scale), ctx).detach()
        return s, ok, p, o

    def run(self) -> None:
        atk, n_rows = self.atk, self.x.shape[0]
        # the start: measured once; with keep_prediction a label-changing start becomes x
        start = atk._start(self.x, self.gen, self.box)
        self.cur = self.x.clone()
        self.cur_p = self.best_p.clone()
        self.cur_obj = self.best_obj.clone()
        for t in range(atk.steps):
            if atk.early_stop:
                done = (self.best_p.view(self.r, self.n) == 0).any(0)
                self.active &= ~done.repeat(self.r)
            # the proposal is drawn for every row (independent of which rows still run)
            prop = start if t == 0 else atk._propose(self.x, self.cur, t, self.gen, self.box)
            rows = self.active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            full = rows.numel() == n_rows
            z = prop if full else prop[rows]
            s, ok, p, o = self._measure(z, rows, full)
            keep_best(self, rows, z, s, p, o, ok)
            self.steps_taken[rows] = t
            if t == 0:  # the walk starts at the start wherever that keeps the prediction
                take = ok
            elif atk.greedy:  # move to the proposal when it is at least as good
                cp, co = self.cur_p[rows], self.cur_obj[rows]
                take = ok & ((p < cp) | ((p == cp) & (o <= co)))
            else:
                continue
            idx = rows[take]
            self.cur[idx] = z[take]
            self.cur_p[idx] = p[take]
            self.cur_obj[idx] = o[take]


class RandomSearchAttack(_QueryAttack):
    """Gradient-free random search on the original model (see the module docstring).

    Parameters: as :class:`~r2et.attacks.ExplanationPGD` where they apply, plus ``steps`` (the
    number of queries, each one saliency evaluation of the batch), ``p_init`` (the initial
    fraction of coordinates re-drawn per query, default 0.3) and ``objective`` (default
    ``"overlap"``, the smooth P@k, which breaks ties between proposals of equal P@k).
        ``clip_inputs=True`` clips inputs outside ``bounds`` into it before attacking.
    ``inner``: cheaper explainer options for the queries, as in
    :class:`~r2et.attacks.ExplanationPGD` (each restart's best point is scored exactly at
    the end, and the reported P@k are ``ex``'s).
    """

    name = "search"

    def __init__(self, ex: Explainer, k: int, eps: float, steps: int = 100, *,
                 p_init: float = 0.3, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(ex, k, eps, steps, **kwargs)
        check_positive("p_init", p_init)
        if p_init > 1:
            raise ValueError(f"p_init must lie in (0, 1], got {p_init!r}")
        self.p_init = float(p_init)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "p_init": self.p_init}

    def _start(self, x: torch.Tensor, gen: torch.Generator | None, box: Any) -> torch.Tensor:
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device)
            z = x + self.eps * torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
        else:
            z = sample_in_ball(x, self.eps, "l2", 1, gen)[0]
        return feasible(x, z, self.eps, self.norm, box)

    def _subset(self, x: torch.Tensor, t: int, gen: torch.Generator | None) -> torch.Tensor:
        """A boolean mask of the coordinates a proposal changes, per row."""
        p = square_schedule(self.p_init, t, self.steps)
        if x.dim() == 4:  # images: one square window over every channel
            n, _, h, w = x.shape
            side = max(1, min(h, w, int(round(math.sqrt(p * h * w)))))
            r0 = torch.randint(0, h - side + 1, (n,), generator=gen, device=x.device)
            c0 = torch.randint(0, w - side + 1, (n,), generator=gen, device=x.device)
            rr = torch.arange(h, device=x.device)
            cc = torch.arange(w, device=x.device)
            in_r = (rr[None] >= r0[:, None]) & (rr[None] < (r0 + side)[:, None])
            in_c = (cc[None] >= c0[:, None]) & (cc[None] < (c0 + side)[:, None])
            win = in_r[:, :, None] & in_c[:, None, :]
            return win[:, None].expand_as(x)
        u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device)
        mask = u < p
        # at least one coordinate per row: the row's smallest draw
        flat = u.flatten(1)
        first = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.argmin(1, True), True)
        return mask | first.view_as(mask)

    def _propose(
        self, x: torch.Tensor, cur: torch.Tensor, t: int, gen: torch.Generator | None, box: Any
    ) -> torch.Tensor:
        mask = self._subset(x, t, gen)
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device)
            vertex = x + self.eps * torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
            z = torch.where(mask, vertex, cur)
        else:
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device) * mask
            nrm = noise.flatten(1).norm(dim=1).clamp_min(1e-12)
            p = square_schedule(self.p_init, t, self.steps)
            z = cur + rowwise(self.eps * math.sqrt(p) / nrm, x) * noise
        return feasible(x, z, self.eps, self.norm, box)


class RandomNoiseAttack(_QueryAttack):
    """Random-noise baseline with the budget of an attack: ``steps`` independent points drawn
    uniformly from the ``eps``-ball around x (l_inf: ``x + U[−eps, eps]^d``; l_2: uniform in
    volume), clipped into ``bounds``; each sample keeps the draw with the lowest P@k (ties: the
    lower ERAttack objective), among the draws that keep its prediction when
    ``keep_prediction`` (draws that change it are skipped). No gradients; ``seed`` seeds the
    draws. A strong attack must beat this at the same ``eps`` and ``steps``. Accepts (and
    ignores) the gradient attacks' ``step_size``, ``random_start`` and ``surrogate_beta``.
    """

    name = "random"
    greedy = False

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
        surrogate_beta: Any = None,
        seed: int | None = None,
        n_bottom: Any = None,
        restarts: int = 1,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("objective", "er-next")
        super().__init__(
            ex, k, eps, steps, norm=norm, keep_prediction=keep_prediction, bounds=bounds,
            seed=seed, restarts=restarts, **kwargs,
        )  # fmt: skip
        self.random_start = random_start  # kept for the gradient attacks' interface

    def _start(self, x: torch.Tensor, gen: torch.Generator | None, box: Any) -> torch.Tensor:
        return feasible(x, sample_in_ball(x, self.eps, self.norm, 1, gen)[0], self.eps,
                        self.norm, box)  # fmt: skip

    def _propose(
        self, x: torch.Tensor, cur: torch.Tensor, t: int, gen: torch.Generator | None, box: Any
    ) -> torch.Tensor:
        return self._start(x, gen, box)
