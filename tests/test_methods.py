"""Training methods against independent computations: brute-force pairwise gaps, torch.func
Hessians, explicit Jacobians and eigen-decompositions, Captum-free gradient checks."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cnn, make_mlp
from torch import nn
from torch.func import hessian

from r2et import Explainer, build_model
from r2et.methods import (
    get_method,
    input_hessian,
    list_methods,
    method_from_config,
    normalize_scores,
    ranking_gap,
    ssr_term,
    topk_gap_of,
)
from r2et.metrics import topk_mask
from r2et.models import has_relu, list_models

DESIGN_ORDER = [
    "vanilla",
    "wd",
    "sp",
    "est-h",
    "exact-h",
    "ssr",
    "at",
    "r2et",
    "r2et-paper",
    "r2et-data",
    "r2et-anchor",
    "r2et-keep",
    "r2et-profile",
    "r2et-mm",
    "r2et-noh",
    "r2et-mm-noh",
    "r2et-sp",
    "r2et-loss",
    "r2et-exp",
    "r2et-exp-noh",
    "r2et-adaptive",
    "r2et-cert",
]


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _labels(n, c=3, seed=2):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def _method(name, k=3, **kw):
    if name == "at":
        kw.setdefault("at_steps", 2)
    return get_method(name, k=k, **kw)


def _gcn_case():
    torch.manual_seed(0)
    model = build_model("gcn", [5, 4], 3, hidden=[8, 8]).double().eval()
    n = 4
    x = _x((n, 5, 4))
    a = (torch.rand(n, 5, 5, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    a = ((a + a.transpose(1, 2)) > 0).double() + torch.eye(5, dtype=torch.float64)
    d = a.sum(-1).rsqrt()
    adj = d[:, :, None] * a * d[:, None, :]
    mask = torch.ones(n, 5, dtype=torch.float64)
    mask[0, 4] = 0
    return model, x, {"adj": adj, "mask": mask}


CASES = {
    "mlp": lambda: (make_mlp(), _x((6, 10)), {}),
    "cnn": lambda: (make_cnn(), _x((4, 2, 8, 8)), {}),
}
if "gcn" in list_models():
    CASES["gcn"] = _gcn_case


# ------------------------------------------------------------------------------ the table
def test_list_methods_is_the_design_order():
    assert list_methods() == DESIGN_ORDER


def test_weight_names_and_defaults():
    expected = {
        "vanilla": None,
        "wd": "weight_decay",
        "sp": "beta",
        "est-h": "mu",
        "exact-h": "mu",
        "ssr": "beta",
        "at": "lam",
        "r2et": "lam",
        "r2et-mm": "lam",
        "r2et-noh": "lam",
        "r2et-mm-noh": "lam",
    }
    for name, weight in expected.items():
        m = get_method(name, k=8)
        assert m.weight_name == weight
        if weight is not None:
            assert weight in m.hyperparameters
            swept = get_method(name, k=8, **{weight: 0.5})
            assert swept.hyperparameters[weight] == 0.5
        if name != "vanilla" and name not in ("wd", "sp"):
            assert m.hyperparameters["adaptive"] is False


def test_config_is_json_and_round_trips():
    for name in list_methods():
        m = get_method(name, k=4, explainer=Explainer("smoothgrad", n_samples=3, seed=1))
        cfg = json.loads(json.dumps(m.config()))
        assert cfg["name"] == name and cfg["k"] == 4
        assert cfg["explainer"]["method"] == "smoothgrad"
        assert cfg["hyperparameters"] == m.hyperparameters
        again = method_from_config(cfg)
        assert again.config() == m.config()


def test_default_explainer_outputs():
    assert get_method("r2et", k=8).explainer.output == "logit"
    assert get_method("at", k=8).explainer.output == "logit"
    assert get_method("est-h").explainer.output == "loss"
    assert get_method("exact-h").explainer.output == "loss"
    assert (
        get_method("r2et", k=8, explainer={"method": "grad", "output": "prob"}).explainer.output
        == "prob"
    )


def test_explainer_by_name_keeps_the_rows_output():
    """``explainer="grad_x_input"`` is that explainer of the method's default output."""
    m = get_method("r2et", k=8, explainer="grad_x_input")
    assert (m.explainer.method, m.explainer.output) == ("grad_x_input", "logit")
    m = get_method("est-h", explainer="ig")
    assert (m.explainer.method, m.explainer.output) == ("ig", "loss")
    with pytest.raises(ValueError):
        get_method("r2et", k=8, explainer="magic")


