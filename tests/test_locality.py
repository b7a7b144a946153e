"""Issue 28, items 2 and 3: the explanation of a table is gradient x input per attribute by
default (training, attacks, evaluation, explain), and the R2ET whose finite-difference
Hessian probes along data directions on the model's gradient. Each numeric piece against an
independent computation: a per-sample ``torch.func`` loop, central finite differences."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, make_mlp, requires_data

from r2et import Explainer
from r2et.methods import MethodRow, get_method, method_row, registered_method
from r2et.methods.hessian import FiniteDifferenceHessian, data_direction
from r2et.methods.ranking import RankingGap
from r2et.metrics import topk_mask


def _x(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(n, c=3, seed=2):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------- data directions
def test_data_direction_points_at_the_next_input_with_unit_linf_norm():
    x = _x((7, 5))
    fallback = torch.full_like(x, 9.0)
    v = data_direction(x, fallback)
    assert v.shape == x.shape
    for i in range(7):  # brute force, one row at a time
        d = x[(i + 1) % 7] - x[i]
        torch.testing.assert_close(v[i], d / d.abs().max())
    torch.testing.assert_close(v.abs().amax(1), torch.ones(7, dtype=x.dtype))


def test_data_direction_falls_back_without_a_distinct_neighbour():
    x = _x((3, 4))
    fallback = -torch.ones_like(x)
    assert torch.equal(data_direction(x[:1], fallback[:1]), fallback[:1])
    twins = torch.cat([x[:1], x[:1], x[1:2]])
    v = data_direction(twins, fallback)
    assert torch.equal(v[0], fallback[0])  # row 0 equals row 1: no direction
    d = twins[2] - twins[1]
    torch.testing.assert_close(v[1], d / d.abs().max())


def test_term_rejects_unknown_direction_and_target():
    with pytest.raises(ValueError, match="direction"):
        FiniteDifferenceHessian(direction="random")
    with pytest.raises(ValueError, match="on"):
        FiniteDifferenceHessian(on="scores")


# --------------------------------------------------------------- the term, brute force
def _per_sample_logit_grad(model, xi, c):
    return torch.func.grad(lambda z: model(z.unsqueeze(0))[0, c])(xi)


@pytest.mark.parametrize("rule", ["grad", "grad_x_input"])
def test_data_gradient_term_matches_a_per_sample_loop(rule):
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    h, groups = 0.3, [[0, 1, 2], [3], [4, 5], [6], [7, 8, 9]]
    m = get_method("r2et-data", k=2, explainer=Explainer(rule, groups=groups), h=h, lam=0.0, mu=1.0)
    assert isinstance(m.row.terms[1], FiniteDifferenceHessian)
    assert (m.row.terms[1].direction, m.row.terms[1].on) == ("data", "gradient")
    _, logs = m.loss(model, x, y)
    t = model(x).argmax(1)
    v = torch.stack(
        [(x[(i + 1) % 6] - x[i]) / (x[(i + 1) % 6] - x[i]).abs().max() for i in range(6)]
    )
    ref = []
    for i in range(6):
        g0 = _per_sample_logit_grad(model, x[i], int(t[i]))
        g1 = _per_sample_logit_grad(model, x[i] + h * v[i], int(t[i]))
        ref.append((g1 - g0).norm() / g0.norm() / h)
    assert logs["hess"] == pytest.approx(float(torch.stack(ref).mean().detach()), rel=1e-9)
    assert logs["hess"] > 0


def test_paper_form_is_kept_under_its_own_name():
    row = method_row("r2et-paper")
    assert [type(t) for t in row.terms] == [RankingGap, FiniteDifferenceHessian]
    assert (row.terms[1].direction, row.terms[1].on) == ("sign", "attribution")
    assert row.defaults["lam"] == 0.01 and row.defaults["mu"] == 0.1
    default = method_row("r2et")  # the default: the gap alone (docs/faithfulness.md)
    assert [type(t) for t in default.terms] == [RankingGap] and default.defaults["lam"] == 0.03


def test_new_term_parameter_gradient_matches_central_finite_differences():
    """The double-backward through both gradients is right: <dL/dθ, d> against
    (L(θ + εd) − L(θ − εd)) / 2ε on a smooth float64 model."""
    model, x, y = make_mlp(activation="softplus"), _x((5, 10)), _labels(5)
    ex = Explainer("grad_x_input", groups=[[0, 1], [2, 3, 4], [5], [6, 7], [8, 9]])
    m = get_method("r2et-data", k=2, explainer=ex, lam=0.3, mu=0.7, h=0.2)

    def loss():
        return m.loss(model, x, y)[0]

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params)
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum((g * d).sum() for g, d in zip(grads, direction))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d, alpha=eps)
    up = loss().detach()
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d, alpha=-2 * eps)
    down = loss().detach()
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(d, alpha=eps)
    numeric = (up - down) / (2 * eps)
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


def test_sign_gradient_form_equals_the_paper_form_for_gradient_saliency():
    """With gradient saliency the gradient is the attribution: on="gradient" changes nothing."""
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    rows = {
        "fd-a": MethodRow("a", (RankingGap(), FiniteDifferenceHessian()), {}, "lam"),
        "fd-g": MethodRow("g", (RankingGap(), FiniteDifferenceHessian(on="gradient")), {}, "lam"),
    }
    with registered_method("fd-a", rows["fd-a"]), registered_method("fd-g", rows["fd-g"]):
        a = get_method("fd-a", k=3).loss(model, x, y)[1]["hess"]
        g = get_method("fd-g", k=3).loss(model, x, y)[1]["hess"]
    assert a == pytest.approx(g, rel=1e-12)


def test_linear_model_gradient_x_input_is_local_where_the_gradient_is_global():
    """Why the curvature term collapses gradient saliency: a model with zero input Hessian has
    one gradient for every input (one top-k for everybody), while its gradient x input still
    depends on the input."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(10, 2).double()
    x = _x((50, 10))
    grad_top = topk_mask(Explainer("grad").scores(lin, x, 0), 3)
    gxi_top = topk_mask(Explainer("grad_x_input").scores(lin, x, 0), 3)
    assert len({tuple(r.tolist()) for r in grad_top}) == 1
    assert len({tuple(r.tolist()) for r in gxi_top}) > 10


