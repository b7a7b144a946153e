"""The CROWN bound of the deterministic certificate (r2et.certify.crown, ``bound="crown"``):

* soundness against autograd and the network itself at 500 random points and every vertex of
  the box: pre-activations, gradients and logit margins of ReLU and Softplus MLPs (torch's
  switch of the softplus to the identity included);
* never looser than IBP (per unit and input), and strictly tighter somewhere;
* the certified radius: at least the interval radius on every input, at most the exact radius
  of tiny ReLU networks (the enumeration oracle of ``tests/test_certify.py``), and no sampled
  point inside it changes the top-k or the class;
* mutants (a too-tight relaxation) are caught by the sampling check, so the check has power.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_mlp, randn_rows
from test_certify import _exact_radius, tiny_mlp

from r2et import Explainer
from r2et.certify import certified_radius, crown_preactivations, gradient_bounds
from r2et.certify import crown as crown_mod
from r2et.certify.deterministic import _params64, mlp_layers, softplus_terms
from r2et.metrics import topk_mask

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
REAL_RELU = crown_mod.relu_relaxation  # the mutants below call the real relaxations
REAL_SOFTPLUS = crown_mod.softplus_relaxation


def _net(widths: list[int], act: str, seed: int, beta: float = 1.0, threshold: float = 20.0):
    """An MLP ``widths[0] → … → widths[-1]``: ReLU or ``Softplus(beta, threshold)``, the first
    layer scaled up so that units become unstable and softplus crosses its threshold."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        lin = torch.nn.Linear(a, b)
        if i == 0:
            with torch.no_grad():
                lin.weight.mul_(3.0)
        layers.append(lin)
        if i < len(widths) - 2:
            act_mod = torch.nn.ReLU() if act == "relu" else torch.nn.Softplus(beta, threshold)
            layers.append(act_mod)
    return torch.nn.Sequential(*layers).to(F64).eval()


NETS = {
    "relu-3": lambda: _net([4, 12, 16, 10, 3], "relu", 0),
    "relu-2": lambda: _net([5, 16, 8, 3], "relu", 1),
    "softplus-2": lambda: _net([4, 16, 12, 3], "softplus", 2, beta=2.0),
    "softplus-3-switch": lambda: _net([4, 8, 16, 8, 3], "softplus", 3, beta=4.0, threshold=1.0),
}


def _setup(model: torch.nn.Module, n_in: int):
    layers, acts = mlp_layers(model, randn_rows(2, n_in, seed=9))
    sp = softplus_terms(acts)
    return _params64(layers, torch.device("cpu")), (sp if any(sp) else None), acts


def _ibp(params, low, high, acts):
    """Plain interval bound propagation, written independently: per hidden layer (l, u)."""
    out, lo, hi = [], low, high
    for (w, b), act in zip(params[:-1], acts):
        pos, neg = w.clamp_min(0), w.clamp_max(0)
        pl, pu = lo @ pos.T + hi @ neg.T + b, hi @ pos.T + lo @ neg.T + b
        out.append((pl, pu))
        if isinstance(act, torch.nn.ReLU):
            lo, hi = pl.clamp_min(0), pu.clamp_min(0)
        else:  # monotone up to torch's switch step
            step = torch.log1p(torch.exp(torch.tensor(-act.threshold, dtype=F64))) / act.beta
            lo, hi = act(pl) - step, act(pu) + step
    return out


def _points(x: torch.Tensor, r: float, gen: torch.Generator, n: int = 500) -> torch.Tensor:
    """``n`` uniform points of the box ``x ± r`` per row plus every vertex: (n + 2^F, N, F)."""
    f = x.shape[1]
    u = torch.rand(n, *x.shape, generator=gen, dtype=F64)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=f)), dtype=F64)
    u = torch.cat([u, corners[:, None, :].expand(-1, x.shape[0], f)])
    return x - r + 2 * r * u


def _violation(model, params, sp, acts, x, r, gen) -> float:
    """The largest amount by which a sampled pre-activation, gradient or logit margin leaves
    its CROWN bound (0 when every sample is inside)."""
    pts = _points(x, r, gen)
    m, n, f = pts.shape
    flat = pts.reshape(-1, f)
    target = model(x).argmax(1)
    worst = 0.0
    pre = crown_preactivations(params, x - r, x + r, sp)
    h = flat
    for (w, b), act, (pl, pu) in zip(params[:-1], acts, pre):
        z = (h @ w.T + b).view(m, n, -1)
        worst = max(worst, float((pl - z).max()), float((z - pu).max()))
        h = act(z.reshape(m * n, -1))
    gl, gu, margin = gradient_bounds(params, x - r, x + r, target, 0.0, sp, crown=True)
    flat = flat.detach().requires_grad_(True)
    out = model(flat)
    t = target.repeat(m)
    (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), flat)
    g = g.view(m, n, f)
    worst = max(worst, float((gl - g).max()), float((g - gu).max()))
    z = out.detach().view(m, n, -1)
    gap = z.gather(2, target.view(1, n, 1).expand(m, n, 1)) - z
    worst = max(worst, float((margin - gap).masked_fill(margin.isinf(), 0).max()))
    return worst


@pytest.mark.parametrize("name", list(NETS))
def test_crown_bounds_hold_at_every_sampled_point_and_vertex(name: str) -> None:
    model = NETS[name]()
    f = model[0].in_features
    params, sp, acts = _setup(model, f)
    x = randn_rows(5, f, seed=3)
    gen = torch.Generator().manual_seed(0)
    for r in (0.02, 0.2, 0.8):
        assert _violation(model, params, sp, acts, x, r, gen) <= 1e-10, (name, r)


