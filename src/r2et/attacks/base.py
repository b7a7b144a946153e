"""The attack contract: what every registered attack is, provides and must pass.

**The protocol.** An attack is an object built for one explainer, one top-k size and one
budget, satisfying :class:`Attack`:

* ``explainer`` — the explainer whose top-k it attacks (an :class:`~r2et.Explainer` or any
  object with ``scores`` and ``resolve_target``, e.g. a Captum adapter);
* ``k`` — the top-k size (P@k is reported with it); ``eps`` — the budget, the radius of the
  ball in ``norm`` (``"linf"`` or ``"l2"``) around each input;
* ``steps`` — its cost in gradient steps or queries (an ensemble: their sum);
* ``bounds`` — the valid input box ``(low, high)`` it projects into, or None;
* ``preset`` — the named preset it runs (ensembles), or None;
* ``atk(model, x, y=None, **forward_kwargs) -> AttackResult`` — attack every row of ``x``
  (``y``: the explained class, None for the prediction; tensor ``forward_kwargs`` whose first
  dimension is N are per-sample), with the model in eval mode (its mode restored), the
  result on ``x``'s device and in its dtype.

These are exactly what :func:`r2et.evaluate` and the benchmark runner read; an object that
lacks one is refused with one line (:func:`check_attack`).

**A registration** (:func:`register_attack`, ``create_attack(name, explainer, k, eps,
**options)``) provides a *class* whose constructor takes ``(explainer, k, eps, **options)``
(options it does not take are not passed to it) and defines ``__call__`` (else
:func:`register_attack` refuses it); every instance :func:`create_attack` builds must have the
protocol's data members (set in ``__init__`` or declared on the class), else ``ValueError``,
one line. Built-in registrations, in this order: ``ensemble``, ``erattack``, ``mse``,
``search``.

**The one test every registered attack must pass.** Built by ``create_attack(name, ex, k,
eps, bounds=(low, high), seed=0)`` for a float64 model and inputs ``x`` inside the box, the
result ``res = atk(model, x)`` has, for every row ``i``:

* ``‖res.x_adv[i] − x[i]‖ <= eps`` in ``atk.norm``, computed in ``x``'s dtype (no tolerance);
* ``low <= res.x_adv[i] <= high``;
* the predicted class at ``res.x_adv[i]`` equal to the one at ``x[i]`` (``flipped`` False);
* ``res.p_at_k[i]`` equal to an independent recomputation from the returned point:
  ``precision_at_k(s(x), s(res.x_adv), atk.k)`` with ``s = atk.explainer.scores(model, ·,
  target)`` and ``target`` the class predicted at ``x``.

This module also holds :class:`AttackResult` (what every attack returns),
:func:`summarize_metrics`, the :data:`ATTACKS` registry and :class:`LogitRecorder` (the logit
cache the attacks and :mod:`r2et.interop` share).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import torch

from r2et._checks import check_k
from r2et._registry import Registry
from r2et.metrics import cosine_distance, precision_at_k, topk_kendall, topk_spearman


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
    steps_taken : ``(N,)`` long, the number of steps (gradient steps or queries) a sample made
        before it stopped: ``steps`` unless it reached P@k = 0 first (early exit).
    k : the k the attack used for P@k (None when unknown).
    member : ``(N,)`` long or None; for an :class:`~r2et.attacks.EnsembleAttack`, the index
        (into ``member_names``) of the member that first found each input's lowest P@k, −1
        where no member moved the top-k at all (P@k 1).
    member_names : the ensemble's member names (None for a single attack).
    """

    x_adv: torch.Tensor
    scores_clean: torch.Tensor
    scores_adv: torch.Tensor
    p_at_k: torch.Tensor
    flipped: torch.Tensor
    steps_taken: torch.Tensor
    k: int | None = None
    member: torch.Tensor | None = None
    member_names: tuple[str, ...] | None = None

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

    def found_by(self) -> dict[str, int]:
        """For an ensemble's result: how many inputs each member gave the lowest P@k (the
        first member in the ensemble's order on ties), and under ``"none"`` the inputs no
        member moved (P@k 1); ``{}`` for a single attack."""
        if self.member is None or self.member_names is None:
            return {}
        counts = torch.bincount(self.member.cpu() + 1, minlength=len(self.member_names) + 1)
        out = {name: int(c) for name, c in zip(self.member_names, counts[1:].tolist())}
        return {**out, "none": int(counts[0])}

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
        names = {r.member_names for r in results}
        if len(names) != 1:
            raise ValueError("results come from ensembles with different members")
        tensors: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("k", "member_names"):
                continue
            parts = [getattr(r, f.name) for r in results]
            tensors[f.name] = None if any(p is None for p in parts) else torch.cat(parts)
        return cls(**tensors, k=results[0].k, member_names=results[0].member_names)


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


