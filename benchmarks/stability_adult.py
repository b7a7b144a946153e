"""Acceptance experiment: explanation ranking stability of every training method on Adult.

    R2ET_DATA=../shared/data python benchmarks/stability_adult.py [--out bench-out/stability-adult]
        [--methods vanilla,r2et] [--epochs 5] [--n 1000] [--eps 0.3] [--steps 100]
        [--set r2et.lam=0.1] [--docs FILE]

Protocol (Chen et al., NeurIPS 2024): pre-train a vanilla MLP (``ds.default_model``) on Adult,
then fine-tune a copy of it with each method for ``--epochs`` epochs (the ``vanilla`` row is
the same pre-trained model fine-tuned with plain cross-entropy for the same epochs, so every row
has had the same amount of training). Each fine-tuned model is evaluated on the first ``--n``
test inputs with its own gradient saliency of the predicted class's *logit* (the saliency
users look at, whatever the method trained on): accuracy on the whole test set, P@k under
ERAttack and MSEAttack (l_inf budget ``--eps`` on the standardised features, ``--steps`` PGD
steps, softplus(10) surrogate for ReLU models, prediction kept, no input-box clipping), and
thickness in the ``--eps`` ball. Every run folder (``pretrain/``, ``<method>/``) is written
atomically with :func:`r2et.train.save_run`; a rerun skips finished methods whose recorded
settings match (resumable). The table goes to ``<out>/table.md`` and, with ``--docs``, into
that file. (Single attacks overstate stability; the page this study once filled is summarised
in ``CHANGELOG.md``, and ``docs/results.md`` measures with the ensemble.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from r2et import Explainer, build_model
from r2et._io import atomic_write_json, atomic_write_text
from r2et.attacks import ERAttack, MSEAttack
from r2et.data import load_dataset
from r2et.evaluation import evaluate
from r2et.methods import get_method, list_methods
from r2et.train import fit, load_run, save_run


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["r2et.lam=0.1", ...]`` -> ``{"r2et": {"lam": 0.1}}`` (JSON values, else strings)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            key, raw = item.split("=", 1)
            name, hp = key.rsplit(".", 1)
        except ValueError:
            raise SystemExit(f"--set expects METHOD.HYPERPARAMETER=VALUE, got {item!r}") from None
        try:
            val = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out.setdefault(name, {})[hp] = val
    return out


def stable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that decides whether a finished run can be reused."""
    keys = ("method", "epochs", "lr", "batch_size", "seed", "optimizer", "experiment")
    return {k: cfg.get(k) for k in keys}


def pretrain(ds: Any, args: argparse.Namespace, folder: Path) -> torch.nn.Module:
    """The vanilla model every method fine-tunes (loaded from ``folder`` when present)."""
    wanted = {"epochs": args.pretrain_epochs, "seed": args.seed, "lr": args.lr}
    if (folder / "metrics.json").is_file():
        run = load_run(folder)
        if {k: run.config.get(k) for k in wanted} == wanted:
            print(f"pre-trained model reused from {folder}", flush=True)
            return run.model
    torch.manual_seed(args.seed)
    spec = dict(ds.default_model)
    model = build_model(spec.pop("name"), list(ds.input_shape), ds.n_classes, **spec)
    res = fit(
        model,
        get_method("vanilla"),
        ds,
        epochs=args.pretrain_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=args.progress,
    )
    metrics = {"best_val_accuracy": res.best_val_accuracy, "history": res.history}
    save_run(folder, res.model, res.config, metrics)
    print(f"pre-trained: val acc {res.best_val_accuracy:.4f}", flush=True)
    return load_run(folder).model


