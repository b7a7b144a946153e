"""The state and loop of one batched projected-gradient run (internal to
:class:`~r2et.attacks.ExplanationPGD`): ``R`` rows (restarts × inputs), each with its iterate,
its best label-preserving point, its step size and APGD's bookkeeping; rows that are finished
are dropped from the computation (see :mod:`r2et.attacks.pgd` for the method)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from r2et.attacks._common import (
    feasible,
    keep_best,
    measure,
    overlap_with,
    rowwise,
    take_rows,
)
from r2et.attacks.objectives import scale_scores
from r2et.metrics import topk_mask

if TYPE_CHECKING:
    from r2et.attacks.pgd import ExplanationPGD

#: On the CPU, attack steps on inputs of at least ``CPU_CHUNK_MIN_ENTRIES`` entries process
#: at most ``CPU_CHUNK_ELEMENTS`` input entries per forward/backward (83 MNIST images, 21
#: CIFAR images); GPUs, and small tabular inputs, take the whole batch.
CPU_CHUNK_ELEMENTS = 1 << 16
CPU_CHUNK_MIN_ENTRIES = 512
_APGD_RHO = 0.75
_APGD_ALPHA = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """APGD's checkpoint iterations ``w_j = ⌈p_j · steps⌉`` with ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` (Croce & Hein, 2020), below ``steps``."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    its = {math.ceil(round(q * steps, 9)) for q in p[1:]}  # round: 0.57·100 is 57.000…01
    return sorted(i for i in its if 0 < i < steps)


def _input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``∂(Σ loss)/∂x``, zero where the loss does not depend on ``x`` (a saliency whose
    gradient is masked), NaN replaced by 0."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else torch.nan_to_num(g.detach())


