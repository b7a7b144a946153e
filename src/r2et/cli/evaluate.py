"""``r2et evaluate``: attack a run's explanations; accuracy, P@k, the collapse and
faithfulness verdict, faithfulness, locality and thickness."""

from __future__ import annotations

import argparse
from pathlib import Path

from r2et.cli.args import (
    check_device_arg,
    check_k_arg,
    explainer_of_run,
    probe_writable,
    run_dataset,
)


def _num(v: float | None) -> str:
    """A metric for printing: three decimals, or 'n/a' where it is undefined (None)."""
    return "n/a" if v is None else f"{v:.3f}"


def _verdict_line(verdict: dict) -> str:
    """The verdict's readable line (:func:`r2et.verdict.explanation_verdict`), prefixed with
    ``WARNING:`` when a flag (collapsed, unfaithful) is raised."""
    warn = "WARNING: " if verdict["flags"] else ""
    return f"  {warn}verdict: {verdict['text']}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Attack a saved run's explanations and print accuracy, P@k, faithfulness, locality and
    thickness."""
    from r2et._io import atomic_write_json
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.runs import load_run
    from r2et.verdict import metric_help_line

    device = check_device_arg("--device", args.device)
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"run folder {args.run} does not exist")
    probe_writable("the run folder", Path(args.run), "folder")
    run = load_run(args.run, trust_factory=args.trust_factory)
    name, ds = run_dataset(run.config, args)
    eps = args.eps if args.eps is not None else ds.default_eps
    ex, trained_k, as_trained = explainer_of_run(run.config, args, ds, name)
    k = args.k if args.k is not None else trained_k if trained_k is not None else ds.default_k
    k = check_k_arg("--k", k, ds, ex)
    groups = ex.config().get("groups")
    bounds = None if args.no_box else ds.bounds
    options = {"norm": args.norm, "bounds": bounds, "seed": args.seed}
    options.update(steps=args.steps, preset=args.preset)
    options["inner"] = None if args.inner == "exact" else args.inner
    attacks = {a: create_attack(a, ex, k, eps, **options) for a in args.attack or ["ensemble"]}
    model = run.model
    if device is not None:
        model = model.to(device)
    certify = None
    if args.certify:
        if args.norm != "linf":
            raise ValueError("--certify gives an l_inf certificate: use it with --norm linf")
        import torch

        from r2et._checks import to_model
        from r2et.certify import network_layers
        from r2et.models import eval_mode

        x0 = ds.test[0][:2] if isinstance(ds.test[0], torch.Tensor) else None
        try:  # an MLP or a sequential CNN (r2et.certify.conv), checked on two test inputs
            with eval_mode(model), torch.no_grad():
                network_layers(model, None if x0 is None else to_model(model, x0))
        except TypeError as err:
            raise ValueError(f"--certify: {err}") from None
        certify = {"certified": {"method": "deterministic", "radii": [eps], "bounds": bounds,
                                 "max_radius": max(1.0, 2 * eps)}}  # fmt: skip
    res = evaluate(
        model,
        ds,
        ex,
        k=k,
        attacks=attacks,
        split=args.split,
        n=args.n,
        thickness_radius=args.thickness_radius,
        seed=args.seed,
        progress=not args.no_progress,
        certify=certify,
    )
    out, kept = _result_path(Path(args.run), args.split, args.overwrite)
    atomic_write_json(out, {**res, "explainer": ex.config()})
    unit = f"{len(set(groups))} attribute groups" if groups is not None else "features"
    box = "inside the data box" if bounds is not None else "no data box"
    how = ", as the run was trained" if as_trained else ""
    print(
        f"{ds.name or name} ({args.split}): accuracy {res['accuracy']:.4f} on all "
        f"{res['n_split']} rows "
        f"(always predicting the majority class: {res['majority_rate']:.4f}); explanations of "
        f"the first {res['n']} ({ex.method} saliency{how}, top-{k} of {unit})"
    )
    if res["accuracy"] < res["majority_rate"]:
        print(
            f"  WARNING: the model is less accurate than always predicting the majority class "
            f"({res['accuracy']:.4f} < {res['majority_rate']:.4f})"
        )
    for a, vals in res.get("attacks", {}).items():
        what = f"preset {vals['preset']}" if "preset" in vals else f"steps={args.steps}"
        print(
            f"  {a:9s} {args.norm} eps={eps:g} {what}, {box}: P@{k} {_num(vals['p_at_k_mean'])} "
            f"± {_num(vals['p_at_k_std'])} (unattacked 1, random explanation "
            f"{res['random_p_at_k']:.3f}), Kendall {_num(vals['kendall_mean'])}, "
            f"{vals['seconds']:.1f} s"
        )
    if certify:
        c = res["certified"]["certified"]
        worst = min((v["p_at_k_mean"] for v in res.get("attacks", {}).values()), default=None)
        print(
            f"  certified linf, {box}: P@{k} >= {c['p_at_k_mean'][0]:.3f} at eps={eps:g} for "
            f"every point of the ball (the attacks found <= {_num(worst)}: the worst case lies "
            f"between); median certified radius of the whole top-{k} {c['radius_median']:.4g}, "
            f"{100 * c['certified_fraction']:.0f}% of inputs certified at some radius"
        )
    print(_verdict_line(res["verdict"]))
    f = res["faithfulness"]
    print(
        f"  faithfulness: deletion gain {_num(f['deletion_gain'])} (top-{k} drop "
        f"{_num(f['deletion_drop_topk'])} vs random {_num(f['deletion_drop_random'])}), "
        f"occlusion agreement {_num(f['occlusion_agreement'])}"
    )
    loc = res["locality"]
    print(
        f"  locality: {loc['distinct_topk_sets']} distinct top-{k} sets in {res['n']} inputs, "
        f"P@{k} with the global top-{k} {_num(loc['global_topk_p_at_k'])}"
    )
    if "thickness" in res:
        print(f"  thickness (radius {args.thickness_radius:g}): {res['thickness']['mean']:.4g}")
    if not args.no_guide:
        print("what the numbers mean:")
        shown = ["accuracy", "majority_rate", "p_at_k", "random_p_at_k", "kendall",
                 "deletion_gain", "occlusion_agreement", "distinct_topk_sets",
                 "global_topk_p_at_k"] + (["thickness"] if "thickness" in res else [])  # fmt: skip
        for key in shown:
            print(f"  {metric_help_line(key)}")
    print(f"-> {out}" + (f" (earlier results kept: {kept})" if kept else ""))
    return 0


def _result_path(run: Path, split: str, overwrite: bool) -> tuple[Path, str]:
    """Where this evaluation goes: ``evaluation_{split}.json``, replaced only with
    ``overwrite``; else the first free ``evaluation_{split}-N.json`` (N = 2, 3, ...), reserved
    by an exclusive create so that two evaluations at once never share a file. Also returns
    the earlier files kept, for the message."""
    first = run / f"evaluation_{split}.json"
    if overwrite or not first.exists():
        return first, ""
    n = 2
    while True:
        path = run / f"evaluation_{split}-{n}.json"
        try:
            with open(path, "x", encoding="utf-8"):
                pass
        except FileExistsError:
            n += 1
            continue
        earlier = [first.name] + [f"evaluation_{split}-{i}.json" for i in range(2, n)]
        return path, ", ".join(earlier) if n <= 3 else f"{first.name} .. {earlier[-1]}"
