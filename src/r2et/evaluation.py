"""Evaluate a model's explanations: accuracy, ranking stability under attacks, thickness.

:func:`evaluate` is what benchmarks and the CLI call after training; it returns a plain,
JSON-ready dict (see its docstring for the exact keys).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from r2et._checks import check_int, check_k, check_positive
from r2et.attacks import AttackResult, summarize_metrics
from r2et.data.base import slice_forward_kwargs
from r2et.explain import Explainer
from r2et.metrics import thickness

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
    part = slice_forward_kwargs(kw, slice(lo, hi), n)
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
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy, explanation ranking stability under attacks, and thickness of ``model`` on
    the first ``n`` rows (None: all) of ``ds``'s ``split``.

    For every attack (a mapping name → attack object such as :class:`~r2et.ERAttack`) each
    input's clean scores ``s(x)`` are compared with the attacked scores ``s(x_adv)``:
    P@k = ``|topk(s(x)) ∩ topk(s(x_adv))|/k`` (mean and population std), the top-k Kendall τ_b
    and Spearman ρ (means ignoring NaN rows), the cosine distance, the rate of changed
    predictions and the attack's wall-clock seconds. With ``thickness_radius`` the explanation
    thickness of Chen et al. ("Training for Stable Explanation for Free", NeurIPS 2024)
    ``Θ(x) = E_{x'}[∫₀¹ mean_{i∈T} s_i(x_t) − mean_{j∉T} s_j(x_t) dt]``,
    ``x_t = (1−t)x + t x'``, is reported for ``x'`` uniform in the l_inf ball of that radius
    (``thickness_samples`` draws, ``thickness_steps`` quadrature nodes, seeded by
    ``seed + batch index``) and along the path to each attack's ``x_adv``.

    The explained class is the model's prediction, except for ``ex.output == "loss"`` where it
    is the label (the attacks receive ``y`` accordingly). The split is processed in chunks of
    ``batch_size`` rows on the model's device (data are moved there); the model runs in eval
    mode and its previous mode is restored. ``k=None`` uses ``ds.default_k``; every attack
    must have been built with the same k.

    Returns
    -------
    ``{"n", "k", "split", "accuracy", "thickness": {"radius", "mean", "std"} (only with
    thickness_radius), "attacks": {name: {"eps", "steps", "norm", "p_at_k_mean",
    "p_at_k_std", "kendall_mean", "spearman_mean", "cosine_mean", "flipped_rate",
    "thickness_adv_mean" (only with thickness_radius), "seconds"}}, "seconds"}`` with plain
    Python numbers (None where a mean is undefined).
    """
    t_start = time.perf_counter()
    if not (hasattr(ds, "subset") and hasattr(ds, "default_k")):
        raise ValueError(f"ds must be an r2et Dataset, got {type(ds).__name__}")
    if not (hasattr(ex, "scores") and hasattr(ex, "resolve_target")):
        raise ValueError(f"ex must be an r2et Explainer, got {type(ex).__name__}")
    k = ds.default_k if k is None else k
    check_int("k", k, 1)
    check_int("n", n, 1, allow_none=True)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_int("thickness_samples", thickness_samples, 1)
    check_int("thickness_steps", thickness_steps, 1)
    if thickness_radius is not None:
        check_positive("thickness_radius", thickness_radius)
    attacks = {} if attacks is None else attacks
    if not isinstance(attacks, Mapping):
        raise ValueError(
            f"attacks must be None or a mapping name -> attack object, got {type(attacks).__name__}"
        )
    for name, atk in attacks.items():
        if not isinstance(name, str) or not callable(atk):
            raise ValueError(f"attacks must map str names to callable attacks, got {name!r}")
        atk_k = getattr(atk, "k", k)
        if atk_k != k:
            raise ValueError(f"attack {name!r} was built with k={atk_k}, but evaluate uses k={k}")

    x, y, kw = ds.subset(split, n)
    n_rows = int(x.shape[0])
    if n_rows == 0:
        raise ValueError(f"split={split!r} of the dataset is empty")
    dev = _device_of(model)
    use_labels = getattr(ex, "output", None) == "loss"

    def batches(desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        it = _chunks(x, y, kw, batch_size, dev)
        if progress:
            from tqdm.auto import tqdm

            total = -(-n_rows // batch_size)
            it = tqdm(it, total=total, desc=desc, file=sys.stderr, leave=False)
        return it

    def path_thickness(
        xb: torch.Tensor, yb: torch.Tensor, kwb: dict[str, Any], **kw: Any
    ) -> torch.Tensor:
        """Θ of one batch: random points of the ball, or the given ``x_prime``."""
        target = yb if use_labels else None
        return thickness(
            model,
            xb,
            ex,
            k,
            radius=thickness_radius,
            target=target,
            n_steps=thickness_steps,
            **kw,
            **kwb,
        ).detach()

    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    try:
        correct = 0
        thick: list[torch.Tensor] = []
        for i, (xb, yb, kwb) in enumerate(batches("clean")):
            with torch.no_grad():
                correct += int((model(xb, **kwb).argmax(1) == yb).sum())
            if i == 0:
                check_k(k, ex.scores(model, xb[:1], **_row_kwargs(kwb, xb.shape[0])).shape[1])
            if thickness_radius is not None:
                thick.append(
                    path_thickness(xb, yb, kwb, n_samples=thickness_samples, seed=seed + i)
                )
        out: dict[str, Any] = {
            "n": n_rows,
            "k": k,
            "split": split,
            "accuracy": correct / n_rows,
        }
        if thickness_radius is not None:
            mean, std = _mean_std(torch.cat(thick))
            out["thickness"] = {"radius": float(thickness_radius), "mean": mean, "std": std}

        out["attacks"] = {}
        for name, atk in attacks.items():
            results: list[AttackResult] = []
            thick_adv: list[torch.Tensor] = []
            seconds = 0.0
            for xb, yb, kwb in batches(name):
                _sync(dev)
                t0 = time.perf_counter()
                res = atk(model, xb, yb if use_labels else None, **kwb)
                _sync(dev)
                seconds += time.perf_counter() - t0
                results.append(res)
                if thickness_radius is not None:
                    thick_adv.append(path_thickness(xb, yb, kwb, x_prime=res.x_adv))
            summary = summarize_metrics(_per_sample(results, k))
            entry: dict[str, Any] = {
                "eps": _plain(getattr(atk, "eps", None)),
                "steps": _plain(getattr(atk, "steps", None)),
                "norm": getattr(atk, "norm", None),
                **summary,
            }
            if thickness_radius is not None:
                entry["thickness_adv_mean"] = _mean_std(torch.cat(thick_adv))[0]
            entry["seconds"] = seconds
            out["attacks"][name] = entry
    finally:
        if isinstance(model, nn.Module) and was_training is not None:
            model.train(was_training)
    out["seconds"] = time.perf_counter() - t_start
    return out


def _row_kwargs(kw: dict[str, Any], n: int) -> dict[str, Any]:
    """The first row's slice of per-sample keyword tensors."""
    return {
        key: val[:1]
        if isinstance(val, torch.Tensor) and val.dim() >= 1 and val.shape[0] == n
        else val
        for key, val in kw.items()
    }


def _per_sample(results: list[AttackResult], k: int) -> dict[str, torch.Tensor]:
    parts = [r.per_sample(k) for r in results]
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return v
