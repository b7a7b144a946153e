"""What ``benchmarks/attack_members.py`` (issue 26) relies on: an ensemble's per-input P@k is
the minimum over its members run alone, each seeded as inside it (member ``i``: ``seed + i``),
early exit included; so subsets of a preset can be scored from per-member tables."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import make_mlp, randn_rows

from r2et import Explainer
from r2et.attacks import PRESETS, EnsembleAttack, Member

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.1  # a mix of inputs at P@k 0 (early exit) and above it


def _small(m: Member) -> Member:
    """A cheap copy of a member: a few steps (or queries) and restarts."""
    return replace(m, steps=6 if m.kind == "pgd" else 30, restarts=min(m.restarts, 2))


@pytest.mark.parametrize("early_stop", [True, False])
def test_ensemble_is_the_minimum_of_its_members_alone(early_stop):
    model, x = make_mlp(), randn_rows(12)
    tabular = [_small(m) for m in PRESETS["thorough"] if m.inputs != "images"]
    members = tabular[::8] + tabular[-2:]  # objectives, scales, betas, both searches
    assert len(members) >= 6 and any(m.kind == "search" for m in members)
    ex = Explainer("grad")
    ens = EnsembleAttack(ex, 3, EPS, members=members, seed=5, early_stop=early_stop)
    res = ens(model, x)
    assert bool((res.p_at_k == 0).any()) and bool((res.p_at_k > 0).any())
    alone = torch.stack([
        EnsembleAttack(ex, 3, EPS, members=[m], seed=5 + i, early_stop=early_stop)(model, x).p_at_k
        for i, m in enumerate(members)
    ])  # fmt: skip
    torch.testing.assert_close(res.p_at_k, alone.min(0).values, rtol=0, atol=0)
    # never above any single member, and found_by names a member that reached the minimum
    assert bool((res.p_at_k <= alone).all())
    moved = res.member >= 0
    picked = alone[res.member[moved], torch.arange(len(x))[moved]]
    torch.testing.assert_close(picked, res.p_at_k[moved], rtol=0, atol=0)


def test_member_seeds_follow_positions_in_the_preset():
    """Member ``i`` of a preset is seeded ``seed + i`` even where earlier members are left
    out for this kind of input (the image-only rows of ``thorough``)."""
    ens = EnsembleAttack(Explainer("grad"), 3, EPS, preset="thorough", seed=10)
    built = dict(ens.attacks(None, randn_rows(2)))
    for i, m in enumerate(PRESETS["thorough"]):
        if m.inputs == "images":
            assert m.name not in built
        else:
            assert built[m.name].seed == 10 + i
