"""The dataset registry: ``load_dataset(name, ...)`` and ``list_datasets()``.

Loader modules are imported only when a dataset is loaded, so importing :mod:`r2et.data`
reads no file and touches no network.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from r2et._registry import Registry
from r2et.data.base import Dataset

# name -> (module, function); every loader has the signature (root, download, seed, **kw)
DATASETS: Registry[tuple[str, str] | Callable[..., Dataset]] = Registry("dataset")
for _name, _where in (
    ("adult", ("r2et.data.tabular", "load_adult")),
    ("bank", ("r2et.data.tabular", "load_bank")),
    ("compas", ("r2et.data.tabular", "load_compas")),
    ("breast-cancer", ("r2et.data.tabular", "load_breast_cancer")),
    ("csv", ("r2et.data.tabular", "load_csv")),
    ("mnist", ("r2et.data.images", "load_mnist")),
    ("mnist5k", ("r2et.data.images", "load_mnist5k")),
    ("cifar10", ("r2et.data.images", "load_cifar10")),
    ("cifar10-5k", ("r2et.data.images", "load_cifar10_5k")),
    ("digits", ("r2et.data.images", "load_digits")),
    ("mutag", ("r2et.data.graphs", "load_mutag")),
    ("ba-2motifs", ("r2et.data.synthetic_graphs", "load_ba_2motifs")),
    ("ba-2motifs-edges", ("r2et.data.synthetic_graphs", "load_ba_2motifs_edges")),
):
    DATASETS.register(_name, _where)


def register_dataset(name: str, loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
    """Register ``loader(root, download, seed, **kw) -> Dataset`` as dataset ``name`` (then
    ``load_dataset(name)``, the bench and the CLI know it)."""
    if not callable(loader):
        raise ValueError(f"register_dataset needs a loader function, got {loader!r}")
    DATASETS.register(name, loader)
    return loader


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(DATASETS.names())


_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_ABBREVIATIONS = ("al", "e.g", "i.e", "vs", "cf", "etc", "approx")


def plain_text(doc: str) -> str:
    """Docstring markup made plain, on one line: ``:func:`~a.b``` -> ``b``, ````x```` -> ``x``,
    ``*x*`` -> ``x``, whitespace runs -> one space."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    text = text.replace("``", "").replace("`", "").replace("**", "")
    return " ".join(text.split())


def first_sentence(text: str) -> str:
    """The first sentence of plain ``text``: up to the first ``.`` followed by a space or the end,
    not one that ends an abbreviation (``et al.``, ``e.g.``) or a number (``1.5``)."""
    for m in re.finditer(r"\.(\s|$)", text):
        word = text[: m.start()].rsplit(" ", 1)[-1].lower().strip("(")
        if word not in _ABBREVIATIONS:
            return text[: m.start() + 1]
    return text


def dataset_summary(name: str) -> str:
    """One plain sentence on dataset ``name`` for listings (``r2et datasets``): the first
    sentence of its loader's docstring, markup removed (a loader's first sentence is its
    summary; the built-in ones fit in 100 characters)."""
    doc = (get_loader(name).__doc__ or "").strip().split("\n\n")[0]
    return first_sentence(plain_text(doc))


def get_loader(name: str) -> Callable[..., Dataset]:
    """The loader function of dataset ``name`` (``ValueError`` for an unknown name)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name={name!r} is not a known dataset; allowed: {list_datasets()}")
    where = DATASETS.get(name)
    if callable(where):
        return where
    module, func = where
    return getattr(importlib.import_module(module), func)


def load_dataset(
    name: str | None = None,
    /,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    seed: int = 0,
    **kw: Any,
) -> Dataset:
    """Load dataset ``name`` as a :class:`~r2et.data.base.Dataset` (train/val/test tensors,
    ``forward_kwargs``, feature names, bounds, default model and ``k``).

    Files are looked up under ``root`` (or ``$R2ET_DATA``), then the cache (``$R2ET_CACHE`` or
    ``~/.cache/r2et``), then downloaded from the canonical URL with a SHA-256 check
    (``download=True``). ``seed`` fixes the stratified splits. Extra keywords go to the loader,
    e.g. ``val_fraction``, ``test_fraction``; ``load_dataset("csv", path=..., target=...)``.
    ``name`` is positional, so a loader's own ``name=`` keyword reaches it:
    ``load_dataset("csv", path=..., target=..., name="churn")`` names the dataset ``churn``
    (``info["loader"]`` stays ``"csv"``); ``load_dataset(name="adult")`` still loads Adult.
    Raises ``ValueError`` for an unknown name or keyword, ``FileNotFoundError`` for missing
    files that cannot be downloaded.
    """
    if name is None:  # load_dataset(name="adult"): the dataset's name given as a keyword
        name = kw.pop("name", None)
    loader = get_loader(name)  # type: ignore[arg-type]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    params = inspect.signature(loader).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("root", "download", "seed")]
        raise ValueError(f"unknown keyword(s) {unknown} for dataset {name!r}; allowed: {allowed}")
    ds = loader(root=root, download=download, seed=seed, **kw)
    ds.info.setdefault("seed", seed)
    ds.info.setdefault("loader", name.lower())  # the registry name, e.g. "csv"
    return ds


def _run_config(run: Any) -> dict[str, Any]:
    config = getattr(run, "config", run)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"run must be a Run (from load_run) or its config dict, got {type(run).__name__}"
        )
    return dict(config)


def load_run_dataset(run: Any, *, accept_changed_data: bool = False, **overrides: Any) -> Dataset:
    """The dataset a run was trained on, reloaded as ``r2et evaluate RUN`` does.

    ``run`` is a :class:`~r2et.train.Run` (from :func:`~r2et.load_run`) or its ``config``
    dict: the dataset's registry name (``config["dataset"]["loader"]``, else its ``"name"``),
    the data seed (``"data_seed"``, else ``"seed"``) and the loader keywords
    (``"data_params"``, updated with ``overrides``) come from it. When the run recorded its data
    file's SHA-256 (CSV files, ``config["dataset"]["sha256"]``), the reloaded file must have
    the same digest: a changed file would silently give other splits and numbers, so it is
    refused with ``ValueError`` unless ``accept_changed_data=True`` (then a warning). A run
    stored before digests were recorded loads with a warning that its file cannot be checked.
    """
    config = _run_config(run)
    recorded = config.get("dataset")
    name = (
        (recorded.get("loader") or recorded.get("name"))
        if isinstance(recorded, Mapping)
        else recorded
    )
    if not name or not isinstance(name, str):
        raise ValueError("the run's config.json names no dataset")
    seed = config.get("data_seed", config.get("seed", 0))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"the run's config.json has a bad data seed {seed!r}")
    params = config.get("data_params", {})
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ValueError(f"the run's config.json has bad data_params {params!r}")
    clash = sorted({"seed", "root", "download"} & set(params))
    if clash:
        raise ValueError(
            f"the run's config.json has data_params {clash} that r2et sets itself (the data "
            "seed is 'data_seed'); remove them"
        )
    if seed > 2**63 - 1:
        raise ValueError(f"the run's config.json has a bad data seed {seed!r}")
    ds = load_dataset(name, seed=seed, **{**params, **overrides})
    check_data_digest(ds, recorded, accept_changed_data=accept_changed_data)
    return ds


def check_data_digest(ds: Dataset, recorded: Any, *, accept_changed_data: bool = False) -> None:
    """Compare the SHA-256 of ``ds``'s data file (``ds.info["sha256"]``, set by the CSV
    loader) with the one a run recorded (``recorded``: the run's ``config["dataset"]``
    summary); a mismatch is one ``ValueError`` naming the file and both digests, or a warning
    with ``accept_changed_data=True``. Nothing to compare (no digest now, e.g. a built-in
    dataset) passes; a digest now but none recorded (a run stored before r2et recorded them)
    passes with a warning."""
    if not isinstance(accept_changed_data, bool):
        raise ValueError(f"accept_changed_data must be True or False, got {accept_changed_data!r}")
    now = ds.info.get("sha256")
    if not isinstance(now, str):
        return
    source = ds.info.get("source", ds.name)
    then = recorded.get("sha256") if isinstance(recorded, Mapping) else None
    if then is None:
        warnings.warn(
            f"the run records no SHA-256 of its data file {source} (stored before r2et "
            "recorded one); the file cannot be checked for changes",
            stacklevel=2,
        )
        return
    if then == now:
        return
    what = (
        f"{source} changed since the run was trained (SHA-256 {str(then)[:12]}... recorded, "
        f"{now[:12]}... now)"
    )
    if not accept_changed_data:
        raise ValueError(
            f"{what}: its splits and results would differ; pass --accept-changed-data "
            "(accept_changed_data=True) to use it anyway"
        )
    warnings.warn(f"{what}; using it as asked (accept_changed_data)", stacklevel=2)
