"""Faithfulness and locality metrics, and feature groups, against brute-force loops."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import make_cnn, make_mlp

from r2et import Explainer, get_method
from r2et.explain import group_index, reduce_scores
from r2et.metrics import (
    deletion,
    locality,
    occlusion_agreement,
    occlusion_scores,
    patch_units,
    precision_at_k,
)


def _x(n: int = 6, f: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _prob(model, x, c):
    with torch.no_grad():
        return float(model(x[None]).softmax(1)[0, c])


# --------------------------------------------------------------------------- groups
GROUPS = [[0], [1, 2, 3], [4], [5, 6], [7, 8, 9]]


def test_grouped_scores_are_the_sum_over_columns():
    model = make_mlp()
    x = _x()
    plain = Explainer("grad").scores(model, x)
    grouped = Explainer("grad", groups=GROUPS).scores(model, x)
    assert grouped.shape == (6, 5)
    for g, cols in enumerate(GROUPS):
        torch.testing.assert_close(grouped[:, g], plain[:, cols].sum(1))
    # the same partition given as one group id per column
    ids = [0, 1, 1, 1, 2, 3, 3, 4, 4, 4]
    torch.testing.assert_close(Explainer("grad", groups=ids).scores(model, x), grouped)
    torch.testing.assert_close(reduce_scores(x, "auto", GROUPS)[:, 1], x[:, 1:4].abs().sum(1))
    # differentiable: the gradient of a grouped score reaches the input
    xg = x.clone().requires_grad_(True)
    s = Explainer("grad", groups=GROUPS).scores(
        make_mlp(activation="softplus"), xg, create_graph=True
    )
    (g,) = torch.autograd.grad(s[:, 1].sum(), xg)
    assert bool(g.abs().sum() > 0)
    ex = Explainer("grad", groups=GROUPS)
    assert Explainer(**ex.config()).config() == ex.config()
    assert ex.unit_index((10,)).tolist() == ids


@pytest.mark.parametrize(
    "bad",
    [[[0, 1], [1, 2]], [[0], [2]], [[]], [], "abc", [0, 2], [[0, "a"]]],
)
def test_groups_must_partition_the_columns(bad):
    with pytest.raises(ValueError, match="group"):
        group_index(bad)


def test_groups_must_match_the_features():
    with pytest.raises(ValueError, match="features"):
        Explainer("grad", groups=GROUPS).scores(make_mlp(n_in=12), _x(f=12))


def test_training_terms_rank_groups():
    """R2ET's gap on groups equals the gap computed by hand from the grouped scores."""
    from r2et.methods import topk_gap_of

    model = make_mlp(activation="softplus")
    x, y = _x(16), torch.zeros(16, dtype=torch.long)
    m = get_method("r2et-noh", k=2, groups=GROUPS, lam=1.0, normalize="none")
    assert m.explainer.n_groups == 5
    loss, logs = m.loss(model, x, y)
    pred = model(x).argmax(1)
    s = Explainer("grad", groups=GROUPS).scores(model, x, pred)
    gap = topk_gap_of(s, 2).mean()
    assert logs["gap"] == pytest.approx(float(gap), rel=1e-9)


# --------------------------------------------------------------------------- deletion
def test_deletion_topk_against_a_loop():
    model = make_mlp()
    x = _x()
    base = torch.linspace(-1, 1, 10, dtype=torch.float64)
    ex = Explainer("grad", groups=GROUPS)
    out = deletion(model, x, ex, 2, baseline=base, n_random=4, seed=0)
    s = ex.scores(model, x)
    pred = model(x).argmax(1)
    for i in range(len(x)):
        c = int(pred[i])
        xd = x[i].clone()
        for g in s[i].topk(2).indices.tolist():
            for col in GROUPS[g]:
                xd[col] = base[col]
        want = _prob(model, x[i], c) - _prob(model, xd, c)
        assert float(out["drop_topk"][i]) == pytest.approx(want, abs=1e-12)
    torch.testing.assert_close(out["gain"], out["drop_topk"] - out["drop_random"])


