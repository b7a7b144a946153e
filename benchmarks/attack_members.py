"""Which members of ``thorough`` are needed (issue 26): every member alone, a greedy
cost-aware cover, and the chosen subsets checked on held-out models.

    R2ET_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/attack_members.py run \\
        [--members all|thorough|extras|NAME,...] [--settings compas-vanilla-0-box,...] [--n 100]
    python benchmarks/attack_members.py check [--settings ...]
    python benchmarks/attack_members.py select [--budget 9]
    python benchmarks/attack_members.py eval [--settings compas-vanilla-1-box,...] \\
        [--candidates lite,default,standard] [--repeats 3]

``run``: for each setting (``benchmarks/attack_budget.py``'s models, cached under
``<models>/runs/``; the first ``--n`` test inputs; gradient saliency, k = ``ds.default_k``,
l_inf eps 0.3, the data box), every member of ``thorough`` alone (and the cheaper variants in
:data:`EXTRAS`), each seeded as inside the ensemble (member ``i`` of ``thorough`` with
``seed + i``, ``EnsembleAttack._build``), so that the per-input minimum over a subset of
``thorough``'s members is what the ensemble of that subset would find with those seeds. Per
member: P@k per input and CPU seconds (one torch thread), written atomically to
``<out>/members/<setting>/<member>.json`` (resumable); ER-50's CPU seconds (median of 3) to
``<out>/members/<setting>/er50.json``.

``check``: the per-input minimum over every ``thorough`` member alone against the cached
``thorough`` result (``<models>/thorough/<setting>.json``).

``select``: from the tuning settings (:data:`TUNE`, attack_budget's 8 tabular settings only;
:data:`CHOICES`): ``needed``, a greedy cost-aware cover from ``thorough``'s own members (gain
in P@k over the per-setting gap per unit of modelled cost, then a pass that drops members the
cover does not need) keeping every setting's mean P@k within 0.005 of ``thorough``; ``lite``,
the same cover from :data:`EXTRAS` (draws independent of ``thorough``'s); ``default``, the
subset of up to 3 of :data:`EXTRAS` with the smallest largest gap at a modelled cost of at most
``--budget`` ER-50s on every setting. Cost model: a member's CPU seconds alone times the
fraction of inputs not yet at P@k 0 when it runs (early exit), over ER-50's. Writes
``<out>/selected.json`` and ``selected.md``.

``eval``: the selected subsets (or registered presets) as real ``EnsembleAttack(members=...)``
(re-seeded by position), ``--repeats`` times interleaved with ER-50 in one process (CPU
seconds; ratio of medians, min-max of per-repeat ratios), against ``thorough`` (run once and
cached by ``attack_budget.thorough``), written to ``<out>/eval/<candidates>/<setting>.json``
(delete it after a new ``select``). Held-out settings (:data:`HELD_OUT`, the German-credit-like
table of ``german_like.py``) chose nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attack_budget import SETTINGS, _setup, thorough  # noqa: E402
from attack_study import parse_setting  # noqa: E402

from r2et import Explainer  # noqa: E402
from r2et._io import atomic_write_json, atomic_write_text  # noqa: E402
from r2et.attacks import PRESETS, EnsembleAttack, ERAttack, Member  # noqa: E402
from r2et.attacks.ensemble import _fields, input_kind  # noqa: E402

TUNE = list(SETTINGS)
HELD_OUT = [s.replace("-0-", "-1-") for s in SETTINGS] + [
    "german-vanilla-0-box",
    "german-r2et-0-box",
]
LITE_TOL, DEFAULT_TOL, DEFAULT_BUDGET = 0.005, 0.02, 9.0


def _pgd(steps: int, objective: str, scale: str, beta: float, **kw: Any) -> Member:
    return Member("pgd", steps, objective, scale, beta, random_start=True, **kw)


#: Differently spent variants of the members that win in ``thorough``, measured alone like
#: them (seeded ``seed + 1000 + j``): many restarts batched in one member (a restart row costs
#: less than a member: setup, surrogate and per-step overhead are shared), and fewer steps.
EXTRAS: tuple[Member, ...] = (
    *(_pgd(60, obj, sc, b, restarts=12) for obj, sc, b in (
        ("er-all", "raw", 30.0), ("overlap", "raw", 10.0), ("er-next", "raw", 30.0),
        ("overlap", "mean", 30.0), ("er-all", "raw", 3.0), ("er-next", "mean", 10.0),
        ("er-all", "mean", 10.0), ("er-all", "raw", 10.0), ("overlap", "raw", 30.0),
        ("overlap", "raw", 100.0), ("mse", "raw", 10.0), ("er-all", "raw", 100.0))),
    _pgd(60, "er-next", "raw", 30.0, restarts=12, bottom=0.125),
    _pgd(60, "er-all", "raw", 30.0, restarts=24),
    _pgd(60, "overlap", "raw", 10.0, restarts=24),
    _pgd(30, "er-all", "raw", 30.0, restarts=24),
    _pgd(30, "overlap", "raw", 10.0, restarts=24),
    *(_pgd(30, obj, sc, b, restarts=24) for obj, sc, b in (
        ("overlap", "mean", 30.0), ("er-next", "raw", 30.0), ("er-all", "mean", 10.0),
        ("overlap", "raw", 30.0), ("er-all", "raw", 100.0), ("overlap", "raw", 100.0),
        ("er-all", "raw", 10.0))),
    _pgd(30, "er-next", "raw", 30.0, restarts=24, bottom=0.125),
    _pgd(20, "er-all", "raw", 30.0, restarts=36),
    _pgd(20, "overlap", "raw", 10.0, restarts=36),
)  # fmt: skip


def catalogue() -> dict[str, tuple[Member, int]]:
    """Member name -> (member, seed offset): ``thorough``'s members as seeded in it, then
    :data:`EXTRAS`."""
    out = {m.name: (m, i) for i, m in enumerate(PRESETS["thorough"])}
    for j, m in enumerate(EXTRAS):
        out[extra_name(m)] = (m, 1000 + j)
    return out


def extra_name(m: Member) -> str:
    """An extra member's name: its :attr:`Member.name` and its steps (which the name omits)."""
    return f"{m.name}-s{m.steps}"


