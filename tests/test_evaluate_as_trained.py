"""``r2et evaluate RUN`` scores the explanation the run was trained on (issue 28): the rule,
its options and its unit (columns or attribute groups) come from the run's method unless
``--explainer`` / ``--groups`` say otherwise; the written JSON records which explainer."""

from __future__ import annotations

import json

from conftest import requires_data

from r2et import Explainer, build_model, fit, get_method, load_dataset
from r2et.cli import main
from r2et.runs import save_run


def evaluate_json(run, capsys, *extra: str) -> tuple[dict, str]:
    argv = ["evaluate", str(run), "--preset", "fast", "--n", "12", "--no-progress", "--overwrite",
            *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((run / "evaluation_test.json").read_text()), capsys.readouterr().out


def test_evaluate_uses_the_trained_explainer_unless_told(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "breast-cancer", "--method", "r2et", "--k", "5", "--epochs", "1",
            "--param", "explainer=grad_x_input", "--out", str(run), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    res, out = evaluate_json(run, capsys)
    assert res["explainer"]["method"] == "grad_x_input" and res["k"] == 5
    assert "grad_x_input saliency, as the run was trained, top-5" in out
    res, out = evaluate_json(run, capsys, "--explainer", "grad", "--k", "4")
    assert res["explainer"]["method"] == "grad" and res["k"] == 4
    assert "as the run was trained" not in out


def test_a_loss_explainer_is_scored_on_the_logit(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "breast-cancer", "--method", "est-h", "--epochs", "1", "--out", str(run),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    trained = json.loads((run / "config.json").read_text())["method"]["explainer"]
    assert trained["output"] == "loss"
    capsys.readouterr()
    res, _ = evaluate_json(run, capsys)
    assert res["explainer"]["output"] == "logit"


@requires_data
def test_a_run_trained_on_attributes_is_scored_on_attributes(tmp_path, capsys) -> None:
    ds = load_dataset("compas")
    ex = Explainer("grad", groups=ds.groups)
    model = build_model(**ds.default_model, input_shape=ds.input_shape, n_classes=ds.n_classes)
    res = fit(model, get_method("r2et-noh", k=3, explainer=ex), ds, epochs=1, progress=False)
    run = save_run(tmp_path / "run", res.model, res.config, dataset=ds)
    out_json, out = evaluate_json(run, capsys)
    assert out_json["explainer"]["groups"] == ex.config()["groups"]
    assert f"{len(ds.groups)} attribute groups" in out
    out_json, out = evaluate_json(run, capsys, "--explainer", "grad", "--unit", "column")
    assert "groups" not in out_json["explainer"] and "features" in out
    out_json, out = evaluate_json(run, capsys, "--explainer", "grad_x_input")  # the run's unit
    assert out_json["explainer"]["groups"] == ex.config()["groups"]
    assert "grad_x_input saliency, top-" in out and "as the run was trained" not in out
