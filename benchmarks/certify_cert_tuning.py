"""Issue 25's tuning of ``r2et-cert`` for larger certified radii, selected on validation rows
only and then reported on test rows.

    R2ET_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/certify_cert_tuning.py
        [--seeds 0] [--epochs 3] [--n 100] [--k 4] [--lams 0.03,0.1,0.3,1.0]
        [--cert-eps 0.02,0.05,0.1,0.2] [--preset standard]

Per seed, the recipe of ``benchmarks/certify_patterns.py`` with that seed everywhere (the COMPAS
split, the initialisation, the shuffling): a vanilla MLP pre-trained 5 epochs, then one copy
fine-tuned ``--epochs`` epochs with ``r2et-cert`` at every ``lam`` x ``cert_eps`` of the grid
(the data's explanation, gradient x input per attribute, and ``k``). ``vanilla`` is the
pre-trained model itself, as in the recipe; ``vanilla +E`` (a copy fine-tuned the same epochs
with cross-entropy alone) is shown for context and takes no part in the rule.

Selection, on the **validation** split only: per setting the median and mean certified l_inf
radius with ``bound="crown"`` on the first ``--n`` validation rows (inside the data box), the
validation accuracy (all validation rows), the distinct top-k sets among those rows and the
deletion gain with its 95% interval (``r2et.evaluate``, ``split="val"``). Admissible: accuracy
>= vanilla's - 0.01, distinct sets >= half of vanilla's, the gain interval's lower end > 0 and
(when vanilla's gain is positive) the gain >= 0.9 x vanilla's. The admissible setting with the
largest median validation CROWN radius (ties: the larger mean) is selected.

Test report, for vanilla, the library's default ``r2et-cert`` (lam 0.1, cert_eps 0.05) and the
selected setting: on the first ``--n`` test rows the accuracy (whole test split), distinct
top-k sets, the deletion gain [95% CI], the median and mean radius with ``bound="crown"`` and
``bound="patterns"`` and their CPU seconds (``time.process_time``, one torch thread), and a
check from outside: the ``--preset`` ensemble attacks every row at 0.999 x its pattern radius
(``certify_patterns.attacked_changes``); no top-k set may change. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from certify_patterns import attacked_changes, pretrained_compas  # noqa: E402

from r2et import evaluate, fit  # noqa: E402
from r2et.certify import certified_radius  # noqa: E402
from r2et.methods import get_method  # noqa: E402
from r2et.train import method_defaults, method_explanation  # noqa: E402

DEFAULT = (0.1, 0.05)  # the library's r2et-cert (lam, cert_eps)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _cert_method(ds: Any, lam: float, cert_eps: float) -> Any:
    """``r2et-cert`` as ``fit`` builds it from the name, with ``lam`` and ``cert_eps`` set."""
    kw = {**method_explanation("r2et-cert", ds), **method_defaults("r2et-cert", ds)}
    return get_method("r2et-cert", k=ds.default_k, **{**kw, "lam": lam, "cert_eps": cert_eps})


def _clean(model: Any, ds: Any, ex: Any, k: int, split: str, n: int, seed: int) -> dict:
    """Accuracy (whole split), distinct top-k sets and deletion gain [CI] of the first ``n``
    rows of ``split`` (no attack)."""
    res = evaluate(model, ds, ex, k=k, attacks={}, split=split, n=n, seed=seed)
    gain = res["faithfulness"]["deletion_gain"]
    lo, hi = res["faithfulness"]["deletion_gain_ci"]
    return {
        "acc": res["accuracy"],
        "distinct": res["locality"]["distinct_topk_sets"],
        "gain": gain,
        "gain_lo": lo,
        "gain_hi": hi,
        "n": res["n"],
    }


def _radius(model: Any, x: torch.Tensor, ex: Any, k: int, ds: Any, bound: str) -> tuple:
    t0 = time.process_time()
    res = certified_radius(model, x, ex, k, bound=bound, bounds=ds.bounds)
    cpu = time.process_time() - t0
    return res.radius.double(), cpu


def _failures(row: dict, ref: dict) -> list[str]:
    """What ``row`` fails of the admissibility rule against vanilla's ``ref`` (empty: none)."""
    fails = []
    if row["acc"] < ref["acc"] - 0.01 - 1e-12:
        fails.append("accuracy")
    if row["distinct"] < ref["distinct"] / 2:
        fails.append("locality")
    if not row["gain_lo"] > 0:
        fails.append("gain CI")
    if ref["gain"] > 0 and row["gain"] < 0.9 * ref["gain"]:
        fails.append("gain < 0.9 x vanilla")
    return fails