class Trajectories:
    """The per-row state of one batched attack run (``R`` rows: restarts × inputs) and its
    loop; rows that are finished are dropped from the computation."""

    def __init__(
        self,
        atk: ExplanationPGD,
        model: Callable[..., torch.Tensor],
        grad_model: Callable[..., torch.Tensor],
        surrogate: bool,
        obj: Any,
        x: torch.Tensor,
        start: torch.Tensor,
        tgt: torch.Tensor,
        pred0: torch.Tensor,
        s0: torch.Tensor,
        ctx: dict[str, Any],
        k: int,
        box: tuple[torch.Tensor, torch.Tensor] | None,
        kw: dict[str, Any],
        noise: torch.Tensor | None,
        n_inputs: int,
        reps: int,
    ) -> None:
        self.atk, self.model, self.grad_model, self.surrogate = atk, model, grad_model, surrogate
        self.obj, self.x, self.tgt, self.pred0, self.s0 = obj, x, tgt, pred0, s0
        self.ctx, self.k, self.box, self.kw, self.noise = ctx, k, box, kw, noise
        self.n_inputs, self.reps = n_inputs, reps
        rows, dev = x.shape[0], x.device
        self.top0 = topk_mask(s0, k)
        self.cur = start.clone()
        self.prev = start.clone()
        self.last_ok = x.clone()
        self.eta = torch.full((rows,), atk.step_size, dtype=x.dtype, device=dev)
        self.best_x = x.clone()
        self.best_s = s0.clone()
        self.best_p = torch.ones(rows, dtype=s0.dtype, device=dev)
        self.best_obj = obj.value(scale_scores(s0, atk.scale), ctx).detach()
        self.steps_taken = torch.zeros(rows, dtype=torch.long, device=dev)
        self.active = torch.ones(rows, dtype=torch.bool, device=dev)
        inf = torch.full((rows,), float("inf"), dtype=x.dtype, device=dev)
        self.f_best, self.f_prev, self.f_best_ck = inf.clone(), inf.clone(), inf.clone()
        self.x_fbest = x.clone()
        self.n_imp = torch.zeros(rows, dtype=torch.long, device=dev)
        self.eta_ck = self.eta.clone()
        self.grad_evals = 0

    def prune(self, keep_n: int) -> None:
        """Successive halving: for every input, only its ``keep_n`` best still-active rows stay
        active (lowest best P@k, then lowest best objective, then the first restart)."""
        reps, n = self.reps, self.n_inputs
        act = self.active.view(reps, n)
        inf = torch.full((reps, n), float("inf"), dtype=self.best_p.dtype, device=act.device)
        p = torch.where(act, self.best_p.view(reps, n), inf)
        o = torch.where(act, self.best_obj.view(reps, n).to(p.dtype), inf)
        order = torch.sort(o, dim=0, stable=True).indices  # lexicographic: (p, o, restart)
        order = order.gather(0, torch.sort(p.gather(0, order), dim=0, stable=True).indices)
        rank = torch.empty_like(order)
        ar = torch.arange(reps, device=act.device).unsqueeze(1).expand(reps, n)
        rank.scatter_(0, order, ar)
        self.active &= (rank < keep_n).reshape(-1)

    def run(self, prunes: dict[int, int] | None = None) -> None:
        """The loop: ``steps`` steps; at iteration ``t`` in ``prunes`` (successive halving)
        each input keeps ``prunes[t]`` rows (:meth:`prune`) before the step."""
        atk = self.atk
        prunes = prunes or {}
        checkpoints = set(apgd_checkpoints(atk.steps)) if atk.schedule == "apgd" else set()
        last_ck = 0
        n_rows = self.x.shape[0]
        for t in range(atk.steps + 1):
            if t in prunes:
                self.prune(prunes[t])
            rows = self.active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            full = rows.numel() == n_rows

            def pick(v: torch.Tensor, rows: torch.Tensor = rows, full: bool = full) -> torch.Tensor:
                return v if full else v[rows]

            kw = self.kw if full else take_rows(self.kw, rows, n_rows)
            ctx = self.ctx if full else take_rows(self.ctx, rows, n_rows)
            xc = pick(self.cur)
            need_grad = t < atk.steps
            self.grad_evals += rows.numel() if need_grad else 0
            s, logits, loss, g = self._evaluate(xc, pick(self.tgt), kw, ctx, need_grad)
            ok = logits.argmax(1) == pick(self.pred0)
            if not atk.keep_prediction:
                ok = torch.ones_like(ok)
            self._record(rows, xc, s, ok, ctx, t)
            if not need_grad:
                break
            if atk.early_stop:  # an input at P@k = 0 is done, in every restart
                done = (self.best_p.view(self.reps, self.n_inputs) == 0).any(0)
                self.active &= ~done.repeat(self.reps)
            if self.noise is not None:  # a stationary start takes a random first direction
                still = g.flatten(1).abs().amax(1) == 0
                g = torch.where(rowwise(still, g), pick(self.noise), g)
            restart = ~ok  # rejected iterates go back to the last label-preserving one
            if checkpoints:
                restart |= self._apgd_bookkeeping(rows, xc, loss.detach(), ok, t, checkpoints,
                                                  last_ck)  # fmt: skip
                if t in checkpoints:
                    last_ck = t
            self._step(rows, xc, g, ok, restart, t)

    def _evaluate(
        self,
        xc: torch.Tensor,
        tgt: torch.Tensor,
        kw: dict[str, Any],
        ctx: dict[str, Any],
        need_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Real scores and logits at ``xc`` and, with ``need_grad``, the objective (through
        the surrogate when there is one) and its input gradient, all detached. On the CPU,
        inputs of at least :data:`CPU_CHUNK_MIN_ENTRIES` entries (images) go through in chunks
        of at most :data:`CPU_CHUNK_ELEMENTS` input entries: a double backward over a large
        batch of images is slower per row than over several small ones (cache; measured 1.4x
        on MNIST with 6 restarts x 64 inputs), while small tabular rows run fastest unchunked.
        Rows are independent, so the result does not depend on the chunking."""
        atk, m = self.atk, xc.shape[0]
        per_row = max(1, xc[0].numel())
        size = m
        if xc.device.type == "cpu" and per_row >= CPU_CHUNK_MIN_ENTRIES:
            size = max(1, CPU_CHUNK_ELEMENTS // per_row)
        parts: list[tuple[torch.Tensor, ...]] = []
        for lo in range(0, m, size):
            idx = slice(lo, min(m, lo + size))
            whole = idx.start == 0 and idx.stop == m
            kw_c = kw if whole else take_rows(kw, torch.arange(idx.start, idx.stop), m)
            ctx_c = ctx if whole else take_rows(ctx, torch.arange(idx.start, idx.stop), m)
            xg = xc[idx].detach().requires_grad_(True) if need_grad else xc[idx]
            s_graph, logits = measure(
                atk.loop_explainer,
                self.model,
                xg,
                tgt[idx],
                kw_c,
                need_grad and not self.surrogate,
            )
            if not need_grad:
                parts.append((s_graph.detach(), logits))
                continue
            s_real = s_graph.detach()
            if self.surrogate:
                s_graph = atk.loop_explainer.scores(self.grad_model, xg, tgt[idx], True, **kw_c)
            loss = self.obj.value(scale_scores(s_graph, atk.scale), ctx_c)
            parts.append((s_real, logits, loss.detach(), _input_gradient(loss, xg)))
        cols = [torch.cat(c) for c in zip(*parts)]
        if not need_grad:
            return cols[0], cols[1], None, None
        return cols[0], cols[1], cols[2], cols[3]

    def _record(
        self,
        rows: torch.Tensor,
        xc: torch.Tensor,
        s: torch.Tensor,
        ok: torch.Tensor,
        ctx: dict[str, Any],
        t: int,
    ) -> None:
        """Keep each row's best label-preserving iterate: lowest P@k, then lowest objective."""
        p = overlap_with(s, self.top0[rows], self.k)
        o = self.obj.value(scale_scores(s, self.atk.scale), ctx).detach()
        keep_best(self, rows, xc, s, p, o, ok)
        self.steps_taken[rows] = t

    def _apgd_bookkeeping(
        self,
        rows: torch.Tensor,
        xc: torch.Tensor,
        loss: torch.Tensor,
        ok: torch.Tensor,
        t: int,
        checkpoints: set[int],
        last_ck: int,
    ) -> torch.Tensor:
        """Update APGD's best (surrogate) loss and, at a checkpoint, return the rows that halve
        their step size and restart from their best point."""
        lv = torch.where(ok, loss, torch.full_like(loss, float("inf")))
        self.n_imp[rows] += (lv < self.f_prev[rows]).long()
        self.f_prev[rows] = torch.where(ok, loss, self.f_prev[rows])
        improved = lv < self.f_best[rows]
        self.f_best[rows[improved]] = loss[improved]
        self.x_fbest[rows[improved]] = xc[improved]
        reduce = torch.zeros_like(ok)
        if t in checkpoints:
            interval = max(1, t - last_ck)
            cond1 = self.n_imp[rows].to(loss.dtype) < _APGD_RHO * interval
            same_eta = self.eta_ck[rows] == self.eta[rows]
            cond2 = same_eta & (self.f_best_ck[rows] == self.f_best[rows])
            reduce = cond1 | cond2
            self.eta[rows[reduce]] = self.eta[rows[reduce]] / 2
            self.eta_ck[rows] = self.eta[rows]
            self.f_best_ck[rows] = self.f_best[rows]
            self.n_imp[rows] = 0
        return reduce

    def _step(
        self,
        rows: torch.Tensor,
        xc: torch.Tensor,
        g: torch.Tensor,
        ok: torch.Tensor,
        restart: torch.Tensor,
        t: int,
    ) -> None:
        atk = self.atk
        x0 = self.x[rows]
        self.last_ok[rows[ok]] = xc[ok]
        bad = ~ok
        if bool(bad.any()):  # rejected: smaller steps from the last label-preserving iterate
            self.eta[rows[bad]] = self.eta[rows[bad]] / 2
        if atk.norm == "linf" and atk.direction == "sign":
            d = g.sign()
        else:
            flat = g.flatten(1)
            d = g / rowwise(flat.norm(dim=1).clamp_min(1e-12), g)
            if atk.norm == "linf":
                d = d * math.sqrt(flat.shape[1])
            elif atk.direction == "sign":
                d = g.sign() / math.sqrt(flat.shape[1])
        eta = rowwise(self.eta[rows], xc)
        z = feasible(x0, xc - eta * d, atk.eps, atk.norm, self.box)
        if atk.schedule == "apgd" and t > 0:
            prev = self.prev[rows]
            z = feasible(
                x0, xc + _APGD_ALPHA * (z - xc) + (1 - _APGD_ALPHA) * (xc - prev), atk.eps,
                atk.norm, self.box,
            )  # fmt: skip
        # rows that restart: from the best APGD point (checkpoint) or the last valid one
        back = torch.where(rowwise(bad, xc), self.last_ok[rows], self.x_fbest[rows])
        nxt = torch.where(rowwise(restart, xc), back, z)
        self.prev[rows] = torch.where(rowwise(restart, xc), back, xc)
        self.cur[rows] = nxt
