"""Explainer against Captum, torch.func and finite differences."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from conftest import make_cnn, make_mlp
from torch.func import functional_call
from torch.func import grad as fgrad

from r2et import Explainer
from r2et.explain import quadrature, reduce_scores


def _inputs(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


MODELS = {
    "mlp": (lambda act="relu": make_mlp(activation=act), (6, 10)),
    "cnn": (lambda act="relu": make_cnn(activation=act), (5, 2, 8, 8)),
}


@pytest.mark.parametrize("arch", list(MODELS))
def test_grad_and_grad_x_input_match_captum(arch):
    build, shape = MODELS[arch]
    model, x = build(), _inputs(shape)
    target = model(x).argmax(1)
    ours = Explainer("grad").attribute(model, x)
    ref = Saliency(model).attribute(x, target=target, abs=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    ours = Explainer("grad_x_input").attribute(model, x, target=2)
    ref = InputXGradient(model).attribute(x, target=2)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize(
    "rule", ["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"]
)
def test_ig_matches_captum(arch, rule):
    build, shape = MODELS[arch]
    model, x = build(), _inputs(shape)
    target = torch.arange(shape[0]) % 3
    baseline = 0.1 * _inputs(shape, seed=5)
    ours = Explainer("ig", n_steps=20, rule=rule, baseline=baseline, internal_batch_size=23)
    ref = IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=20, method=rule
    )
    attr = ours.attribute(model, x, target)
    if rule == "riemann_trapezoid":
        # Captum's "trapezoid" weights are 1/n with halved end points, summing to (n-1)/n;
        # ours are the textbook trapezoid weights (summing to 1): the two differ by that factor.
        attr = attr * 19 / 20
    torch.testing.assert_close(attr, ref, atol=1e-5, rtol=1e-5)


def test_ig_completeness_on_smooth_model():
    """Σ IG = f(x) − f(baseline) (Sundararajan et al., Axiom: Completeness)."""
    model, x = make_mlp(activation="softplus"), _inputs((4, 10))
    ex = Explainer("ig", n_steps=64)
    attr = ex.attribute(model, x, target=1)
    diff = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    torch.testing.assert_close(attr.sum(1), diff, atol=1e-6, rtol=1e-6)


def test_smoothgrad_sigma_zero_equals_grad():
    model, x = make_cnn(), _inputs((5, 2, 8, 8))
    sg = Explainer("smoothgrad", sigma=0.0, n_samples=4).attribute(model, x)
    torch.testing.assert_close(sg, Explainer("grad").attribute(model, x), atol=1e-12, rtol=0)


def test_smoothgrad_matches_captum_noise_tunnel_statistically():
    """Both are S-sample Monte-Carlo means of ∂f/∂x(x + ε) with independent noise, so their
    difference has per-element standard deviation sqrt(2 Var[g]/S). Var[g] is estimated from
    an independent large sample; we allow 5 standard deviations (a false alarm needs a 5σ
    event on some element; on 60 elements that is < 1e-4) plus 1e-9 for exactly-constant
    elements."""
    model, x = make_mlp(activation="softplus"), _inputs((6, 10))
    target = model(x).argmax(1)
    s, sigma = 200, 0.3
    ours = Explainer("smoothgrad", n_samples=s, sigma=sigma, sigma_mode="absolute", seed=3)
    a = ours.attribute(model, x, target)
    torch.manual_seed(11)
    ref = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=s, stdevs=sigma, target=target, abs=False
    )
    noisy = x.unsqueeze(0) + sigma * torch.randn(2000, *x.shape, dtype=x.dtype)
    grads = torch.stack([Explainer("grad").attribute(model, n, target) for n in noisy[:400]])
    tol = 5 * torch.sqrt(2 * grads.var(0) / s) + 1e-9
    assert bool(((a - ref).abs() <= tol).all())
    # and the test can fail: a different sigma is far outside the tolerance somewhere
    b = Explainer("smoothgrad", n_samples=s, sigma=3.0, sigma_mode="absolute", seed=3)
    assert not bool(((b.attribute(model, x, target) - ref).abs() <= tol).all())


def test_smoothgrad_relative_sigma_and_seed():
    model, x = make_mlp(), _inputs((3, 10))
    ex = Explainer("smoothgrad", n_samples=8, sigma=0.1, seed=0, internal_batch_size=6)
    torch.testing.assert_close(ex.attribute(model, x), ex.attribute(model, x), atol=0, rtol=0)
    other = Explainer("smoothgrad", n_samples=8, sigma=0.1, seed=1)
    assert not torch.equal(ex.attribute(model, x), other.attribute(model, x))


def _functional_saliency(model, x, target):
    """Saliency |∂f_t/∂x| summed, computed per sample by torch.func (independent oracle)."""

    def logit(p, xi, t):
        return functional_call(model, p, (xi[None],))[0, t]

    def score_sum(p, xi, t):
        return fgrad(logit, argnums=1)(p, xi, t).abs().sum()

    params = {k: v.detach() for k, v in model.named_parameters()}
    gx = torch.stack([fgrad(score_sum, argnums=1)(params, xi, int(t)) for xi, t in zip(x, target)])
    gp = [fgrad(score_sum, argnums=0)(params, xi, int(t)) for xi, t in zip(x, target)]
    gp = {k: sum(g[k] for g in gp) for k in params}
    return gx, gp


@pytest.mark.parametrize("arch", list(MODELS))
def test_create_graph_matches_torch_func(arch):
    build, shape = MODELS[arch]
    model, x = build("softplus"), _inputs(shape)
    target = model(x).argmax(1)
    xr = x.clone().requires_grad_(True)
    s = Explainer("grad").scores(model, xr, target, create_graph=True)
    params = list(model.parameters())
    grads = torch.autograd.grad(s.sum(), [xr, *params], allow_unused=True)
    # the output bias does not change an input gradient: its gradient is None (zero)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip([xr, *params], grads)]
    ref_x, ref_p = _functional_saliency(model, x, target)
    torch.testing.assert_close(grads[0], ref_x, atol=1e-8, rtol=1e-6)
    for (name, _), g in zip(model.named_parameters(), grads[1:]):
        torch.testing.assert_close(g, ref_p[name], atol=1e-8, rtol=1e-6)
    assert grads[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in grads[1:-1])


@pytest.mark.parametrize(
    "ex",
    [
        Explainer("grad", output="prob"),
        Explainer("grad_x_input", output="loss"),
        Explainer(
            "smoothgrad",
            n_samples=5,
            sigma=0.2,
            sigma_mode="absolute",
            seed=0,
            internal_batch_size=9,
        ),
        Explainer("ig", n_steps=7, internal_batch_size=8),
    ],
    ids=["grad-prob", "gxi-loss", "smoothgrad", "ig"],
)
def test_create_graph_input_gradient_matches_finite_differences(ex):
    """d/dε Σ s(x + εv) at ε=0 against a central difference in float64."""
    model, x = make_mlp(activation="softplus"), _inputs((4, 10))
    target = torch.tensor([0, 1, 2, 1])
    v = _inputs((4, 10), seed=9)
    xr = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(ex.scores(model, xr, target, create_graph=True).sum(), xr)
    h = 1e-5
    up = ex.scores(model, x + h * v, target).sum()
    down = ex.scores(model, x - h * v, target).sum()
    fd = (up - down) / (2 * h)
    torch.testing.assert_close((gx * v).sum(), fd, atol=1e-6, rtol=1e-5)
    assert gx.abs().sum() > 0


@pytest.mark.parametrize(
    "ex",
    [
        Explainer("grad"),
        Explainer("grad_x_input", output="prob"),
        Explainer("smoothgrad", sigma=0.0, n_samples=3),
        Explainer("ig", n_steps=9, rule="riemann_trapezoid"),
        Explainer("grad", output="loss"),
    ],
)
@pytest.mark.parametrize("arch", list(MODELS))
def test_batch_invariance(ex, arch):
    build, shape = MODELS[arch]
    model, x = build(), _inputs(shape)
    batch = ex.scores(model, x)
    rows = torch.cat([ex.scores(model, x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, rows, atol=1e-10, rtol=1e-10)


def test_scores_reduce_shapes():
    a = torch.randn(2, 3, 4, 5)
    assert reduce_scores(a).shape == (2, 20)
    torch.testing.assert_close(reduce_scores(a), a.abs().sum(1).flatten(1))
    g = torch.randn(2, 7, 4)
    torch.testing.assert_close(reduce_scores(g), g.abs().sum(-1))
    assert reduce_scores(a, None).shape == (2, 60)
    assert bool((reduce_scores(torch.randn(3, 6)) >= 0).all())


def test_forward_kwargs_follow_expanded_batches():
    """Per-sample side inputs are repeated with their rows for SmoothGrad and IG."""

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2).double()

        def forward(self, x, scale):
            return self.lin(x * scale[:, None])

    model, x = Scaled(), _inputs((3, 4))
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    for ex in (Explainer("ig", n_steps=5), Explainer("smoothgrad", sigma=0.0, n_samples=4)):
        batch = ex.attribute(model, x, 1, scale=scale)
        rows = torch.cat(
            [ex.attribute(model, x[i : i + 1], 1, scale=scale[i : i + 1]) for i in range(3)]
        )
        torch.testing.assert_close(batch, rows)


def test_quadrature_weights_integrate_polynomials():
    """5-point Gauss-Legendre is exact to degree 9; trapezoid and midpoint to degree 1."""
    for rule, degree in [("gausslegendre", 9), ("riemann_trapezoid", 1), ("riemann_middle", 1)]:
        a, w = quadrature(5, rule)
        assert abs(float(w.sum()) - 1) < 1e-12
        assert abs(float((w * a**degree).sum()) - 1 / (degree + 1)) < 1e-12
    a, w = quadrature(5, "riemann_middle")
    assert abs(float((w * a**2).sum()) - 1 / 3) > 1e-4  # not exact beyond its degree


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "lime"}, "method"),
        ({"output": "softmax"}, "output"),
        ({"reduce": "mean"}, "reduce"),
        ({"method": "grad", "n_samples": 3}, "n_samples"),
        ({"method": "ig", "rule": "simpson"}, "rule"),
        ({"method": "ig", "n_steps": 0}, "n_steps"),
        ({"method": "smoothgrad", "sigma": -1.0}, "sigma"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Explainer(**kwargs)


def test_bad_inputs_raise(mlp):
    ex = Explainer()
    with pytest.raises(ValueError, match="NaN"):
        ex.scores(mlp, torch.full((2, 10), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="batch"):
        ex.scores(mlp, torch.zeros(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="target"):
        ex.scores(mlp, torch.zeros(2, 10, dtype=torch.float64), target=7)
    with pytest.raises(ValueError, match="target"):
        ex.scores(mlp, torch.zeros(2, 10, dtype=torch.float64), target=torch.tensor([0, 1, 2]))


# ------------------------------------------------------- registered rules and the wrapper
def test_smoothgrad_wraps_any_rule_with_the_same_noise():
    """SmoothGrad(base=grad_x_input) = mean over the same noisy copies of x_s ⊙ ∇f(x_s),
    computed by hand; base=ig runs IG at each noisy copy."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(4, 5)
    kw = {"n_samples": 6, "sigma": 0.3, "sigma_mode": "absolute", "seed": 3}
    sg = Explainer("smoothgrad", base="grad_x_input", **kw).attribute(model, x, 1)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn((6, *x.shape), generator=gen) * 0.3
    manual = torch.zeros_like(x)
    for e in noise:
        xs = (x + e).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xs)[:, 1].sum(), xs)
        manual += xs.detach() * g / 6
    torch.testing.assert_close(sg, manual, rtol=1e-5, atol=1e-6)
    ig_kw = {"n_steps": 4}
    sg_ig = Explainer("smoothgrad", base="ig", base_kwargs=ig_kw, **kw).attribute(model, x, 1)
    ig = Explainer("ig", **ig_kw)
    by_hand = sum(ig.attribute(model, x + e, 1) for e in noise) / 6
    torch.testing.assert_close(sg_ig, by_hand, rtol=1e-5, atol=1e-6)
    chunked = Explainer("smoothgrad", base="grad_x_input", internal_batch_size=8, **kw)
    torch.testing.assert_close(chunked.attribute(model, x, 1), sg, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="base='smoothgrad' is not supported"):
        Explainer("smoothgrad", base="smoothgrad")
    with pytest.raises(ValueError, match="base='lime'"):
        Explainer("smoothgrad", base="lime")


