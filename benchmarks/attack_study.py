"""Which attack finds what: every ensemble member alone, the presets, and a strong reference.

    R2ET_DATA=../shared/data python benchmarks/attack_study.py [--out bench-out/attack-study]
        [--settings adult-vanilla-box,...] [--n 100] [--docs docs/attacks.md]

For each *setting* (dataset, training method, seed, with or without the data box) the script
trains the model as r2et's defaults do (pre-train ``ds.default_model`` with plain
cross-entropy, then fine-tune a copy with the method's default hyperparameters, 3 epochs),
then attacks the first ``--n`` test inputs' logit-gradient top-k (``ds.default_k``; l_inf budget
0.3 on standardised tabular features, 0.1 on images) with

* ``er50`` — the paper's attack, as r2et reported it before: 50 fixed PGD steps, Softplus(10);
* every member of the ``"standard"`` preset alone, and the presets ``fast``, ``standard``,
  ``thorough`` (:mod:`r2et.attacks.ensemble`);
* ``reference`` — a deliberately expensive attack written in the style of independent checks
  (fixed-step PGD, 300 steps x 4 random restarts, Softplus betas {3, 10, 30} x objectives
  {ERAttack-next, ERAttack-all, MSE} on raw scores, plus 2,000-query random searches on the real
  model): 120-190 ERAttack-50s as measured.

P@k is always measured on the real model, the prediction kept. Beside it, on the same inputs:
deletion gain, occlusion agreement and the number of distinct top-k sets (``evaluate``'s
faithfulness and locality), so that a stable but uninformative explanation shows. ``best
known`` is the per-input minimum over *all* of the above; the ``standard`` preset's gap to it
is what the issue bounds (0.03). Cost is CPU seconds (``time.process_time``, one torch thread).
Each setting's result is written atomically to ``<out>/cells/<setting>.json`` and models to
``<out>/runs/``: a killed run resumes where it stopped. ``--docs`` writes the tables into that
markdown file between the ``<!-- attack-study -->`` markers.
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

from r2et import Explainer, build_model, evaluate
from r2et._io import atomic_write_json, atomic_write_text
from r2et.attacks import PRESETS, EnsembleAttack, ERAttack, Member
from r2et.attacks.ensemble import input_kind
from r2et.data import load_dataset
from r2et.train import fit, load_run, save_run

EPS = {"tabular": 0.3, "image": 0.1}
EPOCHS = {"adult": (5, 3), "bank": (5, 3), "compas": (5, 3), "breast-cancer": (30, 3),
          "mnist5k": (6, 2), "german": (30, 3)}  # fmt: skip
N_OVERRIDE = {"mnist5k": 40}
#: ``german``: the German-credit-like table of ``benchmarks/german_like.py`` (synthetic, held
#: out), written once to this file (relative to the working directory).
GERMAN_CSV = Path("bench-out/german_like.csv")


def load(dataset: str, seed: int) -> Any:
    """``load_dataset(dataset, seed=seed)``; ``german``: the German-credit-like CSV."""
    if dataset != "german":
        return load_dataset(dataset, seed=seed)
    if not GERMAN_CSV.exists():
        from german_like import make_german_like, write_csv

        GERMAN_CSV.parent.mkdir(parents=True, exist_ok=True)
        write_csv(GERMAN_CSV, make_german_like(1000, 0))
    return load_dataset("csv", path=GERMAN_CSV, target="credit", name="german", seed=seed)


def reference_members(restarts: int = 4, steps: int = 300) -> list[Member]:
    """The independent-style reference: long fixed-step PGD over betas and objectives, and
    long random searches on the real model."""
    out = [
        Member(
            "pgd", steps, obj, "raw", beta, schedule="fixed", random_start=True, restarts=restarts
        )  # fmt: skip
        for beta in (3.0, 10.0, 30.0)
        for obj in ("er-next", "er-all", "mse")
    ]
    out.append(Member("search", 2000, "overlap"))
    out.append(Member("search", 2000, "er-all", p_init=0.05))
    return out


DEFAULT_SETTINGS = [
    "adult-vanilla-0-box", "adult-r2et-0-box", "adult-r2et-mm-0-box", "adult-r2et-mm-1-box",
    "adult-vanilla-0-nobox", "adult-r2et-0-nobox",
    "compas-vanilla-0-box", "compas-r2et-0-box",
    "bank-vanilla-0-box", "bank-r2et-0-box",
    "breast-cancer-vanilla-0-box", "breast-cancer-r2et-0-box",
    "mnist5k-vanilla-0-box", "mnist5k-r2et-0-box",
]  # fmt: skip


def parse_setting(s: str) -> tuple[str, str, int, bool]:
    """``"adult-r2et-mm-1-box"`` -> ``("adult", "r2et-mm", 1, True)``."""
    for ds in sorted(EPOCHS, key=len, reverse=True):
        if s.startswith(ds + "-"):
            method, seed, box = s[len(ds) + 1 :].rsplit("-", 2)
            if box not in ("box", "nobox"):
                break
            return ds, method, int(seed), box == "box"
    raise SystemExit(f"bad setting {s!r}: expected DATASET-METHOD-SEED-box|nobox")


def trained(out: Path, dataset: str, method: str, seed: int) -> tuple[Any, Any]:
    """The fine-tuned model of (dataset, method, seed), trained once and cached."""
    ds = load(dataset, seed)
    pre_dir = out / "runs" / f"{dataset}-pretrain-{seed}"
    run_dir = out / "runs" / f"{dataset}-{method}-{seed}"
    pre_ep, ft_ep = EPOCHS[dataset]
    if not (pre_dir / "config.json").exists():
        spec = dict(ds.default_model)
        torch.manual_seed(seed)
        model = build_model(spec.pop("name"), list(ds.input_shape), ds.n_classes, **spec)
        res = fit(model, "vanilla", ds, epochs=pre_ep, seed=seed, progress=False)
        save_run(pre_dir, res.model, res.config, {"val_accuracy": res.best_val_accuracy})
    if not (run_dir / "config.json").exists():
        model = load_run(pre_dir).model
        res = fit(model, method, ds, epochs=ft_ep, seed=seed, progress=False)
        save_run(run_dir, res.model, res.config, {"val_accuracy": res.best_val_accuracy})
    return ds, load_run(run_dir).model


def faithfulness_record(out: Path, setting: str, n: int) -> dict[str, Any]:
    """What the attacked explanation says, on the same inputs (:func:`r2et.evaluate` without
    attacks): deletion gain, occlusion agreement, distinct top-k sets, and accuracy on the
    whole test split."""
    dataset, method, seed, _ = parse_setting(setting)
    ds, model = trained(out, dataset, method, seed)
    res = evaluate(model, ds, Explainer("grad"), n=N_OVERRIDE.get(dataset, n), seed=seed)
    return {
        "deletion_gain": res["faithfulness"]["deletion_gain"],
        "occlusion_agreement": res["faithfulness"]["occlusion_agreement"],
        "distinct_topk_sets": res["locality"]["distinct_topk_sets"],
        "test_accuracy": res["accuracy"],
    }


def run_setting(
    out: Path, setting: str, n: int, only: list[str] | None = None, old: dict | None = None
) -> dict[str, Any]:
    """Attack one setting with everything (``only``: just the attacks whose names start with
    one of these, the others taken from the ``old`` record); returns the JSON-ready record."""
    dataset, method, seed, box = parse_setting(setting)
    ds, model = trained(out, dataset, method, seed)
    n = N_OVERRIDE.get(dataset, n)
    x, y, _ = next(ds.batches("test", n))
    k, eps = ds.default_k, EPS[ds.modality]
    bounds = ds.bounds if box else None
    ex = Explainer("grad")
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    attacks: dict[str, Any] = {"er50": ERAttack(ex, k, eps, steps=50, bounds=bounds, seed=seed)}
    for i, m in enumerate(PRESETS["standard"]):
        if m.inputs not in ("all", input_kind(x)):
            continue
        attacks[f"member:{m.name}"] = EnsembleAttack(ex, k, eps, bounds=bounds, members=[m],
                                                     seed=seed + i)  # fmt: skip
    for preset in ("fast", "standard", "thorough"):
        attacks[preset] = EnsembleAttack(ex, k, eps, bounds=bounds, preset=preset, seed=seed)
    ref_restarts = 2 if ds.modality == "image" else 4
    attacks["reference"] = EnsembleAttack(
        ex, k, eps, bounds=bounds, members=reference_members(ref_restarts), seed=seed + 100
    )
    results: dict[str, Any] = {}
    found_by: dict[str, Any] = {}
    attacks["er50"](model, x)  # warm-up: the first call pays one-off costs
    for name, atk in attacks.items():
        if only is not None and old is not None and not name.startswith(tuple(only)):
            if name in old["attacks"]:
                results[name] = old["attacks"][name]
                if name in old["found_by"]:
                    found_by[name] = old["found_by"][name]
                continue
            if name != "er50":  # the baseline of the cost ratios is always re-measured
                raise SystemExit(f"{setting}: {name} is neither in --update nor in the old record")
        t0 = time.process_time()
        res = atk(model, x)
        sec = time.process_time() - t0
        results[name] = {
            "p_at_k": float(res.p_at_k.mean()),
            "cpu_s": sec,
            "per_input": [round(float(v), 4) for v in res.p_at_k],
        }
        if name in ("standard", "reference", "thorough"):
            found_by[name] = res.found_by()
        print(f"  {setting:32s} {name:40s} P@k {results[name]['p_at_k']:.3f}  {sec:7.1f} s",
              flush=True)  # fmt: skip
    per = torch.tensor([r["per_input"] for r in results.values()])
    best = per.min(0).values
    return {
        "setting": setting, "dataset": dataset, "method": method, "seed": seed, "box": box,
        "n": n, "k": k, "eps": eps, "clean_accuracy": acc, "attacks": results,
        "found_by": found_by, "best_known": float(best.mean()),
        "per_input_best": [round(float(v), 4) for v in best],
    }  # fmt: skip


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: per setting, the presets, the reference, best known, the gap, the costs, and
    the faithfulness and locality of the attacked explanation."""
    head = (
        "setting", "box", "n", "acc (these n)", "ER-50", "fast", "standard", "thorough",
        "reference", "best known", "standard - best", "cost standard / ER-50",
        "cost thorough / ER-50", "cost reference / ER-50", "deletion gain", "occlusion agr.",
        "distinct top-k",
    )  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        a, fa = r["attacks"], r.get("faithfulness", {})
        er = a["er50"]["cpu_s"] or 1e-9
        p = {name: a[name]["p_at_k"] for name in ("er50", "fast", "standard", "thorough",
                                                  "reference")}  # fmt: skip
        cells = [
            f"{r['dataset']} {r['method']} s{r['seed']}", "yes" if r["box"] else "no",
            str(r["n"]), f"{r['clean_accuracy']:.3f}", *(f"{v:.3f}" for v in p.values()),
            f"{r['best_known']:.3f}", f"{p['standard'] - r['best_known']:+.3f}",
            f"{a['standard']['cpu_s'] / er:.1f}", f"{a['thorough']['cpu_s'] / er:.0f}",
            f"{a['reference']['cpu_s'] / er:.0f}",
            *(f"{fa[key]:.3f}" if key in fa else "–"
              for key in ("deletion_gain", "occlusion_agreement")),
            str(fa.get("distinct_topk_sets", "–")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def member_table(records: list[dict[str, Any]]) -> str:
    """Markdown: every standard member alone (P@k), one column per setting, and who found
    the standard ensemble's minimum."""
    names = list(dict.fromkeys(k for r in records for k in r["attacks"] if k.startswith("member:")))
    head = "| member | " + " | ".join(r["setting"] for r in records) + " |"
    lines = [head, "|---|" + "---|" * len(records)]
    for m in names:
        cells = []
        for r in records:
            if m not in r["attacks"]:  # the member does not run on this kind of input
                cells.append("–")
                continue
            fb = r["found_by"].get("standard", {}).get(m.split(":", 1)[1], 0)
            cells.append(f"{r['attacks'][m]['p_at_k']:.3f} ({fb})")
        lines.append(f"| {m.split(':', 1)[1]} | " + " | ".join(cells) + " |")
    lines.append("| **standard** | " + " | ".join(
        f"**{r['attacks']['standard']['p_at_k']:.3f}**" for r in records) + " |")  # fmt: skip
    lines.append("| ER-50 | " + " | ".join(
        f"{r['attacks']['er50']['p_at_k']:.3f}" for r in records) + " |")  # fmt: skip
    return "\n".join(lines)


def write_docs(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace the text between the ``<!-- attack-study -->`` markers of ``path``."""
    body = (
        "<!-- attack-study -->\n"
        f"Generated by `benchmarks/attack_study.py` on {len(records)} settings "
        f"({time.strftime('%Y-%m-%d')}).\n\n### Presets against the reference\n\n"
        + table(records)
        + "\n\n### Every member of `standard` alone (in brackets: inputs whose minimum in the "
        "`standard` ensemble it found first)\n\n"
        + member_table(records)
        + "\n<!-- /attack-study -->"
    )
    text = path.read_text() if path.exists() else "<!-- attack-study -->\n<!-- /attack-study -->\n"
    start, end = text.index("<!-- attack-study -->"), text.index("<!-- /attack-study -->")
    atomic_write_text(path, text[:start] + body + text[end + len("<!-- /attack-study -->") :])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-out/attack-study")
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--docs", default=None)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--update",
        default=None,
        help="comma-separated attack-name prefixes to recompute in finished settings "
        "(e.g. standard,member: after a preset change); the rest is kept",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("R2ET_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    out = Path(args.out)
    settings = [s for s in args.settings.split(",") if s]
    records = []
    for s in settings:
        parse_setting(s)
        f = out / "cells" / f"{s}.json"
        if f.exists() and args.update and not args.report_only:
            print(f"{s}: updating {args.update}", flush=True)
            only = ["er50", *args.update.split(",")]
            atomic_write_json(f, run_setting(out, s, args.n, only, json.loads(f.read_text())))
        if not f.exists() and not args.report_only:
            print(f"{s}: training and attacking", flush=True)
            atomic_write_json(f, run_setting(out, s, args.n))
        if f.exists():
            rec = json.loads(f.read_text())
            if "faithfulness" not in rec and not args.report_only:
                rec["faithfulness"] = faithfulness_record(out, s, args.n)
                atomic_write_json(f, rec)
            records.append(rec)
    if not records:
        print("no finished settings", file=sys.stderr)
        return 1
    text = table(records) + "\n\n" + member_table(records) + "\n"
    atomic_write_text(out / "table.md", text)
    print(text)
    if args.docs:
        write_docs(Path(args.docs), records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