# ---------------------------------------------------------------------------------- protocol
@runtime_checkable
class Attack(Protocol):
    """What every attack provides (see the module docstring): the members :func:`r2et.evaluate`
    and the benchmark runner read, and the call."""

    explainer: Any
    k: int
    eps: float
    norm: str
    steps: int
    bounds: tuple[Any, Any] | None
    preset: str | None

    def __call__(
        self,
        model: Callable[..., torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | int | None = None,
        **forward_kwargs: Any,
    ) -> AttackResult: ...


#: The data members of :class:`Attack`, in the order the protocol states them.
ATTACK_MEMBERS: tuple[str, ...] = tuple(Attack.__annotations__)


def missing_members(obj: Any) -> list[str]:
    """The members of :class:`Attack` that the object ``obj`` lacks (``__call__`` included)."""
    missing = [m for m in ATTACK_MEMBERS if not hasattr(obj, m)]
    return missing if callable(obj) else [*missing, "__call__"]


class SingleAttack:
    """The :class:`Attack` members every built-in single attack shares (the ensemble sets its
    own): ``k``, ``eps``, ``norm``, ``steps`` and ``bounds`` set in ``__init__``, the attacked
    explainer stored as ``ex`` and read as ``explainer``, and no preset."""

    ex: Any
    k: int
    eps: float
    norm: str
    steps: int
    bounds: tuple[Any, Any] | None
    preset: str | None = None  # not an ensemble preset

    @property
    def explainer(self) -> Any:
        """The explainer whose top-k is attacked (``ex``)."""
        return self.ex


def check_attack(obj: Any, what: str = "attack") -> Attack:
    """``obj`` unchanged when it satisfies :class:`Attack`; else one-line ``ValueError``
    naming what it lacks (``what``: how the message names it)."""
    missing = missing_members(obj)
    if missing or not isinstance(obj, Attack):
        raise ValueError(
            f"{what} must be an r2et attack (r2et.attacks.Attack: {', '.join(ATTACK_MEMBERS)} "
            f"and __call__), got {type(obj).__name__} lacking {missing}"
        )
    return obj


#: Registered attack classes by name (built-ins registered in :mod:`r2et.attacks`).
ATTACKS: Registry[type] = Registry("attack")


def register_attack(name: str, cls: type) -> type:
    """Register an attack class ``cls(explainer, k, eps, **options)`` under ``name``. The class
    must define ``__call__``; its instances must satisfy :class:`Attack`, which
    :func:`create_attack` checks on every instance it builds (``ValueError`` naming the
    missing members)."""
    if not isinstance(cls, type):
        raise ValueError(f"register_attack needs an attack class, got {cls!r}")
    if not any("__call__" in vars(c) for c in cls.__mro__[:-1]):
        raise ValueError(
            f"register_attack: {cls.__name__} defines no __call__(model, x, y=None, **kwargs)"
        )
    ATTACKS.register(name, cls)
    return cls


def list_attacks() -> list[str]:
    """Names accepted by :func:`create_attack` (and ``r2et evaluate --attack``)."""
    return ATTACKS.names()


def constructor_options(cls: type) -> set[str]:
    """The keyword options ``cls(explainer, k, eps, **options)`` takes: its ``__init__``'s
    named parameters and, while an ``__init__`` passes ``**kwargs`` on, those of the base
    classes' (``RandomSearchAttack`` takes ``norm``, ``bounds`` and ``seed`` that way)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def create_attack(name: str, explainer: Any, k: int, eps: float, **options: Any) -> Any:
    """Attack ``name`` on ``explainer``'s top-``k`` within ``eps``. ``options`` (``norm``,
    ``bounds``, ``seed``, ``steps``, ``preset``...) go to the attacks whose constructor takes
    them; None values are left out (the attack's default); an option no registered attack
    takes raises ``ValueError``."""
    cls = ATTACKS.get(name)
    params = constructor_options(cls)
    known = {p for n in ATTACKS for p in constructor_options(ATTACKS.get(n))}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown attack option(s) {unknown}; allowed: {sorted(known)}")
    kwargs = {key: v for key, v in options.items() if key in params and v is not None}
    return check_attack(cls(explainer, k, eps, **kwargs), f"attack {name!r}")


# ---------------------------------------------------------------------------------- helpers
class LogitRecorder:
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
