"""The ``r2et`` command line: train, evaluate, bench, explain, datasets, methods, demo.

Bad input (unknown names, bad values, missing files) prints one line on stderr and exits with
code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _params(items: Sequence[str] | None) -> dict[str, Any]:
    """``["lam=1", "adaptive=true"]`` -> ``{"lam": 1, "adaptive": True}`` (JSON values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def _num(v: float | None) -> str:
    """A metric for printing: three decimals, or 'n/a' where it is undefined (None)."""
    return "n/a" if v is None else f"{v:.3f}"


def _dataset_name(config: dict[str, Any]) -> tuple[str, int]:
    ds = config.get("dataset")
    name = ds.get("name") if isinstance(ds, dict) else ds
    if not name:
        raise ValueError("the run's config.json names no dataset")
    return str(name), int(config.get("data_seed", config.get("seed", 0)))


# ---------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a model with one method and save a run folder."""
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.methods import get_method
    from r2et.models import build_model
    from r2et.train import fit, load_run, save_run

    ds = load_dataset(args.dataset, seed=args.seed)
    if args.pretrained:
        run = load_run(args.pretrained)
        model = run.model
        if tuple(run.config["model"]["input_shape"]) != tuple(ds.input_shape):
            raise ValueError(
                f"--pretrained {args.pretrained} expects inputs of shape "
                f"{run.config['model']['input_shape']}, dataset {args.dataset} has "
                f"{list(ds.input_shape)}"
            )
    else:
        spec = dict(ds.default_model)
        if args.model:
            spec = {"name": args.model}
        spec.update(_params(args.model_param))
        name = spec.pop("name")
        import torch

        torch.manual_seed(args.seed)
        model = build_model(name, list(ds.input_shape), ds.n_classes, **spec)
    params = _params(args.param)
    k = args.k if args.k is not None else ds.default_k
    if args.weight is not None:
        wname = get_method(args.method, k=k).weight_name
        if wname is None:
            raise ValueError(f"method {args.method!r} has no weight; drop --weight")
        params[wname] = args.weight
    method = get_method(args.method, k=k, **params)
    res = fit(
        model,
        method,
        ds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    test_acc = evaluate(res.model, ds, Explainer("grad"), k=k, batch_size=1024)["accuracy"]
    config = {
        "dataset": ds.summary(),
        "data_seed": args.seed,
        "pretrained": args.pretrained,
        **res.config,
    }
    metrics = {
        "val_accuracy": res.best_val_accuracy,
        "test_accuracy": test_acc,
        "best_epoch": res.best_epoch,
        "seconds_per_epoch": res.seconds_per_epoch,
        "history": res.history,
    }
    save_run(args.out, res.model, config, metrics)
    print(
        f"{args.dataset} {args.method}: val acc {res.best_val_accuracy:.4f}, "
        f"test acc {test_acc:.4f}, {res.seconds_per_epoch:.2f} s/epoch -> {args.out}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Attack a saved run's explanations and print accuracy, P@k, faithfulness, locality and
    thickness."""
    from r2et._io import atomic_write_json
    from r2et.attacks import EnsembleAttack, ERAttack, MSEAttack
    from r2et.bench.config import DEFAULT_EPS
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.train import load_run

    run = load_run(args.run)
    name, seed = _dataset_name(run.config)
    ds = load_dataset(name, seed=seed)
    k = args.k if args.k is not None else ds.default_k
    eps = args.eps if args.eps is not None else DEFAULT_EPS[ds.modality]
    groups = None
    if args.groups:
        if ds.groups is None:
            raise ValueError(f"--groups: dataset {name!r} has no feature groups (tabular only)")
        groups = ds.groups
    ex = Explainer(args.explainer, groups=groups)
    bounds = None if args.no_box else ds.bounds
    chosen = args.attack or ["ensemble"]
    attacks: dict[str, Any] = {}
    for a in chosen:
        if a == "ensemble":
            attacks[a] = EnsembleAttack(
                ex, k, eps, norm=args.norm, bounds=bounds, preset=args.preset, seed=args.seed
            )
        else:
            kind = {"erattack": ERAttack, "mse": MSEAttack}[a]
            attacks[a] = kind(
                ex, k, eps, steps=args.steps, norm=args.norm, bounds=bounds, seed=args.seed
            )
    model = run.model
    if args.device:
        model = model.to(args.device)
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
    )
    out = Path(args.run) / f"evaluation_{args.split}.json"
    atomic_write_json(out, res)
    unit = f"{len(groups)} attribute groups" if groups else "features"
    box = "inside the data box" if bounds is not None else "no data box"
    print(
        f"{name} ({args.split}): accuracy {res['accuracy']:.4f} on all {res['n_split']} rows; "
        f"explanations of the first {res['n']} ({args.explainer} saliency, top-{k} of {unit})"
    )
    for a, vals in res.get("attacks", {}).items():
        what = f"preset {vals['preset']}" if "preset" in vals else f"steps={args.steps}"
        print(
            f"  {a:9s} {args.norm} eps={eps:g} {what}, {box}: P@{k} {_num(vals['p_at_k_mean'])} "
            f"± {_num(vals['p_at_k_std'])}, Kendall {_num(vals['kendall_mean'])}, "
            f"{vals['seconds']:.1f} s"
        )
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
    print(f"-> {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run (or resume) a benchmark grid and print the paper-style table."""
    from r2et.bench.config import load_config, parse_list
    from r2et.bench.report import results_table, selection_rule_text
    from r2et.bench.runner import run_bench

    overrides: dict[str, Any] = {
        "datasets": parse_list(args.datasets, str, "--datasets") if args.datasets else None,
        "methods": parse_list(args.methods, str, "--methods") if args.methods else None,
        "seeds": parse_list(args.seeds, int, "--seeds") if args.seeds else None,
        "device": args.device,
        "threads": args.threads,
    }
    cfg = load_config(args.config, **overrides)
    if args.weights:
        from r2et.methods import get_method

        values = parse_list(args.weights, float, "--weights")
        cfg.grid = {m: values for m in cfg.methods if get_method(m, k=1).weight_name}
    if args.epochs is not None:
        cfg.finetune["epochs"] = args.epochs
    if args.n is not None:
        cfg.evaluate["n"] = args.n
    try:
        rows = run_bench(
            cfg,
            args.out,
            executor=args.executor,
            resume=args.resume,
            address=args.address,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"r2et: interrupted; finished cells are saved in {args.out}; rerun with --resume",
            file=sys.stderr,
        )
        return 130
    print(selection_rule_text(cfg.max_acc_drop))
    print(results_table(rows, cfg.max_acc_drop, cfg.methods))
    print(f"-> {Path(args.out) / 'report.md'}")
    failed = sorted((Path(args.out) / "errors").glob("*.json"))
    if failed:
        print(
            f"r2et: {len(failed)} cell(s) failed, see {failed[0].parent}; rerun with --resume",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Save a PNG of one input and its saliency with the top-k features highlighted."""
    from r2et.data import load_dataset
    from r2et.explain import Explainer
    from r2et.plotting import plot_explanation
    from r2et.train import load_run

    run = load_run(args.run)
    name, seed = _dataset_name(run.config)
    ds = load_dataset(name, seed=seed)
    x, y, kw = ds.split(args.split)
    if not 0 <= args.index < len(x):
        raise ValueError(f"--index must lie in 0..{len(x) - 1} for the {args.split} split")
    idx = slice(args.index, args.index + 1)
    from r2et.data import slice_forward_kwargs

    kw = slice_forward_kwargs(kw, idx, len(x))
    k = args.k if args.k is not None else ds.default_k
    model = run.model.eval()
    ex = Explainer(args.explainer)
    scores = ex.scores(model, x[idx], **kw)[0].detach()
    pred = int(model(x[idx], **kw).argmax(1))
    path = plot_explanation(
        ds,
        x[idx][0],
        scores,
        k,
        args.out,
        title=f"{name} {args.split}[{args.index}]: label {int(y[args.index])}, predicted {pred}",
        mask=kw.get("mask"),
    )
    print(f"-> {path}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the datasets with a one-line description."""
    from r2et.data.registry import get_loader, list_datasets

    for name in list_datasets():
        doc = (get_loader(name).__doc__ or "").strip().splitlines()
        print(f"{name:14s} {doc[0] if doc else ''}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    """List the training methods with their main weight and a one-line description."""
    from r2et.methods import get_method, list_methods

    for name in list_methods():
        m = get_method(name, k=1)
        doc = getattr(m, "description", None) or (type(m).__doc__ or "").strip().splitlines()[0]
        print(f"{name:12s} weight={m.weight_name or '-':13s} {doc}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a small MLP on scikit-learn's breast-cancer data, print its gradient-saliency
    top-k features and P@k under uniform random noise."""
    import torch

    from r2et import Explainer, precision_at_k
    from r2et.data import load_dataset
    from r2et.models import build_model
    from r2et.train import fit

    ds = load_dataset("breast-cancer", seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model("mlp", list(ds.input_shape), ds.n_classes, hidden=[64, 64])
    res = fit(model, "vanilla", ds, epochs=args.epochs, seed=args.seed, progress=False)
    xte, yte, _ = ds.split("test")
    model = res.model.eval()
    acc = (model(xte).argmax(1) == yte).float().mean().item()
    ex = Explainer("grad")
    s = ex.scores(model, xte)
    print(f"breast-cancer MLP: test accuracy {acc:.3f} on {len(xte)} inputs")
    for i in range(3):
        top = s[i].topk(args.k).indices.tolist()
        print(f"  input {i}: top-{args.k}: " + ", ".join(ds.feature_names[j] for j in top))
    gen = torch.Generator().manual_seed(args.seed)
    for eps in (0.05, 0.1, 0.2):
        noisy = xte + (2 * torch.rand(xte.shape, generator=gen) - 1) * eps
        p = precision_at_k(s, ex.scores(model, noisy), args.k)
        print(f"  P@{args.k} under uniform noise eps={eps}: {p.mean().item():.3f}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``r2et`` command."""
    p = _Parser(
        prog="r2et",
        description="Stable saliency explanations: R2ET (Chen et al., "
        "NeurIPS 2024) training, attacks on explanations and benchmarks.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train or fine-tune a model with one method")
    t.add_argument("dataset", help="dataset name (see `r2et datasets`)")
    t.add_argument("--method", default="vanilla", help="training method (see `r2et methods`)")
    t.add_argument("--k", type=int, default=None, help="top-k size (default: the dataset's)")
    t.add_argument("--weight", type=float, default=None, help="the method's main weight")
    t.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="any method hyperparameter (repeatable), e.g. --param mu=0.1",
    )
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--seed", type=int, default=0, help="seed of data split, init and shuffling")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    t.add_argument("--model", default=None, help="model name (default: the dataset's model)")
    t.add_argument(
        "--model-param",
        action="append",
        metavar="KEY=VALUE",
        help="model keyword (repeatable), e.g. --model-param hidden=[128,128]",
    )
    t.add_argument("--pretrained", default=None, metavar="RUN", help="fine-tune this run's model")
    t.add_argument("--out", required=True, help="run folder to write")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="attack a run's explanations; accuracy, P@k, thickness")
    e.add_argument("run", help="run folder (from `r2et train`)")
    e.add_argument(
        "--attack",
        action="append",
        choices=["ensemble", "erattack", "mse"],
        help="attack to run (repeatable; default: ensemble, the lowest P@k over a portfolio)",
    )
    e.add_argument(
        "--preset",
        default="standard",
        choices=["fast", "standard", "thorough"],
        help="ensemble preset (default standard: at most 10x a 50-step ERAttack)",
    )
    e.add_argument("--eps", type=float, default=None, help="budget (default by modality)")
    e.add_argument("--steps", type=int, default=100, help="steps of erattack and mse")
    e.add_argument(
        "--no-box",
        action="store_true",
        help="attack in the eps-ball only (default: also inside the data's valid box)",
    )
    e.add_argument(
        "--groups",
        action="store_true",
        help="rank tabular attributes (one-hot columns of one attribute summed) not columns",
    )
    e.add_argument("--norm", default="linf", choices=["linf", "l2"])
    e.add_argument("--k", type=int, default=None)
    e.add_argument("--n", type=int, default=500, help="first n inputs of the split")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--explainer", default="grad", help="grad, grad_x_input, smoothgrad, ig")
    e.add_argument("--thickness-radius", type=float, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default=None)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="run a benchmark grid (no arguments: the small default)")
    b.add_argument("config", nargs="?", default=None, help="TOML file with the grid")
    b.add_argument("--datasets", help="comma-separated dataset names")
    b.add_argument("--methods", help="comma-separated method names (must include vanilla)")
    b.add_argument("--seeds", help="comma-separated seeds")
    b.add_argument("--weights", help="comma-separated weights swept for every weighted method")
    b.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs")
    b.add_argument("--n", type=int, default=None, help="test inputs evaluated per cell")
    b.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    b.add_argument("--executor", default="local", choices=["local", "ray"])
    b.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    b.add_argument("--resume", action="store_true", help="skip finished cells in --out")
    b.add_argument("--device", default=None)
    b.add_argument("--threads", type=int, default=None, help="torch threads per cell")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("explain", help="save a PNG of an input's saliency, top-k highlighted")
    x.add_argument("run", help="run folder")
    x.add_argument("--index", type=int, default=0, help="row of the split to explain")
    x.add_argument("--split", default="test", choices=["train", "val", "test"])
    x.add_argument("--k", type=int, default=None)
    x.add_argument("--explainer", default="grad", help="grad, grad_x_input, smoothgrad, ig")
    x.add_argument("--out", default="saliency.png")
    x.set_defaults(func=cmd_explain)

    sub.add_parser("datasets", help="list datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("methods", help="list training methods").set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="train a small MLP on breast-cancer data and explain it")
    d.add_argument("--k", type=int, default=5)
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r2et`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        msg = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        msg = msg or type(err).__name__
        print(f"r2et: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
