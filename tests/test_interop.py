"""r2et.interop: Captum attributions as r2et explainers (evaluation only; refused where a second
derivative is needed), r2et explainers as Quantus explain_funcs, and r2et's P@k-under-attack and
thickness as Quantus-style metrics. Oracles: r2et's own explainers (themselves tested against
Captum in test_explain.py), direct calls of r2et's attacks and metrics, and NumPy re-computations
of Quantus' Max-Sensitivity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import (
    DeepLift,
    IntegratedGradients,
    LayerGradientXActivation,
    NoiseTunnel,
    Saliency,
)
from conftest import make_cnn, make_mlp
from torch import nn

from r2et import (
    EnsembleAttack,
    ERAttack,
    Explainer,
    MSEAttack,
    RandomSearchAttack,
    get_method,
    thickness,
)
from r2et.attacks import ExplanationPGD, Member
from r2et.interop import (
    CaptumExplainer,
    PrecisionAtKUnderAttack,
    Thickness,
    quantus_explain_func,
)


def _x(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Scaled(nn.Module):
    """A model with a per-sample tensor keyword and a shared float keyword."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
        return self.net(x * scale + shift)


# ---------------------------------------------------------------------------- Captum adapter
@pytest.mark.parametrize("output", ["logit", "prob", "loss"])
def test_captum_saliency_and_ig_equal_r2et(output):
    model, x = make_mlp(), _x((7, 10))
    target = torch.arange(7) % 3
    sal = CaptumExplainer(Saliency, abs=False, output=output)
    torch.testing.assert_close(
        sal.attribute(model, x, target),
        Explainer("grad", output=output).attribute(model, x, target),
        atol=1e-10, rtol=1e-10,
    )  # fmt: skip
    ig = CaptumExplainer(IntegratedGradients, n_steps=12, method="gausslegendre", output=output)
    ours = Explainer("ig", n_steps=12, output=output)
    torch.testing.assert_close(ig.attribute(model, x, 2), ours.attribute(model, x, 2),
                               atol=1e-8, rtol=1e-8)  # fmt: skip
    # target=None: the predicted class, for both
    torch.testing.assert_close(ig.scores(model, x), ours.scores(model, x), atol=1e-8, rtol=1e-8)


def test_captum_images_groups_and_forward_kwargs():
    model, x = make_cnn(), _x((4, 2, 8, 8))
    sal = CaptumExplainer(Saliency)  # Captum's default abs=True: the same scores
    s = sal.scores(model, x)
    assert s.shape == (4, 64)
    torch.testing.assert_close(s, Explainer("grad").scores(model, x), atol=1e-10, rtol=0)
    groups = [list(range(0, 10, 2)), list(range(1, 10, 2))]
    mlp, xt = make_mlp(), _x((5, 10))
    got = CaptumExplainer(Saliency).with_groups(groups).scores(mlp, xt)
    want = Explainer("grad").scores(mlp, xt)
    torch.testing.assert_close(got, torch.stack([want[:, ::2].sum(1), want[:, 1::2].sum(1)], 1))
    assert CaptumExplainer(Saliency, groups=groups).n_groups == 2
    # per-sample keywords follow their rows through IG's expansion; shared ones pass unchanged
    m, xs = Scaled(), _x((5, 6))
    kw = {"scale": 0.5 + torch.rand(5, 1, dtype=torch.float64), "shift": 0.3}
    got = CaptumExplainer(IntegratedGradients, n_steps=8).attribute(m, xs, 1, **kw)
    want = Explainer("ig", n_steps=8).attribute(m, xs, 1, **kw)
    torch.testing.assert_close(got, want, atol=1e-7, rtol=1e-7)  # quadrature nodes: ~1e-9


