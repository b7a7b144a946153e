"""Stored saliency panels: the attacked explanations the report shows, computed once by the
runner and only read by the plots.

For every image dataset of a benchmark whose models were saved, :func:`compute_saliency_panels`
takes each method's selected setting (the report's selection rule, first seed with a saved
model), explains the first ``n_images`` test inputs with gradient saliency, attacks them with
the ``preset`` :class:`~r2et.EnsembleAttack` inside the data box, and stores the inputs, the
clean and attacked score maps and P@k in ``panels/saliency_<dataset>.safetensors`` beside a
JSON description (``.json``, written last, with the SHA-256 of the tensors). A stored panel
whose description matches (same cells, preset, inputs and configuration digest) is reused, so
``--resume`` recomputes nothing. Rendering (:func:`r2et.bench.plots.plot_saliency_panel`)
reads these files and never trains or attacks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from r2et._io import atomic_write_bytes, atomic_write_json, read_json
from r2et.bench.config import BenchConfig, dataset_settings, load_bench_dataset
from r2et.bench.selection import rule_of, select

PANELS = "panels"


def panel_paths(out: str | Path, dataset: str) -> tuple[Path, Path]:
    """``(tensors, description)`` paths of ``dataset``'s stored saliency panel."""
    base = Path(out) / PANELS / f"saliency_{dataset}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def _selected_models(
    out: Path, rows: list[dict[str, Any]], cfg: BenchConfig, dataset: str
) -> list[tuple[str, dict[str, Any]]]:
    """``(method, row)`` of each method's selected setting with a saved model (first seed)."""
    chosen = select(rows, **rule_of(cfg))
    found = []
    methods = [m for m in cfg.methods if any(r["method"] == m for r in rows)]
    for m in methods:
        sel = chosen.get((dataset, m))
        for r in sorted(sel["rows"] if sel else [], key=lambda r: r["seed"]):
            if (out / "models" / r["key"] / "model.safetensors").is_file():
                found.append((m, r))
                break
    return found


def load_saliency_panel(out: str | Path, dataset: str) -> dict[str, Any] | None:
    """A stored panel as ``{"meta": description, "x", "clean", "adv", "p_at_k": tensors}``, or
    None when there is none or its tensors do not match the description's SHA-256."""
    from safetensors.torch import load

    tensors, desc = panel_paths(out, dataset)
    if not (tensors.is_file() and desc.is_file()):
        return None
    meta = read_json(desc)
    data = tensors.read_bytes()
    if not isinstance(meta, dict) or meta.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    return {"meta": meta, **load(data)}


def compute_saliency_panels(
    out: str | Path,
    rows: list[dict[str, Any]],
    cfg: BenchConfig,
    digest: str,
    n_images: int = 3,
    preset: str = "fast",
) -> list[Path]:
    """Compute (or reuse) the stored saliency panel of every image dataset in ``rows``;
    returns the description paths written or reused. Nothing when models were not saved."""
    from safetensors.torch import save

    out = Path(out)
    if not cfg.save_models:
        return []
    images = dict.fromkeys(r["dataset"] for r in rows if r.get("modality") == "image")
    done = []
    for dataset in images:
        models = _selected_models(out, rows, cfg, dataset)
        if not models:
            continue
        want = {
            "cells": [r["key"] for _, r in models],
            "preset": preset,
            "n_images": n_images,
            "config_sha256": digest,
        }
        tensors, desc = panel_paths(out, dataset)
        old = load_saliency_panel(out, dataset)
        if old is not None and all(old["meta"].get(key) == v for key, v in want.items()):
            done.append(desc)
            continue
        panel = _attack_panel(out, cfg, dataset, models, n_images, preset, None)
        meta = panel.pop("meta")
        blob = save({key: v.contiguous() for key, v in panel.items()})
        atomic_write_bytes(tensors, blob)
        atomic_write_json(desc, {**meta, **want, "sha256": hashlib.sha256(blob).hexdigest()})
        done.append(desc)
    return done


def build_saliency_panel(
    out: str | Path,
    rows: list[dict[str, Any]],
    cfg: BenchConfig,
    dataset: str,
    n_images: int = 3,
    preset: str = "fast",
    device: str | torch.device | None = None,
) -> dict[str, Any] | None:
    """Attack the selected models of ``dataset`` (see the module docstring) on its first
    ``n_images`` test inputs; returns ``{"meta", "x", "clean", "adv", "p_at_k"}`` (tensors on
    the CPU; ``clean``/``adv`` ``(methods, n, F)``), or None when no model was saved."""
    out = Path(out)
    models = _selected_models(out, rows, cfg, dataset)
    return _attack_panel(out, cfg, dataset, models, n_images, preset, device) if models else None


def _attack_panel(
    out: Path,
    cfg: BenchConfig,
    dataset: str,
    models: list[tuple[str, dict[str, Any]]],
    n_images: int,
    preset: str,
    device: str | torch.device | None,
) -> dict[str, Any]:
    """The panel of :func:`build_saliency_panel` for the given ``(method, row)`` models."""
    from r2et.attacks import EnsembleAttack
    from r2et.explain import Explainer
    from r2et.runs import load_run

    dev = torch.device(device) if device is not None else torch.device("cpu")
    seed = int(models[0][1]["seed"])
    ds = load_bench_dataset(dataset, seed, cfg)
    k, eps, _ = dataset_settings(cfg, ds)
    x = ds.test[0][:n_images]
    bounds = ds.bounds if cfg.evaluate.get("box", True) else None
    ex = Explainer("grad")
    clean, adv, p_at_k = [], [], []
    for _, r in models:
        model = load_run(out / "models" / r["key"], device=dev).model.eval()
        res = EnsembleAttack(ex, k, eps, bounds=bounds, preset=preset, seed=seed)(model, x.to(dev))
        clean.append(res.scores_clean.detach().cpu())
        adv.append(res.scores_adv.detach().cpu())
        p_at_k.append(res.p_at_k.detach().cpu())
    meta = {
        "dataset": dataset,
        "methods": [m for m, _ in models],
        "accuracy": [r.get("accuracy") for _, r in models],
        "seed": seed,
        "k": k,
        "eps": eps,
        "preset": preset,
        "box": bounds is not None,
    }
    return {
        "meta": meta,
        "x": x,
        "clean": torch.stack(clean),
        "adv": torch.stack(adv),
        "p_at_k": torch.stack(p_at_k),
    }
