"""Saliency maps of every method of an image benchmark, clean and attacked, side by side.

    python benchmarks/saliency_figure.py bench-out/cifar10 --out docs/results/cifar10_saliency.png

For each method of the run folder's ``config.json`` it loads the fine-tuned model of the
selected setting (the bench's selection rule, first seed), attacks the first ``--n-images``
test inputs with the :class:`~r2et.EnsembleAttack` preset the table reports (``standard`` by
default, inside the data box, at the dataset's eps and k) and draws, per method (rows) and
input (column pairs), the clean and the attacked gradient saliency (each map scaled to its own
maximum; one colour bar) with the top-k pixels outlined and the P@k of the attacked map. The
attack runs on the model's device (``--device``, default: CUDA when available).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from r2et.attacks import EnsembleAttack  # noqa: E402
from r2et.bench.config import BenchConfig  # noqa: E402
from r2et.bench.report import select  # noqa: E402
from r2et.bench.runner import _dataset_settings, _load  # noqa: E402
from r2et.bench.store import ResultStore  # noqa: E402
from r2et.explain import Explainer  # noqa: E402
from r2et.metrics import topk_mask  # noqa: E402
from r2et.train import load_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="benchmark output folder (with config.json, models/)")
    ap.add_argument("--dataset", default=None, help="image dataset of the run (default: first)")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--preset", default=None, help="attack preset (default: the run's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", type=Path, default=Path("saliency.png"))
    args = ap.parse_args(argv)

    import json

    cfg = BenchConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    dataset = args.dataset or cfg.datasets[0]
    rows = ResultStore(args.run).rows()
    chosen = select(rows, cfg.max_acc_drop, cfg.min_deletion_ratio)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or cfg.evaluate.get("preset", "standard")
    models = []
    for method in cfg.methods:
        sel = chosen.get((dataset, method))
        if sel is None:
            continue
        for row in sorted(sel["rows"], key=lambda r: r["seed"]):  # first seed with a model
            folder = args.run / "models" / row["key"]
            if (folder / "model.safetensors").is_file():
                models.append((method, load_run(folder, device=dev).model.eval(), row))
                break
    if not models:
        print(f"no saved models for {dataset} in {args.run}", file=sys.stderr)
        return 2
    seed = models[0][2]["seed"]
    ds = _load(dataset, seed, cfg.to_dict())
    k, eps, _ = _dataset_settings(cfg.to_dict(), ds)
    x = ds.test[0][: args.n_images].to(dev)
    n, (h, w) = len(x), x.shape[-2:]
    bounds = ds.bounds if cfg.evaluate.get("box", True) else None
    ex = Explainer("grad")
    fig, axes = plt.subplots(
        1 + len(models), 2 * n, figsize=(1.7 * 2 * n + 1.2, 1.8 * (1 + len(models))), squeeze=False
    )
    for i in range(n):
        img = x[i].permute(1, 2, 0).squeeze(-1).cpu().numpy()
        axes[0][2 * i].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0][2 * i].set_title(f"input {i}", fontsize=8)
        axes[0][2 * i + 1].axis("off")
    im = None
    for r, (method, model, row) in enumerate(models, start=1):
        res = EnsembleAttack(ex, k, eps, bounds=bounds, preset=preset, seed=seed)(model, x)
        for i in range(n):
            for c, scores in enumerate((res.scores_clean[i], res.scores_adv[i])):
                ax = axes[r][2 * i + c]
                s = scores.view(h, w).detach().cpu()
                im = ax.imshow((s / s.max().clamp_min(1e-12)).numpy(), cmap="magma", vmin=0, vmax=1)
                mask = topk_mask(scores[None], k)[0].view(h, w).float().cpu().numpy()
                ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.6)
                label = "clean" if c == 0 else f"attacked P@{k}={res.p_at_k[i].item():.2f}"
                ax.set_title(label, fontsize=7)
        acc = row.get("accuracy", float("nan"))
        axes[r][0].set_ylabel(f"{method}\nacc {acc:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{dataset}: gradient saliency before/after the {preset} ensemble attack "
        f"(l_inf eps={eps * 255:.0f}/255, top-{k} outlined)",
        fontsize=10,
    )
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="saliency / max of map")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
