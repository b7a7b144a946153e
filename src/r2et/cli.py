"""The ``r2et`` command line: train, evaluate, bench, explain, datasets, methods, demo.

Every argument is checked before any work starts. Errors are one line on stderr (``--debug``
adds the traceback) and the exit code says what happened:

====  ===================================================================================
0     success
1     ``r2et bench`` finished, but some cells failed (see ``OUT/errors``; ``--resume``)
2     bad input: a usage error, a bad value, an unknown name, a missing or invalid file, an
      unwritable or ill-chosen ``--out`` (``ValueError``, ``TypeError``, ``FileNotFoundError``)
3     the system refused: an ``OSError`` while working (disk full, permission denied,
      read-only file system) or out of memory
4     an unexpected internal error (a bug: please report it with the ``--debug`` traceback)
5     the output folder is locked by another running ``r2et bench``
130   interrupted (Ctrl-C); 143: terminated (SIGTERM). Finished benchmark cells are kept.
====  ===================================================================================
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_OS, EXIT_INTERNAL, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


def _attacks() -> list[str]:
    from r2et.attacks import list_attacks

    return list_attacks()


def _explainers() -> list[str]:
    from r2et.explain import list_explainers

    return list_explainers()


EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 bench finished with failed cells; 2 bad input (usage, value, "
    "name, missing file, unwritable --out); 3 system error (disk full, permission, out of "
    "memory); 4 internal error (a bug; --debug shows the traceback); 5 output folder locked "
    "by another run; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM)"
)


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (``(default: 5)``), except where the default is
    None or False or the help text already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2, and
    whose help shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """As argparse's, but an option without help text still shows its default."""
        if kwargs.get("help") is None and kwargs.get("default") not in (None, False):
            kwargs["help"] = "default: %(default)s"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that clean-up (temporary files, the lock) runs."""


def _int_arg(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an int") from None
        if value < low or (high is not None and value > high):
            rng = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{value} is not allowed; use an int {rng}")
        return value

    parse.__name__ = "int"
    return parse


def _float_arg(low: float, low_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite float ``> low`` (``>= low`` unless ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if not ok:
            raise argparse.ArgumentTypeError(
                f"{text} is not allowed; use a finite number {'>' if low_open else '>='} {low:g}"
            )
        return value

    parse.__name__ = "float"
    return parse


def _text_arg(text: str) -> str:
    """An argparse type: a non-empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_POS_INT, _NONNEG_INT = _int_arg(1), _int_arg(0)
_SEED = _int_arg(0, 2**32 - 1)
_THREADS = _int_arg(1, 1024)
_POS_FLOAT, _NONNEG_FLOAT = _float_arg(0.0), _float_arg(0.0, low_open=False)


