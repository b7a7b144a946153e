"""The explicit saliency of piecewise-linear networks (r2et.fastpath) against autograd."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import make_cnn, make_mlp
from torch import nn

from r2et import Explainer, build_model, fastpath, get_method
from r2et.models import Standardize

DT = torch.float64


def _x(shape, seed=1, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def _cnn_std() -> nn.Module:
    torch.manual_seed(3)
    norm = [[0.4, 0.5, 0.6], [0.2, 0.25, 0.3]]
    model = build_model("cnn", [3, 8, 8], 4, channels=[4, 6], hidden=8, input_norm=norm)
    return model.to(DT).eval()


def _sequential() -> nn.Module:
    """Every supported layer type, with strides, padding, ceil mode and overlapping pools."""
    torch.manual_seed(4)
    return (
        nn.Sequential(
            Standardize([0.1, -0.2], [0.5, 2.0]),
            nn.Conv2d(2, 5, 3, stride=2, padding=1),
            nn.LeakyReLU(0.1),
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            nn.Conv2d(5, 6, 2, dilation=2, groups=1, bias=False),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
            nn.Dropout(0.3),
            nn.Identity(),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 7),
            nn.ReLU(),
            nn.Linear(7, 3),
        )
        .to(DT)
        .eval()
    )


def _trained(model: nn.Module, x: torch.Tensor, n_classes: int) -> nn.Module:
    """A few vanilla SGD steps with a large learning rate: weights away from initialisation."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    y = torch.arange(len(x)) % n_classes
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


CASES = {
    "mlp": (make_mlp, (6, 10), 3),
    "cnn": (make_cnn, (5, 2, 8, 8), 3),
    "cnn-standardize": (_cnn_std, (4, 3, 8, 8), 4),
    "sequential": (_sequential, (5, 2, 9, 9), 3),
}


def _saliency_pair(model, x, target, output, method="grad"):
    fast = Explainer(method, output=output).attribute(model, x, target, create_graph=True)
    slow = Explainer(method, output=output, fast=False).attribute(
        model, x, target, create_graph=True
    )
    return fast, slow


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("trained", [False, True])
@pytest.mark.parametrize("output", ["logit", "prob", "loss"])
def test_saliency_and_logits_equal_autograd(case, trained, output):
    build, shape, n_classes = CASES[case]
    model, x = build(), _x(shape)
    if trained:
        model = _trained(model, x, n_classes)
    assert fastpath.supports(model)
    for target in (None, 1, torch.arange(shape[0]) % n_classes):
        fast, slow = _saliency_pair(model, x, target, output)
        assert fast.abs().sum() > 0
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
        t = model(x).argmax(1) if target is None else torch.as_tensor(target).expand(shape[0])
        logits, g = fastpath.saliency(model, x, t, output)
        torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g, slow, atol=1e-5, rtol=1e-5)
    fast, slow = _saliency_pair(model, x, 0, output, method="grad_x_input")
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("output", ["logit", "loss"])
def test_second_derivatives_equal_autograd(case, output):
    """d L(g) / d(params, x) of a loss of the saliency: what training and attacks use."""
    build, shape, _ = CASES[case]
    model, x0 = build(), _x(shape)
    v = _x(shape, seed=7)
    grads = []
    for fast in (True, False):
        x = x0.clone().requires_grad_(True)
        g = Explainer("grad", output=output, fast=fast).attribute(model, x, 1, create_graph=True)
        loss = (g * v).sum() + g.pow(2).sum()
        params = [p for p in model.parameters() if p.requires_grad]
        torch.autograd.grad(loss, x, retain_graph=True)  # connected to x, as an attack needs
        out = torch.autograd.grad(loss, [x, *params], allow_unused=True)
        grads.append([torch.zeros_like(p) if d is None else d for d, p in zip(out, [x, *params])])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if output == "logit":  # piecewise linear: zero input-Hessian wherever differentiable
        assert grads[0][0].abs().max() == 0


