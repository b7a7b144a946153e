"""Ranking metrics against pure Python and scipy; thickness against closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from r2et import (
    Explainer,
    cosine_distance,
    precision_at_k,
    thickness,
    topk_kendall,
    topk_spearman,
)
from r2et.metrics import topk_gap, topk_mask


def test_precision_at_k_matches_python_sets():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, 12, generator=g), torch.rand(50, 12, generator=g)
    for k in (1, 3, 6, 11):
        ours = precision_at_k(a, b, k)
        for row in range(50):
            sa = set(np.argsort(-a[row].numpy())[:k].tolist())
            sb = set(np.argsort(-b[row].numpy())[:k].tolist())
            assert ours[row].item() == pytest.approx(len(sa & sb) / k)


@pytest.mark.parametrize("k", [2, 5, 9])
@pytest.mark.parametrize("ties", [False, True])
def test_kendall_and_spearman_match_scipy(k, ties):
    g = torch.Generator().manual_seed(k + 10 * ties)
    if ties:  # small integer values: many ties inside the top-k of b (a stays untied)
        a = torch.randperm(12, generator=g).repeat(40, 1).double() + torch.rand(40, 12, generator=g)
        b = torch.randint(0, 4, (40, 12), generator=g).double()
    else:
        a, b = torch.rand(40, 12, generator=g).double(), torch.rand(40, 12, generator=g).double()
    kt, sp = topk_kendall(a, b, k), topk_spearman(a, b, k)
    for row in range(40):
        idx = np.argsort(-a[row].numpy())[:k]
        ra, rb = a[row].numpy()[idx], b[row].numpy()[idx]
        if np.all(rb == rb[0]):
            assert torch.isnan(kt[row]) and torch.isnan(sp[row])
            continue
        assert kt[row].item() == pytest.approx(stats.kendalltau(ra, rb).statistic, abs=1e-12)
        assert sp[row].item() == pytest.approx(stats.spearmanr(ra, rb).statistic, abs=1e-12)


def test_cosine_distance():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
    torch.testing.assert_close(cosine_distance(a, b), torch.tensor([1.0, 0.0, 2.0]))


def test_topk_gap_equals_brute_force_pairwise_sum():
    g = torch.Generator().manual_seed(3)
    s = torch.rand(7, 9, generator=g).double()
    k = 4
    mask = topk_mask(s, k)
    brute = torch.zeros(7, dtype=torch.float64)
    for n in range(7):
        top = mask[n].nonzero().flatten().tolist()
        rest = (~mask[n]).nonzero().flatten().tolist()
        brute[n] = sum(s[n, i] - s[n, j] for i, j in itertools.product(top, rest)) / (k * (9 - k))
    torch.testing.assert_close(topk_gap(s, mask), brute)


unique_rows = st.lists(st.integers(-1000, 1000), min_size=6, max_size=6, unique=True)


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(unique_rows, min_size=1, max_size=5),
    data=st.data(),
    k=st.integers(1, 5),
    c=st.floats(1e-3, 1e3),
)
def test_precision_at_k_properties(a, data, k, c):
    b = data.draw(st.lists(unique_rows, min_size=len(a), max_size=len(a)))
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    p = precision_at_k(a, b, k)
    assert bool(((p >= 0) & (p <= 1)).all())
    assert bool((precision_at_k(a, a, k) == 1).all())
    assert torch.equal(p, precision_at_k(b, a, k))
    assert torch.equal(p, precision_at_k(c * a, b, k))
    assert torch.equal((p * k).round(), p * k)  # a whole number of shared features


@pytest.mark.parametrize("fn", [precision_at_k, topk_kendall, topk_spearman])
def test_metric_errors(fn):
    a = torch.rand(3, 5)
    with pytest.raises(ValueError, match="k="):
        fn(a, a, 5)
    with pytest.raises(ValueError, match="k="):
        fn(a, a, 0)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, torch.rand(3, 6), 2)
    with pytest.raises(ValueError, match="NaN"):
        fn(a, torch.full((3, 5), float("nan")), 2)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        fn(torch.rand(5), torch.rand(5), 2)


class Quadratic(torch.nn.Module):
    """Logits ``[½ xᵀAx + bᵀx, 0]``: the class-0 gradient ``Āx + b`` (Ā = (A + Aᵀ)/2) is linear
    in x and, with large b and small x, positive, so scores are ``Āx + b`` exactly."""

    def __init__(self, d: int = 6, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(d, d, generator=g, dtype=torch.float64)
        self.b = 10 + torch.arange(d, dtype=torch.float64)

    def forward(self, x):
        f = 0.5 * torch.einsum("ni,ij,nj->n", x, self.A, x) + x @ self.b
        return torch.stack([f, torch.zeros_like(f)], 1)

    def scores(self, x):
        return x @ ((self.A + self.A.T) / 2) + self.b


def test_thickness_of_quadratic_model_matches_closed_form():
    """Linear scores: ∫₀¹ gap(s(x_t)) dt = gap(s((x + x')/2)), averaged over the given x'."""
    model = Quadratic()
    g = torch.Generator().manual_seed(1)
    x = 0.3 * torch.randn(5, 6, generator=g, dtype=torch.float64)
    xp = x + 0.2 * (2 * torch.rand(4, 5, 6, generator=g, dtype=torch.float64) - 1)
    ex = Explainer("grad")
    k = 2
    mask = topk_mask(model.scores(x), k)
    closed = torch.stack([topk_gap(model.scores((x + p) / 2), mask) for p in xp]).mean(0)
    ours = thickness(model, x, ex, k, radius=0.2, target=0, x_prime=xp, n_steps=2)
    torch.testing.assert_close(ours, closed, atol=1e-10, rtol=1e-10)
    # a single x' of x's shape works the same way
    one = thickness(model, x, ex, k, radius=0.2, target=0, x_prime=xp[0], n_steps=3)
    torch.testing.assert_close(one, topk_gap(model.scores((x + xp[0]) / 2), mask))


def test_thickness_random_perturbations_average_to_gap_at_x():
    """E[x'] = x for the uniform ball, so for linear scores E[Θ] = gap(s(x))."""
    model = Quadratic()
    x = 0.3 * torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ex = Explainer("grad")
    mask = topk_mask(model.scores(x), 3)
    exact = topk_gap(model.scores(x), mask)
    for norm in ("linf", "l2"):
        th = thickness(
            model,
            x,
            ex,
            3,
            radius=0.3,
            target=0,
            norm=norm,
            n_samples=4000,
            seed=0,
            batch_size=4000,
        )
        torch.testing.assert_close(th, exact, atol=0.02, rtol=0)
        again = thickness(model, x, ex, 3, radius=0.3, target=0, norm=norm, n_samples=4000, seed=0)
        torch.testing.assert_close(th, again)


def test_thickness_of_linear_model_is_its_fixed_gap():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 3).double()
    x = torch.randn(6, 8, dtype=torch.float64)
    ex = Explainer("grad")
    th = thickness(lin, x, ex, 3, radius=0.5, n_samples=3, n_steps=2, seed=0)
    s = ex.scores(lin, x)
    expected = topk_gap(s, topk_mask(s, 3))
    torch.testing.assert_close(th, expected)
    assert bool((th > 0).all())


def test_thickness_errors():
    lin = torch.nn.Linear(4, 2).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    ex = Explainer()
    with pytest.raises(ValueError, match="radius"):
        thickness(lin, x, ex, 2, radius=0.0)
    with pytest.raises(ValueError, match="k="):
        thickness(lin, x, ex, 4, radius=0.1)
    with pytest.raises(ValueError, match="norm"):
        thickness(lin, x, ex, 2, radius=0.1, norm="l1")
    with pytest.raises(ValueError, match="x_prime"):
        thickness(lin, x, ex, 2, radius=0.1, x_prime=torch.randn(3, 5, dtype=torch.float64))
