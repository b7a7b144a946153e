"""The bench's selection rule requires locality and faithfulness by default, and a collapsed or
unfaithful explanation is flagged in the report, the printed table and the plots (issue 28).

Every case is built by hand, so that its answer is known: nothing is trained."""

from __future__ import annotations

import json
from typing import Any

import pytest

from r2et.bench import plots
from r2et.bench.cells import flatten_metrics
from r2et.bench.config import SELECTION_KEYS, BenchConfig, load_config
from r2et.bench.report import results_table, summary_text, write_report
from r2et.bench.selection import (
    row_verdict,
    rule_of,
    select,
    selection_rule_text,
    verdict_cell,
)
from r2et.bench.store import REQUIRED_METRICS, ResultStore

NEW_KEYS = ("top_share", "distinct_per_100", "deletion_gain_ci_low", "deletion_gain_ci_high")


def _row(
    method: str,
    weight: float | None,
    seed: int,
    patk: float,
    *,
    val: float = 0.90,
    gain: float = 0.10,
    ci: tuple[float, float] | None = (0.08, 0.12),
    distinct: float = 60,
    share: float | None = 0.05,
) -> dict[str, Any]:
    """A stored bench row of dataset "d" on 100 evaluated inputs (``ci=None``: a row of an
    earlier version, without the interval; ``share=None``: without ``top_share`` and
    ``distinct_per_100``)."""
    row = {
        "dataset": "d",
        "method": method,
        "weight_name": None if weight is None else "lam",
        "weight": weight,
        "seed": seed,
        "key": f"d__{method}__{weight}__seed{seed}",
        "val_accuracy": val,
        "accuracy": val,
        "ensemble_p_at_k_mean": patk,
        "erattack_p_at_k_mean": patk,
        "deletion_gain": gain,
        "occlusion_agreement": 0.5,
        "distinct_topk_sets": distinct,
        "n_eval": 100,
        "curve": {"0.1": patk, "0.2": patk / 2},
    }
    if ci is not None:
        row["deletion_gain_ci_low"], row["deletion_gain_ci_high"] = ci
    if share is not None:
        row["top_share"], row["distinct_per_100"] = share, float(distinct)
    return row


DEFAULT = rule_of(BenchConfig())


def test_defaults_require_locality_and_faithfulness_without_touching_the_digest() -> None:
    cfg = BenchConfig()
    assert cfg.min_distinct_ratio == 0.5 and cfg.require_faithful and cfg.min_deletion_ratio == 0.9
    assert DEFAULT == {
        "max_acc_drop": 0.02,
        "min_deletion_ratio": 0.9,
        "min_distinct_ratio": 0.5,
        "require_faithful": True,
    }
    assert set(DEFAULT) == set(SELECTION_KEYS)
    with pytest.raises(ValueError, match="require_faithful"):
        load_config(require_faithful="yes")
    assert load_config(require_faithful=False, min_distinct_ratio=None).require_faithful is False

    # the selection settings never enter the cells' digest, now or under the earlier rule
    import r2et.bench.runner as runner
    from r2et.bench.store import config_digest

    base = cfg.to_dict()
    off = {**base, "min_distinct_ratio": None, "require_faithful": False}
    assert config_digest(runner._comparable(base)) == config_digest(runner._comparable(off))
    earlier = {k: v for k, v in base.items() if k not in ("min_distinct_ratio", "require_faithful")}
    assert runner._legacy_digests(base) == runner._legacy_digests(earlier)
    assert runner._legacy_digests(off) == runner._legacy_digests(earlier)