@pytest.mark.parametrize("case", ["mlp", "cnn", "cnn-standardize"])
@pytest.mark.parametrize(
    "name,kw",
    [
        ("r2et", {}),
        ("r2et-mm", {}),
        ("r2et", {"explainer": Explainer("grad_x_input")}),
        ("r2et-noh", {"adaptive": True}),
        ("est-h", {}),
        ("at", {"at_steps": 2}),
    ],
)
def test_training_loss_and_parameter_gradients_equal_autograd(case, name, kw):
    build, shape, n_classes = CASES[case]
    model, x = build(), _x(shape)
    model = _trained(model, x, n_classes)
    y = torch.arange(shape[0]) % n_classes
    method = get_method(name, k=3, **kw)
    params = list(model.parameters())
    results = []
    for flag in (True, False):
        torch.manual_seed(0)
        with fastpath.enabled(flag):
            loss, logs = method.loss(model, x, y)
        results.append((loss, logs, torch.autograd.grad(loss, params)))
    (lf, logf, gf), (ls, logs_, gs) = results
    torch.testing.assert_close(lf, ls, atol=1e-5, rtol=1e-5)
    assert logf.keys() == logs_.keys()
    for key in logf:
        assert logf[key] == pytest.approx(logs_[key], abs=1e-5, rel=1e-5)
    for a, b in zip(gf, gs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_training_uses_the_fast_path(monkeypatch):
    """The paper's r2et loss calls the explicit saliency (twice: at x and at x + h v) and gets
    it; the gap-only default once."""
    import r2et.explain.engine as explain

    calls = []

    def spy(*args, **kwargs):
        out = fastpath.saliency(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(explain, "explicit_saliency", spy)
    model, x = make_mlp(), _x((6, 10))
    get_method("r2et-paper", k=3).loss(model, x, torch.arange(6) % 3)
    assert calls == [True, True]
    calls.clear()
    get_method("r2et", k=3).loss(model, x, torch.arange(6) % 3)
    assert calls == [True]
    calls.clear()
    with fastpath.enabled(False):
        get_method("r2et-paper", k=3).loss(model, x, torch.arange(6) % 3)
    assert calls == [False, False]


def test_relu_at_zero_and_pool_ties_follow_torch():
    """Pre-activations exactly 0 get gradient 0 (torch's convention); max-pool ties route the
    gradient to the index torch picks."""
    torch.manual_seed(0)
    mlp = make_mlp()
    with torch.no_grad():
        mlp.net[1].bias.zero_()
        mlp.net[3].bias.zero_()
    x = torch.zeros(3, 10, dtype=DT)
    x[1, 0] = 1.0
    fast, slow = _saliency_pair(mlp, x, 0, "logit")
    assert torch.equal(fast, slow)
    assert fast[0].abs().max() == 0  # every unit of row 0 sits exactly at 0
    cnn = make_cnn()
    xc = torch.ones(2, 2, 8, 8, dtype=DT)  # constant images: every pool window ties
    fast, slow = _saliency_pair(cnn, xc, 2, "logit")
    torch.testing.assert_close(fast, slow, atol=1e-12, rtol=0)


class _FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(10, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def _unsupported():
    hooked = make_mlp()
    hooked.net[2].register_forward_hook(lambda m, i, o: o * 2)
    dropout = nn.Sequential(nn.Linear(10, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    torch.manual_seed(0)
    resnet = build_model("resnet9", [3, 32, 32], 3, width=2, groups=2).to(DT).eval()
    return {
        "softplus": (make_mlp(activation="softplus"), (4, 10)),
        "resnet9-groupnorm": (resnet, (2, 3, 32, 32)),
        "functional-relu": (_FunctionalReLU().to(DT), (4, 10)),
        "forward-hook": (hooked, (4, 10)),
        "dropout-train": (dropout.train(), (4, 10)),
        "subclass": (type("MySeq", (nn.Sequential,), {})(*make_mlp().net), (4, 10)),
    }


@pytest.mark.parametrize("name", list(_unsupported()))
def test_unsupported_models_fall_back_to_autograd(name):
    model, shape = _unsupported()[name]
    x = _x(shape)
    assert not fastpath.supports(model)
    assert fastpath.saliency(model, x, torch.zeros(shape[0], dtype=torch.long)) is None
    for output in ("logit", "loss"):
        torch.manual_seed(0)
        fast = Explainer("grad", output=output).attribute(model, x, 1, create_graph=True)
        torch.manual_seed(0)
        slow = Explainer("grad", output=output, fast=False).attribute(
            model, x, 1, create_graph=True
        )
        assert torch.equal(fast, slow)
        assert fast.grad_fn is not None


def test_forward_keywords_fall_back():
    model = make_mlp()
    assert fastpath.saliency(model, _x((2, 10)), torch.zeros(2, dtype=torch.long), "logit",
                             {"scale": 1.0}) is None  # fmt: skip


def test_switches():
    model, x = make_mlp(), _x((4, 10))
    t = torch.zeros(4, dtype=torch.long)
    assert fastpath.is_enabled()
    assert fastpath.saliency(model, x, t) is not None
    with fastpath.enabled(False):
        assert not fastpath.is_enabled()
        assert fastpath.saliency(model, x, t) is None
    assert fastpath.is_enabled()
    ex = Explainer("grad", fast=False)
    assert ex.config()["fast"] is False and "fast=False" in repr(ex)
    assert Explainer(**ex.config()).fast is False
    assert ex.with_groups([[0, 1], [2, 3]]).fast is False
    assert "fast" not in Explainer("grad").config()
    with pytest.raises(ValueError, match="fast"):
        Explainer("grad", fast=1)


def test_explainer_uses_the_fast_path_only_with_a_graph(monkeypatch):
    import r2et.explain.engine as explain

    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return fastpath.saliency(*args, **kwargs)

    monkeypatch.setattr(explain, "explicit_saliency", spy)
    model, x = make_mlp(), _x((4, 10))
    Explainer("grad").attribute(model, x)
    assert calls == []
    Explainer("grad").attribute(model, x, create_graph=True)
    assert calls == [1]
    Explainer("grad", fast=False).attribute(model, x, create_graph=True)
    assert calls == [1]


def test_explainer_checks_survive_the_fast_path():
    model, x = make_mlp(), _x((4, 10))
    with pytest.raises(ValueError, match="target classes"):
        Explainer("grad").attribute(model, x, 3, create_graph=True)
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.net[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Explainer("grad").attribute(bad, x, 0, create_graph=True)


def _step_flops(method, model, x, y) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket in flop_registry:
                fn = flop_registry[func._overloadpacket]
                Count.total += fn(*args, **(kwargs or {}), out_val=out)
            return out

    params = list(model.parameters())
    with Count():
        loss, _ = method.loss(model, x, y)
        loss.backward(inputs=params)
    return Count.total


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fast_path_saves_at_least_12_percent_of_r2et_flops(arch):
    """The issue's target: (R2ET / vanilla FLOPs) with the fast path <= 0.88 x without, for the
    paper's R2ET (two saliency maps per step; the gap-only default computes one)."""
    torch.manual_seed(0)
    if arch == "mlp":
        model, x = build_model("mlp", [108], 2, hidden=[64, 64]), torch.randn(8, 108)
        y = torch.randint(0, 2, (8,))
    else:
        model, x = build_model("cnn", [1, 28, 28], 10), torch.rand(2, 1, 28, 28)
        y = torch.randint(0, 10, (2,))
    vanilla = _step_flops(get_method("vanilla"), model, x, y)
    fast = _step_flops(get_method("r2et-paper", k=8), model, x, y)
    with fastpath.enabled(False):
        slow = _step_flops(get_method("r2et-paper", k=8), model, x, y)
    assert (fast / vanilla) <= 0.88 * (slow / vanilla)
