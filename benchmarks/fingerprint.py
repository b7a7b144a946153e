"""Determinism fingerprint: SHA-256 of every number r2et computes on a fixed tiny workload.

A refactor that moves code must not change a single bit of what the library computes. This
script computes, with one torch thread and fixed seeds, on breast-cancer (MLP) and digits
(CNN), needing no download:

* for every registered method: the training loss, its logged parts and the parameter
  gradients of one batch (``method.loss`` then ``backward``);
* for every registered explainer: the attributions and the scores, with and without
  ``create_graph`` (the fast path and autograd);
* for every registered attack: the returned points and P@k (small budgets);
* ``evaluate`` on a model (accuracy, P@k, deletion, locality, thickness);
* a 2-method, 1-seed ``run_bench`` grid: its result rows without the timing columns and the
  bookkeeping digests (``*_sha256``).

Each item is hashed over its tensors' raw bytes (float64 values are not rounded), and the
result is a JSON object ``{item: sha256}``. Usage::

    python benchmarks/fingerprint.py --out fp.json            # record
    python benchmarks/fingerprint.py --check fp.json          # compare: exit 1 on a difference

The stored baseline ``benchmarks/fingerprint_baseline.json`` was recorded on the code before
the registry-package refactor (issue 24), after issue 23 (whose changes left all 30 items
identical to the code before it); the refactor left all 30 identical. One item was re-recorded
after it, on purpose: ``attacks/search``, when ``create_attack`` began passing ``norm``,
``bounds`` and ``seed`` to ``RandomSearchAttack`` (which takes them through ``**kwargs``; they
used to be dropped, so ``r2et evaluate --attack search`` ignored the box). Two more were
re-recorded for issue 28: ``evaluate/mlp`` and ``bench/rows``, when ``evaluate`` gained the
keys ``verdict``, ``locality.top_share``, ``locality.distinct_per_100`` and
``faithfulness.deletion_gain_ci`` (every earlier value compared equal, key by key), and again
for issue 27, when it gained ``majority_rate`` and ``random_p_at_k`` (with those two keys
left out, both digests equal the earlier ones). The methods ``r2et-anchor``, ``r2et-keep``,
``r2et-exp-noh`` and ``r2et-profile`` were added when they were registered (every other item
unchanged). It was
recorded on the 2-core x86-64 (AMD EPYC) development machine with torch 2.13.0 (CPU build) and
``OMP_NUM_THREADS=1``. Bits can differ across CPUs, BLAS builds and torch versions: when
``--check`` reports differences, first record the old code's fingerprint on the same machine (a
``git worktree`` of the earlier commit, ``PYTHONPATH`` at its ``src``) and compare with that.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

TIMING_KEYS = ("seconds", "time", "wall", "cpu")


def digest(*items: Any) -> str:
    """SHA-256 over tensors' raw bytes, numbers' ``repr`` and strings (nested lists/dicts)."""
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                h.update(str(key).encode())
                feed(obj[key])
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                feed(v)
            h.update(b"]")
        elif isinstance(obj, float):
            h.update(("nan" if math.isnan(obj) else float.hex(obj)).encode())
        else:
            h.update(repr(obj).encode())

    for item in items:
        feed(item)
    return h.hexdigest()


def _mlp_workload() -> tuple[Any, torch.nn.Module, torch.Tensor, torch.Tensor, dict]:
    from r2et.data import load_dataset
    from r2et.models import build_model

    ds = load_dataset("breast-cancer", seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", list(ds.input_shape), ds.n_classes, hidden=[16, 16])
    x, y, kw = next(iter(ds.batches("train", 32)))
    return ds, model, x, y, kw


def _cnn_workload() -> tuple[Any, torch.nn.Module, torch.Tensor, torch.Tensor]:
    from r2et.data import load_dataset
    from r2et.models import build_model

    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", list(ds.input_shape), ds.n_classes)
    x, y, _ = next(iter(ds.batches("train", 8)))
    return ds, model, x, y


def method_items(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kw: dict) -> dict:
    from r2et.methods import get_method, list_methods

    out = {}
    for name in list_methods():
        torch.manual_seed(1)
        method = get_method(name, k=4)
        net = method.prepare(copy.deepcopy(model))
        net.train()
        loss, logs = method.loss(net, x, y, **kw)
        loss.backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        out[f"methods/{name}"] = digest(loss, logs, grads)
    return out


def explainer_items(prefix: str, model: torch.nn.Module, x: torch.Tensor) -> dict:
    from r2et.explain import Explainer, list_explainers

    out = {}
    model.eval()
    for name in list_explainers():
        kwargs = {"seed": 0, "n_samples": 4} if name == "smoothgrad" else {}
        if name == "ig":
            kwargs = {"n_steps": 8}
        ex = Explainer(name, **kwargs)
        attr = ex.attribute(model, x)
        xg = x.clone().requires_grad_(True)
        s2 = ex.scores(model, xg, create_graph=True)
        (g,) = torch.autograd.grad(s2.sum(), xg)
        out[f"explainers/{prefix}/{name}"] = digest(attr, ex.scores(model, x), s2, g)
    return out


def attack_items(ds: Any, model: torch.nn.Module, x: torch.Tensor) -> dict:
    from r2et.attacks import create_attack, list_attacks
    from r2et.explain import Explainer

    out = {}
    model.eval()
    options = {"ensemble": {"preset": "fast"}, "search": {"steps": 20}}
    for name in list_attacks():
        opts = {"seed": 0, "bounds": ds.bounds, **options.get(name, {"steps": 5})}
        atk = create_attack(name, Explainer("grad"), k=4, eps=0.1, **opts)
        torch.manual_seed(2)
        res = atk(model, x[:16])
        out[f"attacks/{name}"] = digest(res.x_adv, res.p_at_k, res.scores_adv, res.flipped)
    return out


def evaluate_items(ds: Any, model: torch.nn.Module) -> dict:
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer

    ex = Explainer("grad")
    attacks = {"erattack": create_attack("erattack", ex, k=4, eps=0.1, steps=5, seed=0)}
    torch.manual_seed(3)
    report = evaluate(
        model,
        ds,
        ex,
        k=4,
        n=24,
        attacks=attacks,
        thickness_radius=0.1,
        thickness_samples=2,
        thickness_steps=2,
        seed=0,
    )
    return {"evaluate/mlp": digest(_without_timing(report))}


def _without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _without_timing(v)
            for k, v in obj.items()
            if not any(t in str(k).lower() for t in TIMING_KEYS) and not str(k).endswith("_sha256")
        }
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


BENCH_TOML = """
datasets = ["breast-cancer"]
methods = ["vanilla", "r2et"]
seeds = [0]
threads = 1