def test_rows_carry_the_verdict_columns_and_old_cells_stay_finished(tmp_path) -> None:
    metrics = {
        "accuracy": 0.9,
        "n": 100,
        "faithfulness": {"deletion_gain": 0.05, "deletion_gain_ci": [0.03, 0.07]},
        "locality": {"distinct_topk_sets": 64, "top_share": 0.12, "distinct_per_100": 64.0},
        "verdict": {"collapsed": False, "faithful": True, "flags": [], "text": "local"},
    }
    row = flatten_metrics(metrics)
    assert {k: row[k] for k in NEW_KEYS} == {
        "top_share": 0.12,
        "distinct_per_100": 64.0,
        "deletion_gain_ci_low": 0.03,
        "deletion_gain_ci_high": 0.07,
    }
    assert "verdict" not in row and not set(NEW_KEYS) & set(REQUIRED_METRICS)
    # a cell of an earlier version, without the new columns, counts as finished
    cell = {"dataset": "d", "method": "vanilla", "weight_name": None, "weight": None, "seed": 0}
    store = ResultStore(tmp_path, "digest")
    old = {k: v for k, v in _row("vanilla", None, 0, 0.4, ci=None, share=None).items()}
    old["key"] = "d__vanilla__default__seed0"
    store.save_cell(cell, old)
    assert store.problem(cell) is None and store.is_done(cell)


def test_the_rule_rejects_a_collapsed_cell() -> None:
    """The best-P@k setting names one top-k set for (almost) every input: 1 distinct set per
    100 inputs against vanilla's 60. It is not selected; the local setting is."""
    rows = [
        _row("vanilla", None, 0, 0.40),
        _row("r2et", 0.1, 0, 0.60, distinct=45, share=0.10),  # local, 0.75 of vanilla's sets
        _row("r2et", 10.0, 0, 0.99, distinct=1, share=1.0),  # collapsed: a constant explanation
    ]
    chosen = select(rows, **DEFAULT)
    assert chosen[("d", "r2et")]["setting"] == ("lam", 0.1) and chosen[("d", "r2et")]["admissible"]
    assert row_verdict(rows[2])["flags"] == ["collapsed"]
    only_collapsed = [rows[0], rows[2]]
    sel = select(only_collapsed, **DEFAULT)[("d", "r2et")]
    assert not sel["admissible"] and "distinct top-k sets below 0.5" in sel["failed"][0]
    # the rule of earlier versions (no locality condition) took the constant explanation
    assert select(rows, 0.02)[("d", "r2et")]["setting"] == ("lam", 10.0)


def test_the_rule_rejects_a_gain_whose_interval_includes_zero() -> None:
    """Mean gain above vanilla's, but on seed 1 its interval reaches below 0: not selected."""
    rows = [_row("vanilla", None, s, 0.40) for s in (0, 1)] + [  # fmt: skip
        _row("r2et", 0.1, 0, 0.60),
        _row("r2et", 0.1, 1, 0.62),
        _row("r2et", 1.0, 0, 0.90, gain=0.20, ci=(0.15, 0.25)),
        _row("r2et", 1.0, 1, 0.92, gain=0.10, ci=(-0.01, 0.21)),
    ]
    chosen = select(rows, **DEFAULT)
    assert chosen[("d", "r2et")]["setting"] == ("lam", 0.1)
    assert select(rows, **{**DEFAULT, "require_faithful": False})[("d", "r2et")]["setting"] == (
        "lam",
        1.0,
    )
    bad = select([r for r in rows if r["weight"] != 0.1], **DEFAULT)[("d", "r2et")]
    assert not bad["admissible"] and bad["failed"] == ["deletion gain not above 0 (seed 1)"]
    # and a mean gain below 0.9 of vanilla's positive gain fails, however certain
    low = [*rows[:2], _row("r2et", 3.0, 0, 0.9, gain=0.05, ci=(0.04, 0.06))]
    low.append({**low[-1], "seed": 1})
    assert select(low, **DEFAULT)[("d", "r2et")]["failed"] == [
        "deletion gain below 0.9 of vanilla's"
    ]
    assert verdict_cell([rows[4], rows[5]]) == "⚠ unfaithful (seed 1)"