def test_optimizer_kwargs():
    assert get_method("wd", weight_decay=0.25).optimizer_kwargs == {"weight_decay": 0.25}
    for name in list_methods():
        if name != "wd":
            assert get_method(name, k=8).optimizer_kwargs == {}


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("nope",), {"k": 8}, "allowed"),
        (("r2et",), {}, "pass k"),
        (("r2et",), {"k": 0}, "k must be"),
        (("r2et",), {"k": 2.5}, "k must be"),
        (("r2et",), {"k": 8, "lam": -1.0}, "lam"),
        (("r2et-paper",), {"k": 8, "mu": float("nan")}, "mu"),
        (("r2et-paper",), {"k": 8, "h": 0.0}, "h"),
        (("wd",), {"weight_decay": -0.1}, "weight_decay"),
        (("sp",), {"beta": 0}, "beta"),
        (("ssr",), {"alpha": 1.5}, "alpha"),
        (("r2et",), {"k": 8, "bogus": 1}, "unknown hyperparameter"),
        (("r2et",), {"k": 8, "normalize": "max"}, "normalize"),
        (("r2et",), {"k": 8, "adaptive": 1}, "adaptive"),
        (("r2et-mm",), {"k": 2, "m": 3}, "m=3"),
        (("r2et-mm",), {"k": 8, "m": 0}, "m must be"),
        (("at",), {"k": 8, "at_steps": 0}, "at_steps"),
        (("r2et",), {"k": 8, "explainer": 3}, "explainer"),
    ],
)
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_method(*args, **kwargs)


def test_k_checked_against_features_at_loss_time():
    model, x, y = make_mlp(), _x((4, 10)), _labels(4)
    for k in (10, 11):
        with pytest.raises(ValueError, match="outside the allowed range"):
            get_method("r2et", k=k).loss(model, x, y)
    with pytest.raises(ValueError, match="batch size"):
        get_method("vanilla").loss(model, x, y[:3])


# ------------------------------------------------------------------------------ every method
@pytest.mark.parametrize("arch", list(CASES))
@pytest.mark.parametrize("name", DESIGN_ORDER)
def test_loss_is_finite_and_reaches_every_parameter(arch, name):
    model, x, fkw = CASES[arch]()
    y = _labels(x.shape[0])
    method = _method(name)
    model = method.prepare(model)
    if name == "r2et-cert" and arch != "mlp":  # certified bounds: ReLU MLPs only
        with pytest.raises(TypeError, match="ReLU MLP"):
            method.loss(model, x, y, **fkw)
        return
    loss, logs = method.loss(model, x, y, **fkw)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert all(isinstance(v, float) for v in logs.values()) and "ce" in logs
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name} on {arch}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name} on {arch}: non-finite gradient for {pname}"
    total = sum(float(p.grad.abs().sum()) for p in model.parameters())
    assert total > 0


@pytest.mark.parametrize("name", ["r2et", "r2et-mm", "r2et-noh", "est-h", "exact-h", "ssr"])
def test_regularisers_change_the_gradient(name):
    """Every term contributes: the parameter gradient differs from plain cross-entropy."""
    model, x = make_mlp(activation="softplus"), _x((6, 10))
    y = _labels(6)
    method = _method(name)
    loss, _ = method.loss(model, x, y)
    g_method = torch.autograd.grad(loss, list(model.parameters()))
    ce = F.cross_entropy(model(x), y)
    if name == "ssr":
        ce = (1 - method.hyperparameters["alpha"]) * ce
    g_ce = torch.autograd.grad(ce, list(model.parameters()))
    diff = sum(float((a - b).abs().sum()) for a, b in zip(g_method, g_ce))
    assert diff > 1e-8


def test_vanilla_is_cross_entropy():
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    loss, logs = get_method("vanilla").loss(model, x, y)
    ref = F.cross_entropy(model(x), y).detach()
    torch.testing.assert_close(loss.detach(), ref)
    assert logs["ce"] == pytest.approx(float(ref))
    acc = float((model(x).argmax(1) == y).double().mean())
    assert logs["accuracy"] == pytest.approx(acc)


# ------------------------------------------------------------------------------ gap terms
def _pairwise(s, mask):
    """Brute force: 1/(k(F-k)) Σ_{i∈T} Σ_{j∉T} (s_i − s_j), row by row."""
    out = []
    for row, m in zip(s.tolist(), mask.tolist()):
        top = [v for v, t in zip(row, m) if t]
        rest = [v for v, t in zip(row, m) if not t]
        out.append(sum(a - b for a, b in itertools.product(top, rest)) / (len(top) * len(rest)))
    return torch.tensor(out, dtype=s.dtype)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("normalize", ["none", "mean", "l2"])
def test_gap_equals_brute_force_pairwise_sum(k, normalize):
    s = _x((5, 8)).abs()
    mask = topk_mask(s, k)
    ours = ranking_gap(s, mask, normalize=normalize)
    sn = s
    if normalize == "mean":
        sn = s / s.mean(1, keepdim=True)
    elif normalize == "l2":
        sn = s / s.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(ours, _pairwise(sn, mask))
    torch.testing.assert_close(topk_gap_of(s, k, normalize=normalize), ours)
    # an arbitrary (non-top) set T works too
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))[:k]
    other = torch.zeros_like(mask)
    other[:, perm] = True
    torch.testing.assert_close(ranking_gap(s, other), _pairwise(s, other))


def test_normalized_gap_is_scale_free():
    s = _x((4, 9)).abs()
    for normalize in ("mean", "l2"):
        a = topk_gap_of(s, 3, normalize=normalize)
        b = topk_gap_of(7.5 * s, 3, normalize=normalize)
        torch.testing.assert_close(a, b)
    assert not torch.allclose(topk_gap_of(s, 3), topk_gap_of(2 * s, 3))
    torch.testing.assert_close(normalize_scores(s, "mean").mean(1), torch.ones(4, dtype=s.dtype))


