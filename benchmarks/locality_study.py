"""Which R2ET keeps its explanations local on one-hot tables (issue 28, items 2 and 3).

    R2ET_DATA=../shared/data python benchmarks/locality_study.py --out study.jsonl \
        [--datasets compas,german] [--german german.csv] [--seeds 0] [--units attr-gxi] \
        [--methods vanilla,r2et-paper,...] [--lams 0.01,0.1] [--preset standard] [--n 100]

For each dataset and seed: a vanilla model trained with the library's defaults (as
``r2et train DATA --method vanilla``), then each method fine-tuned from it with the defaults
(as ``--method M --pretrained``), the method's explainer being the unit under study
(``attr-gxi``: gradient x input summed per attribute; ``attr-grad``; ``col-grad``). Each
model is scored with ``evaluate`` (``--preset`` ensemble inside the data box, first ``--n``
test rows): accuracy, P@k, deletion gain with its interval, occlusion agreement, distinct
top-k sets, the top set's share, the verdict. One JSON line per (dataset, seed, unit,
method, lam) is appended to ``--out``; lines already there are skipped (resumable).

Candidate rows registered here when the library lacks them: ``r2et-paper`` (gap + the
paper's finite difference along sign(a) on the attribution; a library row now),
``r2et-sign-grad`` (the probe on the model's gradient), ``r2et-data-grad`` (towards the next
input of the batch, on the gradient: the library's ``r2et-data`` with lam 0.01),
``r2et-data-attr`` (towards the next input, on the attribution), ``r2et-data-grad-mu1`` (as
``r2et-data-grad`` with mu 1). ``r2et-noh`` at lam 0.3 is what ``r2et`` is on a one-hot table
today. The rows of ``docs/results/locality_study.jsonl`` came from this script (seeds 0-2 on
COMPAS and the German-like table, seed 2 on Adult).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from r2et import EnsembleAttack, Explainer, evaluate
from r2et.data import load_dataset
from r2et.methods import MethodRow, get_method, list_methods, register_method
from r2et.methods.hessian import FiniteDifferenceHessian
from r2et.methods.ranking import RankingGap
from r2et.models import build_model
from r2et.train import fit

CANDIDATES = {
    "r2et-paper": FiniteDifferenceHessian(),
    "r2et-sign-grad": FiniteDifferenceHessian(on="gradient"),
    "r2et-data-grad": FiniteDifferenceHessian(direction="data", on="gradient"),
    "r2et-data-attr": FiniteDifferenceHessian(direction="data"),
}
DEFAULTS = {"lam": 0.01, "mu": 0.1, "h": 0.3, "normalize": "mean", "adaptive": False}


#: candidates with a Hessian weight other than the default mu = 0.1
HESSIAN_WEIGHT = {"r2et-data-grad-mu1": 1.0}
CANDIDATES["r2et-data-grad-mu1"] = FiniteDifferenceHessian(direction="data", on="gradient")


def register_candidates() -> None:
    for name, term in CANDIDATES.items():
        if name not in list_methods():
            defaults = {**DEFAULTS, "mu": HESSIAN_WEIGHT.get(name, DEFAULTS["mu"])}
            register_method(name, MethodRow(name, (RankingGap(), term), defaults, "lam"))


def unit_explainer(unit: str, ds) -> tuple[Explainer, int]:
    rule = {"gxi": "grad_x_input", "grad": "grad"}[unit.split("-")[1]]
    if unit.startswith("attr"):
        return Explainer(rule, groups=ds.groups), 4
    return Explainer(rule), ds.default_k


def load(name: str, seed: int, german: str):
    if name == "german":
        return load_dataset("csv", path=german, target="credit", name="german", seed=seed)
    return load_dataset(name, seed=seed)


def passes(row: dict, van: dict) -> bool:
    """Issue 28's bar for one seed against that seed's vanilla: P@k at least 0.10 above,
    at least half the distinct top-k sets, a deletion-gain interval above 0 and a gain of at
    least 0.9 x vanilla's, test accuracy within 1 point."""
    return (
        row["p_at_k"] >= van["p_at_k"] + 0.10
        and row["distinct"] >= 0.5 * van["distinct"]
        and row["deletion_gain_ci"][0] > 0
        and row["deletion_gain"] >= 0.9 * van["deletion_gain"]
        and row["accuracy"] >= van["accuracy"] - 0.01
    )