def test_a_vanilla_gain_below_zero_is_reported_plainly() -> None:
    """Vanilla's own deletion gain is negative (its top-k no better than random, as on
    CIFAR-10): vanilla fails the rule it is the reference of, is reported as is and marked,
    and the report says so; a method with a gain above 0 is admissible (no ratio to a negative
    reference). The rule of earlier versions keeps vanilla admissible against itself."""
    rows = [
        _row("vanilla", None, 0, 0.13, gain=-0.03, ci=(-0.05, -0.01)),
        _row("r2et", 0.1, 0, 0.30, gain=0.02, ci=(0.01, 0.03)),
        _row("r2et", 1.0, 0, 0.60, gain=-0.05, ci=(-0.07, -0.03)),
    ]
    chosen = select(rows, **DEFAULT)
    assert not chosen[("d", "vanilla")]["admissible"]
    assert chosen[("d", "vanilla")]["setting"] == (None, None)
    assert chosen[("d", "r2et")]["setting"] == ("lam", 0.1) and chosen[("d", "r2et")]["admissible"]
    table = results_table(rows, 0.02, **{k: v for k, v in DEFAULT.items() if k != "max_acc_drop"})
    assert "| vanilla † |" in table
    assert "vanilla (the selection rule's reference) does not meet the rule itself" in table
    assert "deletion gain not above 0 (seed 0)" in table
    old = select(rows, 0.02)  # earlier rule: floor 0.1 of |vanilla's| below it
    assert old[("d", "vanilla")]["admissible"] and old[("d", "r2et")]["setting"] == ("lam", 0.1)
    assert "Note:" not in results_table(rows, 0.02)


def test_rows_without_the_interval_are_judged_on_the_gain() -> None:
    """Rows of benches run before the interval existed: a seed's gain must be above 0."""
    rows = [
        _row("vanilla", None, 0, 0.40, ci=None, share=None),
        _row("r2et", 0.1, 0, 0.60, ci=None, share=None),
        _row("r2et", 1.0, 0, 0.99, gain=-0.001, ci=None, share=None),
    ]
    assert select(rows, **DEFAULT)[("d", "r2et")]["setting"] == ("lam", 0.1)
    verdict = row_verdict(rows[2])
    assert verdict["flags"] == ["unfaithful"] and "no interval stored" in verdict["text"]
    assert verdict["collapsed"] is False  # from distinct_topk_sets / n_eval: 60 per 100
    assert verdict_cell(rows[1:2]) == "local, faithful"
    assert verdict_cell([{"seed": 0}]) == "–"


def test_the_rule_text_states_every_condition() -> None:
    text = selection_rule_text(**DEFAULT)
    for part in (
        "2 points below vanilla's",  # accuracy
        "distinguishable from 0 on every seed",  # the interval
        "95% confidence interval",
        "without the interval, the gain itself above 0",  # older rows
        "at least 0.9 times vanilla's",  # the ratio, when vanilla's is positive
        "when vanilla's mean deletion gain is positive",
        "at least 0.5 times vanilla's",  # locality
        "distinct top-k sets",
        "highest mean ensemble-attack P@k",
        "marked with †",
        "Vanilla is the reference",
    ):
        assert part in text, part
    assert "distinguishable" not in selection_rule_text(0.02, 0.9)  # the earlier rule's text
    no_ratio = selection_rule_text(0.02, None, None, True)
    assert "distinguishable from 0" in no_ratio and "times vanilla's" not in no_ratio


def _report_rows() -> list[dict[str, Any]]:
    """r2et's best setting by P@k: mean distinct sets 32 per 100 >= half of vanilla's 60, but
    seed 1 alone has 4 per 100 and 90% of its inputs share one top-k set: collapsed."""
    rows = [_row("vanilla", None, s, 0.40) for s in (0, 1)]
    rows += [
        _row("r2et", 1.0, 0, 0.90, distinct=60, share=0.05),
        _row("r2et", 1.0, 1, 0.95, distinct=4, share=0.90),
        _row("r2et", 0.1, 0, 0.50),
        _row("r2et", 0.1, 1, 0.55),
    ]
    return rows


