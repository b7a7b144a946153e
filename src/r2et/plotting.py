"""Pictures of single explanations (used by ``r2et explain``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from r2et.describe import unit_labels  # noqa: E402

__all__ = ["plot_explanation", "unit_labels"]


def plot_explanation(
    ds: Any,
    x: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    out: str | Path,
    title: str = "",
    mask: torch.Tensor | None = None,
    groups: Any = None,
) -> Path:
    """Save a PNG of one input's saliency ``scores`` (F,) with its top-k features highlighted.

    Images: the input beside the saliency heat map, top-k pixels circled. Tabular data: the
    2k most important units as bars (top-k in orange) named by :func:`unit_labels`: a column
    with the input's value, or with ``groups`` (scores per attribute) the attribute with the
    row's own category or value.
    Graphs: the saliency of each real node (padded nodes left out), top-k in orange.
    """
    out = Path(out)
    scores = scores.detach().cpu()
    top = set(scores.topk(k).indices.tolist())
    if ds.modality == "image":
        c, h, w = x.shape
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
        img = x.detach().cpu().permute(1, 2, 0).squeeze(-1).numpy()
        axes[0].imshow(img, cmap="gray" if c == 1 else None)
        axes[0].set_title("input")
        im = axes[1].imshow(scores.view(h, w).numpy(), cmap="hot")
        ys = [i // w for i in top]
        xs = [i % w for i in top]
        axes[1].scatter(xs, ys, s=12, facecolors="none", edgecolors="cyan", linewidths=0.8)
        axes[1].set_title(f"saliency, top-{k} circled")
        fig.colorbar(im, ax=axes[1], fraction=0.046)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    else:
        if ds.modality == "graph" and mask is not None:
            keep = mask.detach().cpu().flatten().bool()
            idx = torch.nonzero(keep).flatten().tolist()
        else:
            order = scores.argsort(descending=True).tolist()
            idx = order[: min(len(order), 2 * k)]
        if ds.modality == "tabular":
            labels = unit_labels(ds, x, groups)
            names = [labels[i] for i in idx]
        else:
            names = [ds.feature_names[i] for i in idx]
        colors = ["tab:orange" if i in top else "tab:blue" for i in idx]
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(idx) + 1.2))
        ax.barh(range(len(idx)), [float(scores[i]) for i in idx], color=colors)
        ax.set_yticks(range(len(idx)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("saliency |attribution| (orange: top-k)")
    fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix or '.png'}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    tmp.replace(out)
    return out
