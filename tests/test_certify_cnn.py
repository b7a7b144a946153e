"""The deterministic certificate for small CNNs (issue 25, r2et.certify.conv), against
independent oracles:

* soundness by sampling: at random points and vertices of the box, every layer's output lies
  in its forward interval, the logit gradient in its backward interval, the scores in theirs
  and the logit margins above their bound (ReLU and Softplus, SmallCNN with and without its
  Standardize layer, overlapping / padded max-pools, average pools, strided convolutions);
* a mutant that routes the max-pool gradient to the clean argmax only (no candidate logic)
  fails that check, so the check can fail;
* the exact radius of tiny CNNs, by enumerating their linear regions (every ReLU sign and every
  max-pool argmax, branch and bound with one LP per node on dense matrices of the layers):
  the certified radius never exceeds it;
* the ``standard`` ensemble attack at 0.999 x the certified radius never moves a certified
  top-k of a trained CNN;
* a CNN that is an MLP in disguise (1x1 convolutions on a 1x1 image) gets exactly the MLP
  code's bounds and radii.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

import r2et.certify.conv as conv
from r2et import EnsembleAttack, Explainer, build_model
from r2et.certify import certified_radius, gradient_bounds, network_layers, score_bounds
from r2et.certify.conv import conv_gradient_bounds, conv_layers, conv_stages
from r2et.metrics import topk_mask
from r2et.models.layers import Standardize

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def _seq(seed: int, *layers: nn.Module) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*layers).to(F64).eval()


def _nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Tiny CNNs covering every supported layer (weights reset by seed after construction)."""
    nets: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    for name, act, norm in (("cnn", "relu", None), ("cnn-norm", "relu", [[0.3], [0.5]]),
                            ("cnn-softplus", "softplus", None)):  # fmt: skip
        torch.manual_seed(1)
        model = build_model("cnn", [1, 6, 6], 3, channels=[2, 3], hidden=4, activation=act,
                            beta=4.0, input_norm=norm)  # fmt: skip
        nets[name] = (model.to(F64).eval(), (1, 6, 6))
    torch.manual_seed(2)
    nets["overlap"] = (
        _seq(2, Standardize([0.1, -0.2], [0.7, 1.3]), nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
             nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(3, 2, 2, stride=2), nn.ReLU(),
             nn.AvgPool2d(2, stride=1), nn.Flatten(), nn.Linear(8, 3)),
        (2, 6, 6),
    )  # fmt: skip
    nets["dilated"] = (
        _seq(3, nn.Conv2d(1, 3, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(2),
             nn.Conv2d(3, 2, 1, bias=False), nn.ReLU(), nn.MaxPool2d(2, stride=1),
             nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)),
        (1, 6, 6),
    )  # fmt: skip
    return nets