def test_deletion_random_units_average_all_k_subsets():
    """With many draws, the random drop is the mean over every k-subset of units (computed
    exactly by a loop over the subsets); with exactly k valid units it is those units."""
    model = make_mlp(n_in=5)
    x = _x(3, 5)
    ex = Explainer("grad")
    pred = model(x).argmax(1)
    out = deletion(model, x, ex, 2, baseline=0.0, n_random=4000, seed=1)
    for i in range(3):
        c = int(pred[i])
        drops = []
        for sub in itertools.combinations(range(5), 2):
            xd = x[i].clone()
            xd[list(sub)] = 0.0
            drops.append(_prob(model, x[i], c) - _prob(model, xd, c))
        mean = sum(drops) / len(drops)
        spread = (max(drops) - min(drops)) / 2
        assert float(out["drop_random"][i]) == pytest.approx(mean, abs=4 * spread / 4000**0.5)
    valid = torch.zeros(3, 5, dtype=torch.bool)
    valid[:, [1, 3]] = True
    out = deletion(model, x, ex, 2, baseline=0.0, n_random=3, seed=0, valid=valid)
    for i in range(3):
        xd = x[i].clone()
        xd[[1, 3]] = 0.0
        want = _prob(model, x[i], int(pred[i])) - _prob(model, xd, int(pred[i]))
        assert float(out["drop_random"][i]) == pytest.approx(want, abs=1e-12)
        assert float(out["drop_topk"][i]) == pytest.approx(want, abs=1e-12)


def test_deletion_gain_is_positive_for_a_faithful_explanation_and_not_for_a_fixed_one():
    """A linear model whose weights differ per input region: gradient saliency names the
    input's large-contribution features; a constant 'explanation' does not."""
    torch.manual_seed(0)
    w = torch.tensor([[4.0, 3, 2, 0.1, 0.1, 0.1, 0.1, 0.1], [0.0] * 8], dtype=torch.float64)
    model = torch.nn.Linear(8, 2, bias=False).double()
    model.weight.data = w
    x = torch.rand(20, 8, dtype=torch.float64)
    ex = Explainer("grad_x_input")
    gain = deletion(model, x, ex, 3, baseline=0.0, n_random=16, seed=0)["gain"]
    assert bool((gain > 0).all())


# --------------------------------------------------------------------------- occlusion
def test_occlusion_scores_against_a_loop():
    model = make_mlp()
    x = _x(4)
    ex = Explainer("grad", output="prob")
    occ = occlusion_scores(model, x, ex, baseline=0.5, batch_size=7)
    pred = model(x).argmax(1)
    for i in range(4):
        for j in range(10):
            xo = x[i].clone()
            xo[j] = 0.5
            want = abs(_prob(model, x[i], int(pred[i])) - _prob(model, xo, int(pred[i])))
            assert float(occ[i, j]) == pytest.approx(want, abs=1e-12)
    agree = occlusion_agreement(model, x, ex, 3, baseline=0.5)
    torch.testing.assert_close(agree, precision_at_k(ex.scores(model, x), occ, 3))


def test_patch_occlusion_against_a_loop():
    model = make_cnn()  # 2 x 8 x 8 images
    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ex = Explainer("grad")
    pid = patch_units((8, 8), 4)
    assert pid.view(8, 8)[:4, :4].unique().tolist() == [0]
    assert pid.view(8, 8)[4:, 4:].unique().tolist() == [3]
    agree = occlusion_agreement(model, x, ex, 8, baseline=0.0, patch=4)  # k_p = ceil(8/16) = 1
    s = ex.scores(model, x).view(3, 8, 8)
    pred = model(x).argmax(1)
    for i in range(3):
        f0 = float(model(x[i : i + 1])[0, pred[i]].detach())
        occ, sal = [], []
        for r, c in itertools.product(range(2), range(2)):
            xo = x[i].clone()
            xo[:, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 0.0
            occ.append(abs(f0 - float(model(xo[None])[0, pred[i]].detach())))
            sal.append(float(s[i, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].sum()))
        want = float(max(range(4), key=occ.__getitem__) == max(range(4), key=sal.__getitem__))
        assert float(agree[i]) == want
    with pytest.raises(ValueError, match="image"):
        occlusion_agreement(make_mlp(), _x(), ex, 3, patch=2)


# --------------------------------------------------------------------------- locality
def test_locality_against_a_loop():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(30, 7, generator=g, dtype=torch.float64)
    s[:10] = s[0]  # ten copies of one row: one shared top-3 set among them
    out = locality(s, 3)
    sets = {frozenset(r.topk(3).indices.tolist()) for r in s}
    assert out["distinct_topk_sets"] == len(sets)
    share = s / s.sum(1, keepdim=True)
    glob = set(share.mean(0).topk(3).indices.tolist())
    want = torch.tensor([len(set(r.topk(3).indices.tolist()) & glob) / 3 for r in s])
    torch.testing.assert_close(out["global_topk_p_at_k"], want.double())
    const = locality(torch.tensor([[3.0, 2, 1, 0]] * 5), 2)
    assert const["distinct_topk_sets"] == 1 and bool((const["global_topk_p_at_k"] == 1).all())
