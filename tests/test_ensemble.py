"""The ensemble attack, its members (APGD on registered objectives, gradient-free search),
presets, early exit, and what each member is for."""

from __future__ import annotations

import pytest
import torch
from conftest import make_cnn, make_mlp, randn_rows
from torch import nn

from r2et import Explainer, precision_at_k
from r2et.attacks import (
    PRESETS,
    EnsembleAttack,
    ExplanationPGD,
    Member,
    RandomNoiseAttack,
    RandomSearchAttack,
    get_objective,
    list_objectives,
    list_presets,
)
from r2et.attacks.objectives import scale_scores
from r2et.attacks.pgd import apgd_checkpoints
from r2et.attacks.search import square_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = 32, f: int = 10, seed: int = 0) -> torch.Tensor:
    return randn_rows(n, f, seed)


SMALL = [
    Member("pgd", 12, "er-next", "raw", 10.0),
    Member("pgd", 12, "er-all", "raw", 30.0, random_start=True, restarts=2),
    Member("pgd", 8, "mse", "mean", 3.0, random_start=True),
    Member("search", 20, "overlap"),
]


# --------------------------------------------------------------------------- objectives
def _random_scores(n: int = 16, f: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_objectives_against_direct_formulas():
    s0, s = _random_scores(seed=0), _random_scores(seed=1)
    k = 4
    order = s0.argsort(1, descending=True)
    top, nxt, rest = order[:, :k], order[:, k : 2 * k], order[:, k:]

    def val(name, **opts):
        obj = get_objective(name)
        return obj.value(s, obj.setup(s0, k, opts))

    want = s.gather(1, top).mean(1) - s.gather(1, nxt).mean(1)
    torch.testing.assert_close(val("er-next"), want)
    want = s.gather(1, top).mean(1) - s.gather(1, order[:, k : k + 2]).mean(1)
    torch.testing.assert_close(val("er-next", n_bottom=2), want)
    want = s.gather(1, top).mean(1) - s.gather(1, rest).mean(1)
    torch.testing.assert_close(val("er-all"), want)
    torch.testing.assert_close(val("mse"), -((s - s0) ** 2).sum(1))
    # minmax: as tau -> 0 the smooth min/max become min over T minus max over the rest
    want = s.gather(1, top).min(1).values - s.gather(1, rest).max(1).values
    torch.testing.assert_close(val("minmax", tau=1e-5), want, atol=1e-4, rtol=0)
    # overlap: as tau -> 0 the smooth count becomes P@k
    torch.testing.assert_close(val("overlap", tau=1e-6), precision_at_k(s0, s, k))
    assert set(list_objectives()) >= {"er-next", "er-all", "minmax", "overlap", "mse"}
    with pytest.raises(ValueError, match="objective"):
        get_objective("nope")


def test_scale_free_scores_ignore_scale():
    s = _random_scores()
    torch.testing.assert_close(scale_scores(3.7 * s, "mean"), scale_scores(s, "mean"))
    torch.testing.assert_close(scale_scores(s, "mean").mean(1), torch.ones(16, dtype=s.dtype))
    assert scale_scores(s, "raw") is s


def test_apgd_checkpoints_and_square_schedule():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9]
    assert square_schedule(0.4, 0, 10000) == 0.4
    assert square_schedule(0.4, 11, 10000) == 0.2
    assert square_schedule(0.4, 9999, 10000) == pytest.approx(0.4 / 2**9)


