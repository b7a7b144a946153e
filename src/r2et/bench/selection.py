"""The selection rule of the benchmark tables: which weight setting of a method is reported.

Read by the report and the plots alike (both only read stored results); the rule in words is
:func:`selection_rule_text`, its settings those of a configuration (:func:`rule_of`). The
keyword defaults of the functions here are the rule of earlier versions (accuracy and mean
deletion gain only); a benchmark passes its configuration's rule, whose defaults
(:class:`~r2et.bench.config.BenchConfig`) also require locality and faithfulness.

Also here: the readable verdict of a stored row (:func:`row_verdict`, :func:`verdict_cell`),
:func:`r2et.verdict.explanation_verdict` of its locality and deletion-gain columns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from r2et.verdict import CI_LEVEL, explanation_verdict

STABILITY = "ensemble_p_at_k_mean"
#: The settings of the selection rule, as keywords of :func:`select` (and of the tables).
RULE_KEYS = ("max_acc_drop", "min_deletion_ratio", "min_distinct_ratio", "require_faithful")
#: Their values for a configuration that lacks one (the rule it was written under).
_EARLIER_RULE = {"min_deletion_ratio": 0.9, "min_distinct_ratio": None, "require_faithful": False}


def rule_of(cfg: Any) -> dict[str, Any]:
    """The selection rule of configuration ``cfg`` (a :class:`~r2et.bench.config.BenchConfig`
    or any object with its attributes) as keywords of :func:`select`."""
    return {"max_acc_drop": cfg.max_acc_drop} | {
        key: getattr(cfg, key, default) for key, default in _EARLIER_RULE.items()
    }


def selection_rule_text(
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> str:
    """The selection rule, in words, as printed in the report (every condition it applies)."""
    if require_faithful:
        ratio = (
            ""
            if min_deletion_ratio is None
            else f" and, when vanilla's mean deletion gain is positive, whose mean deletion gain "
            f"is at least {min_deletion_ratio:g} times vanilla's"
        )
        faith = (
            ", whose deletion gain is distinguishable from 0 on every seed (the lower end of its "
            f"{100 * CI_LEVEL:g}% confidence interval over the evaluated inputs above 0; for "
            f"cells stored without the interval, the gain itself above 0){ratio}"
        )
    elif min_deletion_ratio is not None:
        faith = (
            f" and whose mean deletion gain is at least {min_deletion_ratio:g} times vanilla's "
            f"(vanilla's minus {1 - min_deletion_ratio:g} times its size, when vanilla's is "
            "negative)"
        )
    else:
        faith = ""
    local = (
        ""
        if min_distinct_ratio is None
        else f" and whose mean number of distinct top-k sets among the evaluated inputs is at "
        f"least {min_distinct_ratio:g} times vanilla's with no seed's explanation collapsed "
        "(no constant explanation)"
    )
    reference = (
        " Vanilla is the reference: when its own deletion gain is not distinguishable from 0 "
        "it fails the rule too, and is reported as is, marked with †."
        if require_faithful
        else ""
    )
    return (
        "Selection rule: for each dataset and method, among its weight settings whose mean "
        f"validation accuracy is at most {100 * max_acc_drop:g} points below vanilla's{faith}"
        f"{local}, "
        "the setting with the highest mean ensemble-attack P@k on the evaluated test inputs "
        "(over seeds) is reported; a method with no such setting reports its most accurate "
        f"one, marked with †.{reference}"
    )


def _number(v: Any) -> float | None:
    """``v`` as a float, or None when it is not a finite-or-infinite number (None, NaN, text)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return m, math.sqrt(var)


