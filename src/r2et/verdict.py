"""A verdict a person can read on an explanation: is it *local* (does it depend on the input)
and is it *faithful* (do the units it names matter to the prediction)?

Stability metrics (P@k, thickness) reward an explanation that does not move. An explanation
that names the same k units for every input does not move at all, so it scores perfectly, yet
it is not a stable explanation but a constant: it says nothing about *this* input. Training
for robust explanations can drive a model there (collapse), and P@k alone cannot tell. The
verdict puts two checks beside P@k:

* **collapse** (locality). Over the N evaluated inputs, with ``S_n`` the top-k set of input n
  and ``S*`` the most common of them:

  - ``top_share = |{n : S_n = S*}| / N``, in ``[1/N, 1]``; lower is more local;
  - ``distinct_per_100 = 100 · |{S_n}| / N``, in ``(0, 100]``; higher is more local.

  The explanation is *collapsed* when ``top_share >= COLLAPSE_TOP_SHARE`` (0.5: at least half
  of the inputs get one and the same explanation) or ``distinct_per_100 <
  COLLAPSE_DISTINCT_PER_100`` (5: fewer than one new top-k set per 20 inputs). A constant
  explanation has ``top_share = 1`` and ``distinct_per_100 = 100/N`` and is flagged by both;
  a per-input explanation of a model with many features has ``top_share`` near ``1/N`` and
  ``distinct_per_100`` near 100. The thresholds are deliberately loose: they flag an
  explanation that has (nearly) stopped depending on its input, not one that merely agrees
  often on a few dominant features.

* **faithfulness** (deletion). The deletion gain of input n is ``g_n = drop_topk −
  drop_random`` (:func:`r2et.metrics.deletion`): how much more the explained class's
  probability falls when the explanation's top-k units are removed than when k random units
  are (each ``g_n`` already averages the random draws). The gain of an explanation that says
  nothing about its input is 0 in expectation: its units are, for the prediction, as good as
  random ones. The explanation is *faithful* when the mean gain is distinguishable from 0:
  the lower end of its ``CI_LEVEL`` (95%) confidence interval (:func:`mean_ci`) is above 0.

Both checks are one-sided tests of "says something about the input"; neither says the
explanation is right. Pure Python (no torch), so that reports and plots can recompute it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

__all__ = [
    "METRIC_HELP",
    "metric_help_line",
    "CI_LEVEL",
    "COLLAPSE_DISTINCT_PER_100",
    "COLLAPSE_TOP_SHARE",
    "explanation_verdict",
    "mean_ci",
]

COLLAPSE_TOP_SHARE = 0.5
"""Collapsed when at least this share of the inputs has the most common top-k set."""
COLLAPSE_DISTINCT_PER_100 = 5.0
"""Collapsed when there are fewer than this many distinct top-k sets per 100 inputs."""
CI_LEVEL = 0.95
"""Confidence level of the deletion-gain interval."""

#: Per metric: (its name, what it means, which way is better), printed by ``r2et evaluate``
#: (:func:`metric_help_line`) and shown beside the numbers in the HTML reports.
# fmt: off
METRIC_HELP: dict[str, tuple[str, str, str]] = {
    "accuracy": ("accuracy", "share of the test split predicted right", "higher"),
    "majority_rate": ("majority class", "accuracy of always predicting one label", "beat it"),
    "p_at_k": ("P@k", "share of an input's top-k still in its top-k after the attack", "higher"),
    "random_p_at_k": ("random k/F", "a random explanation's P@k (F units ranked)", "stay above"),
    "kendall": ("Kendall", "rank correlation of the top-k before and after the attack", "higher"),
    "deletion_gain": ("deletion gain", "how much more the predicted class's probability falls "
                      "when the top-k units are removed than when k random ones are (> 0: the "
                      "units matter to the model)", "higher"),
    "occlusion_agreement": ("occlusion agr.", "P@k of the top-k with occlusion's", "higher"),
    "distinct_topk_sets": ("distinct top-k", "top-k sets of the inputs (few: collapsed)", "higher"),
    "top_share": ("top share", "share of inputs with the most common top-k set", "lower"),
    "global_topk_p_at_k": ("global top-k P@k", "overlap with the overall top-k units", "lower"),
    "thickness": ("thickness", "gap between top-k and other units' saliency nearby", "higher"),
    "ground_truth_precision": ("GT precision", "top-k share in the known explanation", "higher"),
    "seconds": ("seconds", "wall-clock seconds", "lower"),
}
# fmt: on


def metric_help_line(key: str) -> str:
    """One line on metric ``key`` of :data:`METRIC_HELP`: ``"P@k: share of ... (higher is
    better)"``."""
    name, meaning, better = METRIC_HELP[key]
    side = f"{better} is better" if better in ("higher", "lower") else better
    return f"{name}: {meaning} ({side})"


