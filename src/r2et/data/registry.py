"""The dataset registry: ``load_dataset(name, ...)`` and ``list_datasets()``.

Loader modules are imported only when a dataset is loaded, so importing :mod:`r2et.data`
reads no file and touches no network.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
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
    name: str,
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
    Raises ``ValueError`` for an unknown name or keyword, ``FileNotFoundError`` for missing
    files that cannot be downloaded.
    """
    loader = get_loader(name)
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
