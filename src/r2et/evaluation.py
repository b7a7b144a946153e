"""Evaluate a model's explanations: accuracy, ranking stability under attacks, thickness,
faithfulness and locality.

:func:`evaluate` is what benchmarks and the CLI call after training; it returns a plain,
JSON-ready dict (see its docstring for the exact keys).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from r2et._checks import (
    check_choice,
    check_finite_model,
    check_finite_output,
    check_int,
    check_k,
    check_label_range,
    check_model_input,
    check_positive,
    not_logits,
)
from r2et._kwargs import take_rows
from r2et._threads import thread_budget
from r2et.attacks.base import Attack, AttackResult, check_attack, summarize_metrics
from r2et.data.custom import as_dataset
from r2et.explain import Explainer, as_explainer
from r2et.metrics import deletion, ground_truth_precision, locality, occlusion_agreement, thickness
from r2et.models import eval_mode
from r2et.verdict import explanation_verdict, mean_ci

__all__ = ["evaluate"]


def _device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _slice_kwargs(kw: dict[str, Any], lo: int, hi: int, n: int, dev: torch.device) -> dict:
    """Rows ``lo:hi`` of the per-sample keywords, every tensor moved to ``dev``."""
    part = take_rows(kw, slice(lo, hi), n)
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in part.items()}


def _chunks(
    x: torch.Tensor, y: torch.Tensor, kw: dict[str, Any], batch_size: int, dev: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    n = x.shape[0]
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        yield x[lo:hi].to(dev), y[lo:hi].to(dev), _slice_kwargs(kw, lo, hi, n, dev)


def _mean_std(v: torch.Tensor) -> tuple[float, float]:
    v = v.detach().double()
    return float(v.mean()), float(v.std(correction=0))


BASELINES = ("auto", "train-mean", "zero")


def _baseline(ds: Any, baseline: Any, dev: torch.device) -> torch.Tensor:
    """The replacement value of deleted or occluded units, on ``dev``; ``"auto"``: the
    dataset's ``deletion_baseline`` when it has one, else the mean training input."""
    if isinstance(baseline, str):
        check_choice("baseline", baseline, BASELINES)
        if baseline == "auto":
            own = getattr(ds, "deletion_baseline", None)
            if own is None:
                return ds.train_mean.to(dev)
            return torch.as_tensor(own, dtype=ds.train_mean.dtype, device=dev)
        if baseline == "zero":
            return torch.zeros((), device=dev)
        return ds.train_mean.to(dev)
    return torch.as_tensor(baseline, device=dev)


def _occlusion_patch(x: torch.Tensor, patch: int | str | None) -> int | None:
    """``"auto"``: 4×4 squares for images of more than 256 pixels, single units otherwise."""
    if patch == "auto":
        return 4 if x.dim() == 4 and x.shape[2] * x.shape[3] > 256 else None
    if patch is None:
        return None
    return check_int("occlusion_patch", patch, 1)


def _valid_units(ex: Explainer, xb: torch.Tensor, kwb: dict[str, Any]) -> torch.Tensor | None:
    """Graphs: the real (unpadded) nodes of each row, from the ``mask`` keyword, or the real
    edges of an edge view ``(N, E)``, from the ``edge_mask`` keyword."""
    mask = kwb.get("mask")
    if xb.dim() == 3 and ex.groups is None and isinstance(mask, torch.Tensor):
        if mask.shape == xb.shape[:2]:
            return mask.bool()
    edge_mask = kwb.get("edge_mask")
    if xb.dim() == 2 and ex.groups is None and isinstance(edge_mask, torch.Tensor):
        if edge_mask.shape == xb.shape:
            return edge_mask.bool()
    return None


