"""Certified top-k explanations (r2et.certify): every bound against an independent oracle.

* Clopper-Pearson bounds against ``scipy.stats.beta``;
* gradient and score intervals against autograd at many points of the ball (vertices too);
* the deterministic radius against the exact radius of tiny ReLU networks, computed by
  enumerating every activation pattern and solving one LP per linear region (scipy);
* both certificates against attacks: the ensemble attack (and dense sampling) never changes a
  certified top-k inside the certified radius, and does change it well outside (so the
  checks can fail);
* the smoothed P@k bound against a brute force over the top-k sets the certificate allows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import make_mlp, randn_rows

from r2et import EnsembleAttack, Explainer, build_model
from r2et.certify import (
    CertificateResult,
    certified_radius,
    clopper_pearson_lower,
    gradient_bounds,
    relu_layers,
    score_bounds,
    smoothed_p_at_k_bound,
)
from r2et.metrics import topk_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_mlp(n_in: int, hidden: list[int], n_out: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", [n_in], n_out, hidden=hidden).double().eval()


def grads(model: torch.nn.Module, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z = z.detach().requires_grad_(True)
    out = model(z).gather(1, target[:, None]).sum()
    return torch.autograd.grad(out, z)[0]


# ----------------------------------------------------------------------------- Clopper-Pearson
def test_clopper_pearson_matches_scipy_beta_quantile() -> None:
    st = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 1000, 20000):
        counts = np.unique(np.r_[0, 1, n, rng.integers(0, n + 1, 30)])
        for alpha in (0.05, 1e-3, 1e-6):
            ours = clopper_pearson_lower(torch.tensor(counts), n, alpha).numpy()
            ref = np.where(counts > 0, st.beta.ppf(alpha, np.maximum(counts, 1), n - counts + 1), 0)
            np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-14)
            assert (ours <= ref).all()  # errs low, never high


def test_clopper_pearson_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="count"):
        clopper_pearson_lower(torch.tensor([11]), 10, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson_lower(torch.tensor([1]), 10, 1.5)


# ----------------------------------------------------------------------------- interval bounds
@pytest.mark.parametrize("method", ["grad", "grad_x_input"])
def test_gradient_and_score_bounds_contain_every_point_of_the_ball(method: str) -> None:
    model = make_mlp(n_in=6, n_out=3, seed=1)
    params = [(lin.weight.detach(), lin.bias.detach()) for lin in relu_layers(model)]
    x = randn_rows(4, 6, seed=1)
    target = model(x).argmax(1)
    ex = Explainer(method, groups=[[0, 1], [2], [3, 4, 5]])
    gen = torch.Generator().manual_seed(0)
    for r in (0.05, 0.3, 1.0):
        lo, hi = x - r, x + r
        gl, gu, margin = gradient_bounds(params, lo, hi, target)
        sl, su = score_bounds(ex, x, lo, hi, gl, gu)
        u = torch.rand(400, *x.shape, generator=gen, dtype=x.dtype)
        u[:64] = u[:64].round()  # vertices of the box
        pts = (lo + (hi - lo) * u).reshape(-1, 6)
        t = target.repeat(400)
        g = grads(model, pts, t).view(400, 4, 6)
        assert (g >= gl - 1e-10).all() and (g <= gu + 1e-10).all()
        s = ex.scores(model, pts, t).view(400, 4, -1)
        assert (s >= sl - 1e-10).all() and (s <= su + 1e-10).all()
        z = model(pts).view(400, 4, 3)
        zc = z.gather(2, target.view(1, 4, 1).expand(400, 4, 1))
        assert ((zc - z >= margin - 1e-10) | margin.isinf()).all()
    # at radius 0 the bounds are the gradient itself
    gl, gu, _ = gradient_bounds(params, x, x, target)
    torch.testing.assert_close(gl, grads(model, x, target))
    torch.testing.assert_close(gu, gl)


# ----------------------------------------------------------------------------- exact oracle
def _exact_radius(model: torch.nn.Module, x0: torch.Tensor, k: int) -> float:
    """The exact l_inf radius within which the top-k set of |∂z_c/∂x| (c = prediction at x0) and
    the prediction itself stay fixed: enumerate every activation pattern of the ReLU network,
    each a polyhedral region with an affine network inside; the radius is the smallest l_inf
    distance from x0 (an LP) to a region whose gradient has another top-k (or a tie at the
    k-th place), or to the part of any region where another class's logit is >= z_c."""
    from scipy.optimize import linprog

    layers = relu_layers(model)
    ws = [lin.weight.detach().numpy() for lin in layers]
    bs = [lin.bias.detach().numpy() for lin in layers]
    f = ws[0].shape[1]
    x = x0.numpy()
    c0 = int(model(x0[None]).argmax())
    s0 = np.abs(grads(model, x0[None], torch.tensor([c0]))[0].numpy())
    top = set(np.argsort(-s0)[:k].tolist())
    sizes = [w.shape[0] for w in ws[:-1]]
    best = np.inf

    def dist(a_ub: np.ndarray, b_ub: np.ndarray) -> float:
        # min t  s.t.  a_ub x <= b_ub,  |x − x0|_inf <= t   (variables x, t)
        eye = np.eye(f)
        a = np.vstack([np.c_[a_ub, np.zeros(len(a_ub))], np.c_[eye, -np.ones(f)],
                       np.c_[-eye, -np.ones(f)]])  # fmt: skip
        b = np.r_[b_ub, x, -x]
        cost = np.r_[np.zeros(f), 1.0]
        res = linprog(cost, A_ub=a, b_ub=b, bounds=[(None, None)] * f + [(0, None)])
        return res.fun if res.status == 0 else np.inf

    for pattern in itertools.product([0.0, 1.0], repeat=sum(sizes)):
        a_mat, a_vec = np.eye(f), np.zeros(f)  # current layer input = a_mat x + a_vec
        rows, rhs, pos = [], [], 0
        for w, b, h in zip(ws[:-1], bs[:-1], sizes):
            pa, pv = w @ a_mat, w @ a_vec + b  # pre-activation = pa x + pv
            d = np.array(pattern[pos : pos + h])
            pos += h
            sign = np.where(d > 0, -1.0, 1.0)  # on: pre >= 0 ; off: pre <= 0
            rows.append(sign[:, None] * pa)
            rhs.append(-sign * pv)
            a_mat, a_vec = d[:, None] * pa, d * pv
        za, zv = ws[-1] @ a_mat, ws[-1] @ a_vec + bs[-1]
        a_ub, b_ub = np.vstack(rows), np.concatenate(rhs)
        d_region = dist(a_ub, b_ub)
        if d_region >= best:
            continue
        s = np.abs(za[c0])
        kth = min(s[i] for i in top)
        if any(s[j] >= kth for j in range(f) if j not in top):
            best = d_region
            continue
        for c in range(len(zv)):
            if c != c0:  # z_c − z_c0 >= 0  <=>  (za[c0] − za[c]) x <= zv[c] − zv[c0]
                row = (za[c0] - za[c])[None]
                best = min(best, dist(np.vstack([a_ub, row]), np.r_[b_ub, zv[c] - zv[c0]]))
    return float(best)