@pytest.mark.parametrize("k", [2, 4])
def test_mm_gap_with_m1_is_min_top_minus_max_rest(k):
    s = _x((6, 9)).abs()
    mask = topk_mask(s, k)
    ref = torch.stack(
        [r[m].min() - r[~m].max() for r, m in zip(s, mask)]  # brute force, row by row
    )
    torch.testing.assert_close(ranking_gap(s, mask, m=1), ref)
    torch.testing.assert_close(topk_gap_of(s, k, m=1), ref)
    # general m: the m weakest of T against the m strongest of the rest
    m = 2
    ref_m = torch.stack(
        [
            r[mk].sort().values[:m].mean() - r[~mk].sort().values[-m:].mean()
            for r, mk in zip(s, mask)
        ]
    )
    torch.testing.assert_close(ranking_gap(s, mask, m=m), ref_m)
    torch.testing.assert_close(topk_gap_of(s, k, m=m), ref_m)


def test_gap_gradient_matches_the_pairwise_form():
    s = _x((3, 7)).abs().requires_grad_(True)
    (g1,) = torch.autograd.grad(topk_gap_of(s, 3, normalize="mean").sum(), s)
    s2 = s.detach().clone().requires_grad_(True)
    mask = topk_mask(s2.detach(), 3)
    sn = s2 / s2.mean(1, keepdim=True)
    m = mask.double()
    pair = ((sn[:, :, None] - sn[:, None, :]) * m[:, :, None] * (1 - m)[:, None, :]).sum((1, 2))
    (g2,) = torch.autograd.grad((pair / (3 * 4)).sum(), s2)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize(
    "name, hp",
    [
        ("r2et-noh", {}),
        ("r2et-noh", {"normalize": "none"}),
        ("r2et-noh", {"normalize": "l2"}),
        ("r2et-mm-noh", {}),
        ("r2et-mm-noh", {"m": 2}),
        ("r2et-mm-noh", {"m": 3, "normalize": "none"}),
    ],
)
def test_gap_loss_is_the_gap_of_the_models_own_saliency(name, hp):
    """Value and parameter gradient of the training path against the explainer's scores and
    the brute-force pairwise / sorted forms."""
    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    method = get_method(name, k=3, lam=0.5, **hp)
    loss, logs = method.loss(model, x, y)
    m, normalize = hp.get("m", 1 if name == "r2et-mm-noh" else None), hp.get("normalize", "mean")
    s = Explainer("grad").scores(model, x, create_graph=True)  # independent: the explainer
    mask = topk_mask(s.detach(), 3)
    sn = s
    if normalize == "mean":
        sn = s / s.mean(1, keepdim=True)
    elif normalize == "l2":
        sn = s / s.pow(2).mean(1, keepdim=True).sqrt()
    if m is None:
        ref = _pairwise(sn.detach(), mask).mean()
        gap = ((sn[:, :, None] - sn[:, None, :]) * mask[:, :, None] * ~mask[:, None, :]).sum(
            (1, 2)
        ) / (3 * 7)
    else:
        rows = [
            (r[mk].sort().values[:m].mean() - r[~mk].sort().values[-m:].mean())
            for r, mk in zip(sn, mask)
        ]
        gap = torch.stack(rows)
        ref = gap.detach().mean()
    assert logs["gap"] == pytest.approx(float(ref), rel=1e-9)
    ref_loss = F.cross_entropy(model(x), y) - 0.5 * gap.mean()
    torch.testing.assert_close(loss.detach(), ref_loss.detach())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(a, b)


def test_adaptive_weight_is_lam_ce_plus_one_over_term_detached():
    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    plain = get_method("r2et-noh", k=3, lam=0.7)
    adapt = get_method("r2et-noh", k=3, lam=0.7, adaptive=True)
    loss, logs = adapt.loss(model, x, y)
    ce, gap = logs["ce"], logs["gap"]
    assert float(loss.detach()) == pytest.approx(ce - 0.7 * (ce + 1) * gap / abs(gap), rel=1e-9)
    # the gradient uses the detached weight: w * d(-gap)/dθ + dCE/dθ
    params = list(model.parameters())
    g_adapt = torch.autograd.grad(loss, params)
    w = 0.7 * (ce + 1) / abs(gap)
    p_loss, _ = get_method("r2et-noh", k=3, lam=w).loss(model, x, y)
    g_ref = torch.autograd.grad(p_loss, params)
    for a, b in zip(g_adapt, g_ref):
        torch.testing.assert_close(a, b)
    assert adapt.config()["hyperparameters"]["adaptive"] is True
    assert plain.config()["hyperparameters"]["adaptive"] is False
    # two terms, each scaled to the loss: CE - lam (CE+1) sign(gap) + mu (CE+1)
    loss2, logs2 = get_method("r2et-paper", k=3, lam=0.7, mu=0.2, adaptive=True).loss(model, x, y)
    ce2 = logs2["ce"]
    expected = ce2 - 0.7 * (ce2 + 1) * (1 if logs2["gap"] > 0 else -1) + 0.2 * (ce2 + 1)
    assert float(loss2.detach()) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ saliency path