def _dir(out: Path, setting: str) -> Path:
    return out / "members" / setting


def er50_record(models: Path, out: Path, setting: str, n: int) -> dict[str, Any]:
    """ER-50's CPU seconds on ``setting`` (median of 3 after a warm-up; cached)."""
    f = _dir(out, setting) / "er50.json"
    if f.exists():
        return json.loads(f.read_text())
    model, x, k, eps, bounds, seed = _setup(models, setting, n)
    atk = ERAttack(Explainer("grad"), k, eps, steps=50, bounds=bounds, seed=seed)
    atk(model, x)
    cpu = []
    for _ in range(3):
        t0 = time.process_time()
        res = atk(model, x)
        cpu.append(time.process_time() - t0)
    rec = {"cpu_s": cpu, "median": statistics.median(cpu), "p": float(res.p_at_k.mean())}
    atomic_write_json(f, rec)
    return rec


def run_members(models: Path, out: Path, setting: str, n: int, names: list[str]) -> None:
    """Every member in ``names`` alone on ``setting`` (skips finished ones)."""
    er50_record(models, out, setting, n)
    model, x, k, eps, bounds, seed = _setup(models, setting, n)
    cat = catalogue()
    for name in names:
        m, off = cat[name]
        f = _dir(out, setting) / f"{name}.json"
        if f.exists() or m.inputs not in ("all", input_kind(x)):
            continue
        atk = EnsembleAttack(Explainer("grad"), k, eps, bounds=bounds, members=[m],
                             seed=seed + off)  # fmt: skip
        t0 = time.process_time()
        res = atk(model, x)
        sec = time.process_time() - t0
        rec = {
            "setting": setting, "member": name, "fields": _fields(m), "seed": seed + off,
            "cpu_s": sec, "p": float(res.p_at_k.mean()), "per": res.p_at_k.tolist(),
        }  # fmt: skip
        atomic_write_json(f, rec)
        print(f"  {setting:30s} {name:40s} P@k {rec['p']:.3f} {sec:6.1f} s", flush=True)


def load(out: Path, setting: str) -> tuple[dict[str, Any], float]:
    """``{member: record}`` of a setting's finished members, and ER-50's median CPU s."""
    d = _dir(out, setting)
    recs = {f.stem: json.loads(f.read_text()) for f in sorted(d.glob("*.json"))}
    er = recs.pop("er50")["median"]
    return recs, er


def thorough_names() -> list[str]:
    return [m.name for m in PRESETS["thorough"]]


