"""Issue 28's check from the command line's defaults, as a user would run it:

    r2et train DATA --method vanilla --seed S --out V
    r2et train DATA --method r2et --pretrained V --seed S --out R
    r2et evaluate V --preset thorough      (and R)

on COMPAS and on a German-credit-like CSV (``benchmarks/german_like.py``: 1,000 rows, 20
mixed attributes), seeds 0-2. Per seed it prints R2ET's and vanilla's P@k, distinct top-k
sets, deletion gain with its interval and test accuracy, and whether the issue's bar holds:
P@k at least 0.10 above vanilla's, at least half of vanilla's distinct sets, a deletion-gain
interval above 0 and a gain at least 0.9 x vanilla's, accuracy within 1 point.

    R2ET_DATA=../shared/data python benchmarks/cli_defaults.py --out cli-check \
        [--seeds 0,1,2] [--datasets compas,german] [--method r2et] [--weight W]
        [--param KEY=VALUE ...] [--preset thorough] [--markdown]

Finished runs and evaluations in ``--out`` are kept (rerun to resume). Every command is the
installed ``r2et`` entry point in a subprocess, with one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def r2et(*args: str) -> None:
    """Run one ``r2et`` command (``python -m r2et.cli``); stop on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "r2et.cli", *args, "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr}")
    print(done.stdout.strip(), flush=True)


def data_args(name: str, out: Path) -> list[str]:
    if name != "german":
        return [name]
    csv = out / "german.csv"
    if not csv.exists():
        sys.path.insert(0, str(HERE))
        from german_like import make_german_like, write_csv

        write_csv(csv, make_german_like(1000, seed=0))
    return ["csv", "--path", str(csv), "--target", "credit"]


def passes(r: dict, v: dict) -> dict[str, bool]:
    """The issue's bar, item by item (R2ET's evaluation ``r`` against vanilla's ``v``)."""
    rp, vp = r["attacks"]["ensemble"]["p_at_k_mean"], v["attacks"]["ensemble"]["p_at_k_mean"]
    rf, vf = r["faithfulness"], v["faithfulness"]
    return {
        "p@k +0.10": rp >= vp + 0.10,
        "half the sets": r["locality"]["distinct_topk_sets"]
        >= 0.5 * v["locality"]["distinct_topk_sets"],
        "gain > 0": rf["deletion_gain_ci"][0] > 0,
        "gain >= 0.9 x": rf["deletion_gain"] >= 0.9 * vf["deletion_gain"],
        "accuracy -1 pt": r["accuracy"] >= v["accuracy"] - 0.01,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("cli-check"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--datasets", default="compas,german")
    p.add_argument("--method", default="r2et")
    p.add_argument("--preset", default="thorough")
    p.add_argument("--weight", default=None, help="--weight for the method (default: its own)")
    p.add_argument(
        "--param", action="append", default=[], help="KEY=VALUE for the method (repeatable)"
    )
    p.add_argument("--markdown", action="store_true", help="print the table of --out only")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"| dataset | seed | P@k {a.method} (vanilla) | distinct top-k (vanilla) "
        "| deletion gain [95% CI] (vanilla) | test accuracy (vanilla) | bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in a.datasets.split(","):
        data = data_args(name, a.out)
        for seed in a.seeds.split(","):
            runs = {m: a.out / f"{name}-{m}-{seed}" for m in ("vanilla", a.method)}
            if not a.markdown:
                if not (runs["vanilla"] / "config.json").exists():
                    r2et("train", *data, "--method", "vanilla", "--seed", seed,
                         "--out", str(runs["vanilla"]))  # fmt: skip
                if not (runs[a.method] / "config.json").exists():
                    base = str(runs["vanilla"])
                    weight = [] if a.weight is None else ["--weight", a.weight]
                    weight += [arg for kv in a.param for arg in ("--param", kv)]
                    r2et("train", *data, "--method", a.method, "--pretrained", base, *weight,
                         "--seed", seed, "--out", str(runs[a.method]))  # fmt: skip
                for run in runs.values():
                    result = run / "evaluation_test.json"
                    if (
                        not result.exists()
                        or json.loads(result.read_text())["attacks"]["ensemble"].get("preset")
                        != a.preset
                    ):
                        r2et(
                            "evaluate",
                            str(run),
                            "--preset",
                            a.preset,
                            "--seed",
                            seed,
                            "--overwrite",
                        )
            ev = {m: run / "evaluation_test.json" for m, run in runs.items()}
            if not all(f.exists() for f in ev.values()):
                continue
            r, v = (json.loads(ev[m].read_text()) for m in (a.method, "vanilla"))
            ok = passes(r, v)
            ci = r["faithfulness"]["deletion_gain_ci"]
            missed = [key for key, held in ok.items() if not held]
            verdict = "met" if not missed else "missed: " + ", ".join(missed)
            lines.append(
                f"| {name} | {seed} | {r['attacks']['ensemble']['p_at_k_mean']:.3f} "
                f"({v['attacks']['ensemble']['p_at_k_mean']:.3f}) "
                f"| {r['locality']['distinct_topk_sets']} ({v['locality']['distinct_topk_sets']}) "
                f"| {r['faithfulness']['deletion_gain']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                f"({v['faithfulness']['deletion_gain']:.3f}) "
                f"| {r['accuracy']:.3f} ({v['accuracy']:.3f}) "
                f"| {verdict} |"
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
