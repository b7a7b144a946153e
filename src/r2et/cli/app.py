"""The ``r2et`` argument parser and :func:`main`: parse, load the plugins, run one command,
turn every error into one line and an exit code (see :mod:`r2et.cli`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from r2et.cli.args import (
    NONNEG_FLOAT,
    NONNEG_INT,
    POS_FLOAT,
    POS_INT,
    SEED,
    THREADS,
    UNITS,
    add_data_args,
    text_arg,
)
from r2et.cli.bench import cmd_bench
from r2et.cli.datasets import cmd_datasets
from r2et.cli.demo import cmd_demo
from r2et.cli.errors import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    INTERRUPTED,
    interrupt,
    report,
    show_warning,
    terminate,
)
from r2et.cli.evaluate import cmd_evaluate
from r2et.cli.explain import cmd_explain
from r2et.cli.methods import cmd_methods
from r2et.cli.report import cmd_report
from r2et.cli.train import cmd_train


def _attacks() -> list[str]:
    from r2et.attacks import list_attacks

    return list_attacks()


def _explainers() -> list[str]:
    from r2et.explain import list_explainers

    return list_explainers()


def add_unit_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--unit`` of a command (:data:`r2et.cli.args.UNITS`); ``what`` says what auto is."""
    parser.add_argument(
        "--unit",
        default="auto",
        choices=UNITS,
        help=f"rank table attributes (one-hot columns summed) or single columns (auto: {what})",
    )