def check(models: Path, out: Path, setting: str, n: int) -> str:
    """Per-input minimum over ``thorough``'s members alone against ``thorough`` itself."""
    recs, _ = load(out, setting)
    names = [m for m in thorough_names() if m in recs]
    per = torch.tensor([recs[m]["per"] for m in names]).min(0).values
    th = torch.tensor(thorough(models, setting, n)["per"])
    diff = (per - th).abs() > 1e-9
    return (f"{setting}: {len(names)} members alone, min mean P@k {per.mean():.4f}; thorough "
            f"{th.mean():.4f}; inputs that differ: {int(diff.sum())} of {len(th)}")  # fmt: skip


# ------------------------------------------------------------------ selection
class Table:
    """One setting's per-input P@k of every member alone, and costs in ER-50s."""

    def __init__(self, out: Path, setting: str, pool: list[str]) -> None:
        recs, er = load(out, setting)
        self.setting = setting
        self.names = [m for m in pool if m in recs]
        self.per = torch.tensor([recs[m]["per"] for m in self.names], dtype=torch.float64)
        self.cost = torch.tensor([recs[m]["cpu_s"] / er for m in self.names], dtype=torch.float64)
        full = [m for m in thorough_names() if m in recs]
        self.best = float(torch.tensor([recs[m]["per"] for m in full]).min(0).values.mean())
        self.idx = {m: i for i, m in enumerate(self.names)}

    def evaluate(self, order: list[str]) -> tuple[float, float]:
        """(mean P@k, modelled cost in ER-50s) of the ensemble ``order`` (early exit)."""
        n = self.per.shape[1]
        cur = torch.ones(n, dtype=torch.float64)
        cost, first = 0.0, True
        for m in order:
            i = self.idx[m]
            live = 1.0 if first else float((cur > 0).sum()) / n
            cost += float(self.cost[i]) * live
            cur = torch.minimum(cur, self.per[i])
            first = False
        return float(cur.mean()), cost


def _score(tables: list[Table], order: list[str], tol: float) -> tuple[float, float]:
    """(excess P@k over best + tol summed over settings, the largest modelled cost)."""
    ex, cmax = 0.0, 0.0
    for t in tables:
        p, c = t.evaluate(order)
        ex += max(0.0, p - t.best - tol)
        cmax = max(cmax, c)
    return ex, cmax


def greedy(tables: list[Table], pool: list[str], tol: float, budget: float | None) -> list[str]:
    """Greedy cover: add the member with the most excess removed per unit of (largest)
    modelled cost until every setting is within ``tol`` (or nothing fits ``budget``); then
    drop members, costliest first, while the cover still holds; then order by wins."""
    order: list[str] = []
    ex, cost = _score(tables, order, tol)
    while ex > 1e-12:
        best = None
        for m in pool:
            if m in order:
                continue
            e2, c2 = _score(tables, [*order, m], tol)
            if budget is not None and c2 > budget:
                continue
            gain = (ex - e2) / max(c2 - cost, 1e-3)
            if e2 < ex and (best is None or gain > best[0]):
                best = (gain, m, e2, c2)
        if best is None:
            break
        order.append(best[1])
        ex, cost = best[2], best[3]
    for m in sorted(order, key=lambda m: -_score(tables, [m], tol)[1]):
        rest = [o for o in order if o != m]
        if rest and _score(tables, rest, tol)[0] <= ex + 1e-12:
            order = rest
    return _by_wins(tables, order)


def cheapest_within(
    tables: list[Table], pool: list[str], budget: float, most: int = 3
) -> list[str]:
    """Every subset of up to ``most`` members (ordered by :func:`_by_wins`) whose modelled
    cost is at most ``budget`` on every setting: the one with the smallest largest gap to
    ``thorough``, then the smallest mean gap (the greedy cover stalls under a budget)."""
    best: tuple[float, float, list[str]] | None = None
    for size in range(1, most + 1):
        for combo in itertools.combinations(pool, size):
            order = _by_wins(tables, list(combo)) if size > 1 else list(combo)
            res = [t.evaluate(order) for t in tables]
            if max(c for _, c in res) > budget:
                continue
            gaps = [p - t.best for (p, _), t in zip(res, tables)]
            key = (max(gaps), sum(gaps) / len(gaps), order)
            if best is None or key[:2] < best[:2]:
                best = key
    return [] if best is None else best[2]


