"""Second-order safety: attention models (fused SDPA kernels have no double backward) in R2ET
training and the attacks, and the BatchNorm warning of regularised training."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from r2et import EnsembleAttack, ERAttack, Explainer, get_method, list_methods, precision_at_k
from r2et.methods import batch_statistics_layers
from r2et.models import second_order

pytestmark = pytest.mark.usefixtures("one_thread")

FUSED = ("Flash", "Efficient", "Cudnn")  # grad_fn names of the fused SDPA kernels


class TokenAttention(nn.Module):
    """Tabular features as tokens (value x embedding + position) -> self-attention -> mean
    pool -> linear: through ``nn.MultiheadAttention`` (``need_weights=False`` takes the SDPA
    path) or ``F.scaled_dot_product_attention`` directly."""

    def __init__(self, n_features: int = 6, d: int = 8, heads: int = 2, n_classes: int = 3,
                 kind: str = "mha") -> None:  # fmt: skip
        super().__init__()
        self.kind, self.heads = kind, heads
        self.embed = nn.Parameter(0.7 * torch.randn(n_features, d))
        self.pos = nn.Parameter(0.3 * torch.randn(n_features, d))
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = x[:, :, None] * self.embed + self.pos  # (N, F, d)
        if self.kind == "mha":
            h = self.attn(tok, tok, tok, need_weights=False)[0]
        else:
            n, f, d = tok.shape
            q = tok.view(n, f, self.heads, d // self.heads).transpose(1, 2)
            h = F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(n, f, d)
        return self.head(torch.tanh(h).mean(1))


def _model(kind: str = "mha", dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TokenAttention(kind=kind).to(dtype)


def _data(n: int = 16, seed: int = 1, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=g, dtype=dtype)
    y = (x[:, 0] + x[:, 1] > 1).long() + (x[:, 2] > 0.7).long()
    return x, y


def _default_kernel_is_fused(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether attention outside the context picks a fused kernel here (its grad_fn)."""
    tok = x[:, :, None] * model.embed + model.pos
    q = tok.view(len(x), 6, 2, 4).transpose(1, 2)
    name = type(F.scaled_dot_product_attention(q, q, q).grad_fn).__name__
    return any(f in name for f in FUSED)


@pytest.mark.parametrize("kind", ["mha", "sdpa"])
def test_double_backward_fails_without_context_and_works_inside(kind: str) -> None:
    model = _model(kind).eval()
    x, _ = _data(4)
    if not _default_kernel_is_fused(model, x):
        pytest.skip("this torch build runs CPU attention on the math kernel: nothing to fix")
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, 0].sum(), xg, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g.abs().sum(), xg)
    # the forward pass decides the kernel: only the forward needs to be inside the block
    with second_order():
        out = model(xg)[:, 0].sum()
    (g,) = torch.autograd.grad(out, xg, create_graph=True)
    (h,) = torch.autograd.grad(g.abs().sum(), xg)
    assert torch.isfinite(h).all() and h.abs().sum() > 0
    # the block restores the previous selection: outside it, the fused kernel is back
    assert _default_kernel_is_fused(model, x)


@pytest.mark.parametrize("method", ["grad", "smoothgrad", "ig"])
def test_saliency_gradient_matches_finite_differences(method: str) -> None:
    """d/dx of w·s(x) through ``Explainer.scores(create_graph=True)`` (double backward, math
    kernel) against central differences of first-order scores (default, fused kernel)."""
    model = _model("sdpa").eval()
    x, _ = _data(3)
    kw = {
        "grad": {},
        "smoothgrad": {"n_samples": 3, "seed": 0, "sigma_mode": "absolute"},
        "ig": {"n_steps": 4},
    }[method]
    ex = Explainer(method, **kw)
    target = model(x).argmax(1)
    w = torch.linspace(-1.0, 1.0, 6, dtype=x.dtype)
    xg = x.clone().requires_grad_(True)
    s = ex.scores(model, xg, target, create_graph=True)
    (g,) = torch.autograd.grad((s * w).sum(), xg)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    h = 1e-5

    def value(z: torch.Tensor) -> float:
        return float((ex.scores(model, z, target) * w).sum())

    fd = (value(x + h * v) - value(x - h * v)) / (2 * h)
    assert float((g * v).sum()) == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_r2et_training_gradient_matches_finite_differences() -> None:
    """The parameter gradient of the r2et loss (double backward through attention) against a
    central difference of the loss along a random parameter direction."""
    model = _model("mha").train()
    x, y = _data(8)
    m = get_method("r2et", k=2, lam=1.0)
    loss, _ = m.loss(model, x, y)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    gen = torch.Generator().manual_seed(3)
    dirs = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    h = 1e-6

    def at(t: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, dirs):
                p.add_(d, alpha=t)
        try:
            return float(m.loss(model, x, y)[0].detach())
        finally:
            with torch.no_grad():
                for p, d in zip(params, dirs):
                    p.sub_(d, alpha=t)

    fd = (at(h) - at(-h)) / (2 * h)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs))
    assert analytic == pytest.approx(fd, rel=1e-5)


REGULARISED = [n for n in list_methods() if n not in ("vanilla", "wd", "sp", "r2et-cert")]


