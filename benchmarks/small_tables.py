"""Issue 27: do the command line's defaults on a small CSV at least match a logistic regression?

Per table and seed it runs, as a user would,

    python -m r2et.cli train csv --path P --target credit --method vanilla --seed S --out D

(a subprocess, one torch thread, the defaults unless ``--extra`` adds options) and scores on
the very same stratified train/val/test split (``load_dataset("csv", ..., seed=S)``) a
scikit-learn ``LogisticRegression`` fitted on the train split's encoding (one-hot categories,
standardised numbers: the inputs r2et trains on) and the majority rate (what always predicting
the training split's most common class scores on the test split). It prints a markdown table
of test accuracy per table (mean of the seeds) and per seed.

The tables are synthetic and held out: ``german`` is ``benchmarks/german_like.py`` drawn with
a seed the project never used, ``variant`` the same attributes labelled by another rule
(:func:`make_variant`: other attributes, a threshold and an interaction, more label noise).
``--set check`` (the default) are the tables the bar is checked on; ``--set tune`` are other
seeds of the same generators, the only ones the defaults were chosen on.

    python benchmarks/small_tables.py --out small-tables [--set check|tune] [--seeds 0,1,2]
        [--jobs 2] [--extra "--epochs 50"] [--json rows.json] [--before old-rows.json]

Finished runs in ``--out`` are kept (rerun to resume; ``--extra`` gets its own folders): give
a fresh ``--out`` after changing a default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from german_like import CATEGORICAL, make_german_like, write_csv  # noqa: E402

#: name -> (generator, rows, seed). The check tables' seeds were never used to choose a default.
TABLE_SETS = {
    "check": {
        "german-101": ("german", 1000, 101),
        "german-202": ("german", 1000, 202),
        "german-303": ("german", 1000, 303),
        "variant-404": ("variant", 1000, 404),
        "variant-505-600": ("variant", 600, 505),
    },
    "tune": {
        "german-11": ("german", 1000, 11),
        "german-12": ("german", 1000, 12),
        "variant-13": ("variant", 1000, 13),
        "variant-14-600": ("variant", 600, 14),
    },
}


def make_variant(n: int = 1000, seed: int = 0) -> dict[str, list]:
    """German-like attributes labelled by another rule: employment, purpose, savings, a
    threshold on the amount per month, the age and an interaction of housing and property,
    with label noise: good rate about 0.65-0.78, a logistic regression 0.00-0.05 above it (a
    table as hard as the issue's, where LR stayed below the majority rate)."""
    cols = make_german_like(n, seed)
    rng = np.random.default_rng(seed + 7919)
    idx = {n: np.array([cats.index(v) for v in cols[n]]) for n, cats in CATEGORICAL.items()}
    employment = np.array([-0.8, -0.5, 0.0, 0.3, 0.6])[idx["employment"]]
    purpose = rng.normal(0, 0.5, len(CATEGORICAL["purpose"]))[idx["purpose"]]
    savings = np.array([-0.6, -0.2, 0.2, 0.6, 0.0])[idx["savings"]]
    duration = np.asarray(cols["duration"], dtype=float)
    monthly = np.asarray(cols["amount"], dtype=float) / duration
    age = np.asarray(cols["age"], dtype=float)
    z = (
        1.0
        + 2.0 * employment
        + 1.5 * purpose
        + 1.5 * savings
        - 1.2 * (monthly > 250)
        + 0.8 * ((age > 25) & (age < 60))
        - 1.0 * ((idx["housing"] == 0) & (idx["property"] == 3))
        + rng.normal(0, 0.5, n)
    )
    good = 1 / (1 + np.exp(-z)) > rng.uniform(0, 1, n)
    cols["credit"] = ["good" if g else "bad" for g in good]
    return cols


GENERATORS = {"german": make_german_like, "variant": make_variant}


def table_csv(out: Path, name: str, spec: tuple[str, int, int]) -> Path:
    """The table's CSV in ``out`` (written once)."""
    path = out / f"{name}.csv"
    if not path.exists():
        gen, rows, seed = spec
        write_csv(path, GENERATORS[gen](rows, seed))
    return path


def baselines(path: Path, seed: int) -> dict[str, float]:
    """Logistic regression and the majority rate on r2et's own split of ``path`` for ``seed``."""
    from sklearn.linear_model import LogisticRegression

    from r2et.data import load_dataset

    ds = load_dataset("csv", path=str(path), target="credit", seed=seed)
    xtr, ytr, _ = ds.split("train")
    xte, yte, _ = ds.split("test")
    logreg = LogisticRegression(max_iter=5000).fit(xtr.numpy(), ytr.numpy())
    return {
        "lr": float(logreg.score(xte.numpy(), yte.numpy())),
        "majority": float(np.bincount(yte.numpy()).max() / len(yte)),  # as `r2et train` prints
        "n_train": len(ytr),
        "n_test": len(yte),
    }


def run_cli(path: Path, seed: int, run_dir: Path, extra: list[str]) -> dict[str, float]:
    """``r2et train`` with the defaults (plus ``extra``); its test accuracy and schedule."""
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "r2et.cli", "train", "csv", "--path", str(path)]
        cmd += ["--target", "credit", "--method", "vanilla", "--seed", str(seed)]
        cmd += ["--out", str(run_dir), "--no-progress", "--overwrite", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"failed: {shlex.join(cmd)}\n{done.stderr}")
    m = json.loads(metrics.read_text())
    c = json.loads((run_dir / "config.json").read_text())
    return {
        "r2et": float(m["test_accuracy"]),
        "epochs": int(c["epochs"]),
        "best_epoch": int(m["best_epoch"]),
    }


