"""Argument types and checks shared by the ``r2et`` commands: bounded int/float/text types,
``KEY=VALUE`` options, the data options, ``--device``/``--k`` checks and the writability
probe of an output path. Every check runs before any work starts."""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def int_arg(low: int, high: int | None = None) -> Callable[[str], int]:
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


def float_arg(low: float, low_open: bool = True) -> Callable[[str], float]:
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


def text_arg(text: str) -> str:
    """An argparse type: a non-empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


POS_INT, NONNEG_INT = int_arg(1), int_arg(0)
SEED = int_arg(0, 2**32 - 1)
THREADS = int_arg(1, 1024)
POS_FLOAT, NONNEG_FLOAT = float_arg(0.0), float_arg(0.0, low_open=False)


def parse_params(items: Sequence[str] | None, flag: str = "--param") -> dict[str, Any]:
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


def _dataset_name(config: dict[str, Any]) -> tuple[str, int]:
    ds = config.get("dataset")
    name = (ds.get("loader") or ds.get("name")) if isinstance(ds, dict) else ds
    if not name or not isinstance(name, str):
        raise ValueError("the run's config.json names no dataset")
    seed = config.get("data_seed", config.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the run's config.json has a bad data seed {seed!r}")
    return name, seed


def parse_data_params(args: argparse.Namespace) -> dict[str, Any]:
    """``--path``, ``--target`` and ``--data-param KEY=VALUE``: keywords of ``load_dataset``
    (``csv``: ``path``, ``target``, ``sep``, ``drop``, ``missing``...). A path is made
    absolute, so a run records where its data came from."""
    params = parse_params(getattr(args, "data_param", None), "--data-param")
    for key in ("path", "target"):
        value = getattr(args, key, None)
        if value is not None:
            if key in params:
                raise ValueError(f"give {key} once: --{key} or --data-param {key}=..., not both")
            params[key] = value
    if isinstance(params.get("path"), str):
        params["path"] = str(Path(params["path"]).expanduser().absolute())
    return params


def run_dataset(config: dict[str, Any], args: argparse.Namespace) -> tuple[str, Any]:
    """The dataset a run was trained on (name, seed and loader keywords from its config;
    ``--path``/``--target``/``--data-param`` override the keywords), its data file checked
    against the SHA-256 the run recorded (refused when changed, unless
    ``--accept-changed-data``)."""
    from r2et.data import load_run_dataset

    name, _ = _dataset_name(config)
    accept = bool(getattr(args, "accept_changed_data", False))
    return name, load_run_dataset(config, accept_changed_data=accept, **parse_data_params(args))


def add_data_args(parser: argparse.ArgumentParser, reload: bool = False) -> None:
    """The data options; ``reload`` (commands that reload a run's data: evaluate, explain)
    adds ``--accept-changed-data``."""
    parser.add_argument("--path", type=text_arg, default=None, help="data file (dataset csv)")
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


#: ``--unit``: what a command ranks; ``auto`` is the dataset's explanation (attributes of a
#: table with categorical attributes, else features).
UNITS = ("auto", "attribute", "column")


def unit_groups(unit: str, ds: Any, default: Any) -> Any:
    """The feature groups a command ranks for ``--unit``: ``auto`` ``default`` (the dataset's
    or the run's unit), ``attribute`` the dataset's attributes (``ds.groups``; refused for data
    without them), ``column`` None (single features)."""
    if unit == "column":
        return None
    if unit == "attribute":
        if getattr(ds, "groups", None) is None:
            raise ValueError(
                f"--unit attribute: dataset {getattr(ds, 'name', '?')!r} has no attributes "
                "(tabular data only)"
            )
        return ds.groups
    return default


def check_device_arg(flag: str, device: str | None) -> Any:
    """``--device`` checked up front (None stays None: the default device)."""
    if device is None:
        return None
    from r2et._checks import check_device

    return check_device(flag, device)


def probe_writable(flag: str, path: Path, kind: str) -> None:
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


def check_k_arg(flag: str, k: int, ds: Any, ex: Any = None) -> int:
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


def explainer_of_run(
    config: dict, args: argparse.Namespace, ds: object, name: str
) -> tuple[Any, int | None, bool]:
    """The explainer ``r2et evaluate`` (and ``r2et explain``) scores, the run's ``k`` (None
    when it has none) and whether the explainer is the run's own.

    Without ``--explainer``, the explanation the run was trained on: its method's explainer
    (``config["method"]["explainer"]``: rule, its options and the unit, columns or attribute
    groups), explaining the logit (a loss-gradient explainer, as est-h trains on, explains the
    loss of the label, not the prediction); a run without one: the dataset's explanation
    (``ds.default_explainer``). ``--explainer NAME`` scores that rule instead, on the run's
    unit. ``--unit attribute`` (or ``--groups``) ranks the dataset's attributes,
    ``--unit column`` single columns, either way."""
    from r2et.explain import as_explainer

    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    trained = method.get("explainer")
    k = method.get("k") if isinstance(method.get("k"), int) else None
    unit = "attribute" if getattr(args, "groups", False) else getattr(args, "unit", "auto")
    if not isinstance(trained, dict):  # a run without a method explainer: the dataset's
        trained, k = dict(getattr(ds, "default_explainer", None) or {"method": "grad"}), None
    options = {**trained, "output": "logit"}
    if args.explainer is not None:
        options = {"method": args.explainer, "output": "logit", "groups": trained.get("groups")}
    options["groups"] = unit_groups(unit, ds, options.get("groups"))
    same_unit = _group_ids(options["groups"]) == _group_ids(trained.get("groups"))
    if options["groups"] is None:
        options.pop("groups")
    own = args.explainer is None and same_unit and isinstance(method.get("explainer"), dict)
    try:
        return as_explainer(options), k if same_unit else None, own
    except ValueError as err:
        raise ValueError(
            f"the run's explainer {trained!r} can not be rebuilt ({err}); pass --explainer"
        ) from None


def _group_ids(groups: Any) -> list[int] | None:
    """Feature groups in one form (a group id per column; None for single features), so that
    a run's stored groups and a dataset's column lists compare equal when they are the same."""
    from r2et.explain import group_index

    return None if groups is None else group_index(groups).tolist()
