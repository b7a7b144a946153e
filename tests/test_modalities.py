"""Explainer, metrics and ERAttack on each modality: tabular (Adult, MLP), image (mnist5k, CNN)
and graph (MUTAG, GCN with ``adj``/``mask`` passed through ``forward_kwargs``).

Models are trained for a few seconds so explanations are those of a working classifier.
Reference values come from independent per-sample ``torch.autograd.grad`` computations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import requires_data
from torch import nn

from r2et import Explainer, precision_at_k, thickness, topk_kendall, topk_spearman
from r2et.attacks import ERAttack
from r2et.data import Dataset, load_dataset
from r2et.models import build_model

pytestmark = requires_data

MODALITIES = ("tabular", "image", "graph")


@dataclass
class Case:
    ds: Dataset
    model: nn.Module
    x: torch.Tensor
    fkw: dict[str, Any]
    eps: float


def _fit(ds: Dataset, model: nn.Module, epochs: int, lr: float, batch_size: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        for xb, yb, kw in ds.batches("train", batch_size, shuffle=True, generator=gen):
            opt.zero_grad()
            F.cross_entropy(model(xb, **kw), yb).backward()
            opt.step()
    return model.eval()


def _accuracy(case: Case, n: int = 2000) -> float:
    x, y, kw = case.ds.subset("test", n)
    with torch.no_grad():
        return float((case.model(x, **kw).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread beats two contended ones
    try:
        return _make_cases()
    finally:
        torch.set_num_threads(before)


def _make_cases() -> dict[str, Case]:
    torch.manual_seed(0)
    out = {}
    adult = load_dataset("adult")
    mlp = build_model(**adult.default_model, input_shape=[108], n_classes=2)
    x, _, kw = adult.subset("test", 16)
    out["tabular"] = Case(adult, _fit(adult, mlp, 1, 1e-3, 256), x, kw, 0.3)

    mnist = load_dataset("mnist5k")
    cnn = build_model("cnn", [1, 28, 28], 10, channels=[8, 16], hidden=32)
    x, _, kw = mnist.subset("test", 8)
    out["image"] = Case(mnist, _fit(mnist, cnn, 1, 3e-3, 64), x, kw, 0.1)

    mutag = load_dataset("mutag")
    gcn = build_model(**mutag.default_model, input_shape=[28, 7], n_classes=2)
    x, _, kw = mutag.subset("test", 12)
    out["graph"] = Case(mutag, _fit(mutag, gcn, 20, 3e-3, 16), x, kw, 0.2)
    for case in out.values():
        case.model.requires_grad_(False)
    return out


def _reference_grad(case: Case, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂ logit_target / ∂x, one sample at a time (no batching at all)."""
    grads = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        kw = {k: v[i : i + 1] for k, v in case.fkw.items()}
        (g,) = torch.autograd.grad(case.model(xi, **kw)[0, target[i]], xi)
        grads.append(g[0])
    return torch.stack(grads)


def _reduce(attr: torch.Tensor, modality: str) -> torch.Tensor:
    a = attr.abs()
    if modality == "image":
        return a.sum(1).flatten(1)
    if modality == "graph":
        return a.sum(-1)
    return a


def _pred(case: Case) -> torch.Tensor:
    with torch.no_grad():
        return case.model(case.x, **case.fkw).argmax(1)


def test_models_learned_something(cases: dict[str, Case]) -> None:
    goals = {"tabular": 0.8, "image": 0.75, "graph": 0.7}
    for name, case in cases.items():
        assert _accuracy(case) >= goals[name], name


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("method", ["grad", "grad_x_input"])
def test_gradient_scores_match_per_sample_autograd(
    cases: dict[str, Case], modality: str, method: str
) -> None:
    case = cases[modality]
    target = _pred(case)
    scores = Explainer(method).scores(case.model, case.x, **case.fkw)
    ref = _reference_grad(case, case.x, target)
    if method == "grad_x_input":
        ref = ref * case.x
    expect = _reduce(ref, modality)
    assert scores.shape == (len(case.x), case.ds.n_features)
    torch.testing.assert_close(scores, expect, rtol=1e-5, atol=1e-7)