@pytest.mark.parametrize("hidden,seed", [([5], 0), ([4, 3], 1), ([3, 3], 2), ([4, 4], 4)])
def test_deterministic_radius_never_exceeds_exact_radius(hidden: list[int], seed: int) -> None:
    """Both bounds are sound (never above the exact radius), the pattern bound is at least the
    interval bound on every input, and it is the tighter one where units become unstable."""
    pytest.importorskip("scipy.optimize")
    model = tiny_mlp(3, hidden, 3, seed)
    x = randn_rows(8, 3, seed=seed)
    k = 1
    exact = torch.tensor([_exact_radius(model, xi, k) for xi in x], dtype=torch.float64)
    radii = {}
    for bound in ("interval", "patterns"):
        res = certified_radius(
            model, x, Explainer("grad"), k, max_radius=4.0, n_bisect=30, bound=bound
        )
        assert (res.radius <= exact + 1e-9).all(), (bound, res.radius, exact)
        assert (res.radius > 0).sum() >= 5  # not vacuous
        radii[bound] = res.radius
    assert (radii["patterns"] >= radii["interval"]).all()
    if len(hidden) > 1:  # two hidden layers: intervals lose the masks' correlation
        assert (radii["patterns"] > radii["interval"] * 1.01).any()
    # the oracle itself: random points strictly inside the exact radius never change anything
    gen = torch.Generator().manual_seed(seed)
    ex = Explainer("grad")
    for xi, r in zip(x, exact.clamp(max=4.0)):
        pts = xi + (2 * torch.rand(3000, 3, generator=gen, dtype=x.dtype) - 1) * r * 0.999
        c0 = model(xi[None]).argmax(1)
        assert (model(pts).argmax(1) == c0).all()
        s = ex.scores(model, pts, c0.expand(3000))
        s0 = ex.scores(model, xi[None], c0)
        assert (topk_mask(s, k) == topk_mask(s0, k)).all()