# --------------------------------------------------------------------------- the ensemble
def test_ensemble_is_at_most_every_member_per_input():
    model = make_mlp()
    x = _data()
    ens = EnsembleAttack(Explainer("grad"), 3, 0.5, members=SMALL, seed=3)
    res = ens(model, x)
    assert res.member_names == tuple(m.name for m in SMALL)
    for j, (name, atk) in enumerate(ens.attacks(model)):
        alone = atk(model, x)  # the member run on its own, on every input
        assert bool((res.p_at_k <= alone.p_at_k).all()), name
        won = res.member == j  # the recorded member reached exactly the ensemble's P@k
        assert torch.equal(res.p_at_k[won], alone.p_at_k[won]), name
    # and the returned point is real: its scores give the reported P@k, prediction kept
    ex = Explainer("grad")
    torch.testing.assert_close(res.scores_adv, ex.scores(model, res.x_adv))
    torch.testing.assert_close(precision_at_k(res.scores_clean, res.scores_adv, 3), res.p_at_k)
    assert torch.equal(model(res.x_adv).argmax(1), model(x).argmax(1))
    assert bool(((res.x_adv - x).abs() <= 0.5).all())
    counts = res.found_by()
    assert sum(counts.values()) == len(x) and set(counts) == {*res.member_names, "none"}


def test_ensemble_beats_random_noise_at_the_same_budget():
    model = make_mlp()
    x = _data(48)
    ex = Explainer("grad")
    ens = EnsembleAttack(ex, 3, 0.3, preset="fast", seed=0)
    noise = RandomNoiseAttack(ex, 3, 0.3, steps=ens.steps, seed=0)
    p_ens = float(ens(model, x).p_at_k.mean())
    p_noise = float(noise(model, x).p_at_k.mean())
    assert p_ens < p_noise - 0.1, (p_ens, p_noise)  # measured 0.56 vs 0.84