def test_a_new_explainer_is_one_registration():
    """A rule registered in a test works in Explainer, scores, attacks and training, with no
    change to central code."""
    from r2et import ERAttack, get_method
    from r2et.explain import EXPLAINERS, AttributionRule, list_explainers, register_explainer

    @register_explainer
    class Doubled(AttributionRule):
        """a(x) = 2 ∂f_c/∂x (a toy rule)."""

        name = "doubled-grad"

        def attribute(self, grad, x, create_graph):
            return 2 * grad(x, create_graph)

    try:
        assert "doubled-grad" in list_explainers()
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.Softplus(), torch.nn.Linear(8, 2)
        )
        x = torch.randn(5, 6)
        ex = Explainer("doubled-grad")
        torch.testing.assert_close(
            ex.attribute(model, x), 2 * Explainer("grad").attribute(model, x)
        )
        res = ERAttack(ex, 2, 0.1, steps=3, seed=0)(model, x)
        assert res.p_at_k.shape == (5,)
        loss, _ = get_method("r2et-noh", k=2, explainer=ex).loss(model, x, torch.zeros(5).long())
        loss.backward()
        assert model[0].weight.grad is not None
    finally:
        EXPLAINERS.unregister("doubled-grad")
    with pytest.raises(ValueError, match="not a known explainer"):
        Explainer("doubled-grad")
