"""Saliency maps of every method of an image benchmark, clean and attacked, side by side.

    python benchmarks/saliency_figure.py bench-out/cifar10 --out docs/results/cifar10_saliency.png

A command-line front end to :func:`r2et.bench.panels.build_saliency_panel` and
:func:`r2et.bench.plots.plot_saliency_panel` with the attack the table reports: for each
method of the run folder's ``config.json``, the fine-tuned model of the selected setting (the
bench's selection rule, first seed with a saved model) is attacked on the first
``--n-images`` test inputs with the run's ensemble preset (``standard`` unless ``--preset``),
inside the data box, at the dataset's eps and k; the figure shows the clean and attacked
gradient saliency per method and input, the top-k pixels outlined. (The bench's own
``plots/saliency_<dataset>.png`` uses the cheaper ``fast`` preset, stored in ``panels/``.)

``--store DIR`` also stores the panel (inputs, clean and attacked scores, P@k) as
``DIR/panels/saliency_<dataset>.safetensors`` with its JSON description, the layout of a bench
folder's ``panels/`` (:func:`r2et.bench.panels.load_saliency_panel` reads it), so that
``python benchmarks/figures.py cifar10_saliency`` draws the figure again from stored rows:

    python benchmarks/saliency_figure.py bench-cifar10 --store docs/results \
        --out docs/results/cifar10_saliency.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from r2et.bench.config import BenchConfig
from r2et.bench.panels import build_saliency_panel, panel_paths
from r2et.bench.plots import plot_saliency_panel
from r2et.bench.store import ResultStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="benchmark output folder (with config.json, models/)")
    ap.add_argument("--dataset", default=None, help="image dataset of the run (default: first)")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--preset", default=None, help="attack preset (default: the run's)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--out", type=Path, default=Path("saliency.png"))
    ap.add_argument("--store", type=Path, default=None, help="also store the panel under DIR")
    args = ap.parse_args(argv)

    cfg = BenchConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    dataset = args.dataset or cfg.datasets[0]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset or cfg.evaluate.get("preset", "standard")
    rows = ResultStore(args.run).rows()
    panel = build_saliency_panel(args.run, rows, cfg, dataset, args.n_images, preset, device)
    if panel is None:
        print(f"no saved models for {dataset} in {args.run}", file=sys.stderr)
        return 2
    if args.store is not None:
        print(f"stored {store_panel(panel, args.store, dataset)}")
    print(f"wrote {plot_saliency_panel(panel, args.out)}")
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def store_panel(panel: dict, root: Path, dataset: str) -> Path:
    """Store ``panel`` where :func:`r2et.bench.panels.load_saliency_panel` finds it (tensors,
    then the JSON description with their SHA-256, each written whole and renamed)."""
    from safetensors.torch import save

    tensors, desc = panel_paths(root, dataset)
    tensors.parent.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.contiguous() for k, v in panel.items() if k != "meta"})
    _write_atomic(tensors, blob)
    meta = {**panel["meta"], "sha256": hashlib.sha256(blob).hexdigest()}
    _write_atomic(desc, (json.dumps(meta, indent=1) + "\n").encode())
    return desc


if __name__ == "__main__":
    raise SystemExit(main())
