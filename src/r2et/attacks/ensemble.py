"""The ensemble attack: for every input, the lowest P@k over a portfolio of attacks.

A stability number is only as good as the strongest attack behind it, and which attack is
strongest depends on the model: a scale-free objective cannot move a model trained on
scale-free scores, one Softplus surrogate β masks gradients another does not, and a ReLU
network's saliency can hide from every gradient. :class:`EnsembleAttack` therefore runs a
portfolio of *members* — APGD (Croce & Hein, ICML 2020) on several objectives
(:mod:`r2et.attacks.objectives`), on raw and scale-free scores, through several surrogate βs,
and a gradient-free random search on the original model — and keeps, for every input, the
label-preserving point with the lowest P@k any member found. Members run in order; an input
whose P@k has reached 0 is not attacked again (early exit), and the result records which
member found each input's minimum.

Presets (members are registered rows, see :data:`PRESETS`; cost relative to the paper's
50-step ERAttack with a Softplus surrogate, measured by ``benchmarks/attack_speed.py``):

* ``"fast"`` — about one ERAttack-50: one APGD member and a short random search;
* ``"standard"`` — the default of :func:`~r2et.evaluate`, the CLI and ``r2et bench``, at most
  10× ERAttack-50;
* ``"thorough"`` — every objective × scale × surrogate β, with restarts, and a long random
  search: for checking that ``"standard"`` is not overstating stability.
* ``"adaptive"`` — ``"standard"``'s portfolio with successive halving of many short random
  starts (``Member(rounds=, keep=)``; issue 26, ``benchmarks/attack_budget.py``): closer to
  ``"thorough"`` than ``"standard"`` on some tabular models (by up to 0.04 P@k) at about 1.4x
  its cost, still 0.02-0.07 above ``"thorough"``; not the default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from r2et._checks import check_batch, check_choice, check_int, check_positive
from r2et._registry import Registry
from r2et._threads import thread_budget
from r2et.attacks._common import (
    check_bounds_pair,
    clip_into,
    model_inputs,
    to_caller,
)
from r2et.attacks.base import AttackResult
from r2et.attacks.objectives import SCALES, get_objective
from r2et.attacks.pgd import (
    SCHEDULES,
    ExplanationPGD,
    check_explainer,
    halving_cost,
    inner_explainer,
    resolve_surrogate,
)
from r2et.attacks.search import RandomSearchAttack
from r2et.explain import Explainer, as_explainer
from r2et.models import eval_mode

KINDS = ("pgd", "search")
#: Which inputs a member runs on: every input, images only (4-D batches ``(N, C, H, W)``), or
#: everything else (tabular rows, graphs' node features).
INPUTS = ("all", "images", "non-images")


def input_kind(x: torch.Tensor) -> str:
    """``"images"`` for a 4-D batch ``(N, C, H, W)``, else ``"non-images"``."""
    return "images" if x.dim() == 4 else "non-images"


@dataclass(frozen=True)
class Member:
    """One attack of an ensemble, as data.

    ``kind``: ``"pgd"`` (:class:`~r2et.attacks.ExplanationPGD`) or ``"search"``
    (:class:`~r2et.attacks.RandomSearchAttack`, gradient-free, on the original model);
    ``steps``: gradient steps or queries; ``objective`` and ``scale``: the loss; ``beta``: the
    Softplus surrogate β of a ReLU model (``"auto"``: 10; ignored by smooth models and by
    ``"search"``); ``schedule``, ``random_start``, ``restarts``, ``direction``: as in
    :class:`~r2et.attacks.ExplanationPGD`; ``p_init``: the search's initial fraction;
    ``bottom`` (``er-next`` only): compare the top-k with the next ``ceil(bottom · k)``
    features instead of the next k. Small sets (``bottom`` 1/8, 1/4, 1/2) act as *targeted*
    variants (like APGD-T in AutoAttack): each pushes a different few features into the top-k,
    which diversifies more than random restarts do. ``inputs``: ``"all"`` (default),
    ``"images"`` or ``"non-images"``: the member runs only on such inputs (see
    :func:`input_kind`); what works best differs (a long random search on images, many
    random restarts on tabular data; ``docs/attacks.md``). ``rounds``, ``keep`` (``"pgd"``
    only): successive halving of the restarts, as in :class:`~r2et.attacks.ExplanationPGD`
    (``rounds=1``: none): many short random starts, of which each input continues only the
    best ``keep`` fraction after each of ``rounds`` equal parts of the steps.
    """

    kind: str
    steps: int
    objective: str = "er-next"
    scale: str = "raw"
    beta: float | str | None = "auto"
    schedule: str = "apgd"
    random_start: bool = False
    restarts: int = 1
    direction: str = "sign"
    p_init: float = 0.3
    bottom: float | None = None
    inputs: str = "all"
    rounds: int = 1
    keep: float = 0.25

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_int("steps", self.steps, 1)
        get_objective(self.objective)
        check_choice("scale", self.scale, SCALES)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("restarts", self.restarts, 1)
        check_choice("inputs", self.inputs, INPUTS)
        check_int("rounds", self.rounds, 1)
        if self.rounds > 1 and (self.kind != "pgd" or self.rounds > self.steps):
            raise ValueError("rounds > 1 needs kind 'pgd' and rounds <= steps")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep!r}")
        if self.bottom is not None:
            check_positive("bottom", self.bottom)
            if self.objective != "er-next":
                raise ValueError("bottom applies to the 'er-next' objective only")

    def n_bottom(self, k: int) -> int | None:
        """``er-next``'s comparison set for top-k size ``k``: the next ``ceil(bottom · k)``
        features (None: k, the paper's choice)."""
        return None if self.bottom is None else max(1, math.ceil(self.bottom * k))

    @property
    def cost(self) -> int:
        """Gradient steps (over restarts) or queries per input, without early exit
        (:func:`~r2et.attacks.pgd.halving_cost`)."""
        if self.kind == "search":
            return self.steps * self.restarts
        return halving_cost(self.steps, self.restarts, self.rounds, self.keep)

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``apgd-er-next-raw-b10`` or ``search-overlap-q80``."""
        if self.kind == "search":
            scale = "" if self.scale == "raw" else f"-{self.scale}"
            return f"search-{self.objective}{scale}-q{self.steps}"
        beta = "" if self.beta in (None, "auto") else f"-b{self.beta:g}"
        rs = f"-r{self.restarts}" if self.restarts > 1 else ""
        rs += "-rand" if self.random_start else ""
        rs += f"-h{self.rounds}k{self.keep:g}" if self.rounds > 1 else ""
        d = "-l2dir" if self.direction == "normalized" else ""
        nb = "" if self.bottom is None else f"{self.bottom:g}k"
        return f"{self.schedule}-{self.objective}{nb}-{self.scale}{beta}{d}{rs}"


def _fields(m: Member) -> dict[str, Any]:
    """``m``'s fields, the halving ones only when it halves (configs of members without
    halving stay as they were before the option existed)."""
    d = asdict(m)
    if m.rounds == 1:
        del d["rounds"], d["keep"]
    return d


def _pgd(steps: int, objective: str, scale: str = "raw", beta: Any = "auto", **kw: Any) -> Member:
    return Member("pgd", steps, objective, scale, beta, **kw)


def _thorough() -> tuple[Member, ...]:
    members = [_pgd(100, "er-next", "raw", 10.0, schedule="fixed")]  # the paper's attack
    for beta in (3.0, 10.0, 30.0, 100.0):
        for objective in ("er-all", "er-next", "overlap", "mse", "minmax"):
            for scale in ("raw", "mean"):
                members.append(_pgd(60, objective, scale, beta, random_start=True, restarts=3))
    for beta in (3.0, 10.0, 30.0):  # targeted variants: push the next few features up
        for bottom in (0.125, 0.25, 0.5):
            members.append(_pgd(60, "er-next", "raw", beta, random_start=True, restarts=3,
                                bottom=bottom))  # fmt: skip
    members.append(_pgd(100, "er-next", "raw", 10.0, schedule="fixed", direction="normalized"))
    members.append(Member("search", 1000, "overlap"))
    members.append(Member("search", 1000, "er-all", p_init=0.05))
    members.append(Member("search", 4000, "overlap", p_init=0.9, inputs="images"))
    return tuple(members)


def _adaptive() -> tuple[Member, ...]:
    """``standard``'s portfolio on non-image inputs with successive halving: 64 random starts
    instead of 10 for 930 gradient steps per input instead of 400, and the smooth P@k through
    β = 3 (which wins many Adult inputs in ``thorough``); images as ``standard``."""
    halve = {"random_start": True, "inputs": "non-images"}
    return (
        _pgd(30, "er-all", "raw", 10.0, restarts=32, rounds=3, **halve),
        _pgd(30, "er-all", "raw", 30.0, restarts=16, rounds=3, **halve),
        _pgd(30, "er-next", "mean", 10.0, restarts=8, rounds=2, **halve),
        _pgd(30, "overlap", "raw", 3.0, restarts=8, rounds=2, **halve),
        Member("search", 80, "overlap", inputs="non-images"),
        *(m for m in PRESETS["standard"] if m.inputs == "images"),
    )


#: The registered presets: name -> members, in the order they run. Chosen from per-input
#: results on Adult, Bank, COMPAS and breast-cancer MLPs and an MNIST CNN, vanilla and R2ET,
#: with and without the data box (``benchmarks/attack_study.py``, ``docs/attacks.md``): a
#: run's outcome depends strongly on its random start, so short APGD runs (40 steps) from
#: many random starts (batched together, so a restart costs less than a run) find more than
#: one long run; APGD on the ``er-all`` objective through a Softplus(10) surrogate finds the
#: most per unit of cost; β = 30, scale-free scores and the smooth P@k each win inputs the
#: first cannot, and the random search covers gradient masking. On images the opposite holds:
#: a random search on the real ReLU CNN beats every gradient member (on MNIST, 1,000 queries
#: reach P@k 0.39 where 400 APGD steps reach 0.43; large squares, ``p_init`` 0.9, reach 0.34
#: in 1,400), and a query costs a quarter of an APGD step. ``standard`` therefore runs 400
#: APGD steps and 80 queries on non-image inputs, and 80 APGD steps and 1,400 queries on
#: images: each fits in 10x ERAttack-50.
PRESETS: Registry[tuple[Member, ...]] = Registry("preset")
PRESETS.register(
    "fast",
    (
        _pgd(40, "er-all", "raw", 10.0),
        Member("search", 20, "overlap"),
    ),
)
PRESETS.register(
    "standard",
    (
        _pgd(40, "er-all", "raw", 10.0, random_start=True, restarts=6, inputs="non-images"),
        _pgd(40, "er-all", "raw", 30.0, random_start=True, restarts=2, inputs="non-images"),
        _pgd(40, "er-next", "mean", 10.0, random_start=True, inputs="non-images"),
        _pgd(40, "overlap", "raw", 30.0, random_start=True, inputs="non-images"),
        Member("search", 80, "overlap", inputs="non-images"),
        _pgd(40, "er-all", "raw", 10.0, random_start=True, inputs="images"),
        _pgd(40, "er-next", "mean", 10.0, random_start=True, inputs="images"),
        Member("search", 1400, "overlap", p_init=0.9, inputs="images"),
    ),
)
PRESETS.register("thorough", _thorough())
PRESETS.register("adaptive", _adaptive())


def list_presets() -> list[str]:
    """Names of the ensemble presets."""
    return PRESETS.names()


class EnsembleAttack:
    """For each input, the lowest P@k (prediction kept) over a portfolio of attacks.

    ``EnsembleAttack(explainer, k, eps, norm="linf", bounds=None, preset="standard", seed=0)``
    is called like every r2et attack, ``atk(model, x, y=None, **forward_kwargs)``, and returns
    an :class:`~r2et.attacks.AttackResult` whose ``member`` / ``member_names`` say which member
    found each input's minimum (:meth:`~r2et.attacks.AttackResult.found_by` counts them).

    Parameters
    ----------
    explainer : the explainer whose top-k is attacked (or its name, e.g. ``"grad"``).
        k : top-k size. eps : the budget.
    norm : ``"linf"`` or ``"l2"``. bounds : the valid input box (None: no box; say which in
        any report — a box can only raise P@k). ``clip_inputs=True`` clips inputs outside
        the box into it before attacking, instead of refusing them.
    preset : ``"fast"``, ``"standard"``, ``"thorough"`` or ``"adaptive"`` (see the module
        docstring), ignored when ``members`` is given.
    members : a sequence of :class:`Member` (or dicts of its fields) to run instead.
    seed : member ``i`` is seeded with ``seed + i``.
    keep_prediction : only label-preserving points count (default).
    early_stop : inputs at P@k = 0 are not attacked further (default).
    inner : the explanation inside the gradient members' steps (``ExplanationPGD``'s ``inner``):
        None (the explainer itself), a dict of its method's options, or ``"auto"``:
        :data:`~r2et.attacks.pgd.INNER_AUTO`'s cheaper setting for the method (``ig``: a quarter of
        the path points, at least 4; ``smoothgrad``: a fifth of the samples, at least 5; other
        methods: the explainer itself), in the search members' queries too. Every member's returned
        point is scored with the explainer itself, so reported P@k are exact.

    Members whose surrogate β does not apply (a smooth model, or an explainer of the
    probability or loss) run once: duplicates after resolving β are dropped. ``last_seconds``
    holds each member's CPU seconds of the last call. ``on_member``, when set to a function
    ``fn(name, seconds)``, is called after each member of a call (skipped ones too, with 0
    seconds): :func:`r2et.evaluate` uses it for a progress bar with an ETA per member.
    """

    name = "ensemble"

    # the r2et.attacks.Attack protocol (r2et.attacks.base): set in __init__ (steps: below)
    k: int
    eps: float
    norm: str
    bounds: tuple[Any, Any] | None
    preset: str | None

    @property
    def explainer(self) -> Explainer:
        """The explainer whose top-k is attacked (``ex``)."""
        return self.ex

    def __init__(
        self,
        explainer: Explainer,
        k: int,
        eps: float,
        *,
        norm: str = "linf",
        bounds: tuple[Any, Any] | None = None,
        preset: str = "standard",
        seed: int = 0,
        members: Sequence[Member | dict[str, Any]] | None = None,
        keep_prediction: bool = True,
        early_stop: bool = True,
        clip_inputs: bool = False,
        inner: str | dict[str, Any] | None = None,
    ) -> None:
        explainer = as_explainer(explainer)
        check_explainer(explainer)
        self.ex = explainer
        self.inner, _ = inner_explainer(explainer, inner)  # "auto" resolved, checked once
        self.k = check_int("k", k, 1)
        check_positive("eps", eps)
        self.eps = float(eps)
        check_choice("norm", norm, ("linf", "l2"))
        self.norm = norm
        check_choice("clip_inputs", clip_inputs, (True, False))
        self.clip_inputs = bool(clip_inputs)
        self.bounds = check_bounds_pair(bounds)
        self.seed = check_int("seed", seed, 0)
        check_choice("keep_prediction", keep_prediction, (True, False))
        check_choice("early_stop", early_stop, (True, False))
        self.keep_prediction = bool(keep_prediction)
        self.early_stop = bool(early_stop)
        if members is None:
            check_choice("preset", preset, list_presets())
            self.preset: str | None = preset
            chosen = PRESETS[preset]
        else:
            self.preset = None
            chosen = tuple(m if isinstance(m, Member) else Member(**m) for m in members)
            if not chosen:
                raise ValueError("members must name at least one Member")
        self.members: tuple[Member, ...] = tuple(chosen)
        if any(m.kind == "pgd" for m in self.members):
            check_explainer(explainer, gradient="EnsembleAttack's gradient members (kind 'pgd')")
        self.last_seconds: dict[str, float] = {}
        self._last_kind: str | None = None
        self.on_member: Callable[[str, float], None] | None = None

    @property
    def steps(self) -> int:
        """Gradient steps (times restarts) plus queries of the members that ran on the kind of
        input of the last call (before any call: of every member)."""
        members = self.members
        if self._last_kind is not None:
            members = tuple(m for m in members if m.inputs in ("all", self._last_kind))
        return sum(m.cost for m in members)

    def __repr__(self) -> str:
        return (
            f"EnsembleAttack(k={self.k}, eps={self.eps}, norm={self.norm!r}, "
            f"preset={self.preset!r}, members={len(self.members)}, seed={self.seed}, "
            f"box={self.bounds is not None})"
        )

    def config(self) -> dict[str, Any]:
        """JSON-ready description (the explainer and bounds excluded)."""
        return {
            "attack": self.name,
            "k": self.k,
            "eps": self.eps,
            "norm": self.norm,
            "preset": self.preset,
            "seed": self.seed,
            "keep_prediction": self.keep_prediction,
            "early_stop": self.early_stop,
            "box": self.bounds is not None,
            "members": [{"name": m.name, **_fields(m)} for m in self.members],
            **({"inner": dict(self.inner)} if self.inner else {}),
        }

    def attacks(self, model: Any = None, x: torch.Tensor | None = None) -> list[tuple[str, Any]]:
        """``(name, attack)`` for every member, as it runs on ``model`` and inputs like ``x``
        (members for other kinds of input left out; surrogate βs that do not apply to
        ``model`` resolved away and the resulting duplicates dropped)."""
        out: list[tuple[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        kind = None if x is None else input_kind(x)
        for i, m in enumerate(self.members):
            if kind is not None and m.inputs not in ("all", kind):
                continue
            if model is not None and m.kind == "pgd":
                beta = resolve_surrogate(m.beta, model, self.ex)
                m = replace(m, beta=beta)
            if m.kind == "search":
                m = replace(m, beta=None)
            key = tuple(asdict(m).values())
            if key in seen:
                continue
            seen.add(key)
            out.append((m.name, self._build(m, self.seed + i)))
        return out

    def _build(self, m: Member, seed: int) -> Any:
        common = {
            "norm": self.norm,
            "keep_prediction": self.keep_prediction,
            "bounds": self.bounds,
            "seed": seed,
            "restarts": m.restarts,
            "objective": m.objective,
            "scale": m.scale,
            "early_stop": self.early_stop,
        }
        if m.kind == "search":
            return RandomSearchAttack(self.ex, self.k, self.eps, m.steps, p_init=m.p_init,
                                      inner=self.inner, **common)  # fmt: skip
        return ExplanationPGD(
            self.ex, self.k, self.eps, m.steps, random_start=m.random_start,
            surrogate_beta=m.beta, schedule=m.schedule, direction=m.direction,
            n_bottom=m.n_bottom(self.k), rounds=m.rounds, keep=m.keep, inner=self.inner,
            **common,
        )  # fmt: skip

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None = None,
        **forward_kwargs: Any,
    ) -> AttackResult:
        """Run every member on the inputs not yet at P@k 0 and keep each input's best point
        (lowest P@k; the first member that reached it is recorded). Inputs follow the
        model's device and floating dtype; the result comes back on ``x``'s device and in its
        dtype (as :meth:`~r2et.attacks.ExplanationPGD.__call__`)."""
        check_batch("x", x)
        x = clip_into(self.bounds, x.detach()) if self.clip_inputs else x.detach()
        caller = x
        with eval_mode(model), thread_budget(model, x, **forward_kwargs):
            x, y, forward_kwargs = model_inputs(model, x, y, forward_kwargs)
            res = self._run(model, x, y, forward_kwargs)
        return to_caller(res, caller, self.eps, self.norm, self.bounds)

    def _done(self, name: str, seconds: float) -> None:
        """Record a member's CPU seconds and tell :attr:`on_member`."""
        self.last_seconds[name] = seconds
        if self.on_member is not None:
            self.on_member(name, seconds)

    def _run(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None,
        fkw: dict[str, Any],
    ) -> AttackResult:
        n = x.shape[0]
        best: AttackResult | None = None
        member = torch.zeros(n, dtype=torch.long, device=x.device)
        names: list[str] = []
        self.last_seconds = {}
        members = self.attacks(model, x)
        self._last_kind = input_kind(x)
        if not members:
            raise ValueError(
                f"no member of this ensemble runs on {input_kind(x)} "
                f"(input shape {tuple(x.shape)}); check the members' `inputs`"
            )
        for j, (name, atk) in enumerate(members):
            names.append(name)
            skip = None
            if best is not None and self.early_stop:
                skip = best.p_at_k == 0
                if bool(skip.all()):
                    self._done(name, 0.0)
                    continue
            t0 = time.process_time()
            res = atk(model, x, y, skip=skip, **fkw)
            self._done(name, time.process_time() - t0)
            if best is None:
                best = res
                continue
            better = res.p_at_k < best.p_at_k
            if bool(better.any()):
                rows = better.view(-1, *([1] * (x.dim() - 1)))
                best = AttackResult(
                    torch.where(rows, res.x_adv, best.x_adv),
                    best.scores_clean,
                    torch.where(better[:, None], res.scores_adv, best.scores_adv),
                    torch.where(better, res.p_at_k, best.p_at_k),
                    torch.where(better, res.flipped, best.flipped),
                    torch.where(better, res.steps_taken, best.steps_taken),
                    k=best.k,
                )
                member = torch.where(better, torch.full_like(member, j), member)
        assert best is not None
        best.member = torch.where(best.p_at_k < 1, member, torch.full_like(member, -1))
        best.member_names = tuple(names)
        return best