class _MaskedGradients(nn.Module):
    """A model whose saliency switches between two disjoint top-3 sets when x_0 crosses 0,
    through a selection that carries no gradient: every gradient attack (there are no ReLUs
    to smooth) sees a constant saliency; only querying the model reveals the switch. Class 1's
    logit stays far below class 0's, so the prediction never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.w_neg = nn.Parameter(
            torch.tensor([1.0, 5, 4, 3, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
        )
        self.w_pos = nn.Parameter(
            torch.tensor([1.0, 0.1, 0.1, 0.1, 5, 4, 3, 0.1], dtype=torch.float64)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = (x[:, :1] > 0).detach()
        w = torch.where(pos, self.w_pos, self.w_neg)
        z0 = (w * x).sum(1) + 100.0
        return torch.stack([z0, torch.full_like(z0, -100.0)], 1)


def test_gradient_free_member_finds_what_gradients_cannot():
    model = _MaskedGradients().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 8, generator=g, dtype=torch.float64) * 0.5
    x[:, 0] = -0.05  # every input within eps = 0.1 of the switch
    ex = Explainer("grad")
    for objective in ("er-all", "er-next", "minmax"):  # masked: gradients never move x
        pgd = ExplanationPGD(ex, 3, 0.1, 30, objective=objective, seed=0)
        assert float(pgd(model, x).p_at_k.mean()) == 1.0
    search = RandomSearchAttack(ex, 3, 0.1, 20, seed=0)
    assert float(search(model, x).p_at_k.max()) == 0.0  # the switch swaps the whole top-3
    members = [
        Member("pgd", 30, "er-all"),
        Member("pgd", 30, "minmax", "mean"),
        Member("search", 60, "overlap"),
    ]
    res = EnsembleAttack(ex, 3, 0.1, members=members, seed=0)(model, x)
    assert float(res.p_at_k.max()) == 0.0
    found = res.found_by()
    assert found["search-overlap-q60"] == len(x), found


def test_skip_leaves_rows_alone_and_the_others_unchanged():
    model = make_mlp()
    x = _data(20)
    skip = torch.zeros(20, dtype=torch.bool)
    skip[::3] = True
    for atk in (
        ExplanationPGD(Explainer("grad"), 3, 0.4, 10, random_start=True, restarts=2, seed=1),
        RandomSearchAttack(Explainer("grad"), 3, 0.4, 15, seed=1),
    ):
        full = atk(model, x)
        part = atk(model, x, skip=skip)
        assert torch.equal(part.x_adv[skip], x[skip]) and bool((part.p_at_k[skip] == 1).all())
        assert torch.equal(part.p_at_k[~skip], full.p_at_k[~skip])
        assert torch.equal(part.x_adv[~skip], full.x_adv[~skip])
        with pytest.raises(ValueError, match="skip"):
            atk(model, x, skip=skip[:5])


def test_early_exit_stops_inputs_at_zero():
    model = _MaskedGradients().eval()
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[:, 0] = -0.01
    res = RandomSearchAttack(Explainer("grad"), 3, 0.1, 200, seed=0)(model, x)
    assert bool((res.p_at_k == 0).all())
    assert int(res.steps_taken.max()) < 50  # stopped long before the 200 queries


def test_presets_and_member_validation():
    assert list_presets() == ["fast", "standard", "thorough", "adaptive"]  # adaptive: issue 26
    steps = {p: sum(m.cost for m in PRESETS[p]) for p in PRESETS}
    assert steps["fast"] < steps["standard"] < steps["adaptive"] < steps["thorough"]
    for members in PRESETS.values():
        for kind in ("images", "non-images"):
            names = [m.name for m in members if m.inputs in ("all", kind)]
            assert len(set(names)) == len(names)
            # a gradient-free member, always
            assert any(m.kind == "search" for m in members if m.inputs in ("all", kind))
    with pytest.raises(ValueError, match="objective"):
        Member("pgd", 10, "nope")
    with pytest.raises(ValueError, match="kind"):
        Member("fgsm", 10)
    with pytest.raises(ValueError, match="preset"):
        EnsembleAttack(Explainer("grad"), 3, 0.1, preset="huge")
    with pytest.raises(ValueError, match="members"):
        EnsembleAttack(Explainer("grad"), 3, 0.1, members=[])
    with pytest.raises(ValueError, match="bottom"):
        Member("pgd", 10, "er-all", bottom=0.5)


def test_members_run_only_on_their_kind_of_input():
    members = [
        Member("pgd", 3, "er-all", inputs="non-images"),
        Member("pgd", 3, "er-next", inputs="images"),
        Member("search", 5, "overlap"),
    ]
    ens = EnsembleAttack(Explainer("grad"), 3, 0.1, members=members)
    flat, image = torch.zeros(2, 6), torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    assert [n for n, _ in ens.attacks(None, flat)] == [members[0].name, "search-overlap-q5"]
    assert [n for n, _ in ens.attacks(None, image)] == [members[1].name, "search-overlap-q5"]
    assert len(ens.attacks()) == 3  # no input given: every member
    # the standard preset: many APGD restarts on tabular rows, a long search on images
    std = EnsembleAttack(Explainer("grad"), 3, 0.1)
    steps = {
        kind: sum(a.steps * a.restarts for _, a in std.attacks(None, x) if a.name == "pgd")
        for kind, x in (("flat", flat), ("image", image))
    }
    queries = {
        kind: sum(a.steps for _, a in std.attacks(None, x) if a.name != "pgd")
        for kind, x in (("flat", flat), ("image", image))
    }
    assert steps["flat"] > steps["image"] and queries["image"] > queries["flat"]
    assert std.steps == sum(m.steps * m.restarts for m in PRESETS["standard"])  # before a call
    std(make_mlp(n_in=6), flat.double())
    assert std.steps == steps["flat"] + queries["flat"]  # what ran on tabular rows
    with pytest.raises(ValueError, match="inputs"):
        Member("pgd", 3, inputs="tabular")
    only_images = EnsembleAttack(Explainer("grad"), 3, 0.1, members=[members[1]])
    with pytest.raises(ValueError, match="no member of this ensemble runs on non-images"):
        only_images(make_mlp(), torch.zeros(2, 10, dtype=torch.float64))
    model = make_cnn((1, 4, 4))
    ens = EnsembleAttack(Explainer("grad"), 3, 0.1, members=members, seed=0)
    res = ens(model, image + 0.5)
    assert res.member_names == ("apgd-er-next-raw-b10", "search-overlap-q5")


def test_targeted_members_compare_with_the_next_few_features():
    # bottom -> n_bottom = ceil(bottom * k): the ranking loss against the next 1, 2, 4 of k=7
    members = [Member("pgd", 4, "er-next", bottom=b) for b in (0.125, 0.25, 0.5)]
    members.append(Member("pgd", 4, "er-next"))  # None: the paper's next k
    ens = EnsembleAttack(Explainer("grad"), 7, 0.1, members=members)
    assert [a.n_bottom for _, a in ens.attacks(make_mlp())] == [1, 2, 4, None]
    assert [m.name for m in members][:2] == ["apgd-er-next0.125k-raw", "apgd-er-next0.25k-raw"]
    # the attack with n_bottom = 2 minimises exactly mean(top-k) - mean(next 2)
    s0 = torch.tensor([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5]])
    ctx = get_objective("er-next").setup(s0, 7, {"n_bottom": 2})
    want = s0[0, :7].mean() - s0[0, 7:9].mean()
    assert torch.allclose(get_objective("er-next").value(s0, ctx), want.reshape(1))


def test_surrogate_betas_collapse_on_smooth_models():
    ex = Explainer("grad")
    members = [Member("pgd", 5, "er-all", beta=b) for b in (3.0, 10.0, 30.0)]
    ens = EnsembleAttack(ex, 3, 0.1, members=[*members, Member("search", 5)])
    relu = make_mlp()
    smooth = make_mlp(activation="softplus")
    assert [a.resolve_beta(relu) for _, a in ens.attacks(relu)] == [3.0, 10.0, 30.0, None]
    # on a smooth model the members differ only in a beta that does not apply: they run once
    assert len(ens.attacks(smooth)) == 2
    assert all(a.resolve_beta(smooth) is None for _, a in ens.attacks(smooth))


def test_ensemble_keeps_prediction_and_constraints_with_box():
    model = make_mlp()
    x = _data(24).clamp(-1, 1)
    lo, hi = (
        torch.full((10,), -1.0, dtype=torch.float64),
        torch.full((10,), 1.0, dtype=torch.float64),
    )
    res = EnsembleAttack(Explainer("grad"), 3, 0.6, bounds=(lo, hi), members=SMALL)(model, x)
    assert bool(((res.x_adv - x).abs() <= 0.6).all())
    assert bool((res.x_adv >= lo).all() and (res.x_adv <= hi).all())
    assert torch.equal(model(res.x_adv).argmax(1), model(x).argmax(1))
    cfg = EnsembleAttack(Explainer("grad"), 3, 0.6, bounds=(lo, hi), members=SMALL).config()
    assert cfg["box"] is True and len(cfg["members"]) == len(SMALL)


def test_cpu_chunking_does_not_change_the_attack(monkeypatch):
    # images of 2x16x16 = 512 entries are chunked on the CPU; 3 rows per chunk here

    import r2et.attacks.trajectories as pgd  # the batched loop (chunking) lives there

    model = make_cnn((2, 16, 16))
    x = torch.rand(5, 2, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ex = Explainer("grad")

    def run() -> object:
        atk = ExplanationPGD(ex, 12, 0.1, 6, objective="er-all", bounds=(0.0, 1.0),
                             random_start=True, restarts=2, seed=3)  # fmt: skip
        return atk(model, x)

    monkeypatch.setattr(pgd, "CPU_CHUNK_ELEMENTS", 10**9)
    whole = run()
    monkeypatch.setattr(pgd, "CPU_CHUNK_ELEMENTS", 3 * 512)
    calls = []
    real = pgd.measure
    monkeypatch.setattr(
        pgd, "measure", lambda *a, **kw: calls.append(a[2].shape[0]) or real(*a, **kw)
    )
    chunked = run()
    assert max(calls) == 3  # it did chunk
    assert torch.allclose(whole.x_adv, chunked.x_adv, atol=1e-12)
    assert torch.equal(whole.p_at_k, chunked.p_at_k)
