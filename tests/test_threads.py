"""Threads chosen for the work (issue 26, r2et._threads): counts checked by hand, the policy
applied inside fit, evaluate and the attacks and restored after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r2et import EnsembleAttack, ERAttack, Explainer, evaluate, fit
from r2et._threads import (
    MULTI_THREAD_MACS,
    get_threads_policy,
    macs_per_row,
    set_threads,
    thread_budget,
    threads_for,
)


@pytest.fixture(autouse=True)
def _restore_policy():
    before_threads = torch.get_num_threads()
    from r2et import _threads

    saved = list(_threads._policy)
    yield
    _threads._policy[:] = saved
    torch.set_num_threads(before_threads)


class _Recorder(nn.Module):
    """A small MLP that records the torch threads of every batched forward."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, 2))
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:  # the work; one- and two-row probes and checks come before the budget
            self.seen.add(torch.get_num_threads())
        return self.net(x)


def test_macs_by_hand() -> None:
    mlp = nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )
    assert macs_per_row(mlp, torch.randn(5, 20)) == 20 * 64 + 64 * 64 + 64 * 2
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    # conv: 4 x 6 x 6 outputs, each 1 channel x 3 x 3 taps; then the linear layer
    assert macs_per_row(conv, torch.rand(2, 1, 8, 8)) == 4 * 6 * 6 * 9 + 144 * 3
    grouped = nn.Conv1d(4, 4, 3, groups=2)
    assert macs_per_row(grouped, torch.rand(1, 4, 10)) == 4 * 8 * 2 * 3
    assert macs_per_row(lambda x: x, torch.rand(1, 3)) == 0.0


def test_threads_for_the_threshold() -> None:
    assert threads_for(0) == 1 and threads_for(MULTI_THREAD_MACS - 1) == 1
    assert threads_for(MULTI_THREAD_MACS) >= 1


def test_budget_sets_restores_and_nests() -> None:
    torch.set_num_threads(2)
    model = _Recorder()
    set_threads("auto")
    with thread_budget(model, torch.randn(4, 6)) as n:
        assert n == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)  # an inner change is undone at the end
        with thread_budget(model, torch.randn(4, 6)) as inner:
            assert inner == 2  # nested: the outer choice stands
    assert torch.get_num_threads() == 2
    set_threads(None)
    with thread_budget(model, torch.randn(4, 6)) as n:
        assert n == 2 == torch.get_num_threads()  # untouched
    set_threads(3)
    with thread_budget(model, torch.randn(4, 6)):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be"):
        set_threads(0)


def test_environment_sets_the_policy(monkeypatch) -> None:
    from r2et import _threads

    _threads._policy[:] = []
    monkeypatch.delenv("R2ET_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert get_threads_policy() is None  # the user chose through OpenMP: torch follows it
    monkeypatch.setenv("R2ET_THREADS", "auto")
    assert get_threads_policy() == "auto"
    monkeypatch.setenv("R2ET_THREADS", "4")
    assert get_threads_policy() == 4
    monkeypatch.setenv("R2ET_THREADS", "torch")
    assert get_threads_policy() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("R2ET_THREADS")
    assert get_threads_policy() == "auto"
    monkeypatch.setenv("R2ET_THREADS", "many")
    with pytest.raises(ValueError, match="R2ET_THREADS"):
        get_threads_policy()


def test_fit_evaluate_and_attacks_run_small_models_on_one_thread() -> None:
    torch.set_num_threads(2)
    set_threads("auto")
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 2, (40,))
    model = _Recorder()
    fit(model, "vanilla", (x, y), epochs=1, progress=False)
    ex = Explainer("grad")
    evaluate(model, (x, y), ex, k=2, attacks={"er": ERAttack(ex, 2, 0.3, steps=3)})
    EnsembleAttack(ex, 2, 0.3, preset="fast")(model, x)
    assert model.seen == {1} and torch.get_num_threads() == 2
    set_threads(2)
    model.seen.clear()
    ERAttack(ex, 2, 0.3, steps=2)(model, x)
    assert model.seen == {2}
