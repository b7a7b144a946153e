"""Issue 27: ``r2et train`` prints the test accuracy beside the majority-class rate (and warns
below it), and ``r2et train --help`` states the epochs a small CSV really trains."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from r2et.cli import main
from r2et.cli.app import build_parser
from r2et.data._prep import three_way_split
from r2et.data.tabular import SMALL_TABLE_ROWS, small_table_defaults


def _credit_csv(path, flip_test: bool) -> tuple[float, int]:
    """A 40-row CSV (28 ``good``, 12 ``bad``) whose ``signal`` column gives the label away on
    the train and val rows of r2et's seed-0 split; with ``flip_test`` the test rows say the
    opposite, so a model that learnt the signal is right on almost no test row. Returns the
    test split's majority rate and the number of training rows."""
    labels = np.array(["good"] * 28 + ["bad"] * 12)
    codes = np.unique(labels, return_inverse=True)[1]  # classes sorted, as load_csv does
    train, _, test = three_way_split(codes, 0.1, 0.2, 0)
    signal = np.where(labels == "good", 1.0, -1.0)
    if flip_test:
        signal[test] *= -1
    noise = np.random.default_rng(0).normal(size=len(labels)).round(3)
    rows = ["signal,noise,credit"]
    rows += [f"{s},{n},{c}" for s, n, c in zip(signal, noise, labels)]
    path.write_text("\n".join(rows) + "\n")
    majority = np.bincount(codes[test]).max() / len(test)
    return float(majority), len(train)


def _train(path, out, *extra: str) -> int:
    argv = ["train", "csv", "--path", str(path), "--target", "credit", "--out", str(out)]
    return main([*argv, "--no-progress", *extra])


def _epochs_help() -> str:
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    (action,) = (a for a in train._actions if "--epochs" in a.option_strings)
    return action.help


def _help_rule() -> dict[str, int]:
    """The numbers ``--epochs``' help gives for a small CSV."""
    m = re.search(
        r"\(([\d,]+); a csv of < ([\d,]+) training rows: (\d+), or up to (\d+) on < ([\d,]+) "
        r"training rows, about ([\d,]+) steps of (\d+)\)",
        _epochs_help(),
    )
    assert m is not None, _epochs_help()
    names = ("default", "rows", "low", "high", "low_below", "steps", "batch")
    return dict(zip(names, (int(v.replace(",", "")) for v in m.groups())))


def _help_epochs(n_train: int) -> int:
    """The epochs the help promises for a CSV of ``n_train`` training rows."""
    h = _help_rule()
    if n_train >= h["rows"]:
        return h["default"]
    batches = math.ceil(n_train / h["batch"])
    return min(h["high"], max(h["low"], math.ceil(h["steps"] / batches)))


def test_help_states_the_small_table_rule():
    h = _help_rule()
    assert h["rows"] == SMALL_TABLE_ROWS
    for n in [1, 31, 32, 33, 100, 608, 609, 700, 1000, 4999, 5000, 20000]:
        model, fit_kw = small_table_defaults(n)
        assert fit_kw["epochs"] == _help_epochs(n), n
    # "50 from low_below rows up" is where the rule reaches its floor
    assert small_table_defaults(h["low_below"])[1]["epochs"] == h["low"]
    assert small_table_defaults(h["low_below"] - 1)[1]["epochs"] > h["low"]
    assert small_table_defaults(700)[1] == {"epochs": h["low"], "batch_size": h["batch"]}


def test_train_warns_below_the_majority_rate_and_trains_the_helps_epochs(tmp_path, capsys):
    path = tmp_path / "credit.csv"
    majority, n_train = _credit_csv(path, flip_test=True)
    assert _train(path, tmp_path / "run") == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert metrics["majority_rate"] == majority
    assert metrics["test_accuracy"] < majority
    assert f"(majority class {majority:.4f})" in out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "below the majority-class rate" in warnings[0]
    # the default trained (no --epochs given) is what --help says
    assert config["epochs"] == _help_epochs(n_train) == small_table_defaults(n_train)[1]["epochs"]
    assert config["batch_size"] == 32


def test_train_above_the_majority_rate_does_not_warn(tmp_path, capsys):
    path = tmp_path / "credit.csv"
    majority, _ = _credit_csv(path, flip_test=False)
    assert _train(path, tmp_path / "run", "--epochs", "10", "--lr", "0.1") == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > majority and metrics["majority_rate"] == majority
    assert f"(majority class {majority:.4f})" in out and "WARNING" not in out


def test_train_weight_decay_option_is_recorded_and_checked(tmp_path, capsys):
    path = tmp_path / "credit.csv"
    _credit_csv(path, flip_test=False)
    assert _train(path, tmp_path / "run", "--weight-decay", "0.03", "--epochs", "2") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["weight_decay"] == 0.03 and config["keep"] == "best"
    assert "weight decay 0.03" in capsys.readouterr().out
    assert _train(path, tmp_path / "bad", "--weight-decay", "-1") == 2
    err = capsys.readouterr().err
    assert "weight-decay" in err and "Traceback" not in err