# ----------------------------------------------------------------------------- attacks
def test_deterministic_certificate_survives_the_ensemble_attack() -> None:
    model = make_mlp(n_in=8, n_out=3, seed=3)
    x = randn_rows(12, 8, seed=3)
    ex, k = Explainer("grad"), 3
    res = certified_radius(model, x, ex, k, max_radius=2.0)
    assert (res.radius > 0).sum() >= 6
    assert res.prediction_certified is not None and res.prediction_certified.all()
    broken_outside = 0
    gen = torch.Generator().manual_seed(0)
    for i in torch.nonzero(res.radius > 0).flatten().tolist():
        xi, r = x[i : i + 1], float(res.radius[i])
        atk = EnsembleAttack(ex, k, r, preset="fast", seed=i)
        assert float(atk(model, xi).p_at_k) == 1.0
        # dense sampling, vertices included, with the prediction required fixed as well
        u = torch.rand(2000, 8, generator=gen, dtype=x.dtype)
        u[:500] = u[:500].round()
        pts = xi + (2 * u - 1) * r
        c0 = model(xi).argmax(1)
        assert (model(pts).argmax(1) == c0).all()
        same = topk_mask(ex.scores(model, pts, c0.expand(2000)), k) == topk_mask(
            ex.scores(model, xi), k
        )
        assert same.all()
        # power: far outside the radius the attack does move the top-k
        big = EnsembleAttack(ex, k, 10 * r, preset="fast", seed=i)
        broken_outside += int(float(big(model, xi).p_at_k) < 1.0)
    assert broken_outside >= 1


def test_deterministic_with_a_data_box() -> None:
    """The box only shrinks the region: radii grow, and inputs outside the box are handled
    (the region is ball ∩ box widened to hold x), with sampled points of ball ∩ box unchanged."""
    model = make_mlp(n_in=6, n_out=3, seed=7)
    x = randn_rows(10, 6, seed=7)
    ex, k = Explainer("grad"), 2
    box = (torch.full((6,), -0.5, dtype=x.dtype), torch.full((6,), 0.5, dtype=x.dtype))
    free = certified_radius(model, x, ex, k, max_radius=2.0)
    boxed = certified_radius(model, x, ex, k, max_radius=2.0, bounds=box)
    assert (boxed.radius >= free.radius - 2.0 / 2**20).all()
    assert (boxed.radius > free.radius).any()
    gen = torch.Generator().manual_seed(1)
    for xi, r in zip(x, boxed.radius):
        if r == 0:
            continue
        lo, hi = torch.maximum(xi - r, box[0]), torch.minimum(xi + r, box[1])
        lo, hi = torch.minimum(lo, xi), torch.maximum(hi, xi)
        pts = lo + (hi - lo) * torch.rand(2000, 6, generator=gen, dtype=x.dtype)
        c0 = model(xi[None]).argmax(1)
        assert (model(pts).argmax(1) == c0).all()
        s0 = ex.scores(model, xi[None], c0)
        assert (topk_mask(ex.scores(model, pts, c0.expand(2000)), k) == topk_mask(s0, k)).all()