@pytest.mark.parametrize("output", ["logit", "prob", "loss"])
@pytest.mark.parametrize("method", ["grad", "grad_x_input", "ig"])
def test_training_saliency_equals_the_explainer(output, method):
    model, x, y = make_mlp(activation="softplus"), _x((5, 10)), _labels(5)
    kw = {"n_steps": 4} if method == "ig" else {}
    ex = Explainer(method, output=output, **kw)
    m = get_method("r2et", k=3, explainer=ex)
    logits, attr, target = m._saliency(model, x, y, {})
    expected_target = y if output == "loss" else model(x).argmax(1)
    assert torch.equal(target, expected_target)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(attr, ex.attribute(model, x, expected_target))


# ------------------------------------------------------------------------------ Hessian terms
def _per_sample_grad_fn(model, output, target_i):
    def f(xi):
        logits = model(xi.unsqueeze(0))
        t = torch.tensor([target_i])
        if output == "logit":
            return logits[0, target_i]
        return F.cross_entropy(logits, t)

    return f


def test_est_h_approaches_the_hessian_vector_norm():
    model, x, y = make_mlp(activation="softplus"), _x((6, 10)), _labels(6)
    # exact ||H v|| per sample, v = sign(g(x)) with g the loss gradient (est-h's default)
    exact = []
    for i in range(6):
        f = _per_sample_grad_fn(model, "loss", int(y[i]))
        g = torch.func.grad(f)(x[i])
        hv = hessian(f)(x[i]) @ torch.sign(g)
        exact.append(hv.norm())
    exact = torch.stack(exact).mean().detach()
    errors = []
    for h in (1e-1, 1e-2, 1e-3, 1e-4):
        _, logs = get_method("est-h", mu=1.0, h=h).loss(model, x, y)
        errors.append(abs(logs["hess"] - float(exact)))
    assert errors[-1] < 1e-5 * max(1.0, float(exact))
    assert errors[0] > errors[2] > errors[3]


@pytest.mark.parametrize("name", ["r2et-paper", "r2et-mm"])
def test_r2et_loss_is_ce_gap_and_normalised_finite_difference(name):
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    h, lam, mu = 0.3, 0.2, 0.7
    loss, logs = get_method(name, k=3, h=h, lam=lam, mu=mu).loss(model, x, y)
    ex = Explainer("grad")
    t = model(x).argmax(1)
    g = ex.attribute(model, x, t, create_graph=True)
    g2 = ex.attribute(model, x + h * torch.sign(g.detach()), t, create_graph=True)
    hess = ((g2 - g).norm(dim=1) / g.norm(dim=1) / h).mean()
    assert logs["hess"] == pytest.approx(float(hess), rel=1e-9)
    assert logs["hess"] > 0  # a 0.3 step crosses ReLU regions of this model
    s = g.abs()
    sn = s / s.mean(1, keepdim=True)
    mask = topk_mask(s.detach(), 3)
    if name == "r2et-paper":
        gap = (sn * mask).sum(1) / 3 - (sn * ~mask).sum(1) / 7
    else:
        gap = torch.stack([r[mk].min() - r[~mk].max() for r, mk in zip(sn, mask)])
    ref = F.cross_entropy(model(x), y) - lam * gap.mean() + mu * hess
    torch.testing.assert_close(loss.detach(), ref.detach())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("output", ["loss", "logit"])
def test_exact_h_matches_torch_func_hessian(output):
    model, x, y = make_mlp(activation="softplus"), _x((5, 10)), _labels(5)
    target = y if output == "loss" else model(x).argmax(1)
    ref = torch.stack(
        [
            torch.autograd.functional.hessian(_per_sample_grad_fn(model, output, int(t)), xi)
            for xi, t in zip(x, target)
        ]
    )
    torch.testing.assert_close(input_hessian(model, x, target, output), ref)
    ex = Explainer("grad", output=output)
    method = get_method("exact-h", mu=2.0, explainer=ex)
    loss, logs = method.loss(model, x, y)
    term = ref.flatten(1).norm(dim=1).mean()
    assert logs["hess"] == pytest.approx(float(term), rel=1e-9)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y) + 2.0 * term)


def test_exact_h_on_images_and_its_size_limit():
    model, x = make_cnn(activation="softplus"), _x((2, 2, 8, 8))
    y = _labels(2)
    h = input_hessian(model, x, y, "loss")
    assert h.shape == (2, 128, 128)
    torch.testing.assert_close(h, h.transpose(1, 2))
    with pytest.raises(ValueError, match="max_features=100"):
        get_method("exact-h", max_features=100).loss(model, x, y)