def evaluate(
    model: nn.Module,
    ds: Any,
    ex: Explainer,
    *,
    k: int | None = None,
    attacks: Mapping[str, Any] | None = None,
    split: str = "test",
    n: int | None = None,
    thickness_radius: float | None = None,
    thickness_samples: int = 8,
    thickness_steps: int = 8,
    faithfulness: bool = True,
    baseline: Any = "auto",
    n_random: int = 8,
    occlusion_patch: int | str | None = "auto",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    certify: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Accuracy, explanation stability under attacks, thickness, faithfulness and locality
    of ``model``'s explanations on the first ``n`` rows (None: all) of ``ds``'s ``split``.
    ``ds`` is an r2et :class:`~r2et.data.Dataset`, or the data to evaluate as an ``(x, y)``
    pair, a ``TensorDataset`` or a ``DataLoader`` (then every split is that data, and the
    default deletion baseline is its mean; :func:`r2et.data.as_dataset`).

    * ``accuracy``: on the **whole** split (``accuracy_evaluated``: on the first ``n`` rows);
      ``majority_rate``: the share of the split's most common label, the accuracy of always
      predicting it (the yardstick accuracy should beat).
    * ``random_p_at_k``: ``k / F`` (F: the units ranked), the expected P@k of two independent
      random top-k sets: the P@k an explanation with no stable ranking at all scores (the
      clean explanation scores 1).
    * For every attack (a mapping name → attack, an object satisfying
      :class:`~r2et.attacks.Attack` such as :class:`~r2et.EnsembleAttack`; anything else is
      refused with one ``ValueError``) each input's clean scores ``s(x)`` are compared with the
      attacked scores ``s(x_adv)``: P@k = ``|topk(s(x)) ∩ topk(s(x_adv))|/k`` (mean and
      population std), the top-k Kendall τ_b and Spearman ρ (means ignoring NaN rows), the
      cosine distance, the rate of changed predictions, whether the attack projected onto the
      data box (``box``), the attack's wall-clock seconds and, for an ensemble, how many inputs
      each member won (``found_by``).
    * ``thickness`` (with ``thickness_radius``): the explanation thickness of Chen et al.
      ("Training for Stable Explanation for Free", NeurIPS 2024)
      ``Θ(x) = E_{x'}[∫₀¹ mean_{i∈T} s_i(x_t) − mean_{j∉T} s_j(x_t) dt]``, ``x_t = (1−t)x +
      t x'``, for ``x'`` uniform in the l_inf ball of that radius (``thickness_samples`` draws,
      ``thickness_steps`` quadrature nodes, seeded by ``seed + batch index``) and along the path
      to each attack's ``x_adv``.
    * ``faithfulness`` (with ``faithfulness=True``): ``deletion_gain`` = mean over inputs of
      the fall of the explained class's probability when the top-k units are replaced by the
      ``baseline`` (``"train-mean"``: the mean training input; ``"zero"``; or a tensor) minus the
      fall for k random units (``n_random`` draws; ``"auto"``, the default: the dataset's
      ``deletion_baseline`` when it sets one, e.g. 0 for graphs' edge and node weights, else
      ``"train-mean"``), with the raw falls ``deletion_drop_topk``
      and ``deletion_drop_random`` (:func:`~r2et.metrics.deletion`); ``occlusion_agreement`` =
      mean P@k between the explainer's top-k and single-unit occlusion's
      (:func:`~r2et.metrics.occlusion_agreement`; images: ``occlusion_patch`` squares,
      ``"auto"``: 4×4 above 256 pixels); ``deletion_gain_ci`` = ``[low, high]``, the
      ``CI_LEVEL`` (95%) normal-approximation interval of the mean per-input deletion gain
      (:func:`r2et.verdict.mean_ci`, ``mean ± z·s/√n``; each input's gain already averages
      its ``n_random`` draws). Higher gain is more faithful; an interval that contains 0 means
      the top-k units matter no more than random ones, as far as these inputs can tell.
    * ``ground_truth_precision`` (when ``ds`` has a ground-truth explanation,
      ``ds.ground_truth``): mean over the evaluated inputs of ``|topk(s(x)) ∩ G| / min(k, |G|)``
      (:func:`~r2et.metrics.ground_truth_precision`; G: e.g. the motif's nodes or edges), and
      per attack ``ground_truth_precision_adv``, the same for the attacked explanation.
    * ``locality``: ``distinct_topk_sets`` (how many different top-k sets the evaluated inputs
      have), ``global_topk_p_at_k`` (mean P@k of each input's top-k with the global top-k;
      higher: less input-specific), ``top_share`` (the share of the evaluated inputs whose
      top-k set is the most common one; 1: one set for all, lower is more local) and
      ``distinct_per_100`` (``100 · distinct_topk_sets / n``; higher is more local;
      :func:`~r2et.metrics.locality`).
    * ``verdict``: :func:`r2et.verdict.explanation_verdict` of ``top_share``,
      ``distinct_per_100`` and ``deletion_gain_ci``: ``{"collapsed", "faithful", "flags",
      "text"}``. ``collapsed`` when ``top_share >= 0.5`` or ``distinct_per_100 < 5`` (the same
      top-k for most inputs: a constant, not a stable explanation); ``faithful`` when the
      gain interval's lower end is above 0 (None without ``faithfulness``); ``flags`` lists
      ``"collapsed"`` / ``"unfaithful"`` when raised (empty is good); ``text`` is one
      readable line. A high P@k with a raised flag is not a stable explanation.
    * ``certified`` (with ``certify``, a mapping name → keyword arguments of
      :func:`~r2et.certify.certified_radius`, e.g. ``{"det": {"method": "deterministic",
      "radii": [0.1, 0.3]}}``): per certificate the mean and median certified radius, the
      fraction of inputs with a positive radius, and the mean certified P@k lower bound at each
      of its ``radii``. Attacked P@k is an upper bound on the worst case, certified P@k a lower
      bound: the truth lies between (at equal radius and norm; the smoothed certificate is
      about the smoothed explanation, in l2).

    Units are what the explainer ranks (features, pixels, nodes, or ``ex.groups``). The
    explained class is the model's prediction, except for ``ex.output == "loss"`` where it is
    the label (the attacks receive ``y`` accordingly). The split is processed in chunks of
    ``batch_size`` rows on the model's device; the model runs in eval mode and its previous
    mode is restored. ``k=None`` uses ``ds.default_k``; every attack must have been built with
    the same k. ``ex`` may be an explainer name (``"grad"``). Labels must be integer classes
    of the model's outputs: a label outside ``0..C-1`` (C: the model's number of outputs) or a
    non-integer label raises ``ValueError`` before anything is measured.

    Returns a JSON-ready dict: ``{"n", "k", "split", "accuracy", "accuracy_evaluated",
    "n_split", "majority_rate", "random_p_at_k", ["ground_truth_precision"],
    "thickness": {"radius", "mean", "std"},
    "faithfulness": {"deletion_gain",
    "deletion_drop_topk", "deletion_drop_random", "occlusion_agreement", "baseline",
    "occlusion_patch", "n_random", "deletion_gain_ci"}, "locality": {"distinct_topk_sets",
    "global_topk_p_at_k", "top_share", "distinct_per_100"}, "verdict": {"collapsed",
    "faithful", "flags", "text"},
    "attacks": {name: {"eps", "steps", "norm", "box", "p_at_k_mean", "p_at_k_std",
    "kendall_mean", "spearman_mean", "cosine_mean", "flipped_rate", "thickness_adv_mean",
    ["ground_truth_precision_adv"], "seconds", ["preset", "found_by"]}}, "seconds"}``
    (ground-truth keys only with ``ds.ground_truth``, thickness keys only with
    ``thickness_radius``, faithfulness only with ``faithfulness``).
    """
    t_start = time.perf_counter()
    check_finite_model(model)
    if not (hasattr(ds, "subset") and hasattr(ds, "default_k")):
        ds = as_dataset(ds, "evaluate")
    ex = as_explainer(ex)
    if not (hasattr(ex, "scores") and hasattr(ex, "resolve_target")):
        raise ValueError(f"ex must be an r2et Explainer, got {type(ex).__name__}")
    k = ds.default_k if k is None else k
    _check_options(k, n, batch_size, seed, thickness_samples, thickness_steps, n_random,
                   faithfulness, thickness_radius)  # fmt: skip
    attacks = _check_attacks(attacks, k)
    x, y, kw = ds.subset(split, n)
    if int(x.shape[0]) == 0:
        raise ValueError(f"split={split!r} of the dataset is empty")
    truth_of = getattr(ds, "ground_truth_of", None)
    dev = _device_of(model)
    run = _Run(
        model=model, ex=ex, k=k, rows=(x, y, kw), dev=dev,
        use_labels=getattr(ex, "output", None) == "loss", batch_size=batch_size,
        progress=progress, seed=seed, radius=thickness_radius, t_samples=thickness_samples,
        t_steps=thickness_steps, n_random=n_random,
        base=_baseline(ds, baseline, dev) if faithfulness else None,
        patch=_occlusion_patch(x, occlusion_patch),
        truth=truth_of(split, int(x.shape[0])) if truth_of is not None else None,
    )  # fmt: skip
    xp, _, kwp = next(_chunks(x, y, kw, 1, dev))  # one row: the threads suit the model's work
    with eval_mode(model), thread_budget(model, xp, min(batch_size, int(x.shape[0])), **kwp):
        out: dict[str, Any] = {"n": int(x.shape[0]), "k": k, "split": split}
        out.update(_accuracy(model, run.batches("accuracy", ds.split(split))))
        out.update(run.clean(faithfulness, baseline))
        out["attacks"] = {name: run.attack(atk, name) for name, atk in attacks.items()}
        if certify:
            out["certified"] = _certify(model, ex, k, certify, run.batches, run.use_labels, seed)
    out["seconds"] = time.perf_counter() - t_start
    return out


def _check_options(
    k: Any, n: Any, batch_size: Any, seed: Any, thickness_samples: Any, thickness_steps: Any,
    n_random: Any, faithfulness: Any, thickness_radius: Any,
) -> None:  # fmt: skip
    """:func:`evaluate`'s numeric options, each checked with one clear error."""
    check_int("k", k, 1)
    check_int("n", n, 1, allow_none=True)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_int("thickness_samples", thickness_samples, 1)
    check_int("thickness_steps", thickness_steps, 1)
    check_int("n_random", n_random, 1)
    check_choice("faithfulness", faithfulness, (True, False))
    if thickness_radius is not None:
        check_positive("thickness_radius", thickness_radius)


def _check_attacks(attacks: Any, k: int) -> Mapping[str, Attack]:
    """``attacks`` as a mapping name → attack (:class:`~r2et.attacks.Attack`) built with
    ``k``."""
    attacks = {} if attacks is None else attacks
    if not isinstance(attacks, Mapping):
        raise ValueError(
            f"attacks must be None or a mapping name -> attack object, got {type(attacks).__name__}"
        )
    for name, atk in attacks.items():
        if not isinstance(name, str):
            raise ValueError(f"attacks must map str names to callable attacks, got {name!r}")
        check_attack(atk, f"attacks[{name!r}]")
        if atk.k != k:
            raise ValueError(f"attack {name!r} was built with k={atk.k}, but evaluate uses k={k}")
    return attacks


@dataclass
class _Run:
    """One :func:`evaluate` call: the evaluated rows and the settings every stage shares."""

    model: Any
    ex: Any
    k: int
    rows: tuple[torch.Tensor, torch.Tensor, dict[str, Any]]
    dev: torch.device
    use_labels: bool
    batch_size: int
    progress: bool
    seed: int
    radius: float | None
    t_samples: int
    t_steps: int
    n_random: int
    base: Any
    patch: int | None
    truth: torch.Tensor | None

    def batches(
        self, desc: str, rows: tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        """Chunks of ``batch_size`` rows (the evaluated ones by default) on the model's
        device, with a progress bar when asked."""
        rows = self.rows if rows is None else rows
        it = _chunks(*rows, self.batch_size, self.dev)
        if self.progress:
            from tqdm.auto import tqdm

            total = -(-int(rows[0].shape[0]) // self.batch_size)
            it = tqdm(it, total=total, desc=desc, file=sys.stderr, leave=False)
        return it

    @contextlib.contextmanager
    def member_bar(
        self, atk: Any, name: str
    ) -> Iterator[Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]]:
        """The batches for attack ``atk``; with ``progress`` and an ensemble (``on_member``),
        one bar over every (batch, member) pair, so that its ETA moves with each member and
        names the member running, instead of one step per batch."""
        if not (self.progress and hasattr(atk, "on_member") and hasattr(atk, "attacks")):
            yield self.batches(name)
            return
        from tqdm.auto import tqdm

        n_batches = -(-int(self.rows[0].shape[0]) // self.batch_size)
        members = [m for m, _ in atk.attacks(self.model, self.rows[0][:1].to(self.dev))]
        bar = tqdm(total=n_batches * len(members), desc=name, unit="member", file=sys.stderr,
                   leave=False)  # fmt: skip
        bar.set_postfix_str(members[0] if members else "")
        order = {m: i for i, m in enumerate(members)}

        def done(member: str, seconds: float) -> None:
            bar.update(1)
            nxt = order.get(member, -1) + 1
            bar.set_postfix_str(members[nxt] if nxt < len(members) else "")

        atk.on_member = done
        try:
            yield _chunks(*self.rows, self.batch_size, self.dev)
        finally:
            atk.on_member = None
            bar.close()

    def thickness(
        self, xb: torch.Tensor, yb: torch.Tensor, kwb: dict[str, Any], **kw: Any
    ) -> torch.Tensor:
        """Θ of one batch: random points of the ball, or the given ``x_prime``."""
        target = yb if self.use_labels else None
        return thickness(
            self.model, xb, self.ex, self.k, radius=self.radius, target=target,
            n_steps=self.t_steps, **kw, **kwb,
        ).detach()  # fmt: skip

    def clean(self, faithfulness: bool, baseline: Any) -> dict[str, Any]:
        """Everything measured on the clean inputs: accuracy on them, thickness,
        faithfulness, ground-truth precision and locality."""
        model, ex, k = self.model, self.ex, self.k
        thick: list[torch.Tensor] = []
        clean: list[torch.Tensor] = []
        faith: dict[str, list[torch.Tensor]] = {}
        for i, (xb, yb, kwb) in enumerate(self.batches("clean")):
            target = ex.resolve_target(model, xb, yb if self.use_labels else None, **kwb)
            if i == 0:
                one = ex.scores(model, xb[:1], target[:1], **_row_kwargs(kwb, len(xb)))
                check_k(k, one.shape[1])
            sb = ex.scores(model, xb, target, **kwb).detach()
            clean.append(sb)
            if self.radius is not None:
                thick.append(
                    self.thickness(xb, yb, kwb, n_samples=self.t_samples, seed=self.seed + i)
                )
            if faithfulness:
                parts = _faithfulness(
                    model, xb, ex, k, self.base, target, sb, self.n_random, self.seed + i,
                    self.patch, kwb,
                )  # fmt: skip
                for key, v in parts.items():
                    faith.setdefault(key, []).append(v)
        out: dict[str, Any] = {
            "accuracy_evaluated": _accuracy(model, self.batches("acc"))["accuracy"]
        }
        if self.radius is not None:
            mean, std = _mean_std(torch.cat(thick))
            out["thickness"] = {"radius": float(self.radius), "mean": mean, "std": std}
        gain_ci = None
        if faithfulness:
            gain_ci = mean_ci(torch.cat(faith["deletion_gain"]).double().tolist())
            out["faithfulness"] = {
                **{key: _mean_std(torch.cat(v))[0] for key, v in faith.items()},
                "baseline": baseline if isinstance(baseline, str) else "custom",
                "occlusion_patch": self.patch,
                "n_random": self.n_random,
                "deletion_gain_ci": list(gain_ci),
            }
        if self.truth is not None:
            gtp = ground_truth_precision(torch.cat(clean), self.truth, k)
            out["ground_truth_precision"] = float(gtp.double().nanmean())
        scores = torch.cat(clean)
        out["random_p_at_k"] = k / int(scores.shape[1])
        loc = locality(scores, k)
        out["locality"] = {
            "distinct_topk_sets": loc["distinct_topk_sets"],
            "global_topk_p_at_k": _mean_std(loc["global_topk_p_at_k"])[0],
            "top_share": float(loc["top_share"]),
            "distinct_per_100": float(loc["distinct_per_100"]),
        }
        out["verdict"] = explanation_verdict(
            out["locality"]["top_share"], out["locality"]["distinct_per_100"], gain_ci
        )
        return out

    def attack(self, atk: Attack, name: str) -> dict[str, Any]:
        """One attack over the evaluated rows: P@k and rank statistics, thickness at the
        attacked points, ground-truth precision under attack, seconds, members."""
        results: list[AttackResult] = []
        thick_adv: list[torch.Tensor] = []
        seconds = 0.0
        with self.member_bar(atk, name) as batches:
            for xb, yb, kwb in batches:
                _sync(self.dev)
                t0 = time.perf_counter()
                res = atk(self.model, xb, yb if self.use_labels else None, **kwb)
                _sync(self.dev)
                seconds += time.perf_counter() - t0
                results.append(res)
                if self.radius is not None:
                    thick_adv.append(self.thickness(xb, yb, kwb, x_prime=res.x_adv))
        entry: dict[str, Any] = {
            "eps": _plain(atk.eps),
            "steps": _plain(atk.steps),
            "norm": atk.norm,
            "box": atk.bounds is not None,
            **summarize_metrics(_per_sample(results, self.k)),
        }
        if self.radius is not None:
            entry["thickness_adv_mean"] = _mean_std(torch.cat(thick_adv))[0]
        if self.truth is not None:
            adv = torch.cat([r.scores_adv.detach() for r in results])
            gtp = ground_truth_precision(adv, self.truth.to(adv.device), self.k)
            entry["ground_truth_precision_adv"] = float(gtp.double().nanmean())
        entry["seconds"] = seconds
        if results[0].member_names is not None:
            entry["preset"] = atk.preset
            entry["found_by"] = AttackResult.cat(results).found_by()
        inner = getattr(atk, "inner", None)  # r2et attacks: a cheaper explanation inside
        if isinstance(inner, dict) and inner:  # (other attacks may use the name otherwise)
            entry["inner"] = dict(inner)
        return entry


def _certify(
    model: Any,
    ex: Explainer,
    k: int,
    certify: Mapping[str, Mapping[str, Any]],
    batches: Any,
    use_labels: bool,
    seed: int,
) -> dict[str, Any]:
    """``{name: CertificateResult.summary()}`` of every requested certificate, by batches."""
    from r2et.certify import CertificateResult, certified_radius

    if not isinstance(certify, Mapping):
        raise ValueError(f"certify must be a mapping name -> keyword dict, got {type(certify)}")
    out: dict[str, Any] = {}
    for name, opts in certify.items():
        if not isinstance(opts, Mapping):
            raise ValueError(f"certify[{name!r}] must be a dict of certified_radius keywords")
        opts = {"seed": seed, **opts}
        parts = []
        for xb, yb, kwb in batches(f"certify {name}"):
            target = yb if use_labels else None
            parts.append(certified_radius(model, xb, ex, k, target=target, **opts, **kwb))
        out[name] = CertificateResult.cat(parts).summary()
    return out


def _accuracy(
    model: Any, it: Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]
) -> dict[str, Any]:
    """``{"accuracy", "n_split", "majority_rate"}`` over every batch of ``it``
    (``majority_rate``: the share of the most common label, always-predict-majority's
    accuracy)."""
    correct, total = 0, 0
    counts: dict[int, int] = {}
    with torch.no_grad():
        for xb, yb, kwb in it:
            check_model_input(model, xb, name="the dataset's inputs")
            logits = model(xb, **kwb)
            if (msg := not_logits(logits)) is not None:
                raise ValueError(msg)
            if logits.dim() != 2:
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
                raise ValueError(f"the model must return (N, n_classes) logits, got {got}")
            check_finite_output("the model", logits)
            check_label_range("y", yb, int(logits.shape[1]))
            correct += int((logits.argmax(1) == yb).sum())
            total += int(yb.shape[0])
            for label, count in zip(*(t.tolist() for t in yb.unique(return_counts=True))):
                counts[label] = counts.get(label, 0) + count
    return {
        "accuracy": correct / total,
        "n_split": total,
        "majority_rate": max(counts.values()) / total,
    }


def _faithfulness(
    model: Any,
    xb: torch.Tensor,
    ex: Explainer,
    k: int,
    base: torch.Tensor,
    target: torch.Tensor,
    scores: torch.Tensor,
    n_random: int,
    seed: int,
    patch: int | None,
    kwb: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """Per-input deletion drops and gain, and occlusion agreement, of one batch."""
    d = deletion(
        model, xb, ex, k, baseline=base, target=target, n_random=n_random, seed=seed,
        valid=_valid_units(ex, xb, kwb), scores=scores, **kwb,
    )  # fmt: skip
    occ = occlusion_agreement(
        model, xb, ex, k, baseline=base, target=target, patch=patch, scores=scores, **kwb
    )
    return {
        "deletion_gain": d["gain"],
        "deletion_drop_topk": d["drop_topk"],
        "deletion_drop_random": d["drop_random"],
        "occlusion_agreement": occ,
    }


def _row_kwargs(kw: dict[str, Any], n: int) -> dict[str, Any]:
    """The first row's slice of per-sample keyword tensors."""
    return take_rows(kw, slice(0, 1), n)


def _per_sample(results: list[AttackResult], k: int) -> dict[str, torch.Tensor]:
    parts = [r.per_sample(k) for r in results]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return v