# ------------------------------------------------------------- the table's explanation
@requires_data
def test_compas_explains_attributes_with_gradient_x_input_by_default():
    from r2et.data import load_dataset

    ds = load_dataset("compas")
    assert ds.default_explainer["method"] == "grad_x_input"
    assert ds.default_explainer["groups"] == ds.groups
    assert ds.default_k == 4 and ds.default_params == {"r2et": {"lam": 0.3}}
    ex = ds.explainer()
    assert ex.method == "grad_x_input" and ex.n_groups == len(ds.groups)
    assert ds.explainer(groups=None).n_groups is None
    m = get_method("r2et", k=ds.default_k, explainer=ds.default_explainer)
    assert m.explainer.n_groups == len(ds.groups)


def test_numeric_table_keeps_the_gradient_over_columns(tmp_path):
    from r2et.data import load_dataset

    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(200, 4, generator=gen)
    lines = ["a,b,c,d,label"] + [
        ",".join(f"{v:.4f}" for v in row) + f",{int(row[0] > 0)}" for row in xs.tolist()
    ]
    path = tmp_path / "num.csv"
    path.write_text("\n".join(lines) + "\n")
    ds = load_dataset("csv", path=str(path), target="label")
    assert ds.default_explainer == {"method": "grad"}
    assert ds.default_k == 3 and ds.default_params == {}