def test_ssr_is_the_top_eigenvalue_of_the_gauss_newton_hessian():
    model, x, y = make_mlp(), _x((5, 10)), _labels(5)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    ours = ssr_term(logits, xg)
    ref = []
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0))[0], x[i])
        p = model(x[i : i + 1]).softmax(1)[0]
        gn = jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac  # F x F
        ref.append(torch.linalg.eigvalsh(gn)[-1].detach())
        # for a ReLU network the Gauss-Newton matrix is the exact input Hessian of the CE
        exact = hessian(_per_sample_grad_fn(model, "loss", int(y[i])))(x[i]).detach()
        assert float(torch.linalg.eigvalsh(exact)[-1]) == pytest.approx(float(ref[-1]), rel=1e-8)
    torch.testing.assert_close(ours.detach(), torch.stack(ref))
    # the parameter gradient equals that of the differentiable eigenvalue of L^T J J^T L
    params = list(model.parameters())
    g_ours = torch.autograd.grad(ours.sum(), params)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    rows = [torch.autograd.grad(logits[:, j].sum(), xg, create_graph=True)[0] for j in range(3)]
    jac = torch.stack(rows, 1)  # (N, C, F), rows of independent samples
    p = logits.softmax(1)
    s_mat = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    gn = torch.linalg.eigvalsh(jac.transpose(1, 2) @ s_mat @ jac)[:, -1]  # F x F, differentiable
    torch.testing.assert_close(gn.detach(), torch.stack(ref))
    g_ref = torch.autograd.grad(gn.sum(), params)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    method = get_method("ssr", alpha=0.3, beta=2.0)
    loss, logs = method.loss(model, x, y)
    ce = F.cross_entropy(model(x), y)
    torch.testing.assert_close(
        loss.detach(), (0.7 * ce + 0.3 * 2.0 * torch.stack(ref).mean()).detach()
    )


# ------------------------------------------------------------------------------ sp and at
class _Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True))
        self.inner = nn.ModuleDict({"a": nn.Sequential(nn.Linear(6, 6), nn.ReLU())})
        self.act = nn.ReLU()
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.inner["a"](self.block(x))))


def test_sp_replaces_every_relu_and_keeps_the_weights():
    model = _Nested().double()
    model.r2et_spec = {"name": "custom"}
    out = get_method("sp", beta=7.0).prepare(model)
    assert not has_relu(out) and has_relu(model)  # the input model is untouched
    softplus = [m for m in out.modules() if isinstance(m, nn.Softplus)]
    assert len(softplus) == 3 and all(m.beta == 7.0 for m in softplus)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), out.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()
    assert out.r2et_transforms == [{"name": "relu_to_softplus", "beta": 7.0}]
    x = _x((3, 4))
    sp = lambda z: F.softplus(z, beta=7.0)  # noqa: E731
    ref = out.out(sp(sp(out.inner["a"][0](sp(out.block[0](x))))))
    torch.testing.assert_close(out(x), ref)
    with pytest.raises(ValueError, match="functional ReLUs"):
        get_method("sp").prepare(out)


def test_at_trains_at_the_attack_point():
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    method = get_method("at", k=3, at_steps=3, at_eps=0.5)
    torch.manual_seed(0)
    loss, logs = method.loss(model, x, y)
    clean_ce = float(F.cross_entropy(model(x), y))
    assert torch.isfinite(loss) and logs["ce"] != pytest.approx(clean_ce)
    assert model.training is False  # the attack restores the caller's mode


# ------------------------------------------------------------------------------ the registry
def test_a_new_method_is_one_registration():
    """A recipe made of existing terms: registered in the test, trained one step, removed."""
    from r2et.methods import MethodRow, RankingGap, registered_method

    row = MethodRow(
        "CE + lam * (-RMS-normalised top-k gap)",
        terms=(RankingGap(),),
        defaults={"normalize": "l2"},
        weight_name="lam",
    )
    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    with registered_method("gap-only-l2", row):
        assert list_methods() == [*DESIGN_ORDER, "gap-only-l2"]
        method = get_method("gap-only-l2", k=3, lam=0.5)
        assert method.hyperparameters == {"normalize": "l2", "lam": 0.5, "adaptive": False}
        assert method.weight_name == "lam" and method.explainer.output == "logit"
        assert method_from_config(json.loads(json.dumps(method.config()))).config() == (
            method.config()
        )
        with pytest.raises(ValueError, match="pass k"):
            get_method("gap-only-l2")
        loss, logs = method.loss(model, x, y)
        s = Explainer("grad").scores(model, x, create_graph=True)  # independent: the explainer
        gap = topk_gap_of(s, 3, normalize="l2").mean()
        assert logs["gap"] == pytest.approx(float(gap), rel=1e-9)
        ref = F.cross_entropy(model(x), y) - 0.5 * gap
        torch.testing.assert_close(loss.detach(), ref.detach())
        params = list(model.parameters())
        for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
            torch.testing.assert_close(a, b)
        # one training step of r2et.fit's loop
        before = [p.detach().clone() for p in params]
        opt = torch.optim.SGD(params, lr=0.1, **method.optimizer_kwargs)
        opt.zero_grad()
        method.loss(model, x, y)[0].backward(inputs=params)
        opt.step()
        assert any(not torch.equal(p, q) for p, q in zip(params, before))
    assert list_methods() == DESIGN_ORDER
    with pytest.raises(ValueError, match="allowed"):
        get_method("gap-only-l2", k=3)


