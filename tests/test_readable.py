"""Issue 27, numbers a person can read: the dataset listing, yardsticks beside accuracy and
P@k, evaluations never silently overwritten, tables explained in the file's own terms, a clear
error for a dict-returning model, and a progress hook per ensemble member."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from torch import nn

from r2et import EnsembleAttack, Explainer, fit
from r2et.cli import main
from r2et.data import load_dataset
from r2et.data.registry import first_sentence, list_datasets, plain_text
from r2et.describe import class_name, explain_row, format_value, unit_labels
from r2et.models import adapt_output, build_model


def test_plain_text_and_first_sentence_by_hand() -> None:
    assert plain_text("see :func:`~r2et.data.load_mnist` and ``x`` (**b**)") == (
        "see load_mnist and x (b)"
    )
    assert plain_text(":class:`a thing <r2et.Explainer>` here") == "a thing here"
    text = "Census data (Kohavi et al., 1996), e.g. income. Second sentence."
    assert first_sentence(text) == "Census data (Kohavi et al., 1996), e.g. income."
    assert first_sentence("Values 1.5 and 2. Next.") == "Values 1.5 and 2."
    assert first_sentence("no full stop") == "no full stop"


def test_datasets_lists_one_plain_line_each(capsys) -> None:
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_datasets()
    for line in lines:
        assert len(line) <= 120, line
        assert "`" not in line and "**" not in line and ":func:" not in line, line
        assert line.rstrip().endswith("."), line  # a whole sentence, not cut


def _tiny_csv(path, n: int = 240) -> None:
    """Age (numeric, whole years), income (numeric), job (categorical) and a label that
    depends on job and age; the classes are named ``no``/``yes``."""
    g = torch.Generator().manual_seed(0)
    jobs = ["clerk", "farmer", "nurse"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["age", "income", "job", "outcome"])
        for _ in range(n):
            age = int(torch.randint(18, 70, (1,), generator=g))
            income = round(float(torch.rand(1, generator=g)) * 5000 + 1000, 2)
            job = jobs[int(torch.randint(0, 3, (1,), generator=g))]
            label = "yes" if (job == "nurse") ^ (age > 45) else "no"
            w.writerow([age, income, job, label])


def test_table_rows_shown_in_the_files_units_and_categories(tmp_path) -> None:
    path = tmp_path / "people.csv"
    _tiny_csv(path)
    rows = list(csv.DictReader(path.open()))
    ds = load_dataset("csv", path=str(path), target="outcome")
    assert ds.name == "people" and ds.info["classes"] == ["no", "yes"]
    assert class_name(ds, 1) == "yes" and class_name(ds, 0) == "no"
    ages = {float(r["age"]) for r in rows}
    incomes = {float(r["income"]) for r in rows}
    x = ds.test[0]
    off = 0
    for i in range(len(x)):
        labels = dict(lab.split(" = ") for lab in unit_labels(ds, x[i], ds.groups))
        shown = float(labels["age"]), float(labels["income"])
        found = shown[0] in ages and any(abs(shown[1] - v) < 0.006 for v in incomes)
        off += not found  # the CSV's own values, not standardised (unless clipped)
    assert off <= ds.info["preprocessing"]["rows_clipped_to_train_range"]["test"]
    for i in range(len(x)):
        labels = dict(lab.split(" = ") for lab in unit_labels(ds, x[i], ds.groups))
        assert x[i][ds.feature_names.index(f"job={labels['job']}")] == 1.0  # the row's own
        columns = unit_labels(ds, x[i])  # columns on request: every one-hot column, 0 or 1
        assert {c.rsplit(" = ", 1)[1] for c in columns if c.startswith("job=")} == {"0", "1"}
    assert format_value(30.0) == "30" and format_value(0.12345678) == "0.123457"


def test_explain_row_ranks_attributes_by_the_datasets_own_explanation(tmp_path) -> None:
    path = tmp_path / "people.csv"
    _tiny_csv(path)
    ds = load_dataset("csv", path=str(path), target="outcome")
    torch.manual_seed(0)
    model = build_model("mlp", ds.input_shape, ds.n_classes, hidden=[16])
    model = fit(model, "vanilla", ds, epochs=2, progress=False).model
    row = explain_row(model, ds, 2)
    ex = ds.explainer()
    scores = ex.scores(model.eval(), ds.test[0][2:3])[0]
    assert row["unit"] == "attribute" and len(row["ranking"]) == 3 == len(ds.group_names)
    assert [e["score"] for e in row["ranking"]] == sorted(scores.tolist(), reverse=True)
    assert [e["position"] for e in row["ranking"]] == scores.argsort(descending=True).tolist()
    assert [e["top_k"] for e in row["ranking"]] == [r <= row["k"] for r in range(1, 4)]
    assert row["label"] in ("no", "yes") and row["predicted"] in ("no", "yes")
    with pytest.raises(ValueError, match="index must be an int"):
        explain_row(model, ds, len(ds.test[0]))


def test_explain_cli_prints_the_ranking_with_class_names(tmp_path, capsys) -> None:
    path = tmp_path / "people.csv"
    _tiny_csv(path)
    run = tmp_path / "run"
    data = ["csv", "--path", str(path), "--target", "outcome"]
    assert main(["train", *data, "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    png = tmp_path / "row.png"
    assert main(["explain", str(run), "--index", "0", "--k", "2", "--out", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.match(r"people test\[0\]: label (no|yes), predicted (no|yes) \(p = 0\.\d\d\)", out[0])
    assert out[1].startswith("top-2 (grad_x_input, attributes")
    assert [line.split(". ", 1)[1].split(" = ")[0] for line in out[2:4]] != []
    assert png.is_file()


class _Constant(nn.Module):
    """Always predicts class 1 on inputs of 4 features."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.mul_(0.01)
            self.lin.bias.copy_(torch.tensor([-5.0, 5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_evaluate_prints_yardsticks_and_keeps_earlier_results(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "breast-cancer", "--epochs", "1", "--out", str(run), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    ev = ["evaluate", str(run), "--n", "10", "--preset", "fast", "--no-progress"]
    assert main(ev) == 0
    out = capsys.readouterr().out
    first = json.loads((run / "evaluation_test.json").read_text())
    y = load_dataset("breast-cancer").test[1].tolist()
    assert first["majority_rate"] == max(y.count(c) for c in set(y)) / len(y)
    assert f"always predicting the majority class: {first['majority_rate']:.4f}" in out
    assert f"random explanation {8 / 30:.3f}" in out  # k / F for breast-cancer
    assert "what the numbers mean:" in out and "deletion gain:" in out
    assert main([*ev, "--seed", "1", "--no-guide"]) == 0
    out = capsys.readouterr().out
    assert "what the numbers mean" not in out
    assert "evaluation_test-2.json (earlier results kept: evaluation_test.json)" in out
    assert json.loads((run / "evaluation_test.json").read_text()) == first  # untouched
    assert main([*ev, "--overwrite", "--n", "12"]) == 0
    assert json.loads((run / "evaluation_test.json").read_text())["n"] == 12
    assert not (run / "evaluation_test-3.json").exists()


def test_evaluate_warns_below_the_majority_rate() -> None:
    from r2et import evaluate

    x = torch.randn(30, 4)
    y = torch.tensor([0] * 20 + [1] * 10)
    res = evaluate(_Constant(), (x, y), "grad", k=2, faithfulness=False)
    assert res["accuracy"] == pytest.approx(10 / 30) and res["majority_rate"] == pytest.approx(
        20 / 30
    )
    assert res["random_p_at_k"] == 0.5


class _DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(x)}


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: Explainer("grad").scores(m, x),
        lambda m, x, y: Explainer("grad_x_input").scores(m, x),
        lambda m, x, y: EnsembleAttack(Explainer("grad"), 2, 0.3, preset="fast")(m, x),
        lambda m, x, y: __import__("r2et").evaluate(m, (x, y), "grad", k=2),
        lambda m, x, y: fit(m, "vanilla", (x, y), epochs=1, progress=False),
    ],
)
def test_a_dict_model_is_told_to_use_adapt_output(call) -> None:
    x, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    with pytest.raises(ValueError, match=r"adapt_output\(model, 'logits'\)"):
        call(_DictModel(), x, y)
    adapted = adapt_output(_DictModel(), "logits")
    call(adapted, x, y)  # the wrapped model runs


def test_ensemble_tells_each_member_and_the_bar_counts_them() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(5, 6)
    atk = EnsembleAttack(Explainer("grad"), 2, 0.3, preset="fast", early_stop=False)
    seen: list[str] = []
    atk.on_member = lambda name, seconds: seen.append(name)
    atk(model, x)
    assert seen == [name for name, _ in atk.attacks(model, x)]
    assert list(atk.last_seconds) == seen


def test_report_cli_writes_one_html_file_for_a_run(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "breast-cancer", "--epochs", "1", "--out", str(run), "--no-progress"]
    assert main(args) == 0
    assert main(["evaluate", str(run), "--n", "10", "--preset", "fast", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--examples", "1"]) == 0
    page = (run / "report.html").read_text()
    assert capsys.readouterr().out.strip() == f"-> {run / 'report.html'}"
    assert "majority class" in page and "random explanation k/F" in page
    assert page.count("data:image/png;base64,") >= 2  # the P@k chart and one saliency drawing
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # a folder without config.json