def _grads(model: nn.Module, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    z = z.detach().requires_grad_(True)
    return torch.autograd.grad(model(z).gather(1, target[:, None]).sum(), z)[0]


def _violations(model: nn.Module, x: torch.Tensor, r: float, n: int = 200, seed: int = 0) -> int:
    """How many sampled values leave their bounds over the box ``x ± r``: every layer's output
    (forward), the logit gradient and both explainers' scores (backward), the logit margins.
    A quarter of the points are vertices of the box."""
    layers = conv_layers(model, x)
    stages = conv_stages(layers, x.device)
    target = model(x).argmax(1)
    lo, hi = x - r, x + r
    trace: list[tuple[torch.Tensor, torch.Tensor]] = []
    gl, gu, margin = conv_gradient_bounds(stages, lo, hi, target, slack=0.0, trace=trace)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *x.shape, generator=gen, dtype=F64)
    u[: n // 4] = u[: n // 4].round()
    pts = (lo + (hi - lo) * u).reshape(-1, *x.shape[1:])
    t = target.repeat(n)
    tol, bad = 1e-9, 0
    h = pts
    for m, (blo, bhi) in zip(layers[:-1], trace):
        h = m(h)
        hv = h.view(n, *blo.shape)
        bad += int(((hv < blo - tol) | (hv > bhi + tol)).sum())
    g = _grads(model, pts, t).view(n, *x.shape)
    bad += int(((g < gl - tol) | (g > gu + tol)).sum())
    for method in ("grad", "grad_x_input"):
        ex = Explainer(method)
        sl, su = score_bounds(ex, x, lo, hi, gl.flatten(1), gu.flatten(1))
        s = ex.scores(model, pts, t).view(n, len(x), -1)
        bad += int(((s < sl - tol) | (s > su + tol)).sum())
    z = model(pts).view(n, len(x), -1)
    zc = z.gather(2, target.view(1, -1, 1).expand(n, -1, 1))
    bad += int(((zc - z < margin - tol) & ~margin.isinf()).sum())
    return bad


def _inputs(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("name", list(_nets()))
def test_bounds_hold_at_every_sampled_point_and_vertex(name: str) -> None:
    model, shape = _nets()[name]
    x = _inputs(shape)
    for r in (0.0, 0.02, 0.1, 0.4):
        assert _violations(model, x, r) == 0, (name, r)
    # at radius 0 the bounds are the gradient itself; they widen with the radius
    stages = conv_stages(conv_layers(model), x.device)
    t = model(x).argmax(1)
    gl, gu, _ = conv_gradient_bounds(stages, x, x, t)
    torch.testing.assert_close(gl, _grads(model, x, t))
    torch.testing.assert_close(gu, gl)
    w_small = conv_gradient_bounds(stages, x - 0.01, x + 0.01, t)
    w_big = conv_gradient_bounds(stages, x - 0.1, x + 0.1, t)
    assert ((w_big[1] - w_big[0]) >= (w_small[1] - w_small[0]) - 1e-12).all()


def _clean_argmax(lo_w: torch.Tensor, hi_w: torch.Tensor, eps_w: torch.Tensor):
    """The mutant: every window routes its gradient to one entry (the centre's argmax), as if
    the argmax could not change inside the box."""
    mid = (lo_w + hi_w) / 2
    cand = F.one_hot(mid.argmax(2), lo_w.shape[2]).permute(0, 1, 3, 2).bool()
    return cand, torch.ones_like(cand[:, :, :1])


def test_the_soundness_check_catches_a_max_pool_without_candidates(monkeypatch) -> None:
    """Routing the gradient to the clean argmax only breaks the bounds somewhere: the sampling
    check above can fail."""
    caught = 0
    nets = _nets()
    monkeypatch.setattr(conv, "maxpool_candidates", _clean_argmax)
    for name in ("cnn", "overlap", "dilated"):
        model, shape = nets[name]
        caught += sum(_violations(model, _inputs(shape), r) for r in (0.1, 0.4))
    assert caught > 0
    monkeypatch.undo()
    assert sum(_violations(nets[n][0], _inputs(nets[n][1]), 0.4) for n in ("cnn",)) == 0


# ----------------------------------------------------------------------------- exact oracle
def _dense(model: nn.Sequential, shape: tuple[int, ...]) -> list[tuple]:
    """The layers as dense maps on flattened tensors, computed from the modules themselves:
    ``("affine", A, b)`` (conv / linear applied to the basis vectors), ``("relu",)``,
    ``("max", windows)`` (lists of flat input indices, enumerated by hand)."""
    ops: list[tuple] = []
    for m in model:
        n = math.prod(shape)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zero = torch.zeros(1, *shape, dtype=F64)
            b = m(zero)
            a = (m(torch.eye(n, dtype=F64).view(n, *shape)) - b).reshape(n, -1).T
            ops.append(("affine", a.detach().numpy(), b.detach().flatten().numpy()))
            shape = tuple(b.shape[1:])
        elif isinstance(m, nn.ReLU):
            ops.append(("relu",))
        elif isinstance(m, nn.MaxPool2d):
            c, h, w = shape
            (kh, kw), (sh, sw), (ph, pw) = (_pair(v) for v in (m.kernel_size, m.stride,
                                                               m.padding))  # fmt: skip
            assert _pair(m.dilation) == (1, 1)
            oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            windows = [
                [ch * h * w + iy * w + ix
                 for iy in range(oy * sh - ph, oy * sh - ph + kh)
                 for ix in range(ox * sw - pw, ox * sw - pw + kw)
                 if 0 <= iy < h and 0 <= ix < w]
                for ch in range(c) for oy in range(oh) for ox in range(ow)
            ]  # fmt: skip
            ops.append(("max", windows))
            shape = (c, oh, ow)
        elif isinstance(m, nn.Flatten):
            shape = (n,)
        else:
            raise TypeError(type(m).__name__)
    return ops


def _exact_radius(model: nn.Sequential, x0: torch.Tensor, k: int, cap: float) -> float:
    """The exact l_inf radius (capped at ``cap``) within which the top-k set of |∂z_c/∂x| and
    the prediction c stay fixed. Branch and bound over linear regions: each ReLU unit is on or
    off and each max-pool window has one argmax (entries computing the same affine function
    merged); every choice adds linear constraints, and a node is pruned when its polyhedron is
    empty or no closer to x0 (an LP) than the best violation found. At a leaf the network is
    affine: if its gradient has another top-k (or a tie at the k-th place) the region's
    distance counts, else the distance to the part of it where another class's logit >= z_c."""
    from scipy.optimize import linprog

    shape = tuple(x0.shape)
    ops = _dense(model, shape)
    f = math.prod(shape)
    x = x0.flatten().numpy()
    c0 = int(model(x0[None]).argmax())
    s0 = _grads(model, x0[None], torch.tensor([c0]))[0].flatten().abs().numpy()
    top = set(np.argsort(-s0)[:k].tolist())
    best = [cap]
    eye = np.eye(f)
    box_a = np.vstack([np.c_[eye, -np.ones(f)], np.c_[-eye, -np.ones(f)]])

    def dist(g: np.ndarray, h: np.ndarray) -> float:
        a = np.vstack([np.c_[g, np.zeros(len(g))], box_a])
        res = linprog(np.r_[np.zeros(f), 1.0], A_ub=a, b_ub=np.r_[h, x, -x],
                      bounds=[(None, None)] * f + [(0, best[0])], method="highs")  # fmt: skip
        return res.fun if res.status == 0 else np.inf

    def leaf(a: np.ndarray, c: np.ndarray, g: np.ndarray, h: np.ndarray, d: float) -> None:
        s = np.abs(a[c0])
        kth = min(s[i] for i in top)
        if any(s[j] >= kth for j in range(f) if j not in top):
            best[0] = min(best[0], d)
            return
        for cls in range(len(c)):
            if cls != c0:  # z_cls >= z_c0  <=>  (a[c0] − a[cls]) x <= c[cls] − c[c0]
                row = (a[c0] - a[cls])[None]
                best[0] = min(best[0], dist(np.vstack([g, row]), np.r_[h, c[cls] - c[c0]]))

    def choices(op: tuple, a: np.ndarray, c: np.ndarray) -> list[list[tuple]]:
        """Per unit / window: its options (constraint rows, rhs, output row, output const)."""
        out = []
        if op[0] == "relu":
            for j in range(len(c)):
                if not a[j].any():  # constant: no choice (ReLU'(0) = 0, off at 0)
                    out.append([(np.zeros((0, f)), np.zeros(0), a[j] * (c[j] > 0),
                                 max(c[j], 0.0))])  # fmt: skip
                    continue
                out.append([(-a[j][None], np.r_[c[j]], a[j], c[j]),
                            (a[j][None], np.r_[-c[j]], 0 * a[j], 0.0)])  # fmt: skip
            return out
        for win in op[1]:
            funcs = {}
            for i in win:  # identical affine functions are one choice
                funcs.setdefault((a[i].tobytes(), c[i]), i)
            idx = list(funcs.values())
            opts = []
            for j in idx:
                rows = np.array([a[i] - a[j] for i in idx if i != j]).reshape(-1, f)
                opts.append((rows, np.array([c[j] - c[i] for i in idx if i != j]), a[j], c[j]))
            out.append(opts)
        return out

    def rec(i: int, a: np.ndarray, c: np.ndarray, g: np.ndarray, h: np.ndarray, d: float):
        while i < len(ops) and ops[i][0] == "affine":
            a, c = ops[i][1] @ a, ops[i][1] @ c + ops[i][2]
            i += 1
        if i == len(ops):
            leaf(a, c, g, h, d)
            return
        opts = choices(ops[i], a, c)

        def pick(u: int, g: np.ndarray, h: np.ndarray, d: float, rows: list, consts: list):
            if u == len(opts):
                rec(i + 1, np.array(rows), np.array(consts), g, h, d)
                return
            for cg, ch, ra, rc in opts[u]:
                # over the box |x − x0| <= best (the LP's domain): redundant, or infeasible?
                centre, spread = cg @ x, np.abs(cg).sum(1) * best[0]
                if (centre - spread > ch).any():
                    continue
                if (centre + spread <= ch).all():
                    pick(u + 1, g, h, d, [*rows, ra], [*consts, rc])
                    continue
                g2, h2 = np.vstack([g, cg]), np.r_[h, ch]
                d2 = dist(g2, h2)
                if d2 < best[0]:
                    pick(u + 1, g2, h2, d2, [*rows, ra], [*consts, rc])

        pick(0, g, h, d, [], [])

    rec(0, eye, np.zeros(f), np.zeros((0, f)), np.zeros(0), 0.0)
    return float(best[0])


def _oracle_nets() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    return [
        ("conv-pool-conv", _seq(5, nn.Conv2d(1, 3, (1, 2), padding=(0, 1)), nn.ReLU(),
                                nn.MaxPool2d((1, 2)), nn.Conv2d(3, 2, (1, 2)), nn.ReLU(),
                                nn.Flatten(), nn.Linear(2, 3)), (1, 1, 3)),
        ("overlapping-pool", _seq(6, nn.Conv2d(1, 2, (1, 2)), nn.ReLU(),
                                  nn.MaxPool2d((1, 2), stride=1), nn.Flatten(), nn.Linear(4, 3),
                                  nn.ReLU(), nn.Linear(3, 3)), (1, 1, 4)),
        ("2x2-pool", _seq(7, nn.Conv2d(1, 2, 2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2, 3)), (1, 2, 1)),
    ]  # fmt: skip


@pytest.mark.parametrize("i", range(len(_oracle_nets())))
def test_certified_radius_never_exceeds_the_exact_radius(i: int, monkeypatch) -> None:
    """Never above the exact radius, often close to it; the clean-argmax mutant exceeds it."""
    pytest.importorskip("scipy.optimize")
    name, model, shape = _oracle_nets()[i]
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(i), dtype=F64)
    cap = 1.0
    res = certified_radius(model, x, Explainer("grad"), 1, max_radius=cap, n_bisect=30)
    assert res.params["network"] == "cnn" and res.params["bound"] == "interval"
    exact = torch.tensor([_exact_radius(model, xi, 1, cap) for xi in x], dtype=F64)
    assert (res.radius <= exact + 1e-9).all(), (name, res.radius, exact)
    assert (res.radius > 0).sum() >= 2, (name, res.radius)
    monkeypatch.setattr(conv, "maxpool_candidates", _clean_argmax)
    bad = certified_radius(model, x, Explainer("grad"), 1, max_radius=cap, n_bisect=30)
    assert (bad.radius > exact + 1e-9).any(), (name, bad.radius, exact)
    monkeypatch.undo()
    # the oracle itself: points strictly inside the exact radius change nothing
    ex, gen = Explainer("grad"), torch.Generator().manual_seed(i)
    for xi, r in zip(x, exact):
        pts = xi + (2 * torch.rand(2000, *shape, generator=gen, dtype=F64) - 1) * r * 0.999
        c0 = model(xi[None]).argmax(1)
        assert (model(pts).argmax(1) == c0).all()
        s0 = ex.scores(model, xi[None], c0)
        assert (topk_mask(ex.scores(model, pts, c0.expand(2000)), 1) == topk_mask(s0, 1)).all()


# ----------------------------------------------------------------------------- attacks
def test_the_ensemble_never_moves_a_certified_top_k_of_a_trained_cnn() -> None:
    """A SmallCNN trained on 8x8 digits (val accuracy about 0.9): the ``standard`` ensemble at
    0.999 x the certified radius (inside the pixel box; one call for all certified inputs, at
    the smallest of their radii, to keep the test short: ``benchmarks/certify_cnn.py`` attacks
    every input at its own) keeps every certified top-k set and the class; at 20 x the largest
    radius it moves some (the check has power). Many digits get radius 0, and rightly: their
    background is exactly 0, so max-pool windows hold exact ties that a perturbation of 1e-6
    already breaks, re-routing the gradient and moving their top-k."""
    from r2et import fit
    from r2et.data import load_dataset

    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", list(ds.input_shape), ds.n_classes, channels=[4, 8], hidden=16)
    fit(model, "vanilla", ds, epochs=8, lr=1e-2, batch_size=32, seed=0, progress=False)
    model.eval()
    ex, k = Explainer("grad"), 8
    x = ds.test[0][:40]
    res = certified_radius(model, x, ex, k, bounds=ds.bounds)
    rows = torch.nonzero(res.radius > 0).flatten()
    assert len(rows) >= 5, res.radius
    c0, top0 = model(x).argmax(1), topk_mask(ex.scores(model, x), k)
    r = 0.999 * float(res.radius[rows].min())
    out = EnsembleAttack(ex, k, r, bounds=ds.bounds, preset="standard", seed=0)(model, x[rows])
    assert (out.p_at_k == 1.0).all(), (r, out.p_at_k)
    assert torch.equal(topk_mask(out.scores_adv, k), top0[rows])
    assert torch.equal(model(out.x_adv).argmax(1), c0[rows])
    far = EnsembleAttack(ex, k, 20 * float(res.radius.max()), bounds=ds.bounds, preset="fast")
    assert (far(model, x[rows]).p_at_k < 1.0).any()


def test_an_avg_pool_cnn_is_certified_where_the_max_pool_one_is_not() -> None:
    """The library's ``cnn`` with ``pool="avg"``, trained on 8x8 digits like the max-pool one
    above: every one of 40 test digits gets a radius > 0 (the max-pool model: about a third;
    the rest are exact ties of max-pool windows on the zero background, whose true radius is
    0), and no point sampled inside 0.999 x a radius moves that input's top-k or class."""
    from r2et import fit
    from r2et.data import load_dataset

    ds = load_dataset("digits", seed=0)
    x, ex, k = ds.test[0][:40], Explainer("grad"), 8
    certified = {}
    for pool in ("max", "avg"):
        torch.manual_seed(0)
        model = build_model(
            "cnn", list(ds.input_shape), ds.n_classes, channels=[4, 8], hidden=16, pool=pool
        )
        assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == 2 * (pool == "avg")
        fit(model, "vanilla", ds, epochs=8, lr=1e-2, batch_size=32, seed=0, progress=False)
        model.eval()
        certified[pool] = res = certified_radius(model, x, ex, k, bounds=ds.bounds)
    assert int((certified["avg"].radius > 0).sum()) == len(x)
    assert int((certified["max"].radius > 0).sum()) <= len(x) // 2
    gen = torch.Generator().manual_seed(0)
    c0, top0 = model(x).argmax(1), topk_mask(ex.scores(model, x), k)
    for i in range(0, len(x), 8):
        r = 0.999 * float(res.radius[i])
        u = (torch.rand(300, *x.shape[1:], generator=gen) * 2 - 1) * r
        pts = (x[i] + u).clamp(*ds.bounds)
        with torch.no_grad():
            assert (model(pts).argmax(1) == c0[i]).all()
        assert (topk_mask(ex.scores(model, pts, c0[i].expand(300)), k) == top0[i]).all()


# ----------------------------------------------------------------------------- MLP path
def test_a_cnn_that_is_an_mlp_gets_the_mlp_bounds_and_radii() -> None:
    """1x1 convolutions on a 1x1 image are Linear layers: the CNN code gives exactly the MLP
    code's gradient bounds, margins (with and without the float32 slack) and radii."""
    torch.manual_seed(4)
    cnn = _seq(4, nn.Conv2d(5, 7, 1), nn.ReLU(), nn.Conv2d(7, 6, 1), nn.ReLU(), nn.Flatten(),
               nn.Linear(6, 3))  # fmt: skip
    mlp = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    mlp = mlp.to(F64).eval()
    with torch.no_grad():
        for lin, c in zip((mlp[0], mlp[2], mlp[4]), (cnn[0], cnn[2], cnn[5])):
            lin.weight.copy_(c.weight.reshape(lin.weight.shape))
            lin.bias.copy_(c.bias)
    assert network_layers(cnn)[0] == "cnn" and network_layers(mlp)[0] == "mlp"
    x = torch.randn(16, 5, 1, 1, generator=torch.Generator().manual_seed(4), dtype=F64)
    flat = x.flatten(1)
    torch.testing.assert_close(cnn(x), mlp(flat))
    stages = conv_stages(conv_layers(cnn), x.device)
    params = [(lin.weight.detach(), lin.bias.detach()) for lin in (mlp[0], mlp[2], mlp[4])]
    t = mlp(flat).argmax(1)
    for r in (0.0, 0.05, 0.3):
        for slack in (0.0, 1e-5):
            a = conv_gradient_bounds(stages, x - r, x + r, t, slack=slack)
            b = gradient_bounds(params, flat - r, flat + r, t, slack=slack)
            for u, v in zip(a, b):
                torch.testing.assert_close(u.reshape(v.shape), v, rtol=1e-12, atol=1e-12)
    ex = Explainer("grad_x_input", reduce=None)  # 5 channels = 5 features
    rc = certified_radius(cnn, x, ex, 2, bound="patterns")  # falls back to intervals
    rm = certified_radius(mlp, flat, Explainer("grad_x_input"), 2, bound="interval")
    assert rc.params["bound"] == "interval" and rc.params["network"] == "cnn"
    torch.testing.assert_close(rc.radius, rm.radius)
    torch.testing.assert_close(rc.p_at_k, rm.p_at_k)
    assert (rc.radius > 0).sum() >= 8


def test_grad_x_input_certificate_of_a_multichannel_cnn_holds_under_sampling() -> None:
    """Gradient x input summed over 2 channels, with a data box: points of ball ∩ box inside
    the certified radius never change the top-k or the class."""
    model, shape = _nets()["overlap"]
    x = _inputs(shape, n=6, seed=3)
    ex, k = Explainer("grad_x_input"), 4
    res = certified_radius(model, x, ex, k, bounds=(0.0, 1.0))
    assert (res.radius > 0).sum() >= 4
    gen = torch.Generator().manual_seed(0)
    c0 = model(x).argmax(1)
    s0 = ex.scores(model, x, c0)
    for i in range(len(x)):
        r = float(res.radius[i])
        lo, hi = (x[i] - r).clamp(0, 1), (x[i] + r).clamp(0, 1)
        u = torch.rand(1000, *shape, generator=gen, dtype=F64)
        u[:250] = u[:250].round()
        pts = lo + (hi - lo) * u
        assert (model(pts).argmax(1) == c0[i]).all()
        s = ex.scores(model, pts, c0[i].expand(1000))
        assert (topk_mask(s, k) == topk_mask(s0[i : i + 1], k)).all()


# ----------------------------------------------------------------------------- refusals, CLI
def test_other_networks_are_refused_with_one_clear_type_error() -> None:
    x = torch.zeros(2, 3, 8, 8, dtype=F64)
    for model in (
        build_model("resnet9", [3, 8, 8], 3, width=4).to(F64).eval(),  # GroupNorm, residuals
        _seq(0, nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
             nn.Linear(72, 3)),
        _seq(0, nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten()),  # no Linear at the end
        _seq(0, nn.Conv2d(3, 2, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
             nn.Flatten(), nn.Linear(128, 3)),
        _seq(0, nn.Conv2d(3, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
             nn.Linear(18, 3)),
    ):  # fmt: skip
        with pytest.raises(TypeError, match="smoothed"):
            certified_radius(model, x, Explainer("grad"), 2)


class _Skip(nn.Module):
    """Conv layers whose forward is not their composition."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + torch.relu(self.conv(x)))


def test_a_forward_that_is_not_the_composition_is_refused() -> None:
    model = _Skip().to(F64).eval()
    with pytest.raises(TypeError, match="composition"):
        certified_radius(model, torch.rand(2, 1, 4, 4, dtype=F64), Explainer("grad"), 2)


def test_cli_evaluate_certify_on_a_cnn_run(tmp_path, capsys) -> None:
    """``r2et evaluate RUN --certify`` on a CNN run: the certified P@k is printed and never
    above the attacked one."""
    import json

    from r2et.cli import main

    run = tmp_path / "img"
    assert main(["train", "digits", "--model", "cnn", "--epochs", "1", "--out", str(run),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["evaluate", str(run), "--n", "6", "--eps", "0.002", "--preset", "fast",
            "--certify", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "certified linf" in out
    res = json.loads((run / "evaluation_test.json").read_text())
    cert = res["certified"]["certified"]
    assert cert["network"] == "cnn" and cert["bound"] == "interval"
    assert cert["p_at_k_mean"][0] <= res["attacks"]["ensemble"]["p_at_k_mean"] + 1e-12