[pretrain]
epochs = 2
batch_size = 64

[finetune]
epochs = 1
batch_size = 64

[evaluate]
n = 24
steps = 5
preset = "fast"
budgets = [0.5]
thickness_samples = 2
thickness_steps = 2
"""


def bench_items() -> dict:
    from r2et.bench import load_config, run_bench

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.toml"
        path.write_text(BENCH_TOML)
        rows = run_bench(load_config(path), Path(tmp) / "out", progress=False, report=False)
    return {"bench/rows": digest(_without_timing(rows))}


def fingerprint(parts: Iterable[str]) -> dict[str, str]:
    """``{item: sha256}`` for the chosen parts (methods, explainers, attacks, evaluate,
    bench)."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    parts = set(parts)
    out: dict[str, str] = {}
    ds, mlp, x, y, kw = _mlp_workload()
    if "methods" in parts:
        out.update(method_items(mlp, x, y, kw))
    if "explainers" in parts:
        out.update(explainer_items("mlp", mlp, x))
        _, cnn, xc, _ = _cnn_workload()
        out.update(explainer_items("cnn", cnn, xc))
    if "attacks" in parts:
        out.update(attack_items(ds, mlp, x))
    if "evaluate" in parts:
        out.update(evaluate_items(ds, mlp))
    if "bench" in parts:
        out.update(bench_items())
    return out


PARTS = ("methods", "explainers", "attacks", "evaluate", "bench")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the fingerprint JSON here")
    p.add_argument("--check", type=Path, help="compare with this fingerprint JSON")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        p.error(f"unknown part(s) {bad}; allowed: {list(PARTS)}")
    fp = fingerprint(parts)
    if args.out:
        args.out.write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    if args.check:
        ref = json.loads(args.check.read_text())
        ref = {k: v for k, v in ref.items() if k.split("/")[0] in parts}
        keys = sorted(set(ref) | set(fp))
        diff = [k for k in keys if ref.get(k) != fp.get(k)]
        for k in diff:
            print(f"DIFFERENT {k}: {ref.get(k, 'missing')[:12]} -> {fp.get(k, 'missing')[:12]}")
        print(f"{len(keys) - len(diff)} of {len(keys)} items identical")
        return 1 if diff else 0
    if not args.out:
        print(json.dumps(fp, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