def _by_wins(tables: list[Table], members: list[str]) -> list[str]:
    """Order ``members`` for the early exit: greedily, the member that gives the lowest total
    modelled cost next (ties: most inputs at P@k 0 per unit cost, then lowest mean P@k)."""

    def key(m: str) -> tuple[float, float]:
        zeros = sum(float((t.per[t.idx[m]] == 0).sum()) for t in tables)
        cost = sum(float(t.cost[t.idx[m]]) for t in tables)
        mean = sum(float(t.per[t.idx[m]].mean()) for t in tables)
        return (-zeros / cost, mean)

    # greedy reordering: the one giving the lowest total modelled cost next
    left, order = list(members), []
    while left:
        m = min(left, key=lambda m: (sum(t.evaluate([*order, m])[1] for t in tables), key(m)))
        order.append(m)
        left.remove(m)
    return order


#: The subsets ``select`` chooses: name -> (pool, tolerance, cost budget). ``needed``: which of
#: ``thorough``'s own members the cover needs (in-sample: their draws define the target);
#: ``lite`` and ``default`` choose from :data:`EXTRAS` only, whose random draws are
#: independent of ``thorough``'s, so the modelled gaps are not fitted to its seeds.
CHOICES = {
    "needed": ("thorough", LITE_TOL, None),
    "lite": ("extras", LITE_TOL, None),
    "default": ("extras", DEFAULT_TOL, "budget"),  # the best within the budget
}


def select(out: Path, settings: list[str], budget: float) -> dict[str, Any]:
    """The greedy covers of :data:`CHOICES` on ``settings``, with modelled P@k and cost."""
    cat = catalogue()
    tables = [Table(out, s, list(cat)) for s in settings]
    pool = [m for m in cat if all(m in t.idx for t in tables)]
    extras = {extra_name(m) for m in EXTRAS}
    res: dict[str, Any] = {"settings": settings, "budget": budget}
    for name, (which, tol, cap) in CHOICES.items():
        pl = [m for m in pool if (m in extras) == (which == "extras")]
        if cap:
            order = cheapest_within(tables, pl, budget)
        else:
            order = greedy(tables, pl, tol, None)
        res[name] = {
            "members": [_fields(cat[m][0]) for m in order],
            "names": order,
            "per_setting": {
                t.setting: dict(zip(("p", "cost"), t.evaluate(order))) for t in tables
            },  # fmt: skip
        }
    res["best"] = {t.setting: t.best for t in tables}
    res["random_subsets"] = random_subsets(tables, [m for m in pool if m not in extras])
    res["thorough_cost"] = {t.setting: t.evaluate(thorough_names_in(t))[1] for t in tables}
    return res


def random_subsets(tables: list[Table], pool: list[str], draws: int = 20) -> dict[int, Any]:
    """Size -> (mean gap, largest gap) to ``thorough`` of random subsets of ``pool``,
    averaged over ``draws`` subsets (seeded): how fast the minimum converges."""
    rng = random.Random(0)
    out: dict[int, Any] = {}
    for size in (3, 5, 10, 20, 27, 40, len(pool)):
        mean, worst = 0.0, 0.0
        for _ in range(draws):
            sub = rng.sample(pool, size)
            gaps = [t.evaluate(sub)[0] - t.best for t in tables]
            mean += sum(gaps) / len(gaps) / draws
            worst += max(gaps) / draws
        out[size] = [mean, worst]
    return out


def thorough_names_in(t: Table) -> list[str]:
    return [m for m in thorough_names() if m in t.idx]


