"""Issue 26: attacking integrated gradients and SmoothGrad with a cheaper explanation inside
the gradient steps (``EnsembleAttack(inner="auto")``), the exact one for the reported P@k.

Per setting (dataset, explainer) it trains the dataset's default model with ``vanilla`` (seed
0), then runs the ``--preset`` ensemble on the first ``--n`` test inputs inside the data box
twice per repeat, interleaved in one process with one torch thread: with the exact explainer
in every step (``inner=None``) and with ``inner="auto"`` (``ig``: a quarter of the path
points; ``smoothgrad``: a fifth of the samples). Printed: mean P@k of each (exact scores at
the returned points in both), the per-input differences, and CPU seconds (median of the
repeats, min-max in brackets) with their ratio.

    R2ET_DATA=../shared/data python benchmarks/attack_inner.py \\
        [--settings compas-ig,compas-smoothgrad,mnist5k-ig] [--n 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from r2et import EnsembleAttack, Explainer, fit
from r2et.attacks.pgd import resolve_inner
from r2et.data import load_dataset
from r2et.models import build_model

#: setting -> (dataset, explainer method, explainer options, eps, pre-training epochs)
SETTINGS = {
    "compas-ig": ("compas", "ig", {}, 0.3, 5),
    "compas-smoothgrad": ("compas", "smoothgrad", {"seed": 0}, 0.3, 5),
    "adult-ig": ("adult", "ig", {}, 0.3, 5),
    "mnist5k-ig": ("mnist5k", "ig", {}, 0.1, 2),
    "mnist5k-smoothgrad": ("mnist5k", "smoothgrad", {"seed": 0}, 0.1, 2),
}


def setting(name: str, n: int):
    """``(model, explainer, k, eps, bounds, x)`` of a setting."""
    dataset, method, options, eps, epochs = SETTINGS[name]
    ds = load_dataset(dataset, seed=0)
    spec = dict(ds.default_model)
    arch = spec.pop("name")
    torch.manual_seed(0)
    model = build_model(arch, list(ds.input_shape), ds.n_classes, **spec)
    fit(model, "vanilla", ds, epochs=epochs, seed=0, progress=False)
    groups = getattr(ds, "groups", None) if ds.modality == "tabular" else None
    ex = Explainer(method, groups=groups, **options)
    return model.eval(), ex, ds.default_k, eps, ds.bounds, ds.test[0][:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="compas-ig,compas-smoothgrad,mnist5k-ig")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--preset", default="standard")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"preset {a.preset}, {a.n} inputs, data box, CPU s on one torch thread, "
          f"median of {a.repeats} repeats [min-max], interleaved")  # fmt: skip
    print("| setting | inner | P@k exact inner | P@k inner | inner − exact (inputs lower / "
          "higher) | CPU s exact | CPU s inner | exact / inner |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in a.settings.split(","):
        model, ex, k, eps, bounds, x = setting(name, a.n)
        inner = resolve_inner("auto", ex)
        secs: dict[str, list[float]] = {"exact": [], "inner": []}
        p_at_k: dict[str, torch.Tensor] = {}
        for _ in range(a.repeats):
            for label, opt in (("exact", None), ("inner", "auto")):
                atk = EnsembleAttack(ex, k, eps, bounds=bounds, preset=a.preset, seed=0, inner=opt)
                t0 = time.process_time()
                res = atk(model, x)
                secs[label].append(time.process_time() - t0)
                p_at_k[label] = res.p_at_k
        d = p_at_k["inner"] - p_at_k["exact"]
        med = {key: statistics.median(v) for key, v in secs.items()}
        ratios = [e / i for e, i in zip(secs["exact"], secs["inner"])]
        print(
            f"| {name} | {inner} | {p_at_k['exact'].mean():.3f} | {p_at_k['inner'].mean():.3f} "
            f"| {d.mean():+.3f} ({int((d < 0).sum())} / {int((d > 0).sum())}) "
            f"| {med['exact']:.1f} | {med['inner']:.1f} "
            f"| {med['exact'] / med['inner']:.1f} ({min(ratios):.1f}-{max(ratios):.1f}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
