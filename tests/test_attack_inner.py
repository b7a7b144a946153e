"""Issue 26: a cheaper explanation inside an attack's loop (``inner``), the exact one for the
reported P@k."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r2et import EnsembleAttack, Explainer
from r2et.attacks import ExplanationPGD, RandomSearchAttack
from r2et.attacks.pgd import resolve_inner
from r2et.metrics import topk_mask


class RowCounter(nn.Module):
    """A model that counts the rows of every forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.net(x)


def _model(seed: int = 0, gain: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(),
                        nn.Linear(24, 3)).double()  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net


def _p_at_k(ex: Explainer, model: nn.Module, x: torch.Tensor, xa: torch.Tensor, k: int,
            reference: Explainer | None = None):  # fmt: skip
    """P@k of ``ex``'s scores at ``xa`` against the top-k of ``reference`` (default ``ex``)
    at ``x``, and those scores."""
    s0 = (reference or ex).scores(model, x).detach()
    s = ex.scores(model, xa, ex.resolve_target(model, x, None)).detach()
    return (topk_mask(s, k) & topk_mask(s0, k)).sum(1).double() / k, s


def test_with_options_changes_only_the_methods_options():
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    ex = Explainer("ig", output="prob", groups=groups, n_steps=32)
    cheap = ex.with_options(n_steps=4)
    assert cheap.kwargs["n_steps"] == 4 and ex.kwargs["n_steps"] == 32
    assert cheap.output == "prob" and torch.equal(cheap.groups, ex.groups)
    model, x = _model(), torch.rand(5, 8, dtype=torch.float64)
    built = Explainer("ig", output="prob", groups=groups, n_steps=4)
    torch.testing.assert_close(cheap.scores(model, x), built.scores(model, x))
    with pytest.raises(ValueError, match="n_steps"):
        Explainer("grad").with_options(n_steps=4)
    with pytest.raises(ValueError, match="output"):
        ex.with_options(output="logit")  # only the method's own options


@pytest.mark.parametrize("attack", [ExplanationPGD, RandomSearchAttack])
def test_inner_reports_the_exact_explanations_p_at_k(attack):
    model, k = _model(gain=4.0), 3  # curved: one IG path point is far from 32
    x = torch.rand(24, 8, dtype=torch.float64)
    ex = Explainer("ig", n_steps=32)
    cheap = ex.with_options(n_steps=1)  # one path point: far from the exact integral
    atk = attack(ex, k, 0.3, steps=15, restarts=2, seed=0, inner={"n_steps": 1})
    res = atk(model, x)
    exact_p, exact_s = _p_at_k(ex, model, x, res.x_adv, k)
    cheap_p, _ = _p_at_k(cheap, model, x, res.x_adv, k, reference=ex)
    assert not torch.equal(cheap_p, exact_p)  # the two explanations disagree somewhere ...
    torch.testing.assert_close(res.p_at_k.double(), exact_p)  # ... and the exact one counts
    torch.testing.assert_close(res.scores_adv.double(), exact_s)
    assert atk.config()["inner"] == {"n_steps": 1}


def test_inner_costs_fewer_model_rows():
    x = torch.rand(10, 8, dtype=torch.float64)
    rows = {}
    for inner in (None, {"n_steps": 4}):
        model = RowCounter(_model())
        atk = ExplanationPGD(Explainer("ig", n_steps=32), 3, 0.3, steps=10, seed=0,
                             early_stop=False, inner=inner)  # fmt: skip
        atk(model, x)
        rows[str(inner)] = model.rows
    assert rows["{'n_steps': 4}"] < 0.4 * rows["None"], rows  # about 5 + 32 / 10 vs 33 per step


def test_ensemble_inner_auto_per_method():
    assert resolve_inner("auto", Explainer("ig", n_steps=32)) == {"n_steps": 8}
    assert resolve_inner("auto", Explainer("ig", n_steps=6)) == {"n_steps": 4}
    assert resolve_inner("auto", Explainer("ig", n_steps=4)) is None  # already as cheap
    assert resolve_inner("auto", Explainer("smoothgrad", n_samples=25)) == {"n_samples": 5}
    assert resolve_inner("auto", Explainer("grad")) is None
    assert resolve_inner(None, Explainer("ig")) is None
    assert resolve_inner({"n_steps": 2}, Explainer("ig")) == {"n_steps": 2}
    with pytest.raises(ValueError, match="inner"):
        resolve_inner("cheap", Explainer("ig"))
    with pytest.raises(ValueError, match="inner"):
        ExplanationPGD(Explainer("ig"), 3, 0.3, inner=[("n_steps", 4)])
    assert ExplanationPGD(Explainer("ig", n_steps=32), 3, 0.3, inner="auto").inner == {"n_steps": 8}
    assert ExplanationPGD(Explainer("grad"), 3, 0.3, inner="auto").inner_explainer is None
    ens = EnsembleAttack(Explainer("ig", n_steps=32), 3, 0.3, preset="fast", inner="auto")
    built = [atk for _, atk in ens.attacks(_model(), torch.rand(2, 8, dtype=torch.float64))]
    assert built and all(atk.loop_explainer.kwargs["n_steps"] == 8 for atk in built)
    assert all(atk.ex.kwargs["n_steps"] == 32 for atk in built)
    assert ens.config()["inner"] == {"n_steps": 8}
    plain = EnsembleAttack(Explainer("ig", n_steps=32), 3, 0.3, preset="fast")
    assert all(atk.inner_explainer is None for _, atk in plain.attacks())


def test_cli_evaluate_inner_auto_is_recorded(tmp_path, capsys):
    import json

    from r2et.cli import main

    run = tmp_path / "run"
    argv = ["train", "breast-cancer", "--method", "vanilla", "--epochs", "1", "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 0
    argv = ["evaluate", str(run), "--explainer", "ig", "--inner", "auto", "--preset", "fast"]
    assert main([*argv, "--n", "6", "--no-progress"]) == 0
    (out,) = run.glob("evaluation_*.json")
    entry = json.loads(out.read_text())["attacks"]["ensemble"]
    assert entry["inner"] == {"n_steps": 8}
    assert main(["evaluate", str(run), "--inner", "cheap", "--no-progress"]) == 2
    assert "--inner" in capsys.readouterr().err