@pytest.mark.parametrize("name", REGULARISED)
def test_every_saliency_method_trains_an_attention_model(name: str) -> None:
    model = _model("mha", dtype=torch.float32).train()
    x, y = _data(8, dtype=torch.float32)
    kw = {"k": 2}
    if name == "at":
        kw.update(at_steps=2)
    m = get_method(name, **kw)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        loss, logs = m.loss(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and logs["ce"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_r2et_trained_attention_model_is_attacked() -> None:
    model = _model("sdpa", dtype=torch.float32)
    x, y = _data(24, dtype=torch.float32)
    m = get_method("r2et", k=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(5):
        loss, _ = m.loss(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt = x[:8]
    ex = m.explainer
    er = ERAttack(ex, 2, 0.2, steps=5, seed=0)(model, xt)
    ens = EnsembleAttack(ex, 2, 0.2, preset="fast", seed=0)(model, xt)
    for res in (er, ens):
        assert res.x_adv.shape == xt.shape
        assert (res.x_adv - xt).abs().max() <= 0.2 + 1e-6
        # P@k is recorded at the returned point
        s_adv = ex.scores(model, res.x_adv)
        assert torch.allclose(precision_at_k(res.scores_clean, s_adv, 2), res.p_at_k, atol=1e-6)
    assert not model.training  # attacks restore the mode
    # the attack moved some explanation: the gradients were not silently zero
    assert float(torch.minimum(er.p_at_k, ens.p_at_k).mean()) < 1.0


# ------------------------------------------------------------------------------ BatchNorm
class BNNet(nn.Module):
    def __init__(self, norm: str = "batch") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(6, 8)
        self.norm = nn.BatchNorm1d(8) if norm == "batch" else nn.GroupNorm(2, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.norm(self.lin(x))))


def _bn_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if "r2et: BatchNorm" in str(w.message)]


def test_batchnorm_in_train_mode_warns_once_per_model() -> None:
    x, y = _data(8, dtype=torch.float32)
    m = get_method("r2et", k=2)
    model = BNNet().train()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            m.loss(model, x, y)
        get_method("est-h", k=2).loss(model, x, y)
    found = _bn_warnings(rec)
    assert len(found) == 1
    msg = str(found[0].message)
    assert found[0].category is UserWarning and found[0].filename == __file__
    for choice in ("eval-mode statistics", "GroupNorm", "accept the coupling", "'r2et'", "norm"):
        assert choice in msg
    # a second model object warns again, once
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        other = BNNet().train()
        m.loss(other, x, y)
        m.loss(other, x, y)
    assert len(_bn_warnings(rec)) == 1


def test_batchnorm_warning_not_for_eval_groupnorm_or_unregularised() -> None:
    x, y = _data(8, dtype=torch.float32)
    m = get_method("r2et", k=2)
    eval_bn = BNNet().train()
    eval_bn.apply(lambda mod: mod.eval() if isinstance(mod, nn.BatchNorm1d) else None)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        m.loss(BNNet().eval(), x, y)
        m.loss(eval_bn, x, y)  # the documented choice (1): BN layers in eval mode
        m.loss(BNNet("group").train(), x, y)
        get_method("vanilla").loss(BNNet().train(), x, y)
    assert _bn_warnings(rec) == []


def test_batchnorm_warning_does_not_change_the_loss() -> None:
    x, y = _data(8, dtype=torch.float32)
    m = get_method("r2et", k=2)
    model = BNNet().train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warned = m.loss(model, x, y)[0]
    with second_order():
        plain = m._loss(model, x, y, {})[0]  # the same loss without the check
    assert torch.equal(warned, plain)


def test_batch_statistics_layers() -> None:
    model = BNNet().train()
    assert batch_statistics_layers(model) == ["norm"]
    assert batch_statistics_layers(model.eval()) == []
    no_stats = nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False)).eval()
    assert batch_statistics_layers(no_stats) == ["0"]  # batch statistics even in eval mode
    assert batch_statistics_layers(lambda z: z) == []


# ------------------------------------------------------------------------ output adapter
class DictAttention(nn.Module):
    """An attention model returning a dict and a tuple-returning variant (Hugging Face-like)."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.inner = _model("sdpa", dtype=torch.float32)
        self.as_tuple = as_tuple

    def forward(self, x: torch.Tensor) -> object:
        logits = self.inner(x)
        return (logits, x.mean(1)) if self.as_tuple else {"logits": logits, "aux": x.mean(1)}


@pytest.mark.parametrize("output", ["logits", "callable", 0])
def test_output_adapter_trains_and_attacks(output: object) -> None:
    from r2et.models import adapt_output

    raw = DictAttention(as_tuple=output == 0)
    fn = (lambda out: out["logits"]) if output == "callable" else output
    model = adapt_output(raw, fn)
    x, y = _data(8, dtype=torch.float32)
    assert torch.equal(model(x), raw.inner(x))
    assert list(model.parameters()) == list(raw.parameters())
    loss, _ = get_method("r2et", k=2).loss(model.train(), x, y)
    loss.backward()
    assert raw.inner.head.weight.grad is not None
    res = ERAttack(Explainer(), 2, 0.1, steps=2, seed=0)(model.eval(), x)
    assert res.p_at_k.shape == (8,)


def test_output_adapter_errors() -> None:
    from r2et.models import adapt_output

    x, _ = _data(2, dtype=torch.float32)
    with pytest.raises(ValueError, match="no key or attribute 'logit'"):
        adapt_output(DictAttention(), "logit")(x)
    with pytest.raises(ValueError, match="output must be"):
        adapt_output(DictAttention(), 1.5)  # type: ignore[arg-type]