def test_the_report_marks_a_collapsed_selected_row(tmp_path) -> None:
    rows = _report_rows()
    default = BenchConfig(datasets=["d"], methods=["vanilla", "r2et"], seeds=[0, 1])
    chosen = select(rows, **rule_of(default))[("d", "r2et")]
    assert chosen["setting"] == ("lam", 0.1)  # the mean of distinct sets must not hide seed 1
    lam1 = select([r for r in rows if r["weight"] != 0.1], **rule_of(default))[("d", "r2et")]
    assert not lam1["admissible"] and "collapsed explanation (seed 1)" in lam1["failed"]
    # with the locality condition off the collapsed setting is selected, and marked
    cfg = BenchConfig(
        datasets=["d"], methods=["vanilla", "r2et"], seeds=[0, 1], min_distinct_ratio=None
    )
    assert select(rows, **rule_of(cfg))[("d", "r2et")]["setting"] == ("lam", 1.0)
    table = write_report(tmp_path, rows, cfg)
    report = (tmp_path / "report.md").read_text()
    line = next(x for x in table.splitlines() if x.startswith("| r2et"))
    assert line.rstrip(" |").endswith("⚠ collapsed (seed 1)")
    assert "| Verdict |" in table and "local, faithful" in table  # vanilla's row
    assert selection_rule_text(**rule_of(cfg)) in report and table in report
    assert "*collapsed* when at least 50%" in report  # the verdict's legend
    record = json.loads((tmp_path / "selection.json").read_text())
    assert record["rule"] == rule_of(cfg) and record["rule_text"] in report
    r2et = next(s for s in record["selected"] if s["method"] == "r2et")
    assert r2et["weight"] == 1.0 and r2et["verdicts"]["1"]["flags"] == ["collapsed"]
    assert (tmp_path / "plots" / "stability_vs_faithfulness.png").is_file()
    # what the command line prints: the same rule and table
    printed = summary_text(rows, cfg)
    assert printed.startswith(selection_rule_text(**rule_of(cfg))) and table in printed


def test_plots_draw_collapsed_cells_hollow(tmp_path, monkeypatch) -> None:
    saved: list[Any] = []

    def keep(fig: Any, path: Any) -> Any:
        saved.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    rows = _report_rows()
    plots.plot_stability_vs_faithfulness(rows, tmp_path / "s.png", ["vanilla", "r2et"])
    plots.plot_accuracy_vs_patk(rows, tmp_path / "a.png", ["vanilla", "r2et"])
    # the locality condition off, so that the collapsed setting is the one drawn
    plots.plot_budget_curves(rows, 0.02, tmp_path / "b.png", ["vanilla", "r2et"], **{
        **{k: v for k, v in DEFAULT.items() if k != "max_acc_drop"}, "min_distinct_ratio": None
    })  # fmt: skip
    for fig in saved:
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels == ["vanilla", "r2et", plots.COLLAPSED_LABEL]
        assert plots.COLLAPSED_LABEL in fig._suptitle.get_text()
    faces = [c.get_facecolors() for c in saved[0].axes[0].collections]
    assert any(len(f) == 0 or f[0][3] == 0 for f in faces)  # a hollow group
    assert any(len(f) and f[0][3] > 0 for f in faces)  # and filled ones
    line = next(ln for ln in saved[2].axes[0].get_lines() if ln.get_label() == "r2et")
    assert line.get_markerfacecolor() == "none"
    # without a collapsed cell: no hollow marker, no legend entry
    saved.clear()
    local = [r for r in rows if r["seed"] == 0]
    plots.plot_stability_vs_faithfulness(local, tmp_path / "s.png", ["vanilla", "r2et"])
    assert plots.COLLAPSED_LABEL not in [t.get_text() for t in saved[0].legends[0].get_texts()]