class HelpFormatter(argparse.HelpFormatter):
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


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2, and
    whose help shows the defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """As argparse's, but an option without help text still shows its default."""
        if kwargs.get("help") is None and kwargs.get("default") not in (None, False):
            kwargs["help"] = "default: %(default)s"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("r2et")
    except PackageNotFoundError:
        from r2et._version import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``r2et`` command."""
    p = Parser(
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
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train or fine-tune a model with one method")
    t.add_argument("dataset", help="dataset name (see `r2et datasets`)")
    t.add_argument("--method", default="vanilla", help="training method (see `r2et methods`)")
    t.add_argument("--k", type=POS_INT, default=None, help="top-k size (default: the dataset's)")
    t.add_argument("--weight", type=NONNEG_FLOAT, default=None, help="the method's main weight")
    t.add_argument(
        "--explainer",
        default=None,
        choices=_explainers(),
        help="the explanation trained (default: the dataset's: gradient x input on tables with "
        "categorical attributes, else grad)",
    )
    add_unit_arg(t, "the dataset's: attributes of a table with categorical attributes")
    t.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="any method hyperparameter (repeatable), e.g. --param mu=0.1",
    )
    t.add_argument(
        "--epochs",
        type=NONNEG_INT,
        default=None,
        help="default: the dataset's (10; a csv of < 5,000 training rows: 50, or up to 200 on "
        "< 609 training rows, about 1,000 steps of 32)",
    )
    t.add_argument("--lr", type=POS_FLOAT, default=1e-3)
    t.add_argument(
        "--weight-decay",
        type=NONNEG_FLOAT,
        default=None,
        help="Adam's L2 weight decay with any method (default: the dataset's, else 0); 0.03 "
        "lifts a small csv's accuracy to a logistic regression's but makes its explanations "
        "less local (docs/results.md)",
    )
    t.add_argument(
        "--batch-size",
        type=POS_INT,
        default=None,
        help="default: the dataset's (128; small csv 32)",
    )
    t.add_argument("--seed", type=SEED, default=0, help="seed of data split, init and shuffling")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    t.add_argument(
        "--model", type=text_arg, default=None, help="model name (default: the dataset's model)"
    )
    t.add_argument(
        "--model-param",
        action="append",
        metavar="KEY=VALUE",
        help="model keyword (repeatable), e.g. --model-param hidden=[128,128]",
    )
    t.add_argument(
        "--pretrained",
        type=text_arg,
        default=None,
        metavar="RUN",
        help="fine-tune this run's model",
    )
    t.add_argument("--out", type=text_arg, required=True, help="run folder to write")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty --out (atomically, once the new one is complete)",
    )
    add_data_args(t)
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
    e.add_argument("--eps", type=POS_FLOAT, default=None, help="budget (default by modality)")
    e.add_argument("--steps", type=POS_INT, default=100, help="steps of erattack and mse")
    e.add_argument(
        "--inner",
        default="exact",
        choices=["exact", "auto"],
        help="explanation inside the attacks' steps: exact (default) or auto: ig with a quarter "
        "of its path points, smoothgrad with a fifth of its samples, 2-4x cheaper and "
        "0.002-0.010 weaker (docs/attacks.md); the reported P@k is always the exact one",
    )
    e.add_argument(
        "--no-box",
        action="store_true",
        help="attack in the eps-ball only (default: also inside the data's valid box)",
    )
    e.add_argument(
        "--groups",
        action="store_true",
        help="the same as --unit attribute",
    )
    add_unit_arg(e, "as the run was trained")
    e.add_argument("--norm", default="linf", choices=["linf", "l2"])
    e.add_argument(
        "--k", type=POS_INT, default=None, help="default: the run's k, else the dataset's"
    )
    e.add_argument("--n", type=POS_INT, default=500, help="first n inputs of the split")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument(
        "--explainer",
        default=None,
        choices=_explainers(),
        help="default: the explanation the run was trained on (its method's explainer, "
        "explaining the logit), else grad",
    )
    e.add_argument("--thickness-radius", type=POS_FLOAT, default=None)
    e.add_argument("--seed", type=SEED, default=0)
    e.add_argument("--device", default=None)
    e.add_argument("--no-progress", action="store_true")
    e.add_argument(
        "--overwrite",
        action="store_true",
        help="replace evaluation_SPLIT.json (default: keep it and write evaluation_SPLIT-2.json, "
        "-3, ...)",
    )
    e.add_argument(
        "--no-guide", action="store_true", help="leave out the lines on what each number means"
    )
    e.add_argument(
        "--certify",
        action="store_true",
        help="also certify the top-k at eps (deterministic l_inf certificate: ReLU or Softplus "
        "MLPs and small sequential CNNs such as --model cnn): the worst case then lies between "
        "the certified P@k (a lower bound) and the attacked one",
    )
    add_data_args(e, reload=True)
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
    b.add_argument("--epochs", type=NONNEG_INT, default=None, help="fine-tuning epochs")
    b.add_argument("--n", type=POS_INT, default=None, help="test inputs evaluated per cell")
    b.add_argument(
        "--out", type=text_arg, default="bench-out", help="output folder (default bench-out)"
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
        type=POS_INT,
        default=None,
        help="processes of the process executor (default 1; with --threads T use "
        "workers * T <= cores), or Ray tasks in flight at once (default: all); refused with "
        "the local executor",
    )
    b.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    b.add_argument("--resume", action="store_true", help="skip finished cells in --out")
    b.add_argument("--device", default=None)
    b.add_argument("--threads", type=THREADS, default=None, help="torch threads per cell")
    b.add_argument("--no-progress", action="store_true")
    add_data_args(b)
    b.set_defaults(func=cmd_bench)

    x = sub.add_parser("explain", help="save a PNG of an input's saliency, top-k highlighted")
    x.add_argument("run", help="run folder")
    x.add_argument("--index", type=NONNEG_INT, default=0, help="row of the split to explain")
    x.add_argument("--split", default="test", choices=["train", "val", "test"])
    x.add_argument("--k", type=POS_INT, default=None)
    x.add_argument(
        "--explainer",
        default=None,
        choices=_explainers(),
        help="default: the explanation the run was trained on",
    )
    add_unit_arg(x, "as the run was trained")
    x.add_argument("--out", type=text_arg, default="saliency.png")
    add_data_args(x, reload=True)
    x.add_argument(
        "--trust-factory",
        action="store_true",
        help="let the run import and call its model factory (code outside r2et and torch)",
    )
    x.set_defaults(func=cmd_explain)

    r = sub.add_parser(
        "report", help="a single-file HTML report of a run folder or a benchmark folder"
    )
    r.add_argument("path", help="run folder (r2et train) or benchmark folder (r2et bench)")
    r.add_argument("--out", type=text_arg, default=None, help="default: PATH/report.html")
    r.add_argument(
        "--examples", type=NONNEG_INT, default=3, help="inputs drawn for a run (default 3)"
    )
    r.add_argument("--split", default="test", choices=["train", "val", "test"])
    r.set_defaults(func=cmd_report)

    sub.add_parser("datasets", help="list datasets").set_defaults(func=cmd_datasets)
    sub.add_parser("methods", help="list training methods").set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="train a small MLP on breast-cancer data and explain it")
    d.add_argument("--k", type=POS_INT, default=5)
    d.add_argument("--epochs", type=NONNEG_INT, default=30)
    d.add_argument("--seed", type=SEED, default=0)
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


def _load_plugins(argv: Sequence[str] | None) -> int | None:
    """Import the plugins (:func:`r2et.plugins.load_plugins`): None when all went well, else
    the exit code of the error, reported as one line (``--debug`` anywhere in ``argv`` adds
    the traceback; the arguments are parsed only after the plugins registered their names)."""
    from r2et.plugins import load_plugins

    try:
        load_plugins()
    except Exception as err:  # noqa: BLE001 - a plugin's import error: one line and a code
        return report(err, "--debug" in (sys.argv[1:] if argv is None else list(argv)))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``r2et`` console script; returns the exit code (see the
    :mod:`r2et.cli` docstring: 0 ok, 1 failed cells, 2 bad input, 3 system error, 4 internal
    error, 5 folder locked, 130 interrupted, 143 terminated).

    The plugins (:func:`r2et.plugins.load_plugins`) are imported first, so that the datasets,
    models, methods, attacks and explainers they register are choices of the parser too; a
    plugin that fails to import is bad input (one line, exit code 2)."""
    INTERRUPTED["seen"] = False
    try:
        code = _load_plugins(argv)
        if code is not None:
            return code
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
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous_int = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = show_warning
            return int(args.func(args))
    except BaseException as err:  # noqa: BLE001 - every error becomes one line and a code
        return report(err, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)


def run() -> None:
    """The ``r2et`` command (console script and ``python -m r2et.cli``): ``sys.exit(main())``,
    except that an interrupted or terminated run (130, 143) leaves with ``os._exit`` once its
    output is flushed. CPython ends a process by SIGINT at exit whenever a KeyboardInterrupt
    once escaped code that ``exec`` ran from a string (a dataclass or named tuple being built
    by a lazy import when Ctrl-C arrived), even after r2et handled it: exit code 130 would
    become death by signal (-2) in about one run in ten (measured on the tiny bench)."""
    code = main()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
