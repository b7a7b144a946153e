"""How the benchmark plots tell methods apart and show what lies behind a number (issue 27).

Every method gets its own colour, marker, line style and bar hatch (:func:`method_styles`), so
that one line never hides under another (r2et's under r2et-mm's) and a plot still reads in
grey. A number that is a mean over seeds is drawn with its spread, min to max over the seeds
(:func:`spread`). An axis that shows a ratio (P@k, accuracy, a deletion gain) is anchored at 0
(:func:`zero_based_limits`). Labels name the attack behind the numbers (:func:`ensemble_label`:
the ensemble and its preset) and the budget (:func:`budget_text`). Helpers only: nothing here
makes or saves a figure (:mod:`r2et.bench.plots` does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COLLAPSED_LABEL",
    "MAJORITY_LABEL",
    "MARKERS",
    "RANDOM_LABEL",
    "SPREAD_NOTE",
    "LINESTYLES",
    "HATCHES",
    "Style",
    "budget_text",
    "ensemble_label",
    "legend_handles",
    "method_styles",
    "panel_title",
    "reference_handles",
    "reference_line",
    "spread",
    "zero_based_limits",
]

#: Legend label of the hollow markers: cells whose explanation is collapsed (r2et.verdict).
COLLAPSED_LABEL = "collapsed top-k"
#: Legend labels of the reference lines, drawn where the rows carry them.
MAJORITY_LABEL = "always the majority class"
RANDOM_LABEL = "random explanation (k/F)"
#: Said in a title when some point is a mean over several seeds.
SPREAD_NOTE = "min–max over seeds"

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
"""Marker of the i-th method (cycled)."""
LINESTYLES = ("-", "--", "-.", ":")
"""Line style of the i-th method (cycled; with :data:`MARKERS`, 12 methods differ in both)."""
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "++", "oo")
"""Bar hatch of the i-th method (cycled)."""


@dataclass(frozen=True)
class Style:
    """How one method is drawn: ``color`` (an RGBA tuple), ``marker``, ``linestyle`` and
    ``hatch`` (for bars)."""

    color: Any
    marker: str
    linestyle: str
    hatch: str


def method_styles(methods: list[str]) -> dict[str, Style]:
    """A distinct :class:`Style` per method, by its position in ``methods`` (pass the same
    order to every plot of a report so that a method keeps its look): tab10 colours (tab20
    beyond 10 methods), and a marker, line style and hatch that differ between neighbours."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    return {
        m: Style(
            color=cmap(i % cmap.N),
            marker=MARKERS[i % len(MARKERS)],
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            hatch=HATCHES[i % len(HATCHES)],
        )
        for i, m in enumerate(methods)
    }


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(v):
            out.append(float(v))
    return out


def spread(values: Iterable[Any]) -> tuple[float, float, float, int]:
    """``(mean, min, max, n)`` of the finite numbers among ``values`` (None, NaN and text are
    left out); ``(nan, nan, nan, 0)`` when there are none."""
    vals = _finite(values)
    if not vals:
        nan = float("nan")
        return nan, nan, nan, 0
    lo, hi = min(vals), max(vals)
    return min(max(math.fsum(vals) / len(vals), lo), hi), lo, hi, len(vals)  # lo <= mean <= hi


def zero_based_limits(
    values: Iterable[Any], top: float | None = None, pad: float = 0.06
) -> tuple[float, float]:
    """Axis limits that include 0 for a ratio axis: ``(0, top)`` when every value is >= 0
    (``top`` the given bound, or the largest value plus ``pad`` of the range), and the lowest
    value minus ``pad`` of the range otherwise, so that a negative value (a deletion gain below
    random) is never cut off and 0 is always on the axis."""
    vals = _finite(values)
    lo = min([0.0, *vals])
    hi = max([0.0, *vals])
    span = (hi - lo) or 1.0
    bottom = 0.0 if lo >= 0 else lo - pad * span
    upper = top if top is not None else hi + pad * span
    return bottom, max(upper, bottom + 1e-9)


def ensemble_label(rows: Iterable[dict[str, Any]], preset: str | None = None) -> str:
    """The attack behind the reported P@k, for a label: ``"the standard ensemble"`` from the
    rows' ``ensemble_preset`` (or ``preset``) column, or ``preset`` when given; ``"the
    ensemble attack"`` when the rows disagree or do not say."""
    if preset is None:
        found = {r.get("ensemble_preset") or r.get("preset") for r in rows}
        found.discard(None)
        preset = found.pop() if len(found) == 1 else None
    return f"the {preset} ensemble" if preset else "the ensemble attack"


def budget_text(eps: Any, image: bool = False) -> str:
    """An l_inf budget for a label: for an ``image`` (pixels in [0, 1]) ``8/255`` when it is a
    whole number of grey levels, else ``0.3``; ``""`` when ``eps`` is not a number."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        return ""
    grey = eps * 255
    if image and 0 < eps < 1 and abs(grey - round(grey)) < 1e-6:
        return f"{round(grey)}/255"
    return f"{eps:g}"


def panel_title(rows: list[dict[str, Any]], dataset: str) -> str:
    """``"adult (k=8, eps=0.3)"``: the dataset with the k and budget its rows share."""
    mine = [r for r in rows if r["dataset"] == dataset]
    ks = {r.get("k") for r in mine} - {None}
    epss = {r.get("eps") for r in mine} - {None}
    image = any(r.get("modality") == "image" for r in mine)
    parts = []
    if len(ks) == 1:
        k = ks.pop()
        parts.append(f"k={int(k) if isinstance(k, float) and k.is_integer() else k}")
    if len(epss) == 1:
        text = budget_text(epss.pop(), image=image)
        if text:
            parts.append(f"eps={text}")
    return f"{dataset} ({', '.join(parts)})" if parts else dataset


def legend_handles(
    styles: dict[str, Style],
    shown: set[str],
    collapsed: bool,
    line: bool,
    extra: Sequence[Any] = (),
) -> list[Any]:
    """Legend handles: each method in ``shown`` with its marker (and line style when
    ``line``), a hollow one labelled :data:`COLLAPSED_LABEL` when some point is ``collapsed``,
    then ``extra`` handles (reference lines)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=st.color, marker=st.marker,
               linestyle=st.linestyle if line else "none", label=m)
        for m, st in styles.items()
        if m in shown
    ]  # fmt: skip
    if collapsed:
        handles.append(
            Line2D([], [], color="grey", marker="o", mfc="none", linestyle="none",
                   label=COLLAPSED_LABEL)
        )  # fmt: skip
    return handles + list(extra)


def reference_line(ax: Any, rows: list[dict[str, Any]], key: str, vertical: bool) -> bool:
    """A dotted line at the mean of ``key`` (``majority_rate``, ``random_p_at_k``) over
    ``rows`` when they carry it; whether one was drawn."""
    mean = spread(r.get(key) for r in rows)[0]
    if math.isnan(mean):
        return False
    (ax.axvline if vertical else ax.axhline)(mean, color="black", ls=":", lw=0.9)
    return True


def reference_handles(majority: bool, random: bool) -> list[Any]:
    """Legend handles of the dotted reference lines that were drawn: the majority-class rate
    (:data:`MAJORITY_LABEL`) and a random explanation's P@k (:data:`RANDOM_LABEL`)."""
    from matplotlib.lines import Line2D

    out = []
    if majority:
        out.append(Line2D([], [], color="black", ls=":", lw=0.9, label=MAJORITY_LABEL))
    if random:
        out.append(Line2D([], [], color="black", ls=":", lw=0.9, label=RANDOM_LABEL))
    return out
