"""Anani et al.'s per-pixel reporting of the smoothed certificate (issue 25):
:func:`~r2et.certify.smoothed.certified_share` and :func:`~r2et.certify.smoothed.top_fraction_k`.

* the shares against a hand-computed case;
* on a real smoothed certificate, the share certified at ``σ Φ⁻¹(τ)`` against Anani et al.'s
  (Fischer et al.'s) decision recomputed from the counts with ``scipy.stats.binom``: the
  one-sided binomial test of ``p <= τ`` at level ``alpha / F``;
* ``k`` of a fraction against numpy's percentile and the bucketing Anani et al.'s code uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_mlp, randn_rows
from scipy.stats import binom, norm

from r2et import Explainer
from r2et.certify import CertificateResult, certified_radius, clopper_pearson_lower
from r2et.certify.smoothed import certified_share, top_fraction_k

pytestmark = pytest.mark.usefixtures("one_thread")


def _result(feature_radius: list[list[float]], label_in: list[list[bool]]) -> CertificateResult:
    fr = torch.tensor(feature_radius, dtype=torch.float64)
    n, f = fr.shape
    return CertificateResult(
        method="smoothed",
        norm="l2",
        k=1,
        radius=torch.zeros(n),
        topk=torch.zeros(n, 1, dtype=torch.long),
        radii=torch.tensor([0.1], dtype=torch.float64),
        p_at_k=torch.zeros(n, 1, dtype=torch.float64),
        seconds=0.0,
        feature_radius=fr,
        label_in=torch.tensor(label_in),
    )


def test_certified_share_by_hand() -> None:
    res = _result([[0.3, 0.0, 0.1, 0.2], [0.0, 0.0, 0.0, 0.05]], [[1, 1, 0, 0], [0, 1, 1, 0]])
    s = certified_share(res, [0.0, 0.1, 0.2, 0.25])
    # input 0: feature 0 (in, R 0.3), 1 (in, abstains), 2 (out, R 0.1), 3 (out, R 0.2)
    assert s["in"][0].tolist() == [0.25, 0.25, 0.25, 0.25]
    assert s["out"][0].tolist() == [0.5, 0.5, 0.25, 0.0]
    assert s["certified"][0].tolist() == [0.75, 0.75, 0.5, 0.25]
    assert s["abstain"][0].tolist() == [0.25, 0.25, 0.5, 0.75]
    # input 1: only feature 3 (out, R 0.05) is certified, and only up to 0.05
    assert s["certified"][1].tolist() == [0.25, 0.0, 0.0, 0.0]
    assert s["never"].tolist() == [0.25, 0.75]  # R = 0 never counts, even at r = 0


def test_certified_share_rejects_what_it_cannot_read() -> None:
    res = _result([[0.1, 0.2]], [[1, 0]])
    with pytest.raises(ValueError, match="radii"):
        certified_share(res, [-0.1])
    with pytest.raises(ValueError, match="radii"):
        certified_share(res, [])
    res.feature_radius = None
    with pytest.raises(ValueError, match="smoothed"):
        certified_share(res, [0.1])
    with pytest.raises(TypeError, match="CertificateResult"):
        certified_share({"feature_radius": None}, [0.1])  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [90, 400])
def test_clopper_pearson_at_tau_is_the_binomial_test(n: int) -> None:
    """``p_lower(c) >= τ`` iff ``P(Bin(n, τ) >= c) <= alpha'`` for every count c (scipy)."""
    tau, alpha = 0.75, 0.001 / 784
    counts = torch.arange(n + 1)
    lower = clopper_pearson_lower(counts, n, alpha)
    ours = (lower >= tau).numpy()
    theirs = binom.sf(counts.numpy() - 1, n, tau) <= alpha
    assert ours.tolist() == theirs.tolist()
    assert 0 < theirs.sum() < n  # the threshold falls inside 0..n: the check can fail


def test_share_at_tau_radius_is_anani_decision() -> None:
    """A real certificate (n0 = 10 selection + n = 90 estimation samples, as Anani et al.'s
    100 with their first 10 choosing the label): the share certified at ``σ Φ⁻¹(τ)`` is the
    share of features passing their binomial test at ``alpha / F``, recomputed from the
    counts."""
    model = make_mlp(n_in=12, n_out=3, seed=3)
    x = randn_rows(8, 12, seed=3)
    sigma, tau, alpha, n = 0.25, 0.75, 0.001, 90
    res = certified_radius(
        model, x, Explainer("grad"), 6, "smoothed", sigma=sigma, n0=10, n=n, alpha=alpha, seed=2
    )
    r_tau = sigma * norm.ppf(tau)
    share = certified_share(res, [r_tau])
    est = torch.round(res.membership * n).long()  # the estimation counts of "in"
    hits = torch.where(res.label_in, est, n - est).numpy()
    passed = binom.sf(hits - 1, n, tau) <= alpha / x.shape[1]
    assert share["certified"][:, 0].tolist() == pytest.approx(passed.mean(1).tolist())
    lab = res.label_in.numpy()
    assert share["in"][:, 0].tolist() == pytest.approx((passed & lab).mean(1).tolist())
    assert 0 < passed.mean() < 1  # some features pass and some do not


@pytest.mark.parametrize("f", [10, 784, 1024, 3001])
def test_top_fraction_k_is_numpy_percentile_rule(f: int) -> None:
    """Anani et al.'s code: thresholds ``np.percentile(s, 100 − K)``, label 1 where the score
    is above it (``torch.bucketize``); with distinct scores that keeps k features."""
    s = np.random.default_rng(f).permutation(f).astype(np.float64)
    for pct in (1, 5, 10, 25, 30, 50, 70, 99, 100):
        thr = np.percentile(s, 100 - pct)
        above = int(torch.bucketize(torch.from_numpy(s), torch.tensor([thr])).sum())
        assert top_fraction_k(pct / 100, f) == max(1, above), (f, pct)


def test_top_fraction_k_examples_and_errors() -> None:
    assert [top_fraction_k(p, 784) for p in (0.1, 0.3, 0.5)] == [79, 235, 392]
    assert [top_fraction_k(p, 1024) for p in (0.1, 0.3, 0.5)] == [103, 307, 512]
    assert top_fraction_k(1e-6, 784) == 1 and top_fraction_k(1.0, 784) == 783
    for bad in (0.0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="fraction"):
            top_fraction_k(bad, 784)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_features"):
        top_fraction_k(0.5, 1)