def _params(items: Sequence[str] | None, flag: str = "--param") -> dict[str, Any]:
    """``["lam=1", "adaptive=true"]`` -> ``{"lam": 1, "adaptive": True}`` (JSON values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
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
    name = (ds.get("loader") or ds.get("name")) if isinstance(ds, dict) else ds
    if not name or not isinstance(name, str):
        raise ValueError("the run's config.json names no dataset")
    seed = config.get("data_seed", config.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the run's config.json has a bad data seed {seed!r}")
    return name, seed


def _data_params(args: argparse.Namespace) -> dict[str, Any]:
    """``--path``, ``--target`` and ``--data-param KEY=VALUE``: keywords of ``load_dataset``
    (``csv``: ``path``, ``target``, ``sep``, ``drop``, ``missing``...). A path is made
    absolute, so a run records where its data came from."""
    params = _params(getattr(args, "data_param", None), "--data-param")
    for key in ("path", "target"):
        value = getattr(args, key, None)
        if value is not None:
            if key in params:
                raise ValueError(f"give {key} once: --{key} or --data-param {key}=..., not both")
            params[key] = value
    if isinstance(params.get("path"), str):
        params["path"] = str(Path(params["path"]).expanduser().absolute())
    return params


def _run_dataset(config: dict[str, Any], args: argparse.Namespace) -> tuple[str, Any]:
    """The dataset a run was trained on (name, seed and loader keywords from its config;
    ``--path``/``--target``/``--data-param`` override the keywords), its data file checked
    against the SHA-256 the run recorded (refused when changed, unless
    ``--accept-changed-data``)."""
    from r2et.data import load_run_dataset

    name, _ = _dataset_name(config)
    accept = bool(getattr(args, "accept_changed_data", False))
    return name, load_run_dataset(config, accept_changed_data=accept, **_data_params(args))


def _add_data_args(parser: argparse.ArgumentParser, reload: bool = False) -> None:
    """The data options; ``reload`` (commands that reload a run's data: evaluate, explain)
    adds ``--accept-changed-data``."""
    parser.add_argument("--path", type=_text_arg, default=None, help="data file (dataset csv)")
    parser.add_argument("--target", default=None, help="label column (dataset csv)")
    parser.add_argument(
        "--data-param",
        action="append",
        metavar="KEY=VALUE",
        help="any load_dataset keyword (repeatable), e.g. --data-param missing=impute",
    )
    if reload:
        parser.add_argument(
            "--accept-changed-data",
            action="store_true",
            help="use the run's data file even if its SHA-256 differs from the one the run "
            "recorded (default: refuse a changed file)",
        )


def _check_device(flag: str, device: str | None) -> Any:
    """``--device`` checked up front (None stays None: the default device)."""
    if device is None:
        return None
    from r2et._checks import check_device

    return check_device(flag, device)


def _probe_writable(flag: str, path: Path, kind: str) -> None:
    """Raise ``ValueError`` unless ``path`` can be written: ``kind="folder"``: a folder (new
    or existing), ``"file"``: a file (new or existing, not a folder). Probes the nearest
    existing folder with a temporary file (removed at once), so a read-only or full file
    system is found before any work."""
    if not str(path).strip():
        raise ValueError(f"{flag} must name a {kind}, got an empty string")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; name a file")
    start = path if kind == "folder" else path.parent
    folder = next((a for a in [start, *start.absolute().parents] if a.exists()), None)
    if folder is None or not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder")
    probe = folder / f".r2et-probe.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        probe.unlink()
    except OSError as err:
        raise ValueError(f"{flag} {path} is not writable ({err.strerror or err})") from None


def _check_k(flag: str, k: int, ds: Any, ex: Any = None) -> int:
    """``--k`` against the number of units the dataset's explanations (by ``ex``) rank."""
    from r2et._checks import check_k
    from r2et.explain import Explainer

    ex = Explainer("grad") if ex is None else ex
    n_units = int(ex.unit_index(tuple(ds.input_shape)).max()) + 1
    try:
        return check_k(k, n_units)
    except ValueError:
        raise ValueError(
            f"{flag}={k} is outside 1..{n_units - 1} ({ds.name} explanations rank {n_units} units)"
        ) from None


# ---------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a model with one method and save a run folder."""
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.methods import get_method
    from r2et.models import build_model, count_model_parameters
    from r2et.train import check_replaceable, fit, load_run, save_run

    _probe_writable("--out", Path(args.out), "folder")
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise ValueError(
                f"--out {out} is not empty; give --overwrite to replace the run in it (the old "
                "run stays until the new one is complete)"
            )
        check_replaceable(out, "--out")
    from r2et._checks import check_device

    device = check_device("--device", args.device)  # None: CUDA when available
    params = _params(args.param)
    model_params = _params(args.model_param, "--model-param")
    for key in ("name", "input_shape", "n_classes"):
        if key in model_params:
            raise ValueError(
                f"--model-param {key}=... is not allowed; it comes from --model and the data"
            )
    k = args.k
    if "k" in params:
        if k is not None:
            raise ValueError("give k once: --k or --param k=..., not both")
        k = params.pop("k")
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"--param k must be an int, got {k!r}")
    data_params = _data_params(args)
    ds = load_dataset(args.dataset, seed=args.seed, **data_params)
    k = _check_k("--k" if args.k is not None else "k", k if k is not None else ds.default_k, ds)
    if args.weight is not None:
        wname = get_method(args.method, k=k).weight_name
        if wname is None:
            raise ValueError(f"method {args.method!r} has no weight; drop --weight")
        params[wname] = args.weight
    method = get_method(args.method, k=k, **params)
    if args.pretrained:
        run = load_run(args.pretrained, trust_factory=args.trust_factory)
        model = run.model
        shape = run.config["model"].get("input_shape")
        if shape is not None and tuple(shape) != tuple(ds.input_shape):
            raise ValueError(
                f"--pretrained {args.pretrained} expects inputs of shape {shape}, dataset "
                f"{args.dataset} has {list(ds.input_shape)}"
            )
    else:
        spec = dict(ds.default_model)
        if args.model:
            spec = {"name": args.model}
        spec.update(model_params)
        name = spec.pop("name")
        count_model_parameters(
            {"name": name, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes, **spec},
            where="--model/--model-param",
        )
        import torch

        torch.manual_seed(args.seed)
        model = build_model(name, list(ds.input_shape), ds.n_classes, **spec)
    res = fit(
        model,
        method,
        ds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        progress=not args.no_progress,
    )
    test_acc = evaluate(res.model, ds, Explainer("grad"), k=k, batch_size=1024)["accuracy"]
    config = {
        "dataset": ds.summary(),
        "data_seed": args.seed,
        "data_params": data_params,
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
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.train import load_run

    device = _check_device("--device", args.device)
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"run folder {args.run} does not exist")
    _probe_writable("the run folder", Path(args.run), "folder")
    run = load_run(args.run, trust_factory=args.trust_factory)
    name, ds = _run_dataset(run.config, args)
    eps = args.eps if args.eps is not None else ds.default_eps
    groups = None
    if args.groups:
        if ds.groups is None:
            raise ValueError(f"--groups: dataset {name!r} has no feature groups (tabular only)")
        groups = ds.groups
    ex = Explainer(args.explainer, groups=groups)
    k = _check_k("--k", args.k if args.k is not None else ds.default_k, ds, ex)
    bounds = None if args.no_box else ds.bounds
    options = {"norm": args.norm, "bounds": bounds, "seed": args.seed}
    options.update(steps=args.steps, preset=args.preset)
    attacks = {a: create_attack(a, ex, k, eps, **options) for a in args.attack or ["ensemble"]}
    model = run.model
    if device is not None:
        model = model.to(device)
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
    from r2et.bench.runner import WORKER_EXECUTORS, check_out, run_bench

    if args.workers is not None and args.executor not in WORKER_EXECUTORS:
        raise ValueError(
            f"--workers needs --executor process or ray; the {args.executor} executor runs one "
            "cell at a time in this process"
        )

    def listed(text: str | None, kind: type, flag: str) -> list[Any] | None:
        return None if text is None else parse_list(text, kind, flag)

    overrides: dict[str, Any] = {
        "datasets": listed(args.datasets, str, "--datasets"),
        "methods": listed(args.methods, str, "--methods"),
        "seeds": listed(args.seeds, int, "--seeds"),
        "device": args.device,
        "threads": args.threads,
        "finetune": None if args.epochs is None else {"epochs": args.epochs},
        "evaluate": None if args.n is None else {"n": args.n},
    }
    cfg = load_config(args.config, **overrides)
    data_params = _data_params(args)
    if data_params:
        for name in cfg.datasets:
            opts = cfg.datasets_options.setdefault(name, {})
            opts["load"] = {**opts.get("load", {}), **data_params}
        cfg.validate()
    if args.weights is not None:
        from r2et.methods import get_method

        values = listed(args.weights, float, "--weights")
        cfg.grid = {m: values for m in cfg.methods if get_method(m, k=1).weight_name}
        cfg.validate()
    check_out(args.out)
    _probe_writable("--out", Path(args.out), "folder")
    try:
        rows = run_bench(
            cfg,
            args.out,
            executor=args.executor,
            resume=args.resume,
            address=args.address,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt as err:
        what = "terminated" if isinstance(err, Terminated) else "interrupted"
        print(
            f"r2et: {what}; finished cells are saved in {args.out}; rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    rule = (cfg.max_acc_drop, cfg.min_deletion_ratio, cfg.min_distinct_ratio)
    print(selection_rule_text(*rule))
    print(results_table(rows, cfg.max_acc_drop, cfg.methods, rule[1], min_distinct_ratio=rule[2]))
    print(f"-> {Path(args.out) / 'report.md'}")
    failed = sorted((Path(args.out) / "errors").glob("*.json"))
    if failed:
        print(
            f"r2et: {len(failed)} cell(s) failed, see {failed[0].parent}; rerun with --resume",
            file=sys.stderr,
        )
        return EXIT_FAILED_CELLS
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    """Save a PNG of one input and its saliency with the top-k features highlighted."""
    from r2et._checks import check_finite_model
    from r2et.explain import Explainer
    from r2et.plotting import plot_explanation
    from r2et.train import load_run

    _probe_writable("--out", Path(args.out), "file")
    run = load_run(args.run, trust_factory=args.trust_factory)
    check_finite_model(run.model, name=f"the model of {args.run}")
    name, ds = _run_dataset(run.config, args)
    x, y, kw = ds.split(args.split)
    if not 0 <= args.index < len(x):
        raise ValueError(f"--index must lie in 0..{len(x) - 1} for the {args.split} split")
    idx = slice(args.index, args.index + 1)
    from r2et._kwargs import take_rows

    kw = take_rows(kw, idx, len(x))
    ex = Explainer(args.explainer)
    k = _check_k("--k", args.k if args.k is not None else ds.default_k, ds, ex)
    model = run.model.eval()
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
    _check_k("--k", args.k, ds)
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
def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("r2et")
    except PackageNotFoundError:
        from r2et import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``r2et`` command."""
    p = _Parser(
        prog="r2et",
        description="Stable saliency explanations: R2ET (Chen et al., "
        "NeurIPS 2024) training, attacks on explanations and benchmarks.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (the 'r2et' logger) on stderr"
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"r2et {_version()} (Python {sys.version.split()[0]})",
        help="print the version and exit",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train or fine-tune a model with one method")
    t.add_argument("dataset", help="dataset name (see `r2et datasets`)")
    t.add_argument("--method", default="vanilla", help="training method (see `r2et methods`)")
    t.add_argument("--k", type=_POS_INT, default=None, help="top-k size (default: the dataset's)")
    t.add_argument("--weight", type=_NONNEG_FLOAT, default=None, help="the method's main weight")
    t.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="any method hyperparameter (repeatable), e.g. --param mu=0.1",
    )
    t.add_argument(
        "--epochs", type=_NONNEG_INT, default=None, help="default: the dataset's (10; small csv 50)"
    )
    t.add_argument("--lr", type=_POS_FLOAT, default=1e-3)
    t.add_argument(
        "--batch-size",
        type=_POS_INT,
        default=None,
        help="default: the dataset's (128; small csv 32)",
    )
    t.add_argument("--seed", type=_SEED, default=0, help="seed of data split, init and shuffling")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    t.add_argument(
        "--model", type=_text_arg, default=None, help="model name (default: the dataset's model)"
    )
    t.add_argument(
        "--model-param",
        action="append",
        metavar="KEY=VALUE",
        help="model keyword (repeatable), e.g. --model-param hidden=[128,128]",
    )
    t.add_argument(
        "--pretrained",
        type=_text_arg,
        default=None,
        metavar="RUN",
        help="fine-tune this run's model",
    )
    t.add_argument("--out", type=_text_arg, required=True, help="run folder to write")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty --out (atomically, once the new one is complete)",
    )
    _add_data_args(t)
    t.add_argument(
        "--trust-factory",
        action="store_true",
        help="let --pretrained import and call its model factory (code outside r2et and torch)",
    )
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="attack a run's explanations; accuracy, P@k, thickness")
    e.add_argument("run", help="run folder (from `r2et train`)")
    e.add_argument(
        "--attack",
        action="append",
        choices=_attacks(),
        help="attack to run (repeatable; default: ensemble, the lowest P@k over a portfolio)",
    )
    e.add_argument(
        "--preset",
        default="standard",
        choices=["fast", "standard", "thorough"],
        help="ensemble preset (default standard: at most 10x a 50-step ERAttack)",
    )
    e.add_argument("--eps", type=_POS_FLOAT, default=None, help="budget (default by modality)")
    e.add_argument("--steps", type=_POS_INT, default=100, help="steps of erattack and mse")
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
    e.add_argument("--k", type=_POS_INT, default=None)
    e.add_argument("--n", type=_POS_INT, default=500, help="first n inputs of the split")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--explainer", default="grad", choices=_explainers())
    e.add_argument("--thickness-radius", type=_POS_FLOAT, default=None)
    e.add_argument("--seed", type=_SEED, default=0)
    e.add_argument("--device", default=None)
    e.add_argument("--no-progress", action="store_true")
    _add_data_args(e, reload=True)
    e.add_argument(
        "--trust-factory",
        action="store_true",
        help="let the run import and call its model factory (code outside r2et and torch)",
    )
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("bench", help="run a benchmark grid (no arguments: the small default)")
    b.add_argument(
        "config", nargs="?", default=None, help="TOML file with the grid, or a shipped one: paper"
    )
    b.add_argument("--datasets", help="comma-separated dataset names")
    b.add_argument("--methods", help="comma-separated method names (must include vanilla)")
    b.add_argument("--seeds", help="comma-separated seeds")
    b.add_argument("--weights", help="comma-separated weights swept for every weighted method")
    b.add_argument("--epochs", type=_NONNEG_INT, default=None, help="fine-tuning epochs")
    b.add_argument("--n", type=_POS_INT, default=None, help="test inputs evaluated per cell")
    b.add_argument(
        "--out", type=_text_arg, default="bench-out", help="output folder (default bench-out)"
    )
    b.add_argument(
        "--executor",
        default="local",
        choices=["local", "process", "ray"],
        help="local: one cell at a time in this process; process: --workers processes of "
        "this machine; ray: a Ray cluster",
    )
    b.add_argument(
        "--workers",
        type=_POS_INT,
        default=None,
        help="processes of the process executor (default 1; with --threads T use "
        "workers * T <= cores), or Ray tasks in flight at once (default: all); refused with "
        "the local executor",
    )
    b.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    b.add_argument("--resume", action="store_true", help="skip finished cells in --out")
    b.add_argument("--device", default=None)
    b.add_argument("--threads", type=_THREADS, default=None, help="torch threads per cell")
    b.add_argument("--no-progress", action="store_true")
    _add_data_args(b)
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("explain", help="save a PNG of an input's saliency, top-k highlighted")
    x.add_argument("run", help="run folder")
    x.add_argument("--index", type=_NONNEG_INT, default=0, help="row of the split to explain")
    x.add_argument("--split", default="test", choices=["train", "val", "test"])
    x.add_argument("--k", type=_POS_INT, default=None)
    x.add_argument("--explainer", default="grad", choices=_explainers())
    x.add_argument("--out", type=_text_arg, default="saliency.png")
    _add_data_args(x, reload=True)
    x.add_argument(
        "--trust-factory",
        action="store_true",
        help="let the run import and call its model factory (code outside r2et and torch)",
    )
    x.set_defaults(func=cmd_explain)

    sub.add_parser("datasets", help="list datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("methods", help="list training methods").set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="train a small MLP on breast-cancer data and explain it")
    d.add_argument("--k", type=_POS_INT, default=5)
    d.add_argument("--epochs", type=_NONNEG_INT, default=30)
    d.add_argument("--seed", type=_SEED, default=0)
    d.set_defaults(func=cmd_demo)
    for child in sub.choices.values():
        child.epilog = EXIT_CODES_HELP
        child.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the traceback of an error",
        )
    return p


def _one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    msg = " ".join(str(err).split())
    return msg or type(err).__name__


def _os_message(err: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` -> ``No space left on device: x``."""
    if err.strerror:
        where = f": {err.filename}" if err.filename is not None else ""
        return f"{err.strerror}{where}"
    return _one_line(err)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *a: Any) -> None:
    """Warnings as one line on stderr (``r2et: warning: ...``)."""
    print(f"r2et: warning: {_one_line(message)}", file=sys.stderr)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


#: Set once SIGINT arrived during :func:`main`: whatever error follows is its consequence (an
#: import interrupted half-way can surface later as a RecursionError or an ImportError).
_interrupted = {"seen": False}


def _interrupt(signum: int, frame: Any) -> None:
    _interrupted["seen"] = True
    raise KeyboardInterrupt()


def _log_to_stderr() -> None:
    """INFO records of the ``r2et`` logger on stderr, one ``r2et: message`` line each."""
    import logging

    log = logging.getLogger("r2et")
    if not any(getattr(h, "r2et_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("r2et: %(message)s"))
        handler.r2et_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r2et`` console script; returns the exit code (see the module
    docstring: 0 ok, 1 failed cells, 2 bad input, 3 system error, 4 internal error, 5 folder
    locked, 130 interrupted, 143 terminated)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print("r2et: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    debug = bool(getattr(args, "debug", False))
    if getattr(args, "verbose", False):
        _log_to_stderr()
    previous = previous_int = None
    _interrupted["seen"] = False
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous_int = signal.signal(signal.SIGINT, _interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning
            return int(args.func(args))
    except BaseException as err:  # noqa: BLE001 - every error becomes one line and a code
        return _report(err, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def _report(err: BaseException, debug: bool) -> int:
    """Print ``err`` as one line on stderr (with the traceback under ``--debug``) and return
    its exit code."""
    from r2et._io import FolderLockedError

    if isinstance(err, SystemExit):
        raise err
    if debug:
        traceback.print_exception(err)
    if isinstance(err, Terminated):
        code, msg = EXIT_TERMINATED, "r2et: terminated"
    elif isinstance(err, KeyboardInterrupt) or _interrupted["seen"]:
        code, msg = EXIT_INTERRUPTED, "r2et: interrupted"
    elif isinstance(err, FolderLockedError):
        code, msg = EXIT_LOCKED, f"r2et: error: {_one_line(err)}"
    elif isinstance(err, (ValueError, TypeError, FileNotFoundError, NotADirectoryError)):
        code, msg = EXIT_USAGE, f"r2et: error: {_one_line(err)}"
    elif (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err))  # CPU
    ):
        code, msg = EXIT_OS, f"r2et: error: out of memory ({_one_line(err)})"
    elif isinstance(err, OSError):
        code, msg = EXIT_OS, f"r2et: error: {_os_message(err)}"
    else:
        hint = "" if debug else "; rerun with --debug for the traceback"
        code = EXIT_INTERNAL
        msg = f"r2et: internal error: {type(err).__name__}: {_one_line(err)}{hint}"
    print(msg, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