def test_captum_factories_module_methods_and_config():
    model, x = make_cnn(), _x((3, 2, 8, 8))
    nt = CaptumExplainer(lambda f: NoiseTunnel(Saliency(f)), nt_type="smoothgrad",
                         nt_samples=3, stdevs=0.0, name="smoothgrad")  # fmt: skip
    assert nt.method == "captum:smoothgrad"
    # zero noise: the mean of identical gradients is the gradient
    torch.testing.assert_close(nt.scores(model, x), Explainer("grad").scores(model, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = CaptumExplainer(DeepLift).attribute(make_mlp(activation="softplus"), _x((3, 10)), 0)
    assert a.shape == (3, 10) and not a.requires_grad
    # module-hooking methods also run inside the gradient-free attack (which wraps the model)
    smooth, xs = make_mlp(activation="softplus"), _x((4, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = RandomSearchAttack(CaptumExplainer(DeepLift), 3, 0.3, steps=3, seed=0)(smooth, xs)
    assert res.p_at_k.shape == (4,)
    cfg = CaptumExplainer(IntegratedGradients, n_steps=5, groups=[[0], [1, 2]]).config()
    assert cfg == {"method": "captum:IntegratedGradients", "output": "logit", "reduce": "auto",
                   "n_steps": 5, "groups": [0, 1, 1]}  # fmt: skip


def test_captum_bad_input_one_line():
    model = make_mlp()
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    cases = [
        (TypeError, "not a built instance", lambda: CaptumExplainer(Saliency(model))),
        (TypeError, "Attribution class", lambda: CaptumExplainer(int)),
        (ValueError, "set by CaptumExplainer", lambda: CaptumExplainer(Saliency, target=1)),
        (ValueError, "return_convergence_delta",
         lambda: CaptumExplainer(IntegratedGradients, return_convergence_delta=True)),
        (ValueError, "output", lambda: CaptumExplainer(Saliency, output="logits")),
        (ValueError, "layer and neuron methods",
         lambda: CaptumExplainer(lambda f: LayerGradientXActivation(f, first)).attribute(
             model, _x((2, 10)), 0)),
    ]  # fmt: skip
    for exc, text, fn in cases:
        with pytest.raises(exc, match=text) as err:
            fn()
        assert "\n" not in str(err.value)


def test_first_order_explainer_is_refused_by_gradient_attacks_and_training():
    cex = CaptumExplainer(IntegratedGradients)
    refusals = [
        lambda: ERAttack(cex, 2, 0.1),
        lambda: MSEAttack(cex, 2, 0.1),
        lambda: ExplanationPGD(cex, 2, 0.1),
        lambda: EnsembleAttack(cex, 2, 0.1),  # the default preset has APGD members
        lambda: EnsembleAttack(cex, 2, 0.1, members=[Member("pgd", 5), Member("search", 5)]),
        lambda: get_method("r2et", k=2, explainer=cex),
        lambda: get_method("vanilla", explainer=cex),
        lambda: cex.attribute(make_mlp(), _x((2, 10)), create_graph=True),
    ]
    for fn in refusals:
        with pytest.raises(ValueError, match=r"captum#361") as err:
            fn()
        msg = str(err.value)
        assert "\n" not in msg and "first-order" in msg and "Explainer('ig')" in msg
    with pytest.raises(ValueError, match="RandomSearchAttack"):
        ERAttack(cex, 2, 0.1)

    class Undeclared:  # r2et's protocol, but no second-order declaration
        def __init__(self) -> None:
            inner = Explainer("grad")
            self.scores, self.resolve_target = inner.scores, inner.resolve_target

    with pytest.raises(ValueError, match="does not declare supports_second_order"):
        ERAttack(Undeclared(), 2, 0.1)
    # the gradient-free members alone are accepted
    EnsembleAttack(cex, 2, 0.1, members=[Member("search", 5)])
    RandomSearchAttack(cex, 2, 0.1, steps=5)


def test_get_method_accepts_any_second_order_explainer():
    class Wrapped:
        supports_second_order = True

        def __init__(self, inner: Explainer) -> None:
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

    model, x = make_mlp(activation="softplus"), _x((8, 10))
    y = torch.arange(8) % 3
    inner = Explainer("ig", n_steps=4)
    ours = get_method("r2et", k=3, explainer=Wrapped(inner)).loss(model, x, y)[0]
    ref = get_method("r2et", k=3, explainer=inner).loss(model, x, y)[0]
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="lacks"):
        get_method("r2et", k=3, explainer=object())


def test_captum_in_gradient_free_attack_and_thickness_equals_r2et():
    """Saliency(abs=False) through Captum gives r2et's gradient scores, so a seeded random
    search and the thickness integral must give the same numbers as with Explainer('grad')."""
    model, x = make_mlp(), _x((6, 10), seed=3)
    cex, ex = CaptumExplainer(Saliency, abs=False), Explainer("grad")
    a = RandomSearchAttack(cex, 3, 0.3, steps=15, seed=0)(model, x)
    b = RandomSearchAttack(ex, 3, 0.3, steps=15, seed=0)(model, x)
    torch.testing.assert_close(a.p_at_k, b.p_at_k)
    torch.testing.assert_close(a.x_adv, b.x_adv)
    assert float(a.p_at_k.mean()) < 1  # the search moved something: the check is not vacuous
    ta = thickness(model, x, cex, 3, radius=0.2, n_samples=4, n_steps=3, seed=1)
    tb = thickness(model, x, ex, 3, radius=0.2, n_samples=4, n_steps=3, seed=1)
    torch.testing.assert_close(ta, tb)


def test_captum_explainer_in_evaluate_equals_r2et():
    """evaluate() with a Captum explainer (clean scores, thickness, faithfulness, locality and
    a random search) reports what it reports for the equal r2et explainer."""
    from r2et import evaluate

    model, x = make_mlp(), _x((20, 10), seed=7)
    y = model(x).argmax(1)
    reports = []
    for ex in (CaptumExplainer(Saliency, abs=False), Explainer("grad")):
        atk = RandomSearchAttack(ex, 3, 0.3, steps=10, seed=0)
        r = evaluate(model, (x, y), ex, k=3, attacks={"search": atk}, thickness_radius=0.2,
                     faithfulness=True)  # fmt: skip
        r.pop("seconds")
        r["attacks"]["search"].pop("seconds")
        reports.append(r)
    assert reports[0] == reports[1]
    assert reports[0]["attacks"]["search"]["p_at_k_mean"] < 1


# ---------------------------------------------------------------------------- Quantus-style
def test_quantus_explain_func_matches_explainer():
    model, x = make_mlp(), _x((5, 10))
    y = np.array([0, 1, 2, 0, 1])
    ex = Explainer("ig", n_steps=6)
    fn = quantus_explain_func(ex)
    got = fn(model=model, inputs=x.numpy(), targets=y, device="cpu", method="ig")
    assert isinstance(got, np.ndarray) and got.shape == (5, 10)
    np.testing.assert_allclose(got, ex.attribute(model, x, torch.from_numpy(y)).numpy())
    assert fn.r2et_explainer is ex
    # float32 inputs for a float64 model are cast to the model's dtype
    got32 = fn(model, x.float().numpy(), y)
    assert got32.dtype == np.float64
    with pytest.raises(TypeError, match="unexpected keyword"):
        fn(model, x.numpy(), y, softmax=True)
    with pytest.raises(ValueError, match="one class per input"):
        fn(model, x.numpy(), y[:3])
    with pytest.raises(TypeError, match="r2et explainer"):
        quantus_explain_func(lambda m, x: x)


def test_r2et_metrics_quantus_style_equal_direct_calls():
    model, x = make_mlp(), _x((6, 10), seed=4)
    y = model(x).argmax(1)
    ex = Explainer("grad")
    fn = quantus_explain_func(ex)
    pk = PrecisionAtKUnderAttack(3, 0.3, attack="fast", seed=0)
    got = pk(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=fn)
    want = EnsembleAttack(ex, 3, 0.3, preset="fast", seed=0)(model, x, y).p_at_k
    assert isinstance(got, list) and all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, want.numpy())
    assert pk.evaluation_scores == got
    # a built attack is used as is; batches are seeded seed + i
    atk = RandomSearchAttack(ex, 3, 0.3, steps=10, seed=5)
    got = PrecisionAtKUnderAttack(3, 0.3, attack=atk)(model, x.numpy(), y.numpy(), batch_size=4)
    want = torch.cat([atk(model, x[:4], y[:4]).p_at_k, atk(model, x[4:], y[4:]).p_at_k])
    np.testing.assert_allclose(got, want.numpy())
    th = Thickness(3, 0.2, explainer=ex, n_samples=4, n_steps=3, seed=2, return_aggregate=True)
    got = th(model, x.numpy(), y.numpy())
    want = thickness(model, x, ex, 3, radius=0.2, target=y, n_samples=4, n_steps=3, seed=2)
    np.testing.assert_allclose(got, [float(want.mean())])
    with pytest.raises(TypeError, match="needs an r2et explainer"):
        Thickness(3, 0.2)(model, x.numpy(), y.numpy())
    with pytest.raises(ValueError, match="k=3"):
        PrecisionAtKUnderAttack(2, 0.3, attack=atk)
    with pytest.raises(ValueError, match="attack"):
        PrecisionAtKUnderAttack(3, 0.3, attack="fastest")
    # a Captum explainer is measured with the gradient-free search
    cex = CaptumExplainer(Saliency, abs=False)
    got = PrecisionAtKUnderAttack(3, 0.3, attack="search", search_steps=10, explainer=cex)(
        model, x.numpy(), y.numpy()
    )
    want = RandomSearchAttack(ex, 3, 0.3, steps=10, seed=0)(model, x, y).p_at_k
    np.testing.assert_allclose(got, want.numpy())


# ---------------------------------------------------------------------------- Quantus itself
def test_quantus_round_trip():
    """Quantus' own Max-Sensitivity driven by r2et's explain_func equals a NumPy re-computation
    from the same noise, ``max_i ‖a(x + δ_i) − a(x)‖ / ‖a(x)‖`` (Yeh et al., 2019), and r2et's
    metrics run inside ``quantus.evaluate``."""
    quantus = pytest.importorskip("quantus")
    model = make_mlp(activation="softplus").float()
    x = _x((4, 10), seed=6).float()
    y = model(x).argmax(1).numpy()
    ex = Explainer("grad")
    fn = quantus_explain_func(ex)
    a = fn(model, x.numpy(), y)
    ms = quantus.MaxSensitivity(nr_samples=5, lower_bound=0.1, disable_warnings=True)
    np.random.seed(0)
    got = ms(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a, explain_func=fn,
             channel_first=True)  # fmt: skip
    np.random.seed(0)
    ratios = []
    for _ in range(5):
        xp = x.numpy() + np.random.uniform(-0.1, 0.1, size=x.shape)
        ap = ex.attribute(model, torch.from_numpy(xp).float(), torch.from_numpy(y)).numpy()
        ratios.append(np.linalg.norm(a - ap, axis=1) / np.linalg.norm(a, axis=1))
    np.testing.assert_allclose(got, np.max(ratios, axis=0), rtol=1e-4, atol=1e-6)
    assert max(got) > 0
    # a linear model's gradient does not move: sensitivity exactly 0
    lin = nn.Linear(10, 3)
    got = ms(model=lin, x_batch=x.numpy(), y_batch=np.zeros(4, dtype=int), a_batch=None,
             explain_func=fn)  # fmt: skip
    np.testing.assert_allclose(got, 0.0, atol=1e-7)

    pk = PrecisionAtKUnderAttack(3, 0.3, attack="fast", seed=0)
    res = quantus.evaluate(
        metrics={"p@k": pk}, xai_methods={"grad": fn}, model=model, x_batch=x.numpy(),
        y_batch=y, explain_func_kwargs={},
    )  # fmt: skip
    want = EnsembleAttack(ex, 3, 0.3, preset="fast", seed=0)(model, x, torch.from_numpy(y))
    np.testing.assert_allclose(res["grad"]["p@k"], want.p_at_k.numpy())
