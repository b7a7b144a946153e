"""The centred form of the gradient's backward pass (r2et.certify.centred), part of the
deterministic certificate's ``bound="crown"``:

* the claim it rests on: the gradient is multilinear in the layers' derivative vectors, so its
  bounds must hold for *every* derivative vector in the boxes: checked at random vectors and
  at vertices of the boxes (where multilinear functions take their extremes), networks of 1-4
  hidden layers, ReLU-like and Softplus-like boxes;
* it is tighter than the plain interval pass on a Softplus MLP of the COMPAS size, and its
  bounds from a network's own CROWN states hold at sampled points of the input box (autograd);
* mutants (no higher-order terms; the expansion point shifted off the midpoints) are caught
  by the vertex check.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from r2et.certify import centred as centred_mod
from r2et.certify.centred import MAX_HIDDEN, centred_gradient_bounds
from r2et.certify.crown import crown_forward, crown_states
from r2et.certify.deterministic import _gradient_backward

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _params(widths: list[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(b, a, generator=g, dtype=F64) / a**0.5, torch.randn(b, generator=g, dtype=F64))
        for a, b in itertools.pairwise(widths)
    ]


def _states(widths: list[int], n: int, kind: str, seed: int):
    """Random derivative boxes per hidden layer: Softplus-like ``(d_l, d_u, True)`` in (0, 1), or
    ReLU masks ``(on, off, None)`` with some units unstable."""
    g = torch.Generator().manual_seed(seed + 100)
    out = []
    for width in widths[1:-1]:
        if kind == "softplus":
            a, b = torch.rand(2, n, width, generator=g, dtype=F64).sort(0).values
            out.append((a, b, True))
        else:
            u = torch.rand(n, width, generator=g)
            out.append((u < 0.4, u > 0.8, None))
    return out


def _product(params, ds: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """The gradient for given derivative vectors: ``((W_L[c] ⊙ d_H) W_H ⋯ ⊙ d_1) W_1``."""
    v = params[-1][0][target]
    for (w, _), d in zip(reversed(params[:-1]), reversed(ds)):
        v = (v * d) @ w
    return v


def _boxes(states):
    return [centred_mod.derivative_box(s) for s in states]


def _vertex_and_random_violation(params, states, target, bounds, draws: int = 300) -> float:
    """The largest amount by which the gradient, at random derivative vectors in the boxes and
    at random vertices of them, leaves ``bounds``."""
    lo, hi = bounds
    boxes = _boxes(states)
    g = torch.Generator().manual_seed(7)
    worst = 0.0
    for j in range(draws):
        ds = []
        for a, b in boxes:
            u = torch.rand(a.shape, generator=g, dtype=F64)
            if j % 2:  # a vertex: every derivative at an end of its interval
                u = (u > 0.5).to(F64)
            ds.append(a + u * (b - a))
        v = _product(params, ds, target)
        worst = max(worst, float((lo - v).max()), float((v - hi).max()))
    return worst


@pytest.mark.parametrize("kind", ["softplus", "relu"])
@pytest.mark.parametrize("widths", [[5, 7, 3], [6, 8, 9, 3], [4, 6, 5, 7, 2], [3, 5, 4, 6, 5, 3]])
def test_bounds_hold_for_every_derivative_vector_in_the_boxes(widths, kind) -> None:
    params, n = _params(widths, seed=len(widths)), 6
    states = _states(widths, n, kind, seed=len(widths))
    target = torch.arange(n) % widths[-1]
    bounds = centred_gradient_bounds(params, states, target)
    assert bounds is not None
    assert _vertex_and_random_violation(params, states, target, bounds) <= 1e-12


def _narrow_states(widths: list[int], n: int, seed: int, half: float = 0.05):
    """Softplus-like derivative boxes of half-width below ``half`` (what small radii give)."""
    g = torch.Generator().manual_seed(seed)
    states = []
    for width in widths[1:-1]:
        mid = torch.rand(n, width, generator=g, dtype=F64) * 0.8 + 0.1
        h = torch.rand(n, width, generator=g, dtype=F64) * half
        states.append((mid - h, mid + h, True))
    return states


def test_tighter_than_the_plain_pass_where_the_boxes_are_narrow() -> None:
    """Narrow derivative boxes (what small radii give): the centred bounds are strictly inside
    the plain interval pass's on most entries, and at least 1.5x narrower on average."""
    widths, n = [20, 64, 64, 2], 8
    params = _params(widths, seed=3)
    states = _narrow_states(widths, n, seed=4)
    target = torch.zeros(n, dtype=torch.long)
    cl, cu = centred_gradient_bounds(params, states, target)
    pl, pu = _gradient_backward(params, states, target)
    assert _vertex_and_random_violation(params, states, target, (cl, cu)) <= 1e-12
    assert float((cu - cl).mean()) * 1.5 < float((pu - pl).mean())
    assert float(((cu - cl) < (pu - pl)).double().mean()) > 0.9