@pytest.mark.parametrize("name", list(NETS))
def test_crown_is_never_looser_than_ibp_and_tighter_somewhere(name: str) -> None:
    model = NETS[name]()
    f = model[0].in_features
    params, sp, acts = _setup(model, f)
    x = randn_rows(6, f, seed=4)
    t = model(x).argmax(1)
    tighter_pre = tighter_grad = 0
    for r in (0.05, 0.3):
        crown = crown_preactivations(params, x - r, x + r, sp)
        ibp = _ibp(params, x - r, x + r, acts)
        for (cl, cu), (il, iu) in zip(crown, ibp):
            assert (cl >= il - 1e-12).all() and (cu <= iu + 1e-12).all()
            tighter_pre += int(((iu - il) - (cu - cl) > 1e-6 * (1 + iu - il)).sum())
        gl, gu, m = gradient_bounds(params, x - r, x + r, t, 1e-5, sp)
        cl, cu, cm = gradient_bounds(params, x - r, x + r, t, 1e-5, sp, crown=True)
        assert (cl >= gl).all() and (cu <= gu).all() and (cm >= m).all()
        tighter_grad += int(((gu - gl) - (cu - cl) > 1e-6).sum())
    assert tighter_pre > 0 and tighter_grad > 0


@pytest.mark.parametrize("hidden,seed", [([4, 3], 1), ([3, 3], 2)])
def test_crown_radius_between_interval_and_exact_radius(hidden: list[int], seed: int) -> None:
    """On tiny ReLU networks: interval <= crown <= patterns, and crown <= the exact radius
    (every activation pattern's region, one LP each)."""
    pytest.importorskip("scipy.optimize")
    model = tiny_mlp(3, hidden, 3, seed)
    x = randn_rows(8, 3, seed=seed)
    exact = torch.tensor([_exact_radius(model, xi, 1) for xi in x], dtype=F64)
    radii = {}
    for bound in ("interval", "crown", "patterns"):
        res = certified_radius(
            model, x, Explainer("grad"), 1, max_radius=4.0, n_bisect=30, bound=bound
        )
        assert res.params["bound"] == bound
        assert (res.radius <= exact + 1e-9).all(), (bound, res.radius, exact)
        radii[bound] = res.radius
    assert (radii["crown"] >= radii["interval"]).all()
    assert (radii["patterns"] >= radii["crown"]).all()
    assert (radii["crown"] > 0).sum() >= 5


@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_no_sampled_point_inside_the_crown_radius_changes_the_topk(act: str) -> None:
    from r2et.methods import get_method

    model = make_mlp(n_in=6, n_out=3, seed=2)
    if act == "softplus":
        model = get_method("sp", beta=5.0).prepare(model)
    x = randn_rows(12, 6, seed=5)
    ex, k = Explainer("grad_x_input"), 2
    crown = certified_radius(model, x, ex, k, max_radius=2.0, bound="crown")
    interval = certified_radius(model, x, ex, k, max_radius=2.0, bound="interval")
    assert crown.params["bound"] == "crown"
    assert (crown.radius >= interval.radius).all()
    assert (crown.radius > interval.radius * 1.01).any()  # the relaxation buys something
    assert (crown.radius > 0).sum() >= 8
    gen = torch.Generator().manual_seed(0)
    c0 = model(x).argmax(1)
    s0 = ex.scores(model, x, c0)
    for i in range(len(x)):
        r = float(crown.radius[i]) * 0.999
        u = torch.rand(2000, 6, generator=gen, dtype=F64)
        u[:300] = u[:300].round()  # vertices
        pts = x[i] + (2 * u - 1) * r
        assert (model(pts).argmax(1) == c0[i]).all()
        s = ex.scores(model, pts, c0[i].expand(2000))
        assert (topk_mask(s, k) == topk_mask(s0[i : i + 1], k)).all()


def _relu_upper_identity(low, high):
    """Mutant: the unstable ReLU's upper line is ``z`` (below relu where z < 0)."""
    a_l, b_l, a_u, b_u = REAL_RELU(low, high)
    unstable = (low < 0) & (high > 0)
    return a_l, b_l, torch.where(unstable, torch.ones_like(a_u), a_u), b_u * ~unstable


def _softplus_upper_tangent(low, high, beta, threshold):
    """Mutant: the softplus's upper line is the tangent at ``high`` instead of the chord."""
    a_l, b_l, _, _ = REAL_SOFTPLUS(low, high, beta, threshold)
    a_u = torch.sigmoid(beta * high)
    sp = torch.nn.functional.softplus(high, beta, 1e9)
    return a_l, b_l, a_u, sp - a_u * high


def _softplus_no_step(low, high, beta, threshold):
    """Mutant: the tangent is not lowered by torch's switch step (ignores the threshold)."""
    a_l, b_l, a_u, b_u = REAL_SOFTPLUS(low, high, beta, threshold)
    step = torch.log1p(torch.exp(torch.tensor(-threshold, dtype=F64))) / beta
    return a_l, b_l + step, a_u, b_u


@pytest.mark.parametrize(
    "name,helper,mutant",
    [
        ("relu-3", "relu_relaxation", _relu_upper_identity),
        ("softplus-2", "softplus_relaxation", _softplus_upper_tangent),
        ("softplus-3-switch", "softplus_relaxation", _softplus_no_step),
    ],
)
def test_a_wrong_relaxation_is_caught(monkeypatch, name, helper, mutant) -> None:
    model = NETS[name]()
    f = model[0].in_features
    params, sp, acts = _setup(model, f)
    x = randn_rows(5, f, seed=3)
    monkeypatch.setattr(crown_mod, helper, mutant)
    gen = torch.Generator().manual_seed(0)
    worst = max(_violation(model, params, sp, acts, x, r, gen) for r in (0.2, 0.8))
    assert worst > 1e-4, (name, helper, worst)
