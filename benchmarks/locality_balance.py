"""Issue 28, a tried and rejected idea: R2ET's gap plus a load-balancing term on the top-k.

The gap alone is cheapest on one top-k set for everybody. Mixture-of-experts routers face the
same pull and keep their experts in use with a load-balancing loss; this script adds one to
``r2et`` and runs :mod:`cli_defaults`' check with it (in-process, one torch thread):

    R = F / k² · Σ_a L_a²,   L_a = mean_n σ((ŝ_na − t_n) / tau)

with ``ŝ`` the scale-free scores, ``t_n`` the midpoint of row n's k-th and (k+1)-th score
(detached) and ``L_a`` the share of the batch that holds unit a in its soft top-k. ``R = 1``
when every unit is in the top-k equally often, ``F/k`` when all rows share one set; the loss
adds ``rho · R``.

    R2ET_DATA=../shared/data python benchmarks/locality_balance.py --out cli-check \
        [--seeds 0,1,2] [--datasets compas,german] [--weight 0.3] [--rho 0.1]

Result (docs/results.md, issue 28): it moves the bar's misses around rather than removing them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from r2et.cli.app import main as r2et_main
from r2et.methods.base import MethodRow, Step, Term, register_method
from r2et.methods.gaps import normalize_scores
from r2et.methods.ranking import RankingGap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cli_defaults  # noqa: E402


@dataclass(frozen=True)
class TopkLoadBalance(Term):
    """``R = F/k² Σ_a (mean_n σ((ŝ_na − t_n)/tau))²`` (log ``load``, weight ``rho``)."""

    name: ClassVar[str] = "load"
    weight_key: ClassVar[str | None] = "rho"
    needs_k: ClassVar[bool] = True
    uses_saliency: ClassVar[bool] = True
    second_order: ClassVar[bool] = True

    def defaults(self) -> dict[str, Any]:
        return {"rho": 0.1, "tau": 0.5}

    def value(self, step: Step) -> torch.Tensor:
        s = normalize_scores(step.scores, "mean")
        top = s.detach().topk(step.k + 1, dim=1).values
        threshold = (top[:, -2] + top[:, -1]) / 2
        load = torch.sigmoid((s - threshold[:, None]) / step.hp["tau"]).mean(0)
        return load.pow(2).sum() * s.shape[1] / step.k**2


def in_process(*args: str) -> None:
    """:func:`cli_defaults.r2et` without the subprocess (the method is registered here)."""
    if r2et_main([*args, "--no-progress"]) != 0:
        raise SystemExit(f"failed: r2et {' '.join(args)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rho", default="0.1")
    a, rest = p.parse_known_args()
    torch.set_num_threads(1)
    register_method(
        "r2et-balance",
        MethodRow(
            "CE + lam * (-top-k gap) + rho * top-k load balance",
            (RankingGap(), TopkLoadBalance()),
            {"lam": 0.3, "normalize": "mean", "rho": float(a.rho)},
            "lam",
        ),
    )
    cli_defaults.r2et = in_process
    return cli_defaults.main(["--method", "r2et-balance", *rest])


if __name__ == "__main__":
    raise SystemExit(main())