def one(out: Path, name: str, path: Path, seed: int, extra: list[str]) -> dict:
    tag = hashlib.sha256(shlex.join(extra).encode()).hexdigest()[:8] if extra else "defaults"
    row = {"table": name, "seed": seed, **baselines(path, seed)}
    row.update(run_cli(path, seed, out / "runs" / tag / f"{name}-s{seed}", extra))
    print(
        f"{name} seed {seed}: r2et {row['r2et']:.3f}  LR {row['lr']:.3f}  "
        f"majority {row['majority']:.3f}  ({row['epochs']} epochs, best {row['best_epoch']})",
        flush=True,
    )
    return row


def markdown(rows: list[dict], before: list[dict] | None = None) -> str:
    """Per table: the mean over seeds of LR, majority and r2et (and of the ``before`` rows:
    an earlier run of the same tables and seeds), r2et - LR, and r2et / LR per seed."""
    head = ["table", "rows (train/test)", "LR", "majority"]
    head += ["r2et before", "r2et"] if before else ["r2et"]
    head += ["r2et - LR", "per seed (r2et / LR)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gaps = []
    for t in dict.fromkeys(r["table"] for r in rows):
        rs = [r for r in rows if r["table"] == t]
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("lr", "majority", "r2et")}
        gaps.append(mean["r2et"] - mean["lr"])
        cells = [t, f"{rs[0]['n_train']}/{rs[0]['n_test']}", f"{mean['lr']:.3f}"]
        cells.append(f"{mean['majority']:.3f}")
        if before:
            old = [b["r2et"] for b in before if b["table"] == t]
            cells.append(f"{np.mean(old):.3f}" if old else "")
        cells += [f"{mean['r2et']:.3f}", f"{gaps[-1]:+.3f}"]
        cells.append(", ".join(f"{r['r2et']:.3f} / {r['lr']:.3f}" for r in rs))
        lines.append("| " + " | ".join(cells) + " |")
    met = sum(g >= -0.01 - 1e-9 for g in gaps)
    lines.append("")
    lines.append(f"bar (mean r2et >= mean LR - 0.01) met on {met} of {len(gaps)} tables")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--set", choices=sorted(TABLE_SETS), default="check")
    p.add_argument("--tables", default=None, help="comma-separated subset of the set's tables")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once")
    p.add_argument("--extra", default="", help="more `r2et train` options, e.g. '--epochs 50'")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument(
        "--before", type=Path, default=None, help="rows (--json) of an earlier run to compare"
    )
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    tables = TABLE_SETS[a.set]
    if a.tables:
        tables = {t: tables[t] for t in a.tables.split(",")}
    seeds = [int(s) for s in a.seeds.split(",")]
    extra = shlex.split(a.extra)
    jobs = [(n, table_csv(a.out, n, spec), s) for n, spec in tables.items() for s in seeds]
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        rows = list(pool.map(lambda j: one(a.out, *j, extra), jobs))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    print()
    before = json.loads(a.before.read_text()) if a.before else None
    print(markdown(rows, before))


if __name__ == "__main__":
    main()
