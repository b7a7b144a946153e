"""The selection rule of the benchmark tables: which weight setting of a method is reported.

Read by the report and the plots alike (both only read stored results); the rule in words is
:func:`selection_rule_text`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

STABILITY = "ensemble_p_at_k_mean"


def selection_rule_text(
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
) -> str:
    """The selection rule, in words, as printed in the report."""
    faith = (
        ""
        if min_deletion_ratio is None
        else f" and whose mean deletion gain is at least {min_deletion_ratio:g} times vanilla's "
        f"(vanilla's minus {1 - min_deletion_ratio:g} times its size, when vanilla's is negative)"
    )
    local = (
        ""
        if min_distinct_ratio is None
        else f" and whose mean number of distinct top-k sets among the evaluated inputs is at "
        f"least {min_distinct_ratio:g} times vanilla's (no constant explanation)"
    )
    return (
        "Selection rule: for each dataset and method, among its weight settings whose mean "
        f"validation accuracy is at most {100 * max_acc_drop:g} points below vanilla's{faith}"
        f"{local}, "
        "the setting with the highest mean ensemble-attack P@k on the evaluated test inputs "
        "(over seeds) is reported; a method with no such setting reports its most accurate "
        "one, marked with †."
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return m, math.sqrt(var)


def setting_of(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get("weight_name"), row.get("weight")


def select(
    rows: list[dict[str, Any]],
    max_acc_drop: float,
    min_deletion_ratio: float | None = 0.9,
    min_distinct_ratio: float | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Apply the selection rule (:func:`selection_rule_text`). Returns ``{(dataset, method):
    {"rows": [...per seed], "setting": (weight_name, weight), "admissible": bool}}``.

    A setting is admissible when, with means over its seeds and vanilla's,
    ``acc >= acc_vanilla - max_acc_drop``, ``gain >= gain_vanilla - (1 - min_deletion_ratio)
    |gain_vanilla|`` (deletion gain; skipped when None) and ``distinct >= min_distinct_ratio *
    distinct_vanilla`` (distinct top-k sets, the locality check; skipped when None)."""
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
            ok = math.isnan(ref_acc) or acc >= ref_acc - max_acc_drop - 1e-12
            if min_deletion_ratio is not None and not math.isnan(ref_del):
                # ratio * ref for a positive reference, ref - (1 - ratio)|ref| in general, so
                # that vanilla stays admissible against itself when its gain is negative
                floor = ref_del - (1.0 - min_deletion_ratio) * abs(ref_del)
                ok = ok and not math.isnan(gain) and gain >= floor - 1e-12
            if min_distinct_ratio is not None and not math.isnan(ref_distinct):
                distinct = mean_std([r.get("distinct_topk_sets") for r in rs])[0]
                need = min_distinct_ratio * ref_distinct
                ok = ok and not math.isnan(distinct) and distinct >= need - 1e-12
            scored.append((ok, -1.0 if math.isnan(patk) else patk, acc, setting, rs))
        admissible = [s for s in scored if s[0]]
        if admissible:
            best = max(admissible, key=lambda s: (s[1], s[2]))
        else:
            best = max(scored, key=lambda s: s[2])
        chosen[(dataset, method)] = {"rows": best[4], "setting": best[3], "admissible": best[0]}
    return chosen
