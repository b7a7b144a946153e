"""Successive halving of random restarts (``ExplanationPGD(rounds=, keep=)``,
``Member(rounds=, keep=)``) and the ``adaptive`` ensemble preset (issue 26)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_mlp, randn_rows

from r2et import Explainer
from r2et.attacks import PRESETS, EnsembleAttack, ExplanationPGD, Member
from r2et.attacks.pgd import halving_cost, halving_schedule
from r2et.attacks.trajectories import Trajectories

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.5


def _attack(**kw):
    opts = dict(random_start=True, restarts=8, seed=3, objective="er-all", early_stop=False)
    opts.update(kw)
    return ExplanationPGD(Explainer("grad"), 3, EPS, opts.pop("steps", 12), **opts)


def _same(a, b):
    for f in ("x_adv", "scores_adv", "p_at_k", "steps_taken"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), rtol=0, atol=0)


def test_schedule_and_cost_formula():
    assert halving_schedule(40, 32, 1, 0.25) == {}
    assert halving_schedule(40, 32, 3, 0.25) == {13: 8, 27: 2}
    assert halving_schedule(10, 5, 4, 0.5) == {2: 3, 5: 2, 8: 1}  # ceil, at least 1
    assert halving_cost(40, 32, 3, 0.25) == 32 * 13 + 8 * 14 + 2 * 13
    assert halving_cost(40, 6) == 240  # one round: plain restarts
    assert Member("pgd", 40, restarts=32, rounds=3).cost == halving_cost(40, 32, 3, 0.25)


def test_one_round_and_keep_all_equal_plain_restarts():
    model, x = make_mlp(), randn_rows(12)
    plain = _attack()(model, x)
    _same(_attack(rounds=1)(model, x), plain)
    _same(_attack(rounds=3, keep=1.0)(model, x), plain)  # nothing pruned: same trajectories
    assert "rounds" not in _attack().config() and _attack(rounds=2).config()["rounds"] == 2


def test_halving_changes_the_run_and_prunes():
    model, x = make_mlp(), randn_rows(12)
    atk = _attack(rounds=3, keep=0.25)
    res = atk(model, x)
    assert atk.last_grad_evals == 12 * halving_cost(12, 8, 3, 0.25)
    plain = _attack()
    plain(model, x)
    assert plain.last_grad_evals == 12 * 8 * 12
    assert atk.last_grad_evals < plain.last_grad_evals
    assert res.p_at_k.shape == (12,)


def test_kept_starts_are_the_best_by_p_then_objective(monkeypatch):
    """Brute force: at every prune, each input keeps exactly its keep_n best active rows by
    (best P@k, best objective, restart index)."""
    seen = []
    orig = Trajectories.prune

    def spy(self, keep_n):
        before = self.active.clone()
        p, o = self.best_p.clone(), self.best_obj.clone()
        orig(self, keep_n)
        seen.append((keep_n, before, p, o, self.active.clone(), self.reps, self.n_inputs))

    monkeypatch.setattr(Trajectories, "prune", spy)
    model, x = make_mlp(seed=1), randn_rows(10, seed=2)
    _attack(restarts=7, rounds=3, keep=0.5, steps=9)(model, x)
    assert [s[0] for s in seen] == [4, 2]
    for keep_n, before, p, o, after, reps, n in seen:
        for i in range(n):  # a loop over samples: the brute force the prune must match
            rows = [j * n + i for j in range(reps) if before[j * n + i]]
            ranked = sorted(rows, key=lambda r: (float(p[r]), float(o[r]), r))
            want = set(ranked[:keep_n])
            got = {j * n + i for j in range(reps) if after[j * n + i]}
            assert got == want


def test_results_keep_budget_box_and_prediction():
    model, x = make_mlp(seed=2), randn_rows(16, seed=4).clamp(-1.5, 1.5)
    bounds = (-1.5, 1.5)
    res = _attack(rounds=4, keep=0.25, restarts=12, bounds=bounds, early_stop=True)(model, x)
    assert float((res.x_adv - x).abs().max()) <= EPS
    assert float(res.x_adv.min()) >= -1.5 and float(res.x_adv.max()) <= 1.5
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1), model(x).argmax(1))
    assert bool((res.p_at_k < 1).any())


def test_skip_and_early_stop_cost_no_more_than_the_formula():
    model, x = make_mlp(), randn_rows(12)
    skip = torch.zeros(12, dtype=torch.bool)
    skip[:5] = True
    atk = _attack(rounds=2, keep=0.25)
    res = atk(model, x, skip=skip)
    assert atk.last_grad_evals == 7 * halving_cost(12, 8, 2, 0.25)
    assert bool((res.p_at_k[:5] == 1).all())
    atk = _attack(rounds=2, keep=0.25, early_stop=True)
    atk(model, x)
    assert atk.last_grad_evals <= 12 * halving_cost(12, 8, 2, 0.25)


def test_member_options_validated_and_named():
    m = Member("pgd", 30, "er-all", random_start=True, restarts=32, rounds=3)
    assert m.name.endswith("-r32-rand-h3k0.25")
    with pytest.raises(ValueError, match="rounds"):
        Member("search", 30, rounds=2)
    with pytest.raises(ValueError, match="rounds"):
        Member("pgd", 3, rounds=4)
    with pytest.raises(ValueError, match="keep"):
        Member("pgd", 30, keep=0.0)
    with pytest.raises(ValueError, match="keep"):
        ExplanationPGD(Explainer("grad"), 3, EPS, 10, keep=1.5)
    ens = EnsembleAttack(Explainer("grad"), 3, EPS, members=[m])
    assert ens.steps == halving_cost(30, 32, 3, 0.25)
    cfg = ens.config()["members"][0]
    assert cfg["rounds"] == 3 and cfg["keep"] == 0.25
    plain = EnsembleAttack(Explainer("grad"), 3, EPS, preset="standard").config()
    assert all("rounds" not in c for c in plain["members"])  # old configs unchanged


def test_adaptive_preset_registered_and_runs():
    assert "adaptive" in PRESETS.names() and "standard" in PRESETS.names()
    assert any(m.rounds > 1 for m in PRESETS["adaptive"])
    model, x = make_mlp(), randn_rows(6)
    small = [replace_steps(m) for m in PRESETS["adaptive"] if m.inputs != "images"]
    res = EnsembleAttack(Explainer("grad"), 3, EPS, members=small, seed=1)(model, x)
    assert res.p_at_k.shape == (6,) and bool((res.p_at_k <= 1).all())


def replace_steps(m: Member) -> Member:
    """A cheap copy of a member: few steps, few restarts, same halving shape."""
    from dataclasses import replace

    steps = max(m.rounds, 4)
    return replace(m, steps=steps, restarts=min(m.restarts, 4 * m.rounds),
                   p_init=m.p_init)  # fmt: skip