def _membership(model, x, ex, k, sigma, n, seed):
    """Fresh Monte Carlo estimate of the membership counts m_j(x)·n, shape (N, F)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, *x.shape, generator=gen, dtype=x.dtype)
    z = (x.unsqueeze(0) + sigma * noise).reshape(-1, x.shape[1])
    return topk_mask(ex.scores(model, z), k).view(n, x.shape[0], -1).sum(0)


def test_smoothed_certificate_survives_the_ensemble_attack_on_the_smoothed_model() -> None:
    model = make_mlp(n_in=6, n_out=2, seed=4)
    x = randn_rows(10, 6, seed=4)
    ex, k, sigma = Explainer("grad"), 2, 0.25
    res = certified_radius(model, x, ex, k, "smoothed", sigma=sigma, n0=64, n=2000, seed=1)
    cert_rows = torch.nonzero(res.feature_radius.amax(1) > 0).flatten().tolist()
    assert len(cert_rows) >= 5
    # attack the smoothed explanation: SmoothGrad with the same noise scale as the surrogate
    # (common random numbers), in the l2 ball of each input's largest feature radius
    surrogate = Explainer("smoothgrad", sigma=sigma, sigma_mode="absolute", n_samples=16, seed=0)
    n_check, z = 4000, 3.9  # a violation must be significant at ~5e-5
    tol = z * (0.25 / n_check) ** 0.5
    violations, broken_far = 0, 0
    for i in cert_rows:
        xi = x[i : i + 1]
        for scale, far in ((1.0, False), (8.0, True)):
            r = float(res.feature_radius[i].amax()) * scale
            x_adv = EnsembleAttack(surrogate, k, r, norm="l2", preset="fast", seed=i)(
                model, xi
            ).x_adv
            dist = float((x_adv - xi).norm())
            m_adv = _membership(model, x_adv, ex, k, sigma, n_check, seed=100 + i)[0] / n_check
            label = res.label_in[i]
            wrong = torch.where(label, m_adv < 0.5 - tol, m_adv > 0.5 + tol)
            if far:
                broken_far += int(wrong.any())
            else:
                covered = res.feature_radius[i] > dist
                violations += int((wrong & covered).sum())
    assert violations == 0
    assert broken_far >= 1  # the check has power: far outside, labels do flip


# ----------------------------------------------------------------------------- smoothed formula
@pytest.mark.parametrize("f", [4, 5, 6])
def test_smoothed_p_at_k_bound_matches_brute_force(f: int) -> None:
    """Certified in (I) features outrank certified out (O) ones at every point; the bound is
    the smallest overlap of two top-k sets that this allows (brute force over all sets)."""
    for k in range(1, f):
        for labels in itertools.product("IOU", repeat=f):
            a, u = labels.count("I"), labels.count("U")
            ins = {j for j, lab in enumerate(labels) if lab == "I"}
            outs = {j for j, lab in enumerate(labels) if lab == "O"}
            valid = [
                set(s)
                for s in itertools.combinations(range(f), k)
                if not (set(s) & outs and ins - set(s))  # an O member in, an I member out
            ]
            brute = min(len(s & t) for s in valid for t in valid)
            assert smoothed_p_at_k_bound(a, u, k, f) == brute, (labels, k)


def test_smoothed_result_is_consistent() -> None:
    model = make_mlp(n_in=6, n_out=2, seed=5)
    x = randn_rows(6, 6, seed=5)
    res = certified_radius(
        model, x, Explainer("grad"), 2, "smoothed", sigma=0.2, n=500, radii=[0.0, 0.05, 0.2]
    )
    assert res.norm == "l2" and res.p_at_k.shape == (6, 3)
    assert (res.p_at_k[:, :-1] >= res.p_at_k[:, 1:]).all()  # non-increasing in the radius
    assert torch.allclose(res.membership.sum(1), torch.full((6,), 2.0, dtype=torch.float64))
    whole = res.radius > 0
    assert (res.label_in[whole].sum(1) == 2).all()
    assert torch.equal(res.p_at_k[:, 0] == 1, res.radius > 0)
    again = certified_radius(
        model, x, Explainer("grad"), 2, "smoothed", sigma=0.2, n=500, radii=[0.0, 0.05, 0.2]
    )
    torch.testing.assert_close(again.p_lower, res.p_lower)  # seeded
    both = CertificateResult.cat([res, again])
    assert both.radius.shape == (12,) and both.summary()["method"] == "smoothed"


# ----------------------------------------------------------------------------- validation
def test_bad_input_raises_one_line_errors() -> None:
    model = make_mlp(n_in=6, n_out=2)
    x = randn_rows(3, 6)
    ex = Explainer("grad")
    with pytest.raises(ValueError, match="method"):
        certified_radius(model, x, ex, 2, method="exact")
    with pytest.raises(ValueError, match="k="):
        certified_radius(model, x, ex, 6)
    with pytest.raises(ValueError, match="output='logit'"):
        certified_radius(model, x, Explainer("grad", output="prob"), 2)
    with pytest.raises(ValueError, match="alpha"):
        certified_radius(model, x, ex, 2, "smoothed", alpha=2.0)
    with pytest.raises(ValueError, match="sigma"):
        certified_radius(model, x, ex, 2, "smoothed", sigma=0.0)
    with pytest.raises(TypeError, match="explainer"):
        certified_radius(model, x, 42, 2)  # type: ignore[arg-type]  (names are accepted)
    # small sequential CNNs are certified (tests/test_certify_cnn.py); a residual network is not
    resnet = build_model("resnet9", [3, 8, 8], 3, width=4).double()
    with pytest.raises(TypeError, match="smoothed"):
        certified_radius(resnet, torch.zeros(1, 3, 8, 8, dtype=torch.float64), ex, 2)


# ----------------------------------------------------------------------------- evaluate, bench
def _synthetic_dataset(n_test: int = 24, f: int = 8):
    from r2et.data.base import Dataset

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, f, generator=g, dtype=torch.float64).clamp(-3, 3)
        return x, torch.randint(0, 3, (n,), generator=g)

    return Dataset(
        name="synthetic", modality="tabular", train=split(20), val=split(10),
        test=split(n_test), n_classes=3, feature_names=[f"f{i}" for i in range(f)],
        default_k=3, bounds=(torch.full((f,), -3.0), torch.full((f,), 3.0)),
    )  # fmt: skip


def test_evaluate_reports_certified_lower_bounds_below_attacked_upper_bounds() -> None:
    from r2et.bench.runner import flatten_metrics
    from r2et.evaluation import evaluate

    ds = _synthetic_dataset()
    model = make_mlp(n_in=8, n_out=3, seed=6)
    ex, eps = Explainer("grad"), 0.02
    out = evaluate(
        model, ds, ex, k=3, n=24, batch_size=10, faithfulness=False,
        attacks={"ens": EnsembleAttack(ex, 3, eps, bounds=ds.bounds, preset="fast")},
        certify={
            "det": {"method": "deterministic", "radii": [eps], "bounds": ds.bounds},
            "smooth": {"method": "smoothed", "sigma": 0.1, "n": 200, "radii": [0.0, 0.05]},
        },
    )  # fmt: skip
    det, smooth = out["certified"]["det"], out["certified"]["smooth"]
    assert det["norm"] == "linf" and smooth["norm"] == "l2"
    assert 0 < det["p_at_k_mean"][0] <= out["attacks"]["ens"]["p_at_k_mean"]
    direct = certified_radius(model, ds.test[0][:24], ex, 3, radii=[eps], bounds=ds.bounds)
    assert det["radius_mean"] == pytest.approx(float(direct.radius.mean()))
    assert det["p_at_k_mean"][0] == pytest.approx(float(direct.p_at_k.mean()))
    row = flatten_metrics(out)
    assert row["cert_det_curve"] == {f"{eps:g}": det["p_at_k_mean"][0]}
    assert row["cert_smooth_norm"] == "l2"
    with pytest.raises(ValueError, match="certify"):
        evaluate(model, ds, ex, k=3, n=4, faithfulness=False, certify={"x": 1})


def test_bench_plot_of_certified_curves(tmp_path) -> None:
    from r2et.bench.plots import plot_certified_curves

    rows = [
        {"dataset": d, "method": m, "curve": {"0.1": 0.8, "0.3": 0.5},
         "cert_det_curve": {"0.1": 0.4, "0.3": 0.1}, "cert_det_norm": "linf"}
        for d in ("a", "b") for m in ("vanilla", "r2et")
    ]  # fmt: skip
    path = plot_certified_curves(rows, tmp_path / "c.png", ["vanilla", "r2et"])
    assert path.exists() and path.stat().st_size > 1000


def test_bench_certify_config_and_specs(tmp_path) -> None:
    from r2et.bench.cells import _certify_specs
    from r2et.bench.config import load_config

    good = tmp_path / "good.toml"
    good.write_text('[evaluate.certify]\ndet = {method = "deterministic"}\n')
    assert load_config(good).evaluate["certify"] == {"det": {"method": "deterministic"}}
    bad = tmp_path / "bad.toml"
    bad.write_text('[evaluate.certify]\ndet = {method = "exact"}\n')
    with pytest.raises(ValueError, match="certify"):
        load_config(bad)
    box = (torch.zeros(3), torch.ones(3))
    specs = _certify_specs(
        {"det": {"method": "deterministic"}, "sm": {"method": "smoothed", "sigma": 0.2}},
        0.3, [0.5, 1.0], box,
    )  # fmt: skip
    assert specs["det"]["radii"] == [0.15, 0.3] and specs["det"]["bounds"] is box
    assert specs["sm"]["radii"] == [0.05, 0.1, 0.2] and "bounds" not in specs["sm"]
    assert _certify_specs(None, 0.3, [], None) is None


def test_pattern_maps_cover_every_point_of_the_box() -> None:
    """Every point of the box is computed by one of the enumerated affine maps (the pattern of
    the point is among them); inputs with too many patterns are marked invalid."""
    from r2et.certify.deterministic import _params64
    from r2et.certify.patterns import pattern_affine_maps

    model = make_mlp(n_in=6, n_out=3, seed=1)
    params = _params64(relu_layers(model), torch.device("cpu"))
    x = randn_rows(5, 6, seed=2)
    gen = torch.Generator().manual_seed(0)
    for r, cap in ((0.05, 1024), (0.2, 1024), (0.2, 4)):
        a, c, valid = pattern_affine_maps(params, x - r, x + r, 0.0, cap)
        assert a.shape[1] <= cap
        u = torch.rand(300, *x.shape, generator=gen, dtype=x.dtype)
        pts = x + (2 * u - 1) * r  # (300, 5, 6)
        z = model(pts.reshape(-1, 6)).view(300, 5, 3)
        maps = torch.einsum("npcf,mnf->mnpc", a, pts) + c  # every map at every point
        err = (maps - z[:, :, None]).abs().amax(-1).amin(-1)  # the best map per point
        assert (err[:, valid] < 1e-9).all()
        if r == 0.05:
            assert valid.all()
    assert not valid.all()  # cap 4 leaves some inputs to the interval bound


def test_cli_evaluate_certify_brackets_the_attack(tmp_path, capsys) -> None:
    """``r2et evaluate --certify``: the certified P@k at eps is printed beside the attacked one
    and never above it; a model the certificate does not cover is one line, exit 2."""
    import json

    from r2et.cli import main

    run = tmp_path / "run"
    assert main(["train", "breast-cancer", "--epochs", "2", "--out", str(run),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["evaluate", str(run), "--preset", "fast", "--n", "24", "--eps", "0.02",
            "--no-progress", "--certify"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "certified linf" in out and "P@" in out
    res = json.loads((run / "evaluation_test.json").read_text())
    cert = res["certified"]["certified"]
    assert cert["radii"] == [0.02]
    assert cert["p_at_k_mean"][0] <= res["attacks"]["ensemble"]["p_at_k_mean"] + 1e-12
    assert main([*args, "--norm", "l2"]) == 2
    img = tmp_path / "img"
    assert main(["train", "digits", "--model", "resnet9", "--epochs", "0", "--out", str(img),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(img), "--n", "4", "--certify", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--certify" in err[0]


@pytest.mark.parametrize("beta", [1.0, 10.0])
def test_softplus_gradient_bounds_contain_every_point_of_the_ball(beta: float) -> None:
    """Softplus MLPs (``sp``, ``r2et-sp``): the interval bounds hold at every sampled point
    and every vertex of the box, for gradient and gradient x input saliency."""
    from r2et.certify.deterministic import _params64, mlp_layers, softplus_terms
    from r2et.methods import get_method

    model = get_method("sp", beta=beta).prepare(make_mlp(n_in=6, n_out=3, seed=3))
    layers, acts = mlp_layers(model, randn_rows(2, 6, seed=0))
    assert all(isinstance(a, torch.nn.Softplus) for a in acts)
    params, sp = _params64(layers, torch.device("cpu")), softplus_terms(acts)
    x = randn_rows(4, 6, seed=4)
    target = model(x).argmax(1)
    gen = torch.Generator().manual_seed(1)
    for r in (0.01, 0.2, 1.0):
        lo, hi = x - r, x + r
        gl, gu, margin = gradient_bounds(params, lo, hi, target, softplus=sp)
        u = torch.rand(400, *x.shape, generator=gen, dtype=x.dtype)
        u[:64] = u[:64].round()
        pts = (lo + (hi - lo) * u).reshape(-1, 6)
        t = target.repeat(400)
        g = grads(model, pts, t).view(400, 4, 6)
        assert (g >= gl - 1e-10).all() and (g <= gu + 1e-10).all()
        for method in ("grad", "grad_x_input"):
            ex = Explainer(method, groups=[[0, 1], [2], [3, 4, 5]])
            sl, su = score_bounds(ex, x, lo, hi, gl, gu)
            s = ex.scores(model, pts, t).view(400, 4, -1)
            assert (s >= sl - 1e-10).all() and (s <= su + 1e-10).all()
        z = model(pts).view(400, 4, 3)
        zc = z.gather(2, target.view(1, 4, 1).expand(400, 4, 1))
        assert ((zc - z >= margin - 1e-10) | margin.isinf()).all()
        if r == 0.01:  # tight at small radii: the box holds the gradient at x
            assert (gu - gl).abs().max() < 0.5 * grads(model, x, target).abs().max()


def test_softplus_certificate_is_sound_and_not_vacuous() -> None:
    """The certified radius of a Softplus MLP (the default falls back to the CROWN bound;
    patterns need ReLUs): no sampled point inside it changes the top-k or the class, and most
    inputs get one."""
    from r2et.methods import get_method

    model = get_method("sp", beta=5.0).prepare(make_mlp(n_in=6, n_out=3, seed=2))
    x = randn_rows(12, 6, seed=5)
    ex = Explainer("grad")
    res = certified_radius(model, x, ex, 2, max_radius=2.0)
    assert res.params["bound"] == "crown"
    assert (res.radius > 0).sum() >= 8
    gen = torch.Generator().manual_seed(0)
    c0 = model(x).argmax(1)
    s0 = ex.scores(model, x, c0)
    for i in range(len(x)):
        r = float(res.radius[i])
        pts = x[i] + (2 * torch.rand(2000, 6, generator=gen, dtype=x.dtype) - 1) * r * 0.999
        assert (model(pts).argmax(1) == c0[i]).all()
        s = ex.scores(model, pts, c0[i].expand(2000))
        assert (topk_mask(s, 2) == topk_mask(s0[i : i + 1], 2)).all()


def test_pattern_validity_does_not_depend_on_batch_mates() -> None:
    """A row's pattern maps and validity are those it gets alone: rows enumerated together
    share one pattern index, and a group that would need more than the budget is split
    instead of invalidating rows that fit on their own (the radius search relies on a row's
    check depending on that row only)."""
    from r2et.certify.deterministic import _params64
    from r2et.certify.patterns import pattern_affine_maps

    model = make_mlp(n_in=6, n_out=3, seed=1)
    params = _params64(relu_layers(model), torch.device("cpu"))
    x = randn_rows(16, 6, seed=4)
    r = 0.04 * (1 + torch.arange(16, dtype=x.dtype))[:, None] / 4  # widths 0.01 ... 0.16
    checked = 0
    for cap in (16, 256):
        a, c, valid = pattern_affine_maps(params, x - r, x + r, 0.0, cap)
        assert a.shape[1] <= cap
        for i in range(16):
            ai, ci, vi = pattern_affine_maps(params, x[i : i + 1] - r[i], x[i : i + 1] + r[i],
                                             0.0, cap)  # fmt: skip
            assert bool(valid[i]) == bool(vi[0])
            if vi[0]:  # the same set of affine maps (a group may repeat some)
                alone = {tuple(v) for v in torch.cat([ai[0], ci[0, ..., None]], -1)
                         .flatten(1).round(decimals=9).tolist()}  # fmt: skip
                batch = {tuple(v) for v in torch.cat([a[i], c[i, ..., None]], -1)
                         .flatten(1).round(decimals=9).tolist()}  # fmt: skip
                assert alone == batch
                checked += 1
        assert 0 < int(valid.sum()) < 16 or cap == 256
    assert checked > 0