def _german(tmp_path: Path, rows: int = 300) -> Path:
    spec = importlib.util.spec_from_file_location("german_like", ROOT / "benchmarks/german_like.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path / "german.csv"
    mod.write_csv(path, mod.make_german_like(rows, seed=0))
    return path


def test_cli_train_evaluate_explain_share_the_attribute_unit(tmp_path, capsys):
    from r2et.cli import main

    csv = _german(tmp_path)
    run = tmp_path / "run"
    data = ["--path", str(csv), "--target", "credit"]
    args = ["train", "csv", *data, "--method", "r2et", "--epochs", "1", "--out", str(run)]
    assert main([*args, "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    ex = config["method"]["explainer"]
    assert ex["method"] == "grad_x_input" and len(set(ex["groups"])) == 20
    assert config["method"]["k"] == 4
    assert config["method"]["hyperparameters"]["lam"] == 0.3  # the table's suggestion
    capsys.readouterr()
    evaluate = ["evaluate", str(run), "--n", "20", "--preset", "fast", "--no-progress"]
    assert main(evaluate) == 0
    out = capsys.readouterr().out
    assert "as the run was trained, top-4 of 20 attribute groups" in out
    assert main([*evaluate, "--unit", "column"]) == 0
    assert "top-4 of features" in capsys.readouterr().out
    assert main([*evaluate, "--unit", "attribute"]) == 0  # the run's own unit, named
    assert "as the run was trained, top-4 of 20 attribute groups" in capsys.readouterr().out
    png = tmp_path / "x.png"
    assert main(["explain", str(run), "--index", "3", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.is_file() and "top-4 (grad_x_input, attributes" in out
    import csv as csvmod

    from r2et.data import load_dataset

    ds = load_dataset("csv", path=str(csv), target="credit")
    x = ds.test[0][3]
    listed = [line.split(". ", 1)[1].rsplit("  (", 1)[0] for line in out.splitlines()[2:6]]
    for label in listed:  # every category shown is the row's own
        name, value = label.removesuffix(" sd").split(" = ")
        col = (
            ds.feature_names.index(f"{name}={value}")
            if f"{name}={value}" in ds.feature_names
            else None
        )
        if col is not None:
            assert x[col] == 1.0
    assert len(list(csvmod.reader(csv.open()))) == 301


def test_cli_unit_attribute_is_refused_for_images(tmp_path):
    from r2et.cli import main

    run = tmp_path / "run"
    code = main(["train", "breast-cancer", "--unit", "attribute", "--epochs", "1", "--out",
                 str(run), "--no-progress"])  # fmt: skip
    assert code == 0  # breast-cancer is a table: its columns are its attributes
    assert main(["train", "synthetic-images", "--unit", "attribute", "--epochs", "0",
                 "--out", str(tmp_path / "img"), "--no-progress"]) == 2  # fmt: skip


def test_cross_entropy_untouched_by_the_default_unit():
    """The unit changes the explanation trained, never the task loss: vanilla is plain CE."""
    model, x, y = make_mlp(), _x((4, 10)), _labels(4)
    loss, _ = get_method("vanilla", explainer="grad_x_input", groups=[[i] for i in range(10)]).loss(
        model, x, y
    )
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))


@requires_data
def test_the_tables_suggested_weight_reaches_fit_and_the_bench():
    """fit(model, "r2et", ds) and the bench take the weight a one-hot table suggests
    (ds.default_params), under anything the caller sets."""
    from r2et import build_model, fit
    from r2et.bench.cells import method_params
    from r2et.data import load_dataset

    ds = load_dataset("compas")
    spec = dict(ds.default_model)
    model = build_model(spec.pop("name"), ds.input_shape, ds.n_classes, **spec)
    res = fit(model, "r2et", ds, epochs=0, progress=False)
    assert res.config["method"]["hyperparameters"]["lam"] == 0.3
    assert res.config["method"]["explainer"]["method"] == "grad_x_input"
    cell = {"method": "r2et", "weight": None, "weight_name": "lam"}
    assert method_params(cell, {}, {}, ds)["lam"] == 0.3
    assert method_params(cell, {"params": {"r2et": {"lam": 0.5}}}, {}, ds)["lam"] == 0.5
    assert method_params({**cell, "weight": 1.0}, {}, {}, ds)["lam"] == 1.0
    assert "lam" not in method_params({**cell, "method": "at"}, {}, {}, ds)


def test_cli_anchored_method_needs_a_pretrained_run(tmp_path, capsys):
    """``r2et-anchor`` keeps the ranking of the model it starts from: from scratch the CLI
    refuses it in one line (exit 2); from a trained run it trains."""
    from r2et.cli import main

    args = ["train", "breast-cancer", "--method", "r2et-anchor", "--epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pretrained" in err[0]
    profile = ["train", "breast-cancer", "--method", "r2et-profile", "--epochs", "1"]
    assert main([*profile, "--out", str(tmp_path / "p"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pretrained" in err[0]
    base = tmp_path / "v"
    assert (
        main(["train", "breast-cancer", "--epochs", "1", "--out", str(base), "--no-progress"]) == 0
    )
    assert main([*args, "--pretrained", str(base), "--out", str(tmp_path / "b")]) == 0