def test_a_new_kind_of_term_needs_no_central_code():
    """A new Term subclass with its own hyperparameter, registered and unregistered here."""
    from dataclasses import dataclass

    from r2et.methods import MethodRow, Term, register_method, unregister_method

    @dataclass(frozen=True)
    class SaliencyNorm(Term):
        """R = mean_n ‖g(x_n)‖₂² (log ``sal``, weight ``gamma``)."""

        name = "sal"
        weight_key = "gamma"
        uses_saliency = True
        second_order = True

        def defaults(self):
            return {"gamma": 0.1}

        def value(self, step):
            return step.attribution.flatten(1).pow(2).sum(1).mean()

    row = MethodRow("CE + gamma * squared saliency norm", (SaliencyNorm(),), {}, "gamma")
    register_method("sal-norm", row)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_method("sal-norm", row)
        with pytest.raises(ValueError, match="gamma"):
            get_method("sal-norm", gamma=-1.0)
        model, x, y = make_mlp(), _x((6, 10)), _labels(6)
        for adaptive in (False, True):
            method = get_method("sal-norm", gamma=0.3, adaptive=adaptive)
            loss, logs = method.loss(model, x, y)
            g = Explainer("grad").attribute(model, x, create_graph=True)
            term = g.pow(2).sum(1).mean()
            ce = F.cross_entropy(model(x), y)
            w = 0.3 * (ce.detach() + 1) / term.detach() if adaptive else 0.3
            ref = ce + w * term
            assert logs["sal"] == pytest.approx(float(term), rel=1e-9)
            torch.testing.assert_close(loss.detach(), ref.detach())
            params = list(model.parameters())
            for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
                torch.testing.assert_close(a, b)
    finally:
        assert unregister_method("sal-norm") is row
    assert "sal-norm" not in list_methods()


def test_bad_registrations_are_refused():
    from r2et.methods import (
        FiniteDifferenceHessian,
        MethodRow,
        RankingGap,
        WeightDecay,
        register_method,
    )

    cases = [
        ("r2et", MethodRow("again", (RankingGap(),)), "already registered"),
        ("", MethodRow("no name"), "non-empty"),
        ("x1", MethodRow("typo", (RankingGap(),), {"lamb": 1.0}), "no term reads"),
        ("x2", MethodRow("two gaps", (RankingGap(), RankingGap(boundary=True))), "one name"),
        ("x3", MethodRow("weight", (WeightDecay(),), {}, "lam"), "weight_name"),
        ("x4", MethodRow("bad default", (FiniteDifferenceHessian(),), {"h": 0.0}), "h"),
        ("x5", MethodRow("not a term", ("gap",)), "Term"),  # type: ignore[arg-type]
        ("x6", MethodRow("output", (), {}, None, "score"), "output"),
    ]
    for name, row, match in cases:
        with pytest.raises(ValueError, match=match):
            register_method(name, row)
    assert list_methods() == DESIGN_ORDER


def test_rows_name_their_terms():
    """Each built-in recipe is data: the terms it names and the defaults they bring."""
    from r2et.methods import (
        AdversarialPoint,
        AnchoredGap,
        CertifiedGap,
        CEWeight,
        ExactHessian,
        FiniteDifferenceHessian,
        PairwiseExp,
        ProfileAnchor,
        RankingGap,
        SmoothedGeometry,
        SoftplusActivations,
        WeightDecay,
    )

    expected = {
        "vanilla": (),
        "wd": (WeightDecay,),
        "sp": (SoftplusActivations,),
        "est-h": (FiniteDifferenceHessian,),
        "exact-h": (ExactHessian,),
        "ssr": (CEWeight, SmoothedGeometry),
        "at": (AdversarialPoint, RankingGap),
        "r2et": (RankingGap,),
        "r2et-paper": (RankingGap, FiniteDifferenceHessian),
        "r2et-data": (RankingGap, FiniteDifferenceHessian),
        "r2et-anchor": (AnchoredGap,),
        "r2et-keep": (RankingGap, AnchoredGap),
        "r2et-profile": (RankingGap, ProfileAnchor),
        "r2et-mm": (RankingGap, FiniteDifferenceHessian),
        "r2et-noh": (RankingGap,),
        "r2et-mm-noh": (RankingGap,),
        "r2et-exp-noh": (PairwiseExp,),
        "r2et-cert": (CertifiedGap,),
    }
    for name, kinds in expected.items():
        terms = get_method(name, k=8).terms
        assert tuple(type(t) for t in terms) == kinds, name
    assert get_method("r2et-mm", k=8).terms[0] == RankingGap(boundary=True)


# ------------------------------------------------------------------ issue-10 variants
def test_pairwise_exp_term_equals_the_pair_sum_by_brute_force():
    from r2et.methods import normalize_scores

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))
    x, y = torch.randn(5, 7), torch.tensor([0, 1, 2, 0, 1])
    method = get_method("r2et-exp", k=3, lam=0.5, mu=0.0)
    loss, logs = method.loss(model, x, y)
    ex = Explainer("grad")
    s = ex.scores(model, x)
    sh = normalize_scores(s, "mean")
    total = 0.0
    for n in range(5):
        top = set(s[n].topk(3).indices.tolist())
        pairs = [(i, j) for i in top for j in range(7) if j not in top]
        total += sum(float(torch.exp(-(sh[n, i] - sh[n, j]))) for i, j in pairs) / len(pairs)
    assert abs(logs["pair_exp"] - total / 5) < 1e-5
    ce = torch.nn.functional.cross_entropy(model(x), y)
    assert abs(float(loss) - (float(ce) + 0.5 * total / 5)) < 1e-5