def _leggauss_ig(case: Case, target: torch.Tensor, n_steps: int) -> torch.Tensor:
    """IG with a zero baseline: x ⊙ Σ_m w_m ∇f(α_m x), Gauss-Legendre nodes on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    total = torch.zeros_like(case.x)
    for a, w in zip((nodes + 1) / 2, weights / 2):
        total += float(w) * _reference_grad(case, float(a) * case.x, target)
    return case.x * total


@pytest.mark.parametrize("modality", MODALITIES)
def test_ig_expands_forward_kwargs(cases: dict[str, Case], modality: str) -> None:
    """IG runs n_steps copies of the batch through the model: the per-sample keywords (the
    graphs' adjacency and mask) must be expanded with it."""
    case = cases[modality]
    target = _pred(case)
    ex = Explainer("ig", n_steps=6, internal_batch_size=5)
    attr = ex.attribute(case.model, case.x, **case.fkw)
    torch.testing.assert_close(attr, _leggauss_ig(case, target, 6), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("modality", MODALITIES)
def test_smoothgrad_runs_with_forward_kwargs(cases: dict[str, Case], modality: str) -> None:
    case = cases[modality]
    sg = Explainer("smoothgrad", n_samples=6, sigma=0.1, seed=0)
    a = sg.scores(case.model, case.x, **case.fkw)
    b = sg.scores(case.model, case.x, **case.fkw)
    assert a.shape == (len(case.x), case.ds.n_features) and bool((a >= 0).all())
    torch.testing.assert_close(a, b)  # seeded
    if modality == "image":
        return  # max-pooling over tied (zero) pixels routes gradients by noise: no limit check
    # vanishing noise: SmoothGrad tends to the plain gradient
    tiny = Explainer("smoothgrad", n_samples=3, sigma=1e-7, seed=0)
    plain = Explainer("grad").scores(case.model, case.x, **case.fkw)
    torch.testing.assert_close(
        tiny.scores(case.model, case.x, **case.fkw), plain, rtol=1e-3, atol=1e-5
    )


@pytest.mark.parametrize(
    "ex",
    [
        Explainer("grad"),
        Explainer("grad_x_input"),
        Explainer("smoothgrad", n_samples=4, seed=1),
        Explainer("ig", n_steps=4),
    ],
    ids=["grad", "gxi", "smoothgrad", "ig"],
)
def test_padded_nodes_never_rank(cases: dict[str, Case], ex: Explainer) -> None:
    case = cases["graph"]
    mask = case.fkw["mask"]
    scores = ex.scores(case.model, case.x, **case.fkw)
    assert float(scores[mask == 0].abs().max()) == 0.0
    assert bool(((scores * mask).sum(1) > 0).all())
    k = case.ds.default_k
    top = scores.topk(k, dim=1).indices
    n_pos = (scores > 0).sum(1)
    ok = n_pos >= k
    assert bool(ok.any())
    assert bool((mask.gather(1, top)[ok] == 1).all())


@pytest.mark.parametrize("modality", MODALITIES)
def test_metrics_and_thickness(cases: dict[str, Case], modality: str) -> None:
    case = cases[modality]
    k = case.ds.default_k
    ex = Explainer("grad")
    s = ex.scores(case.model, case.x, **case.fkw)
    ref = _reduce(_reference_grad(case, case.x, _pred(case)), modality)
    torch.testing.assert_close(s, ref, rtol=1e-5, atol=1e-7)
    # P@k of two equal rankings is 1 (rows whose k-th and (k+1)-th scores are tied -- e.g.
    # symmetric atoms of a molecule -- may order the tie differently: left out)
    srt = ref.sort(dim=1, descending=True).values
    clear = (srt[:, k - 1] - srt[:, k]) > 1e-4 * srt[:, 0]
    assert int(clear.sum()) >= len(s) // 2
    p = precision_at_k(s, ref, k)
    torch.testing.assert_close(p[clear], torch.ones(int(clear.sum())))
    torch.testing.assert_close(topk_kendall(s, s, k), torch.ones(len(s)))
    torch.testing.assert_close(topk_spearman(s, s, k), torch.ones(len(s)))
    # x' = x: the path is constant, Θ(x) = mean of the top-k scores − mean of the others
    th0 = thickness(case.model, case.x, ex, k, radius=0.1, x_prime=case.x, **case.fkw)
    srt = s.sort(dim=1, descending=True).values
    gap = srt[:, :k].mean(1) - srt[:, k:].mean(1)
    torch.testing.assert_close(th0, gap, rtol=1e-5, atol=1e-7)
    th = thickness(
        case.model, case.x, ex, k, radius=case.eps, n_samples=3, n_steps=3, seed=0, **case.fkw
    )
    assert th.shape == (len(case.x),) and bool(torch.isfinite(th).all())
    assert float((th - gap).abs().max()) > 0  # the ball was explored


@pytest.mark.parametrize("modality", MODALITIES)
def test_erattack(cases: dict[str, Case], modality: str) -> None:
    case = cases[modality]
    k = case.ds.default_k
    ex = Explainer("grad")
    atk = ERAttack(ex, k, case.eps, steps=10, bounds=case.ds.bounds, seed=0)
    res = atk(case.model, case.x, **case.fkw)
    n = len(case.x)
    assert res.x_adv.shape == case.x.shape and res.p_at_k.shape == (n,)
    # inside the l_inf ball and the dataset's bounds
    assert float((res.x_adv - case.x).abs().max()) <= case.eps + 1e-6
    lo, hi = (torch.as_tensor(b, dtype=case.x.dtype) for b in case.ds.bounds)
    assert bool((res.x_adv >= lo - 1e-6).all() and (res.x_adv <= hi + 1e-6).all())
    # the prediction is kept, and the reported scores/P@k are the original model's
    assert not bool(res.flipped.any())
    with torch.no_grad():
        assert torch.equal(case.model(res.x_adv, **case.fkw).argmax(1), _pred(case))
    torch.testing.assert_close(res.scores_adv, ex.scores(case.model, res.x_adv, **case.fkw))
    top_c = res.scores_clean.topk(k, 1).indices
    top_a = res.scores_adv.topk(k, 1).indices
    p = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(top_c, top_a)])
    torch.testing.assert_close(res.p_at_k.float(), p)
    assert float(res.p_at_k.mean()) < 1.0  # the attack moved some explanation
    if modality == "graph":
        assert float(res.scores_adv[case.fkw["mask"] == 0].abs().max()) == 0.0