def setting_of(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get("weight_name"), row.get("weight")


def seed_is_faithful(row: dict[str, Any]) -> bool:
    """Is the row's deletion gain distinguishable from 0 (:func:`row_verdict`):
    ``deletion_gain_ci_low > 0`` (the lower end of the interval of the mean gain), or, for a
    row stored without the interval, ``deletion_gain > 0``; False when neither is a number."""
    return row_verdict(row)["faithful"] is True


def _seeds(rows: list[dict[str, Any]]) -> str:
    seeds = [str(r.get("seed")) for r in rows]
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(seeds)


def select(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
    require_faithful: bool = False,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Apply the selection rule (:func:`selection_rule_text`). Returns ``{(dataset, method):
    {"rows": [...per seed], "setting": (weight_name, weight), "admissible": bool, "failed":
    [conditions the setting fails, in words]}}``.

    A setting is admissible when, with means over its seeds and vanilla's,
    ``acc >= acc_vanilla - max_acc_drop``; ``distinct >= min_distinct_ratio *
    distinct_vanilla`` (distinct top-k sets, the locality check; skipped when None) and, with
    it, no seed's explanation collapsed (:func:`is_collapsed`; vanilla, the reference, is
    exempt); and for
    the deletion gain (faithfulness): with ``require_faithful``, every seed's gain is
    distinguishable from 0 (:func:`seed_is_faithful`) and, when ``gain_vanilla > 0``, ``gain >=
    min_deletion_ratio * gain_vanilla`` (skipped when None), so that vanilla with a gain that is
    not above 0 is not admissible either; without it, ``gain >= gain_vanilla - (1 -
    min_deletion_ratio) |gain_vanilla|`` (skipped when None), which keeps vanilla admissible
    against itself. The checks of a missing vanilla value are skipped."""
    by: dict[tuple[str, str], dict[tuple[Any, Any], list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        by[(r["dataset"], r["method"])][setting_of(r)].append(r)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for (dataset, method), settings in by.items():
        van = [r for rs in by.get((dataset, "vanilla"), {}).values() for r in rs]
        ref_acc = mean_std([r["val_accuracy"] for r in van])[0]
        ref_del = mean_std([r.get("deletion_gain") for r in van])[0]
        ref_distinct = mean_std([r.get("distinct_topk_sets") for r in van])[0]
        scored = []
        for setting, rs in settings.items():
            acc = mean_std([r["val_accuracy"] for r in rs])[0]
            patk = mean_std([r.get(STABILITY) for r in rs])[0]
            gain = mean_std([r.get("deletion_gain") for r in rs])[0]
            failed = []
            if not (math.isnan(ref_acc) or acc >= ref_acc - max_acc_drop - 1e-12):
                failed.append("accuracy")
            if require_faithful:
                unfaithful = [r for r in rs if not seed_is_faithful(r)]
                if unfaithful:
                    failed.append(f"deletion gain not above 0 ({_seeds(unfaithful)})")
                if min_deletion_ratio is not None and not math.isnan(ref_del) and ref_del > 0:
                    if math.isnan(gain) or gain < min_deletion_ratio * ref_del - 1e-12:
                        failed.append(f"deletion gain below {min_deletion_ratio:g} of vanilla's")
            elif min_deletion_ratio is not None and not math.isnan(ref_del):
                # ratio * ref for a positive reference, ref - (1 - ratio)|ref| in general, so
                # that vanilla stays admissible against itself when its gain is negative
                floor = ref_del - (1.0 - min_deletion_ratio) * abs(ref_del)
                if math.isnan(gain) or gain < floor - 1e-12:
                    failed.append("deletion gain below vanilla's floor")
            if min_distinct_ratio is not None and not math.isnan(ref_distinct):
                distinct = mean_std([r.get("distinct_topk_sets") for r in rs])[0]
                need = min_distinct_ratio * ref_distinct
                if math.isnan(distinct) or distinct < need - 1e-12:
                    failed.append(f"distinct top-k sets below {min_distinct_ratio:g} of vanilla's")
                collapsed = [r for r in rs if is_collapsed(r)]
                if collapsed and method != "vanilla":  # a mean must not hide a collapsed seed
                    failed.append(f"collapsed explanation ({_seeds(collapsed)})")
            patk = -1.0 if math.isnan(patk) else patk
            scored.append((not failed, patk, acc, setting, rs, failed))
        admissible = [s for s in scored if s[0]]
        if admissible:
            best = max(admissible, key=lambda s: (s[1], s[2]))
        else:
            best = max(scored, key=lambda s: s[2])
        chosen[(dataset, method)] = {
            "rows": best[4],
            "setting": best[3],
            "admissible": best[0],
            "failed": best[5],
        }
    return chosen


# ---------------------------------------------------------------------------- verdicts
def row_verdict(row: dict[str, Any]) -> dict[str, Any]:
    """:func:`r2et.verdict.explanation_verdict` of a stored row: its ``top_share``,
    ``distinct_per_100`` (for rows of earlier versions ``100 · distinct_topk_sets / n_eval``)
    and ``[deletion_gain_ci_low, deletion_gain_ci_high]``. A row stored without the interval
    but with a ``deletion_gain`` is judged on the gain itself (faithful when ``> 0``, as the
    selection rule does), and its text says that no interval was stored."""
    share = _number(row.get("top_share"))
    per_100 = _number(row.get("distinct_per_100"))
    if per_100 is None:
        distinct, n = _number(row.get("distinct_topk_sets")), _number(row.get("n_eval"))
        per_100 = 100.0 * distinct / n if distinct is not None and n else None
    low, high = _number(row.get("deletion_gain_ci_low")), _number(row.get("deletion_gain_ci_high"))
    ci = (low, high) if low is not None and high is not None else None
    return explanation_verdict(share, per_100, ci, _number(row.get("deletion_gain")))


def verdict_cell(rows: list[dict[str, Any]]) -> str:
    """One table cell for the seeds ``rows`` of a setting: each raised flag with the seeds that
    raise it (``"⚠ collapsed (seed 1)"``, ``"⚠ unfaithful (all seeds)"``), else what holds on
    every seed (``"local, faithful"``), ``"–"`` when nothing was measured. Per seed, so that a
    mean does not hide one collapsed seed."""
    verdicts = [(r, row_verdict(r)) for r in rows]
    parts = []
    for flag in ("collapsed", "unfaithful"):
        hit = [r for r, v in verdicts if flag in v["flags"]]
        if not hit:
            continue
        if len(rows) == 1:
            parts.append(flag)
        elif len(hit) == len(rows):
            parts.append(f"{flag} (all seeds)")
        else:
            parts.append(f"{flag} ({_seeds(hit)})")
    if parts:
        return "⚠ " + "; ".join(parts)
    good = [
        word
        for word, key, value in (("local", "collapsed", False), ("faithful", "faithful", True))
        if verdicts and all(v[key] is value for _, v in verdicts)
    ]
    return ", ".join(good) or "–"


def is_collapsed(row: dict[str, Any]) -> bool:
    """Is the row's explanation collapsed (:func:`row_verdict`; False when not measured)?"""
    return bool(row_verdict(row)["collapsed"])
