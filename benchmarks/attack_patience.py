"""Issue 26: does stopping an input once no member has improved it for a while make
``thorough`` (or ``lite``) cheaper at the same strength?

Modelled from the per-member tables of ``benchmarks/attack_members.py`` (every member of
``thorough`` and of its variants run alone on the 8 tuning settings, P@k per input and CPU
seconds; run that first). An ensemble runs its members in order; an input leaves once its
P@k is 0 (today's early exit) or, with patience ``p``, once ``p`` members in a row have not
lowered its P@k. A member's cost is its cost alone times the share of inputs still in (the
model ``attack_members.py select`` uses). Orders: ``thorough``'s own, and strongest first,
by the mean P@k of each member alone on the *other* 7 settings (leave one setting out, so the
order is not fitted to the setting it is scored on). Printed per patience: the mean and
largest gap to ``thorough`` in mean P@k over the 8 settings, and how many times cheaper than
``thorough`` it is (smallest and median over the settings).

    python benchmarks/attack_patience.py [--out bench-out/attack-members]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from r2et.attacks import PRESETS  # noqa: E402

Table = dict[str, dict]


def run_order(table: Table, order: list[str], patience: int | None) -> tuple[float, float]:
    """(mean P@k, modelled CPU seconds) of running ``order``'s members with ``patience``."""
    n = len(next(iter(table.values()))["per"])
    best = torch.full((n,), 2.0)
    stale = torch.zeros(n, dtype=torch.long)
    active = torch.ones(n, dtype=torch.bool)
    spent = 0.0
    for name in order:
        spent += table[name]["cpu_s"] * float(active.double().mean())
        new = torch.where(active, torch.minimum(best, torch.tensor(table[name]["per"])), best)
        stale = torch.where(new < best - 1e-9, torch.zeros_like(stale), stale + 1)
        best = new
        active &= best > 0
        if patience is not None:
            active &= stale < patience
    return float(best.mean()), spent


def load_tables(root: Path, names: list[str]) -> dict[str, Table]:
    """Setting -> member -> its stored record, for the settings whose tables exist."""
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.name.endswith("-0-box")):
        out[folder.name] = {
            m: json.loads((folder / f"{m}.json").read_text())
            for m in names
            if (folder / f"{m}.json").exists()
        }
    return out


def strongest_first(tables: dict[str, Table], setting: str, members: list[str]) -> list[str]:
    """``members`` by their mean P@k alone on every setting but ``setting`` (lowest first)."""
    others = [s for s in tables if s != setting]
    return sorted(members, key=lambda m: sum(tables[o][m]["p"] for o in others))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench-out/attack-members"))
    a = p.parse_args(argv)
    thorough = [m.name for m in PRESETS["thorough"]]
    selected = json.loads((a.out / "selected.json").read_text())
    lite = selected["lite"]["names"]
    tables = load_tables(a.out / "members", thorough + lite)
    if not tables:
        raise SystemExit(f"no member tables under {a.out / 'members'}: run attack_members.py")
    rows = []
    plans = [("thorough, its order", "thorough", False, [None, 30, 20, 15, 10])]
    plans += [("thorough, strongest first", "thorough", True, [30, 20, 15, 10])]
    plans += [("lite, strongest first", "lite", True, [None, 8, 6, 4])]
    for label, which, reorder, patiences in plans:
        for patience in patiences:
            gaps, cheaper = [], []
            for setting, table in tables.items():
                full = [m for m in thorough if m in table]
                ref, ref_cost = run_order(table, full, None)
                members = full if which == "thorough" else lite
                order = strongest_first(tables, setting, members) if reorder else members
                got, cost = run_order(table, order, patience)
                gaps.append(got - ref)
                cheaper.append(ref_cost / cost)
            cheaper.sort()
            rows.append(
                f"| {label} | {'none' if patience is None else patience} "
                f"| {sum(gaps) / len(gaps):+.4f} | {max(gaps):+.4f} "
                f"| {cheaper[0]:.2f} | {cheaper[len(cheaper) // 2]:.2f} |"
            )
    print(f"{len(tables)} settings: {', '.join(tables)}")
    print("| members, order | patience (members) | gap to thorough, mean | largest | "
          "x cheaper than thorough, smallest | median |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