def select_table(res: dict[str, Any]) -> str:
    keys = [k for k in CHOICES if k in res]
    head = ["setting", "thorough (min over its members)",
            *(f"{k}: P@k (− thorough; cost / ER-50)" for k in keys),
            "thorough cost / ER-50"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s, best in res["best"].items():
        cells = [s, f"{best:.3f}"]
        for k in keys:
            r = res[k]["per_setting"][s]
            cells.append(f"{r['p']:.3f} ({r['p'] - best:+.3f}; {r['cost']:.1f}x)")
        cells.append(f"{res['thorough_cost'][s]:.0f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nrandom subsets of thorough's members (20 draws): size: mean gap, largest gap")
    lines += [f"* {n}: {m:+.4f}, {w:+.4f}" for n, (m, w) in res["random_subsets"].items()]
    for k in keys:
        lines.append(f"\n{k} ({len(res[k]['names'])}): "
                     + ", ".join(f"`{m}`" for m in res[k]["names"]))  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------ evaluation
def candidate(out: Path, name: str) -> dict[str, Any]:
    """A candidate's ``EnsembleAttack`` keywords: a registered preset or a selected subset."""
    if name in PRESETS.names():
        return {"preset": name}
    sel = json.loads((out / "selected.json").read_text())
    return {"members": sel[name]["members"]}


def measure(models: Path, out: Path, setting: str, n: int, names: list[str],
            repeats: int) -> dict[str, Any]:  # fmt: skip
    th = thorough(models, setting, n)
    model, x, k, eps, bounds, seed = _setup(models, setting, n)
    ex = Explainer("grad")
    attacks: dict[str, Any] = {"er50": ERAttack(ex, k, eps, steps=50, bounds=bounds, seed=seed)}
    for c in names:
        attacks[c] = EnsembleAttack(ex, k, eps, bounds=bounds, seed=seed, **candidate(out, c))
    attacks["er50"](model, x)
    cpu: dict[str, list[float]] = {c: [] for c in attacks}
    p: dict[str, float] = {}
    for _ in range(repeats):
        for c, atk in attacks.items():
            t0 = time.process_time()
            res = atk(model, x)
            cpu[c].append(time.process_time() - t0)
            p[c] = float(res.p_at_k.mean())
    return {"setting": setting, "p": {**p, "thorough": th["p"]}, "cpu_s": cpu,
            "thorough_cpu_s": th["cpu"], "repeats": repeats}  # fmt: skip


def eval_table(recs: list[dict[str, Any]], names: list[str]) -> str:
    head = ["setting", "ER-50", "thorough"]
    for c in names:
        head += [c, f"{c} − thorough", f"cost {c} / ER-50"]
    head.append("cost thorough / ER-50")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in recs:
        er = r["cpu_s"]["er50"]
        p = r["p"]
        cells = [r["setting"], f"{p['er50']:.3f}", f"{p['thorough']:.3f}"]
        for c in names:
            per = [a / b for a, b in zip(r["cpu_s"][c], er)]
            med = statistics.median(r["cpu_s"][c]) / statistics.median(er)
            cells += [f"{p[c]:.3f}", f"{p[c] - p['thorough']:+.3f}",
                      f"{med:.1f} ({min(per):.1f}-{max(per):.1f})"]  # fmt: skip
        cells.append(f"{r['thorough_cpu_s'] / statistics.median(er):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("run", "check", "select", "eval"))
    ap.add_argument("--out", default="bench-out/attack-members")
    ap.add_argument("--models", default="bench-out/attack-budget")
    ap.add_argument("--settings", default=None)
    ap.add_argument("--members", default="all", help="'all', 'thorough', 'extras' or names")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    ap.add_argument("--candidates", default="lite,default,standard")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("R2ET_DATA", str(Path(__file__).resolve().parents[2] / "shared/data"))
    out, models = Path(args.out), Path(args.models)
    default = HELD_OUT if args.command == "eval" else TUNE
    settings = [s for s in (args.settings or ",".join(default)).split(",") if s]
    for s in settings:
        parse_setting(s)
    if args.command == "run":
        names = {"all": list(catalogue()), "thorough": thorough_names(),
                 "extras": [extra_name(m) for m in EXTRAS]}.get(args.members)  # fmt: skip
        names = names or args.members.split(",")
        for s in settings:
            print(f"{s}: members alone", file=sys.stderr, flush=True)
            run_members(models, out, s, args.n, names)
    elif args.command == "check":
        for s in settings:
            print(check(models, out, s, args.n))
    elif args.command == "select":
        res = select(out, settings, args.budget)
        atomic_write_json(out / "selected.json", res)
        text = select_table(res)
        atomic_write_text(out / "selected.md", text + "\n")
        print(text)
    else:
        names = [c for c in args.candidates.split(",") if c]
        recs = []
        for s in settings:
            f = out / "eval" / ("-".join(names)) / f"{s}.json"
            if not f.exists():
                print(f"{s}: attacking", file=sys.stderr, flush=True)
                atomic_write_json(f, measure(models, out, s, args.n, names, args.repeats))
            recs.append(json.loads(f.read_text()))
            print(eval_table(recs[-1:], names).splitlines()[-1], file=sys.stderr, flush=True)
        text = eval_table(recs, names)
        atomic_write_text(out / "eval" / ("-".join(names)) / "table.md", text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