def test_bounds_from_a_networks_crown_states_hold_on_the_input_box() -> None:
    """On a Softplus MLP, from the CROWN states of an input box: autograd gradients at 400
    sampled points and the box's vertices (4 inputs) lie inside the centred bounds."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 12), torch.nn.Softplus(3.0), torch.nn.Linear(12, 10),
        torch.nn.Softplus(3.0), torch.nn.Linear(10, 3),
    ).to(F64)  # fmt: skip
    params = [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, torch.nn.Linear)]
    x = torch.randn(5, 4, dtype=F64)
    low, high = x - 0.2, x + 0.2
    target = model(x).argmax(1)
    sp = [(3.0, 20.0), (3.0, 20.0)]
    forward = crown_forward(params, low, high, sp)
    states, _ = crown_states(params, low, high, target, 0.0, sp, forward)
    gl, gu = centred_gradient_bounds(params, states, target)
    fl, fu = centred_gradient_bounds(params, states, target, (low, high), sp, forward)
    assert bool((fl >= gl - 1e-15).all()) and bool((fu <= gu + 1e-15).all())
    assert float((fu - fl).mean()) < float((gu - gl).mean())  # the input-linear first layer helps
    u = torch.rand(400, 5, 4, dtype=F64)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=F64)
    u = torch.cat([u, corners[:, None, :].expand(16, 5, 4)])
    pts = (low + u * (high - low)).reshape(-1, 4).requires_grad_(True)
    tt = target.repeat(len(u))
    (grad,) = torch.autograd.grad(model(pts).gather(1, tt[:, None]).sum(), pts)
    grad = grad.view(len(u), 5, 4)
    assert float((gl - grad).max()) <= 1e-12 and float((grad - gu).max()) <= 1e-12
    assert float((fl - grad).max()) <= 1e-12 and float((grad - fu).max()) <= 1e-12


def test_deep_networks_keep_the_plain_pass() -> None:
    widths = [3] + [4] * (MAX_HIDDEN + 1) + [2]
    states = _states(widths, 2, "softplus", seed=0)
    assert (
        centred_gradient_bounds(_params(widths, 0), states, torch.zeros(2, dtype=torch.long))
        is None
    )


@pytest.mark.parametrize("mutant", ["no_higher_order", "shifted_midpoint"])
def test_a_wrong_centred_form_is_caught(monkeypatch, mutant) -> None:
    """Narrow boxes, where the centred bounds are nearly exact: dropping the terms with two or
    more δ's, or expanding around points that are not the midpoints, makes the bounds miss
    some vertex: the check has power."""
    widths, n = [6, 8, 9, 3], 6
    params = _params(widths, seed=3)
    states = _narrow_states(widths, n, seed=3)
    target = torch.arange(n) % 3
    if mutant == "no_higher_order":
        monkeypatch.setattr(
            centred_mod,
            "_higher_order",
            lambda w, m, r, o: torch.zeros(len(o), w[0].shape[1], dtype=F64),
        )
    else:
        real = centred_mod.derivative_box

        def shifted(state):
            a, b = real(state)
            return a + 0.3 * (b - a), b + 0.3 * (b - a)

        monkeypatch.setattr(centred_mod, "derivative_box", shifted)
    bounds = centred_gradient_bounds(params, states, target)
    monkeypatch.undo()
    assert _vertex_and_random_violation(params, states, target, bounds) > 1e-6


@pytest.mark.parametrize("threshold", [20.0, 1.0])
def test_sigmoid_relaxation_encloses_the_softplus_derivative(threshold) -> None:
    """On intervals left of 0, right of 0, across 0 and across the threshold (where torch's
    derivative jumps to 1), both lines enclose ``d(t)`` at 2,000 points of each interval; the
    upper line used as a lower one is caught."""
    from r2et.certify.centred import sigmoid_relaxation

    tl = torch.tensor([-6.0, -2.0, 0.5, -1.0, 0.2, 3.0, -0.3], dtype=F64)
    tu = torch.tensor([-3.0, -0.1, 4.0, 2.0, 0.2, 25.0, 0.3], dtype=F64)
    a_l, b_l, a_u, b_u = sigmoid_relaxation(tl, tu, threshold)
    t = tl[:, None] + torch.linspace(0, 1, 2000, dtype=F64)[None, :] * (tu - tl)[:, None]
    d = torch.where(t > threshold, torch.ones_like(t), torch.sigmoid(t))
    assert float((a_l[:, None] * t + b_l[:, None] - d).max()) <= 1e-15
    assert float((d - a_u[:, None] * t - b_u[:, None]).max()) <= 1e-15
    # the check has power: the upper line taken as a lower one leaves d
    swapped = (a_u[:, None] * t + b_u[:, None]) - d
    assert float(swapped.max()) > 1e-3


@pytest.mark.parametrize("hidden", [[12], [12, 10]])
def test_a_wrong_derivative_line_is_caught(monkeypatch, hidden) -> None:
    """The lower line used as the upper one (not an upper bound) gives bounds that autograd
    gradients of a Softplus MLP (one or two hidden layers) leave: the sampling check has power
    for the derivatives bounded through CROWN."""
    from r2et.certify import centred as cm

    real = cm.sigmoid_relaxation

    def wrong(tl, tu, threshold):
        a_l, b_l, a_u, b_u = real(tl, tu, threshold)
        return a_l, b_l, a_l, b_l  # the lower line as the upper one

    torch.manual_seed(1)
    layers: list[torch.nn.Module] = []
    for a, b in itertools.pairwise([4, *hidden]):
        layers += [torch.nn.Linear(a, b), torch.nn.Softplus(3.0)]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(hidden[-1], 3)).to(F64)
    params = [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, torch.nn.Linear)]
    x = torch.randn(5, 4, dtype=F64)
    low, high = x - 0.3, x + 0.3
    target = model(x).argmax(1)
    sp = [(3.0, 20.0)] * len(hidden)
    forward = crown_forward(params, low, high, sp)
    states, _ = crown_states(params, low, high, target, 0.0, sp, forward)
    monkeypatch.setattr(cm, "sigmoid_relaxation", wrong)
    gl, gu = centred_gradient_bounds(params, states, target, (low, high), sp, forward)
    monkeypatch.undo()
    u = torch.rand(2000, 5, 4, dtype=F64)
    pts = (low + u * (high - low)).reshape(-1, 4).requires_grad_(True)
    tt = target.repeat(len(u))
    (grad,) = torch.autograd.grad(model(pts).gather(1, tt[:, None]).sum(), pts)
    grad = grad.view(len(u), 5, 4)
    assert max(float((gl - grad).max()), float((grad - gu).max())) > 1e-6