def _gain(r: dict) -> str:
    return f"{r['gain']:.3f} [{r['gain_lo']:.3f}, {r['gain_hi']:.3f}]"


def _label(key: Any) -> str:
    if isinstance(key, tuple):
        return f"r2et-cert lam {key[0]:g}, eps {key[1]:g}"
    return key


def run_seed(seed: int, a: argparse.Namespace) -> dict:
    """Selection on validation rows and the report on test rows for one seed."""
    ds, base = pretrained_compas(seed)
    k = a.k or ds.default_k
    base.eval()
    ex = ds.explainer()
    xv = ds.subset("val", a.n)[0]
    xt = ds.subset("test", a.n)[0]

    models: dict[Any, Any] = {"vanilla": base}
    fit_cpu: dict[Any, float] = {"vanilla": float("nan")}
    keys: list[Any] = [f"vanilla +{a.epochs}"] + [(lam, e) for lam in a.lams for e in a.eps]
    if DEFAULT not in keys:  # always reported on test
        keys.append(DEFAULT)
    for key in keys:
        method = "vanilla" if isinstance(key, str) else _cert_method(ds, *key)
        t0 = time.process_time()
        model = fit(copy.deepcopy(base), method, ds, epochs=a.epochs, seed=seed, progress=False)
        fit_cpu[key] = time.process_time() - t0
        models[key] = model.model.eval()

    val: dict[Any, dict] = {}
    for key, model in models.items():
        row = _clean(model, ds, ex, k, "val", a.n, seed)
        r, cpu = _radius(model, xv, ex, k, ds, "crown")
        row.update(median=float(r.median()), mean=float(r.mean()), cpu=cpu, fit=fit_cpu[key])
        val[key] = row
    ref = val["vanilla"]
    grid = [key for key in models if isinstance(key, tuple)]
    for key in models:
        val[key]["fails"] = _failures(val[key], ref) if key in grid else None
    ok = [key for key in grid if not val[key]["fails"]]
    selected = max(ok, key=lambda q: (val[q]["median"], val[q]["mean"])) if ok else None

    print(f"### Seed {seed}: validation grid\n")
    print(f"COMPAS seed {seed}, k = {k}, first {len(xv)} validation rows (accuracy: all "
          f"{len(ds.val[0])}), {ex.method} per attribute, data box; bound = crown\n")  # fmt: skip
    print("| model | val acc | distinct top-k / n | deletion gain [95% CI] "
          "| median crown radius | mean crown radius | fit CPU s | admissible |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for key, r in val.items():
        if r["fails"] is None:
            adm = "reference" if key == "vanilla" else "– (context)"
        else:
            adm = "yes" if not r["fails"] else "no: " + ", ".join(r["fails"])
        if key == selected:
            adm += " **(selected)**"
        if key == DEFAULT:
            adm += " (default)"
        fit_s = "– (pre-trained)" if key == "vanilla" else f"{r['fit']:.1f}"
        print(
            f"| {_label(key)} | {r['acc']:.3f} | {r['distinct']} / {r['n']} | {_gain(r)} "
            f"| {r['median']:.4f} | {r['mean']:.4f} | {fit_s} | {adm} |",
            flush=True,
        )
    print()

    test: dict[Any, dict] = {}
    for key in dict.fromkeys(["vanilla", DEFAULT, selected]):
        if key is None:
            continue
        model = models[key]
        row = _clean(model, ds, ex, k, "test", a.n, seed)
        rc, cpu_c = _radius(model, xt, ex, k, ds, "crown")
        rp, cpu_p = _radius(model, xt, ex, k, ds, "patterns")
        changed, tried = attacked_changes(model, ds, ex, k, xt, rp, 0.999, a.preset)
        row.update(
            crown_median=float(rc.median()), crown_mean=float(rc.mean()), crown_cpu=cpu_c,
            pat_median=float(rp.median()), pat_mean=float(rp.mean()), pat_cpu=cpu_p,
            changed=changed, tried=tried, fit=fit_cpu[key],
        )  # fmt: skip
        test[key] = row
        print(f"(seed {seed}: {_label(key)} on test done)", file=sys.stderr, flush=True)
    return {"seed": seed, "k": k, "selected": selected, "val": val, "test": test}


def _role(key: Any, selected: Any) -> str:
    roles = []
    if key == "vanilla":
        return "vanilla"
    if key == DEFAULT:
        roles.append("default")
    if key == selected:
        roles.append("selected")
    return " = ".join(roles)


def print_test(results: list[dict], n: int) -> None:
    print("### Test rows\n")
    print(f"The first {n} test rows of each seed's split (accuracy: the whole test split); "
          "CPU s: the certificate for the rows, one torch thread; the last column: the "
          "ensemble at 0.999 x each row's pattern radius.\n")  # fmt: skip
    print("| seed | model | role | test acc | distinct top-k / n | deletion gain [95% CI] "
          "| crown median | crown mean | crown CPU s | patterns median | patterns mean "
          "| patterns CPU s | changed at 0.999 r |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for key, r in res["test"].items():
            print(
                f"| {res['seed']} | {_label(key)} | {_role(key, res['selected'])} "
                f"| {r['acc']:.3f} | {r['distinct']} / {r['n']} | {_gain(r)} "
                f"| {r['crown_median']:.4f} | {r['crown_mean']:.4f} | {r['crown_cpu']:.1f} "
                f"| {r['pat_median']:.4f} | {r['pat_mean']:.4f} | {r['pat_cpu']:.1f} "
                f"| {r['changed']} of {r['tried']} |"
            )
    print()
    print("### Selected setting per seed (test rows, pattern bound)\n")
    print("| seed | selected (lam, cert_eps) | median radius: selected / default / vanilla "
          "| selected ÷ default | selected ÷ vanilla | test acc: selected / default / vanilla "
          "| acc: selected − vanilla (points) | distinct: selected / default / vanilla "
          "| deletion gain: selected / default / vanilla |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for res in results:
        t, sel = res["test"], res["selected"]
        if sel is None:
            print(f"| {res['seed']} | none admissible | | | | | | | |")
            continue
        s, d, v = t[sel], t[DEFAULT], t["vanilla"]
        rows.append((s, d, v))
        _summary_row(str(res["seed"]), f"{sel[0]:g}, {sel[1]:g}", s, d, v)
    if len(rows) > 1:
        mean = [{key: sum(r[i][key] for r in rows) / len(rows) for key in rows[0][i]}
                for i in range(3)]  # fmt: skip
        _summary_row("mean", "–", *mean)
    print()


def _summary_row(seed: str, setting: str, s: dict, d: dict, v: dict) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b > 0 else "–"

    def dist(r: dict) -> str:
        return f"{r['distinct']:.3g}"

    print(
        f"| {seed} | {setting} "
        f"| {s['pat_median']:.4f} / {d['pat_median']:.4f} / {v['pat_median']:.4f} "
        f"| {ratio(s['pat_median'], d['pat_median'])} "
        f"| {ratio(s['pat_median'], v['pat_median'])} "
        f"| {s['acc']:.3f} / {d['acc']:.3f} / {v['acc']:.3f} "
        f"| {100 * (s['acc'] - v['acc']):+.1f} "
        f"| {dist(s)} / {dist(d)} / {dist(v)} "
        f"| {s['gain']:.3f} / {d['gain']:.3f} / {v['gain']:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0", help="comma-separated, e.g. 0,1,2")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    p.add_argument("--n", type=int, default=100, help="validation and test rows")
    p.add_argument("--k", type=int, default=None)
    p.add_argument("--lams", default="0.03,0.1,0.3,1.0")
    p.add_argument("--cert-eps", default="0.02,0.05,0.1,0.2")
    p.add_argument("--preset", default="standard")
    a = p.parse_args(argv)
    a.lams, a.eps = _floats(a.lams), _floats(a.cert_eps)
    torch.set_num_threads(1)
    t0 = time.process_time()
    results = [run_seed(int(s), a) for s in a.seeds.split(",") if s.strip()]
    print_test(results, a.n)
    print(f"Total CPU time: {time.process_time() - t0:.0f} s (one torch thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