def run_method(
    name: str, ds: Any, args: argparse.Namespace, overrides: dict[str, Any], out: Path
) -> dict[str, Any]:
    """Fine-tune the pre-trained model with ``name``, evaluate it, save the run folder."""
    folder = out / name
    method = get_method(name, k=args.k, **overrides)
    experiment = {
        "pretrain_epochs": args.pretrain_epochs,
        "n": args.n,
        "eps": args.eps,
        "steps": args.steps,
        "k": args.k,
    }
    wanted = {
        "method": method.config(),
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "optimizer": "adam",
        "experiment": experiment,
    }
    if (folder / "metrics.json").is_file() and not args.force:
        try:
            run = load_run(folder)
            if stable_config(run.config) == json.loads(json.dumps(wanted)):
                print(f"{name}: reused {folder}", flush=True)
                return run.metrics
        except (ValueError, FileNotFoundError):
            pass
    model = load_run(out / "pretrain").model
    t0 = time.perf_counter()
    res = fit(
        model,
        method,
        ds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=args.progress,
    )
    train_seconds = time.perf_counter() - t0
    ex = Explainer("grad", output="logit")
    attacks = {
        "erattack": ERAttack(ex, args.k, args.eps, steps=args.steps, seed=args.seed),
        "mse": MSEAttack(ex, args.k, args.eps, steps=args.steps, seed=args.seed),
    }
    ev = evaluate(
        res.model,
        ds,
        ex,
        k=args.k,
        attacks=attacks,
        n=args.n,
        thickness_radius=args.eps,
        seed=args.seed,
    )
    ev["accuracy_n"] = ev["accuracy"]
    ev["topk_sets"] = distinct_topk_sets(res.model, ds, ex, args)
    ev["accuracy"] = evaluate(res.model, ds, ex, k=args.k)["accuracy"]  # the whole test set
    metrics = {
        "evaluation": ev,
        "best_epoch": res.best_epoch,
        "best_val_accuracy": res.best_val_accuracy,
        "seconds_per_epoch": res.seconds_per_epoch,
        "train_seconds": train_seconds,
        "history": res.history,
        "attack_settings": {
            "eps": args.eps,
            "steps": args.steps,
            "norm": "linf",
            "k": args.k,
            "bounds": None,
            "explainer": ex.config(),
            "surrogate_beta": "auto (10 for ReLU models)",
        },
    }
    save_run(folder, res.model, {**res.config, "experiment": experiment}, metrics)
    print(
        f"{name}: acc {ev['accuracy']:.4f}  P@k ER {ev['attacks']['erattack']['p_at_k_mean']:.4f}"
        f"  MSE {ev['attacks']['mse']['p_at_k_mean']:.4f}  "
        f"thickness {ev['thickness']['mean']:.4g}  {res.seconds_per_epoch:.2f} s/epoch",
        flush=True,
    )
    return metrics


def attack_variants(ds: Any, args: argparse.Namespace, out: Path, names: list[str]) -> str:
    """P@k of the finished runs under variants of ERAttack at the same budget (a check that
    the stability is not specific to one attack configuration); a markdown table."""
    ex = Explainer("grad", output="logit")
    base = {"k": args.k, "eps": args.eps, "steps": args.steps, "seed": args.seed}
    variants = {
        "ER (table)": ERAttack(ex, **base),
        "ER all-rest": ERAttack(ex, **base, n_bottom="all"),
        "ER 3 random restarts": ERAttack(ex, **base, random_start=True, restarts=3),
        "ER surrogate β=3": ERAttack(ex, **base, surrogate_beta=3.0),
        "ER surrogate β=30": ERAttack(ex, **base, surrogate_beta=30.0),
        "ER in data box": ERAttack(ex, **base, bounds=ds.bounds),
        "MSE 3 random restarts": MSEAttack(ex, **base, random_start=True, restarts=3),
    }
    head = "| method | " + " | ".join(variants) + " |\n|---|" + "---:|" * len(variants) + "\n"
    rows = []
    for name in names:
        folder = out / name
        if not (folder / "metrics.json").is_file():
            continue
        run = load_run(folder)
        cached = run.metrics.get("attack_variants")
        if cached is None or set(cached) != set(variants):
            ev = evaluate(run.model, ds, ex, k=args.k, attacks=variants, n=args.n, seed=args.seed)
            cached = {v: ev["attacks"][v]["p_at_k_mean"] for v in variants}
            save_run(folder, run.model, run.config, {**run.metrics, "attack_variants": cached})
        rows.append(f"| {name} | " + " | ".join(f"{cached[v]:.4f}" for v in variants) + " |")
        print(rows[-1], flush=True)
    return head + "\n".join(rows) + "\n"