def test_pairwise_exp_without_hessian_matches_finite_differences():
    """``r2et-exp-noh``: CE + lam · mean_pairs exp(−(ŝ_i − ŝ_j)), the term alone; its
    parameter gradient (through the saliency's double backward) against central finite
    differences of the loss, float64 (the value itself is checked by brute force above)."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    method = get_method("r2et-exp-noh", k=2, lam=0.7)
    loss, _ = method.loss(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    w = model[0].weight
    for idx in [(0, 0), (3, 5), (7, 2)]:
        h = 1e-6
        with torch.no_grad():
            w[idx] += h
            up = float(method.loss(model, x, y)[0])
            w[idx] -= 2 * h
            down = float(method.loss(model, x, y)[0])
            w[idx] += h
        assert abs((up - down) / (2 * h) - float(grads[0][idx])) < 1e-5, idx


def test_path_thickness_term_is_the_gap_at_a_seeded_ball_point():
    from r2et.methods import ranking_gap
    from r2et.metrics import topk_mask

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Softplus(), torch.nn.Linear(8, 2))
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 1, 0])
    method = get_method("r2et-sp", k=2, lam=0.0, mu=0.0, nu=1.0, adaptive=False, tx_radius=0.2)
    torch.manual_seed(7)
    _, logs = method.loss(model, x, y)
    ex = Explainer("grad")
    pred = model(x).argmax(1)
    s = ex.scores(model, x, pred)
    torch.manual_seed(7)
    x2 = x + (torch.rand_like(x) * 2 - 1) * 0.2
    gap = ranking_gap(ex.scores(model, x2, pred), topk_mask(s, 2), None, "mean").mean()
    assert abs(logs["thick"] - float(gap)) < 1e-6
    relu = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    prepared = method.prepare(relu)
    assert isinstance(prepared[1], torch.nn.Softplus)
    assert prepared.r2et_transforms[-1]["name"] == "relu_to_softplus"


def test_variant_rows_are_data():
    """The issue-10 variants are registered rows of existing terms (no code path of their own)."""
    from r2et.methods import METHODS

    assert METHODS.get("r2et-loss").output == "loss"
    assert get_method("r2et-adaptive", k=2).hyperparameters["adaptive"] is True
    assert get_method("r2et-sp", k=2).hyperparameters["adaptive"] is True
    names = [type(t).__name__ for t in METHODS.get("r2et-sp").terms]
    assert names == [
        "SoftplusActivations",
        "RankingGap",
        "FiniteDifferenceHessian",
        "PathThickness",
    ]
    with pytest.raises(ValueError, match="tx_radius"):
        get_method("r2et-sp", k=2, tx_radius=0.0)


# ------------------------------------------------------------------ issue 28: the anchor
def _manual_scores(model, x, create_graph):
    """``|∂ logit_pred / ∂x|`` per row with plain autograd (independent of r2et.explain)."""
    xi = x.detach().requires_grad_(True)
    logits = model(xi)
    pred = logits.detach().argmax(1)
    g = torch.autograd.grad(logits.gather(1, pred[:, None]).sum(), xi, create_graph=create_graph)
    return g[0].abs()


def _brute_topk(s, k):
    mask = torch.zeros_like(s, dtype=torch.bool)
    for n, row in enumerate(s):
        mask[n, sorted(range(len(row)), key=lambda j: -float(row[j]))[:k]] = True
    return mask


def test_anchored_gap_ranks_each_input_against_the_starting_models_topk():
    """``r2et-anchor``: the gap of the current scores around the top-k of the model as
    ``prepare`` saw it (a frozen copy), value and parameter gradient by hand."""
    import copy

    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    start = copy.deepcopy(model)
    method = get_method("r2et-anchor", k=3, rho=0.5)
    model = method.prepare(model)
    with torch.no_grad():  # "training" moved the model away from the anchor
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)).double())
    loss, logs = method.loss(model, x, y)
    anchor_mask = _brute_topk(_manual_scores(start, x, False), 3)
    s = _manual_scores(model, x, True)
    assert (anchor_mask != _brute_topk(s.detach(), 3)).any(), "the case must tell them apart"
    sn = s / s.mean(1, keepdim=True)
    pairs = (sn[:, :, None] - sn[:, None, :]) * anchor_mask[:, :, None] * ~anchor_mask[:, None, :]
    gap = pairs.sum((1, 2)) / (3 * 7)
    ref_loss = F.cross_entropy(model(x), y) - 0.5 * gap.mean()
    assert logs["anchor_gap"] == pytest.approx(float(gap.mean()), rel=1e-9)
    torch.testing.assert_close(loss.detach(), ref_loss.detach())
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(a, b)
    # the anchor is a frozen copy: equal to the start, no gradients, not the trained model
    assert method.anchor is not model
    for a, b in zip(method.anchor.parameters(), start.parameters()):
        assert not a.requires_grad
        torch.testing.assert_close(a, b)


def test_anchor_without_prepare_is_the_model_at_the_first_loss():
    model, x, y = make_mlp(), _x((6, 10)), _labels(6)
    method = get_method("r2et-anchor", k=2)
    method.loss(model, x, y)
    first = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    method.loss(model, x, y)
    for a, b in zip(method.anchor.parameters(), first):
        torch.testing.assert_close(a, b)
    method.prepare(model)  # a new training run takes a new anchor
    for a, b in zip(method.anchor.parameters(), model.parameters()):
        torch.testing.assert_close(a, b.detach())


def test_anchor_needs_a_module():
    method = get_method("r2et-anchor", k=2)
    with pytest.raises(ValueError, match="nn.Module"):
        method.loss(lambda x: x[:, :3] * 2, _x((4, 10)), _labels(4))


def test_profile_kl_by_hand_and_by_finite_differences():
    """``KL(P_ref ‖ P)`` of the mean saliency shares, against a numpy computation, 0 for equal
    profiles (also for rescaled rows: shares are scale-free), larger when every row
    concentrates on the same units, and its gradient against central differences."""
    import numpy as np

    from r2et.methods import profile_kl, saliency_profile

    s = _x((6, 5), seed=3).abs()
    ref = _x((6, 5), seed=4).abs()
    sn, rn = s.numpy(), ref.numpy()
    p_hand = (rn / rn.sum(1, keepdims=True)).mean(0) + 1e-8
    q_hand = (sn / sn.sum(1, keepdims=True)).mean(0) + 1e-8
    kl_hand = float((p_hand * np.log(p_hand / q_hand)).sum())
    assert float(profile_kl(s, ref)) == pytest.approx(kl_hand, rel=1e-12)
    assert float(saliency_profile(s).sum()) == pytest.approx(1.0)
    assert float(profile_kl(ref * torch.arange(1.0, 7.0)[:, None].double(), ref)) < 1e-12
    zero = torch.zeros(1, 5, dtype=torch.float64)
    torch.testing.assert_close(saliency_profile(zero), torch.full((5,), 0.2, dtype=torch.float64))
    shared = ref.clone()
    shared[:, :2] += 10.0  # every row's saliency on units 0 and 1
    spread = ref.clone()
    spread[torch.arange(6), torch.arange(6) % 5] += 10.0  # each row on its own unit
    assert float(profile_kl(shared, ref)) > 5 * float(profile_kl(spread, ref))
    s = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(profile_kl(s, ref), s)
    h = 1e-6
    for n, a in [(0, 0), (2, 3), (5, 4)]:
        e = torch.zeros_like(s)
        e[n, a] = h
        fd = (profile_kl(s.detach() + e, ref) - profile_kl(s.detach() - e, ref)) / (2 * h)
        assert float(grad[n, a]) == pytest.approx(float(fd), rel=1e-6, abs=1e-10)


def test_profile_anchor_is_the_gap_plus_the_kl_to_the_starting_profile():
    """``r2et-profile`` = CE − lam·gap_T + rho·KL(P_ref ‖ P), P_ref from the frozen anchor;
    value and parameter gradient against a hand-written autograd computation; the term is 0
    before the model moves."""
    import copy

    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    start = copy.deepcopy(model)
    method = get_method("r2et-profile", k=3, lam=0.2, rho=0.7)
    model = method.prepare(model)
    _, logs0 = method.loss(model, x, y)
    assert abs(logs0["profile"]) < 1e-12
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)).double())
    loss, logs = method.loss(model, x, y)
    s = _manual_scores(model, x, True)
    s_ref = _manual_scores(start, x, False)
    sn = s / s.mean(1, keepdim=True)
    mask = _brute_topk(s.detach(), 3)
    pairs = (sn[:, :, None] - sn[:, None, :]) * mask[:, :, None] * ~mask[:, None, :]
    gap = (pairs.sum((1, 2)) / (3 * 7)).mean()
    p_ref = (s_ref / s_ref.sum(1, keepdim=True)).mean(0) + 1e-8
    q = (s / s.sum(1, keepdim=True)).mean(0) + 1e-8
    kl = (p_ref * (p_ref / q).log()).sum()
    assert float(kl) > 1e-4, "the case must move the profile"
    ref_loss = F.cross_entropy(model(x), y) - 0.2 * gap + 0.7 * kl
    assert logs["profile"] == pytest.approx(float(kl), rel=1e-9)
    assert logs["gap"] == pytest.approx(float(gap), rel=1e-9)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(a, b)


def test_keep_is_the_gap_plus_the_anchored_gap():
    """``r2et-keep`` = CE − lam·gap_T − rho·gap_A, T the current top-k and A the anchor's."""
    import copy

    model, x, y = make_mlp(), _x((8, 10)), _labels(8)
    start = copy.deepcopy(model)
    method = get_method("r2et-keep", k=3, lam=0.2, rho=0.7)
    model = method.prepare(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)).double())
    loss, logs = method.loss(model, x, y)
    s = _manual_scores(model, x, True)
    sn = s / s.mean(1, keepdim=True)

    def gap(mask):
        pairs = (sn[:, :, None] - sn[:, None, :]) * mask[:, :, None] * ~mask[:, None, :]
        return (pairs.sum((1, 2)) / (3 * 7)).mean()

    g_t, g_a = gap(_brute_topk(s.detach(), 3)), gap(_brute_topk(_manual_scores(start, x, False), 3))
    assert float(g_t) != pytest.approx(float(g_a))
    ref_loss = F.cross_entropy(model(x), y) - 0.2 * g_t - 0.7 * g_a
    assert logs["gap"] == pytest.approx(float(g_t), rel=1e-9)
    assert logs["anchor_gap"] == pytest.approx(float(g_a), rel=1e-9)
    params = list(model.parameters())
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(a, b)