def summary(rows: list[dict]) -> str:
    """A markdown table: per dataset, unit, method and weight, the per-seed P@k (vanilla's
    beside), distinct sets, deletion gain, accuracy and how many seeds pass :func:`passes`."""
    van = {(r["dataset"], r["seed"], r["unit"]): r for r in rows if r["method"] == "vanilla"}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["unit"], r["method"], r["lam"]), []).append(r)
    lines = [
        "| dataset | unit | method | lam | P@k per seed (vanilla) | distinct (vanilla) "
        "| deletion gain (vanilla) | accuracy (vanilla) | seeds passing |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def per(rs: list[dict], key: str, fmt: str, ref: bool) -> str:
        out = []
        for r in sorted(rs, key=lambda r: r["seed"]):
            v = van.get((r["dataset"], r["seed"], r["unit"]))
            text = format(r[key], fmt)
            if ref and v is not None:
                text += f" ({format(v[key], fmt)})"
            out.append(text)
        return " / ".join(out)

    for (d, unit, m, lam), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ref = m != "vanilla"
        ok = sum(
            passes(r, van[(r["dataset"], r["seed"], r["unit"])])
            for r in rs
            if (r["dataset"], r["seed"], r["unit"]) in van
        )
        weight = "" if lam is None else lam
        lines.append(
            f"| {d} | {unit} | {m} | {weight} | {per(rs, 'p_at_k', '.3f', ref)} "
            f"| {per(rs, 'distinct', 'd', ref)} | {per(rs, 'deletion_gain', '.3f', ref)} "
            f"| {per(rs, 'accuracy', '.3f', ref)} | {ok if ref else ''}/{len(rs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--datasets", default="compas,german")
    p.add_argument("--german", default="german.csv")
    p.add_argument("--seeds", default="0")
    p.add_argument("--units", default="attr-gxi")
    p.add_argument("--methods", default="vanilla,at,r2et-noh,r2et-paper,r2et-data-grad")
    p.add_argument("--lams", default="0.01,0.1")
    p.add_argument("--preset", default="standard")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--summary", action="store_true", help="print the table of --out and stop")
    a = p.parse_args(argv)
    if a.summary:
        print(summary([json.loads(line) for line in a.out.read_text().splitlines()]))
        return 0
    torch.set_num_threads(1)
    register_candidates()
    done = set()
    if a.out.exists():
        for line in a.out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["seed"], r["unit"], r["method"], r["lam"]))
    for name in a.datasets.split(","):
        for seed in [int(s) for s in a.seeds.split(",")]:
            ds = load(name, seed, a.german)
            torch.manual_seed(seed)
            spec = dict(ds.default_model)
            base = build_model(spec.pop("name"), list(ds.input_shape), ds.n_classes, **spec)
            vanilla = fit(base, get_method("vanilla"), ds, seed=seed, progress=False).model
            for unit in a.units.split(","):
                ex, k = unit_explainer(unit, ds)
                for method in a.methods.split(","):
                    lams = [None] if method == "vanilla" else [float(v) for v in a.lams.split(",")]
                    for lam in lams:
                        key = (name, seed, unit, method, lam)
                        if key in done:
                            continue
                        t0 = time.process_time()
                        if method == "vanilla":
                            model, spe = vanilla, None
                        else:
                            m = get_method(method, k=k, explainer=ex, lam=lam)
                            res = fit(copy.deepcopy(vanilla), m, ds, seed=seed, progress=False)
                            model, spe = res.model, res.seconds_per_epoch
                        train_cpu = time.process_time() - t0
                        atk = EnsembleAttack(ex, k, ds.default_eps, bounds=ds.bounds,
                                             preset=a.preset, seed=seed)  # fmt: skip
                        out = evaluate(model, ds, ex, k=k, attacks={"ensemble": atk}, n=a.n,
                                       seed=seed)  # fmt: skip
                        loc, fa = out["locality"], out["faithfulness"]
                        row = {
                            "dataset": name, "seed": seed, "unit": unit, "method": method,
                            "lam": lam, "k": k, "accuracy": out["accuracy"],
                            "p_at_k": out["attacks"]["ensemble"]["p_at_k_mean"],
                            "deletion_gain": fa["deletion_gain"],
                            "deletion_gain_ci": fa["deletion_gain_ci"],
                            "occlusion": fa["occlusion_agreement"],
                            "distinct": loc["distinct_topk_sets"],
                            "top_share": loc["top_share"], "flags": out["verdict"]["flags"],
                            "seconds_per_epoch": spe, "train_cpu": train_cpu,
                            "eval_cpu": time.process_time() - t0 - train_cpu,
                            "preset": a.preset, "n": a.n,
                        }  # fmt: skip
                        with a.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
