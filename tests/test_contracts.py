"""The one test every registered entry must pass, run over every entry of each registry (the
contracts in ``r2et/<kind>/base.py``): a built-in added later is covered without a new test,
and ``tests/test_extension.py`` runs the same checks on entries registered from outside."""

from __future__ import annotations

import copy

import pytest
import torch

from r2et import (
    Explainer,
    build_model,
    list_attacks,
    list_explainers,
    list_methods,
    list_models,
    load_dataset,
)
from r2et.attacks import create_attack
from r2et.metrics import topk_mask

#: A dataset (no download needed) whose inputs fit each built-in model; {}: the keywords of
#: the dataset's default model are used too (graph models need its sizes), None: they are not.
MODEL_DATA = {
    "mlp": ("breast-cancer", {}),
    "cnn": ("digits", None),
    "resnet9": ("digits", None),
    "gcn": ("ba-2motifs", {}),
    "gin": ("ba-2motifs", {}),
    "edge-gnn": ("ba-2motifs-edges", {}),
}


def test_every_built_in_model_has_a_contract_case() -> None:
    assert set(list_models()) == set(MODEL_DATA)


@pytest.mark.parametrize("name", list(MODEL_DATA))
def test_model_contract(name: str) -> None:
    """Builds on the meta device, outputs (N, n_classes) for a batch of its input shape, and
    ``build_model(**model.r2et_spec)`` rebuilds the same architecture (same output once the
    weights are loaded)."""
    data, kw = MODEL_DATA[name]
    ds = load_dataset(data)
    spec = {**(ds.default_model if kw is not None else {}), "name": name,
            "input_shape": list(ds.input_shape), "n_classes": ds.n_classes}  # fmt: skip
    with torch.device("meta"):
        meta = build_model(**spec)
    torch.manual_seed(0)
    model = build_model(**spec).eval()
    x, _, fkw = ds.split("test")
    x, fkw = x[:4], {key: v[:4] for key, v in fkw.items()}
    out = model(x, **fkw)
    assert out.shape == (4, ds.n_classes) and torch.isfinite(out).all()
    rebuilt = build_model(**model.r2et_spec).eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    assert {k: v.shape for k, v in meta.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x, **fkw), out)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor]:
    """A float64 Softplus MLP (so gradient attacks have a gradient) and inputs in [0, 1]."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Softplus(beta=4.0), torch.nn.Linear(16, 3)
    ).double()
    x = torch.rand(12, 8, dtype=torch.float64)
    return model.eval(), x


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list_attacks())
def test_attack_contract(name: str, norm: str, tiny) -> None:
    """Every returned point is within eps (no tolerance), inside the box, keeps the predicted
    class, and its P@k equals a recomputation from the returned point."""
    model, x = tiny
    ex, k, eps, box = Explainer("grad"), 3, 0.15 if norm == "linf" else 0.4, (0.0, 1.0)
    atk = create_attack(name, ex, k, eps, norm=norm, bounds=box, seed=0, steps=10, preset="fast")
    assert (atk.k, atk.eps, atk.norm, atk.explainer) == (k, eps, norm, ex)
    res = atk(model, x)
    delta = (res.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps).all(), size.max()
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    with torch.no_grad():
        pred = model(x).argmax(1)
        assert torch.equal(model(res.x_adv).argmax(1), pred)
    s0, s1 = ex.scores(model, x, pred), ex.scores(model, res.x_adv, pred)
    expected = (topk_mask(s0, k) & topk_mask(s1, k)).sum(1).to(res.p_at_k.dtype) / k
    torch.testing.assert_close(res.p_at_k, expected)
    assert (expected < 1).any() or name == "search"  # the attacks move some top-k


@pytest.fixture(scope="module")
def relu_mlp() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A float64 ReLU MLP from build_model (``sp`` and ``r2et-cert`` need one) and a batch."""
    torch.manual_seed(0)
    model = build_model("mlp", [8], 3, hidden=[16]).double()
    x = torch.rand(10, 8, dtype=torch.float64)
    return model, x, torch.arange(10) % 3


@pytest.mark.parametrize("name", list_methods())
def test_method_contract(name: str, relu_mlp) -> None:
    """A finite scalar loss whose backward reaches every parameter with finite gradients, with
    a logged value for every loss term of the row (built from the row: get_method(name, k))."""
    from r2et.methods import get_method, method_row

    base, x, y = relu_mlp
    model = copy.deepcopy(base)
    method = get_method(name, k=3)
    model = method.prepare(model)
    loss, logs = method.loss(model, x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    logged = {t.name for t in method_row(name).terms if t.adds_loss}
    assert logged <= set(logs), (logged, set(logs))


@pytest.mark.parametrize("name", list_explainers())
def test_explainer_contract(name: str, tiny) -> None:
    """An attribution shaped like x, and with ``create_graph=True`` an input gradient equal to
    central finite differences (torch.autograd.gradcheck), for a fixed target."""
    model, x = tiny
    options = Explainer(name).config()
    # a random rule with a fixed seed; relative noise scales with x's range, which the
    # attribution treats as a constant (not differentiated), so gradcheck uses absolute noise
    fixed = {"seed": 0} if "seed" in options else {}
    fixed |= {"sigma_mode": "absolute"} if "sigma_mode" in options else {}
    ex = Explainer(name, **fixed)
    x = x[:3].clone()
    target = model(x).argmax(1)
    attr = ex.attribute(model, x, target)
    assert attr.shape == x.shape and torch.isfinite(attr).all()
    w = torch.linspace(0.5, 1.5, x.shape[1], dtype=x.dtype)

    def weighted(xi: torch.Tensor) -> torch.Tensor:
        return (ex.attribute(model, xi, target, create_graph=True) * w).sum()

    assert torch.autograd.gradcheck(weighted, (x.requires_grad_(True),), eps=1e-6, atol=1e-5)