def distinct_topk_sets(model: torch.nn.Module, ds: Any, ex: Explainer, args: Any) -> int:
    """How many different top-k feature sets the clean saliency has on the evaluated inputs
    (1: every input ranks the same k features first)."""
    x, _, kw = ds.subset("test", args.n)
    idx = ex.scores(model, x, **kw).topk(args.k, dim=1).indices.sort(1).values
    return int(torch.unique(idx, dim=0).shape[0])


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown table of the results, in :func:`list_methods` order."""
    head = (
        "| method | test accuracy | P@k ERAttack | P@k MSEAttack | top-k Kendall (ER) | "
        "thickness | distinct top-k sets | train s/epoch |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for name in list_methods():
        if name not in results:
            continue
        m = results[name]
        ev = m["evaluation"]
        rows.append(
            f"| {name} | {ev['accuracy']:.4f} | {ev['attacks']['erattack']['p_at_k_mean']:.4f} "
            f"| {ev['attacks']['mse']['p_at_k_mean']:.4f} "
            f"| {ev['attacks']['erattack']['kendall_mean']:.4f} | {ev['thickness']['mean']:.4g} "
            f"| {ev.get('topk_sets', '')} | {m['seconds_per_epoch']:.2f} |"
        )
    note = (
        f"\nAdult, MLP {args.model_desc}, k={args.k}; pre-trained {args.pretrain_epochs} epochs "
        f"(vanilla), fine-tuned {args.epochs} epochs per method (Adam, lr {args.lr}, batch "
        f"{args.batch_size}, seed {args.seed}, best epoch by validation accuracy); P@k on the "
        f"first {args.n} test inputs under l_inf eps={args.eps} (standardised features, no "
        f"box clipping), {args.steps} PGD steps, logit gradient saliency, softplus(10) "
        "surrogate; thickness in the same ball (8 samples, 8 quadrature nodes); accuracy on "
        f"the whole test set; {args.threads} CPU thread(s).\n"
    )
    return head + "\n".join(rows) + "\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-out/stability-adult")
    parser.add_argument("--methods", default=",".join(list_methods()))
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="METHOD.HP=VALUE override")
    parser.add_argument("--force", action="store_true", help="retrain finished methods")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--docs", default=None, help="also write the table into this file")
    parser.add_argument(
        "--variants", action="store_true", help="also evaluate ERAttack variants (slower)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("R2ET_DATA", str(Path(__file__).resolve().parents[2] / "shared/data"))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(list_methods()))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; allowed: {list_methods()}")
    overrides = parse_set(args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = load_dataset("adult")
    args.model_desc = json.dumps({k: v for k, v in ds.default_model.items() if k != "name"})
    print(f"Adult: {ds.summary()['n_train']} train rows, F={ds.n_features}", flush=True)
    pretrain(ds, args, out / "pretrain")
    results = {}
    for name in methods:
        results[name] = run_method(name, ds, args, overrides.get(name, {}), out)
    for name in list_methods():  # finished runs of other invocations join the table
        if name not in results and (out / name / "metrics.json").is_file():
            try:
                results[name] = load_run(out / name).metrics
            except (ValueError, FileNotFoundError):
                pass
    md = table(results, args)
    atomic_write_text(out / "table.md", md)
    print(md)
    if args.variants:
        md_var = attack_variants(ds, args, out, [n for n in list_methods() if n in results])
        atomic_write_text(out / "variants.md", md_var)
        print(md_var)
        for name in results:  # the cached variant results are part of the metrics now
            results[name] = load_run(out / name).metrics
    atomic_write_json(out / "summary.json", results)
    if args.docs:
        write_docs(Path(args.docs), md, "stability-table")
        if args.variants:
            write_docs(Path(args.docs), md_var, "attack-variants")


def write_docs(path: Path, md: str, marker: str) -> None:
    """Replace the text between the ``marker`` comments of ``path`` with ``md`` (or append)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"{start}\n{md}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    atomic_write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