def mean_ci(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    """Normal-approximation confidence interval of the mean of ``values``:
    ``x̄ ± z·s/√n``, with ``s`` the sample standard deviation (``n − 1`` in the denominator)
    and ``z = Φ⁻¹((1 + level)/2)`` (1.96 for 0.95). ``n = 1`` gives ``(v, v)``. ``values`` is
    a non-empty sequence of numbers; ``level`` is in ``(0, 1)``. A non-finite value makes the
    interval NaN."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}")
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(vals) / n
    if n == 1:
        return (mean, mean)
    var = math.fsum((v - mean) ** 2 for v in vals) / (n - 1)
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(var / n)
    return (mean - half, mean + half)


def _locality_text(collapsed: bool, top_share: float | None, per_100: float | None) -> str:
    parts = []
    if top_share is not None:
        which = "one top-k set" if collapsed else "the most common top-k set"
        parts.append(f"{100 * top_share:.0f}% of inputs share {which}")
    if per_100 is not None:
        parts.append(f"{per_100:.3g} distinct sets per 100 inputs")
    body = parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"
    return f"{'collapsed' if collapsed else 'local'}: {body}"


def _faithful_text(faithful: bool, low: float, high: float) -> str:
    # one number of decimals for all three: at least 3, and 2 significant digits of the largest
    top = max((abs(v) for v in (low, high) if math.isfinite(v)), default=0.0)
    d = 3 if top == 0 else min(12, max(3, 1 - math.floor(math.log10(top))))
    gain = f"deletion gain {(low + high) / 2:.{d}f} [{low:.{d}f}, {high:.{d}f}]"
    if faithful:
        return f"faithful: {gain} > 0"
    if high < 0:
        return f"unfaithful: {gain} < 0 (random units matter more)"
    return f"unfaithful: {gain} is not distinguishable from 0"


def explanation_verdict(
    top_share: float | None,
    distinct_per_100: float | None,
    gain_ci: Sequence[float] | None,
    gain: float | None = None,
) -> dict[str, Any]:
    """The collapse and faithfulness verdict (see the module docstring).

    ``top_share`` and ``distinct_per_100`` are :func:`r2et.metrics.locality`'s; ``gain_ci`` is
    the ``(low, high)`` interval of the mean deletion gain (:func:`mean_ci`); a part that was
    not computed is None. Returns ``{"collapsed", "faithful", "flags", "text"}``:

    * ``collapsed``: ``top_share >= COLLAPSE_TOP_SHARE`` or ``distinct_per_100 <
      COLLAPSE_DISTINCT_PER_100`` (of those given); None when both are None;
    * ``faithful``: ``gain_ci[0] > 0``; without an interval, ``gain > 0`` for a bare mean
      ``gain`` (results stored before the interval existed; the text says so); None when
      neither is given;
    * ``flags``: the raised flags, a sublist of ``["collapsed", "unfaithful"]``;
    * ``text``: one line a person can read, e.g. ``"local: 12% of inputs share the most common
      top-k set (64 distinct sets per 100 inputs); faithful: deletion gain 0.051 [0.041,
      0.061] > 0"`` (the gain printed is the interval's centre, the mean).
    """
    for name, v in (("top_share", top_share), ("distinct_per_100", distinct_per_100)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{name} must be a number or None, got {v!r}")
    if gain_ci is not None:
        gain_ci = tuple(float(v) for v in gain_ci)
        if len(gain_ci) != 2:
            raise ValueError(f"gain_ci must be a (low, high) pair or None, got {gain_ci!r}")
    collapsed: bool | None = None
    if top_share is not None or distinct_per_100 is not None:
        collapsed = (top_share is not None and top_share >= COLLAPSE_TOP_SHARE) or (
            distinct_per_100 is not None and distinct_per_100 < COLLAPSE_DISTINCT_PER_100
        )
    if gain is not None and (isinstance(gain, bool) or not isinstance(gain, (int, float))):
        raise ValueError(f"gain must be a number or None, got {gain!r}")
    if gain_ci is not None:
        faithful: bool | None = bool(gain_ci[0] > 0)
        faith_text = _faithful_text(faithful, *gain_ci)
    elif gain is not None:
        faithful = bool(gain > 0)
        word = "faithful" if faithful else "unfaithful"
        faith_text = f"{word}: deletion gain {gain:.3f} (no interval stored)"
    else:
        faithful, faith_text = None, "faithfulness not computed"
    flags = [f for f, on in (("collapsed", collapsed), ("unfaithful", faithful is False)) if on]
    texts = [
        "locality not computed"
        if collapsed is None
        else _locality_text(collapsed, top_share, distinct_per_100),
        faith_text,
    ]
    return {"collapsed": collapsed, "faithful": faithful, "flags": flags, "text": "; ".join(texts)}
