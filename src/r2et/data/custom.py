"""Your own data as an r2et :class:`~r2et.data.base.Dataset`: tensors, a ``TensorDataset`` or a
``DataLoader``.

``from_tensors(train, val=None, test=None, ...)`` builds a Dataset from splits given as an
``(x, y)`` pair, a ``torch.utils.data.TensorDataset`` or a ``DataLoader`` yielding ``(x, y)``
batches (read once and concatenated: the data must fit in memory, as every r2et split does).
A missing val split is carved from train (stratified, seeded); a missing test split is empty.
``as_dataset(data)`` returns an r2et Dataset unchanged and converts anything else with
``from_tensors``; :func:`r2et.fit` and :func:`r2et.evaluate` call it, so both accept a
Dataset, an ``(x, y)`` pair, a TensorDataset or a DataLoader.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from r2et.data._prep import carve_val
from r2et.data.base import MODALITIES, Dataset

Split = Any  # (x, y) | TensorDataset | DataLoader


logger = logging.getLogger("r2et")


#: The most rows :func:`from_tensors` reads from one DataLoader (``max_rows``): a loader is read
#: once into memory, so an endless one (e.g. over an infinite ``IterableDataset``) is refused
#: once it passes this many rows instead of running forever.
MAX_LOADER_ROWS = 2_000_000
#: The most bytes of inputs read from one DataLoader, whatever ``max_rows`` says: a loader of
#: wide rows is refused before it fills the memory.
MAX_LOADER_BYTES = 2 << 30


def _read_loader(data: Any, what: str, max_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(x, y)`` batch of a DataLoader, concatenated; sized or not, reading stops with
    ``ValueError`` once more than ``max_rows`` rows came (an endless loader)."""
    xs, ys, rows, first = [], [], 0, None
    for i, batch in enumerate(data, 1):
        if not isinstance(batch, (tuple, list)):
            raise ValueError(
                f"{what}: the DataLoader must yield (x, y) batches, got {type(batch).__name__}"
            )
        if len(batch) != 2:
            raise ValueError(
                f"{what}: the DataLoader yields batches of {len(batch)} items; r2et reads "
                "(x, y) pairs only and would drop the rest (sample weights, indices...): "
                "yield (x, y)"
            )
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        if x.dim() < 1 or y.dim() != 1 or len(x) != len(y):
            raise ValueError(
                f"{what}: batch {i} of the DataLoader has x {tuple(x.shape)} and y "
                f"{tuple(y.shape)}; x must be (N, ...) and y (N,) class labels"
            )
        if first is None:
            first = tuple(x.shape)
        elif tuple(x.shape[1:]) != first[1:]:
            raise ValueError(
                f"{what}: the DataLoader's batches have inputs of different shapes: batch 1 "
                f"is {first} and batch {i} is {tuple(x.shape)}; every input must have one "
                "shape (pad or resize them)"
            )
        rows += len(x)
        held = rows * x[:1].numel() * x.element_size()
        if held > MAX_LOADER_BYTES:
            raise ValueError(
                f"{what}: the DataLoader yielded more than {MAX_LOADER_BYTES / 2**30:g} GiB of "
                f"inputs ({rows:,} rows of {tuple(x.shape[1:])}); r2et reads a loader once into "
                "memory: pass a finite, smaller loader or tensors"
            )
        if rows > max_rows:
            raise ValueError(
                f"{what}: the DataLoader yielded more than max_rows={max_rows:,} rows (an "
                "endless loader?); r2et reads a loader once into memory: pass a finite loader, "
                "tensors, or a larger max_rows to from_tensors"
            )
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"{what}: the DataLoader yielded no batch")
    return torch.cat(xs), torch.cat(ys)


def _tensors(
    data: Split, what: str, max_rows: int = MAX_LOADER_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x float, y int64)`` of one split given as a pair, a TensorDataset or a DataLoader."""
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, TensorDataset):
        pair = data.tensors
        if len(pair) != 2:
            raise ValueError(
                f"{what}: a TensorDataset of {len(pair)} tensors; r2et reads (x, y) only and "
                "would drop the rest: build it of (x, y)"
            )
    elif isinstance(data, DataLoader):
        pair = _read_loader(data, what, max_rows)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        pair = (torch.as_tensor(data[0]), torch.as_tensor(data[1]))
    elif isinstance(data, (tuple, list)):
        raise ValueError(
            f"{what}: a {type(data).__name__} of {len(data)} items; r2et reads an (x, y) pair"
        )
    else:
        raise TypeError(
            f"{what} must be an (x, y) pair, a TensorDataset or a DataLoader, "
            f"got {type(data).__name__}"
        )
    x, y = pair[0], pair[1]
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise ValueError(
            f"{what}: x must be (N, ...) and y (N,) class labels, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what}: y must hold integer class labels, got dtype {y.dtype}")
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what}: x has NaN or infinite values")
    if len(y) and float(y.min()) < 0:
        raise ValueError(f"{what}: class labels must be >= 0, got {y.min().item()}")
    if y.is_floating_point():
        raise ValueError(
            f"{what}: y must hold integer class labels, got dtype {y.dtype}; convert them "
            "with y.long()"
        )
    return x, y.long()


def _feature_names(shape: tuple[int, ...], modality: str) -> list[str]:
    """Images ``(C, H, W)`` rank pixels (``pixel_r_c``, scores summed over channels); other
    data rank every entry of the flattened input (``x0, x1, ...``)."""
    if modality == "image" and len(shape) == 3:
        return [f"pixel_{r}_{c}" for r in range(shape[1]) for c in range(shape[2])]
    return [f"x{i}" for i in range(int(np.prod(shape)))]


def from_tensors(
    train: Split,
    val: Split | None = None,
    test: Split | None = None,
    *,
    name: str = "custom",
    n_classes: int | None = None,
    feature_names: list[str] | None = None,
    modality: str | None = None,
    bounds: tuple[Any, Any] | str | None = None,
    default_k: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    bounds_margin: float = 0.0,
    clip: bool = False,
    max_rows: int = MAX_LOADER_ROWS,
) -> Dataset:
    """An r2et :class:`Dataset` from your own splits.

    Each split is an ``(x, y)`` pair, a ``TensorDataset`` or a ``DataLoader`` of ``(x, y)``
    batches; ``x`` is ``(N, *input_shape)`` (cast to float), ``y`` the ``(N,)`` integer labels.
    Without ``val``, a stratified ``val_fraction`` of train (seeded by ``seed``) becomes the
    validation split that :func:`r2et.fit` selects epochs on; without ``test`` the test split
    is empty. ``n_classes`` defaults to the largest label + 1 (at least 2); ``modality`` to
    ``"image"`` for ``(N, C, H, W)`` inputs and ``"tabular"`` otherwise; ``feature_names`` to
    ``x0, x1, ...`` (tabular) or ``pixel_r_c`` (images: scores sum over channels);
    ``default_k`` to min(8, F − 1) (tabular) or F/20 (images). ``bounds`` (the box attacks
    clip to) is None unless given as ``(low, high)`` (scalars or tensors shaped like one input)
    or as ``"train"``: the per-feature range of the training inputs widened by
    ``bounds_margin`` × that range on each side, ``[min − m·(max − min), max + m·(max − min)]``.
    Such a box can put ordinary val/test inputs outside it, which attacks refuse: ``clip=True``
    clips them into the box (as r2et's own loaders do; the count of clipped rows per split is
    in ``info["rows_clipped_to_bounds"]`` and logged), or create the attacks with
    ``clip_inputs=True``. The default model is ``cnn`` for images of at least 8×8
    pixels, else ``mlp``.

    Refused with one ``ValueError``: labels that are not an integer dtype (convert float labels
    with ``y.long()``), a DataLoader batch or TensorDataset with items beyond ``(x, y)`` (they
    would be dropped), batches whose inputs differ in shape, ``bounds`` whose low end exceeds
    the high end or that are not finite, and a DataLoader that yields more than ``max_rows``
    rows (default :data:`MAX_LOADER_ROWS`): a loader, sized or not, is read once into memory,
    counting rows as it goes, so an endless one stops with an error instead of running
    forever.
    """
    from r2et._checks import check_int

    check_int("max_rows", max_rows, 1)
    x_tr, y_tr = _tensors(train, "train", max_rows)
    if val is None:
        t_idx, v_idx = carve_val(y_tr.numpy(), val_fraction, seed)
        t_idx, v_idx = torch.as_tensor(t_idx), torch.as_tensor(v_idx)
        (x_tr, y_tr), (x_va, y_va) = (x_tr[t_idx], y_tr[t_idx]), (x_tr[v_idx], y_tr[v_idx])
    else:
        x_va, y_va = _tensors(val, "val", max_rows)
    if test is None:
        x_te, y_te = x_tr[:0], y_tr[:0]
    else:
        x_te, y_te = _tensors(test, "test", max_rows)
    shape = tuple(x_tr.shape[1:])
    for what, x in (("val", x_va), ("test", x_te)):
        if len(x) and tuple(x.shape[1:]) != shape:
            raise ValueError(f"{what} inputs are {tuple(x.shape[1:])}, train inputs {shape}")
    top = int(max(int(y.max()) if len(y) else 0 for y in (y_tr, y_va, y_te)))
    if n_classes is None:
        n_classes = max(2, top + 1)
    elif isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    if top >= n_classes:
        raise ValueError(f"label {top} is not below n_classes={n_classes}")
    if modality is None:
        modality = "image" if len(shape) == 3 else "tabular"
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r} is not supported; allowed: {list(MODALITIES)}")
    names = list(feature_names) if feature_names is not None else _feature_names(shape, modality)
    n_feat = len(names)
    if n_feat < 2:
        raise ValueError(f"the data must have at least 2 ranked features, got {n_feat}")
    if default_k is None:
        default_k = max(1, n_feat // 20) if modality == "image" else min(8, n_feat - 1)
    if not 1 <= int(default_k) <= n_feat - 1:
        raise ValueError(f"default_k must lie in 1..{n_feat - 1}, got {default_k}")
    bounds = _resolve_bounds(bounds, x_tr, bounds_margin)
    clipped: dict[str, int] = {}
    if clip:
        if bounds is None:
            raise ValueError("clip=True needs bounds (a pair or 'train')")
        x_va, clipped["val"] = _clip_rows(x_va, bounds)
        x_te, clipped["test"] = _clip_rows(x_te, bounds)
        if any(clipped.values()):
            logger.info("from_tensors: clipped %s rows into the bounds", clipped)
    image_cnn = modality == "image" and min(shape[1:]) >= 8
    model, fit_defaults = {"name": "cnn" if image_cnn else "mlp"}, {}
    if modality == "tabular" and len(shape) == 1:
        from r2et.data.tabular import small_table_defaults

        model, fit_defaults = small_table_defaults(len(x_tr))
    return Dataset(
        name=name,
        modality=modality,
        train=(x_tr, y_tr),
        val=(x_va, y_va),
        test=(x_te, y_te),
        n_classes=n_classes,
        feature_names=names,
        default_k=int(default_k),
        bounds=bounds,
        default_model=model,
        default_fit=fit_defaults,
        info={
            "source": "user tensors",
            "seed": seed,
            "val": "given" if val is not None else f"{val_fraction} of train (stratified)",
            **({"rows_clipped_to_bounds": clipped} if clip else {}),
        },
    )


def _resolve_bounds(bounds: Any, x_tr: torch.Tensor, margin: float) -> tuple[Any, Any] | None:
    """``bounds`` as given, or ``"train"``: the training range widened by ``margin``; checked
    to be a finite, non-empty box (``low <= high``) that fits one input."""
    from r2et._checks import check_bounds_pair, check_number

    check_number("bounds_margin", margin, 0, 1e6)
    if isinstance(bounds, str):
        if bounds != "train":
            raise ValueError(f"bounds={bounds!r} is not supported; allowed: a pair, 'train', None")
        lo, hi = x_tr.min(0).values, x_tr.max(0).values
        width = hi - lo
        bounds = (lo - margin * width, hi + margin * width)
    elif margin:
        raise ValueError("bounds_margin applies to bounds='train' only")
    if bounds is not None:
        check_bounds_pair("bounds", bounds, tuple(x_tr.shape[1:]))
    return bounds


def _clip_rows(x: torch.Tensor, bounds: tuple[Any, Any]) -> tuple[torch.Tensor, int]:
    """``x`` clipped into ``bounds`` and the number of rows that changed."""
    lo, hi = (torch.as_tensor(b, dtype=x.dtype) for b in bounds)
    out = torch.maximum(torch.minimum(x, hi), lo)
    return out, int((out != x).flatten(1).any(1).sum()) if len(x) else 0


def as_dataset(data: Any, role: str = "train", **kwargs: Any) -> Dataset:
    """``data`` if it is an r2et Dataset, else a Dataset made of it by :func:`from_tensors`.

    ``role="train"`` (what :func:`r2et.fit` uses): ``data`` is the training split and a
    stratified part of it the validation split. ``role="evaluate"`` (what
    :func:`r2et.evaluate` uses): ``data`` is every split, so the evaluated split is ``data``
    itself and the default deletion baseline (the mean training input) is its mean.
    ``kwargs`` go to :func:`from_tensors`.
    """
    from torch.utils.data import DataLoader, TensorDataset

    if isinstance(data, Dataset):
        return data
    pair = isinstance(data, (tuple, list))  # not 2 items: _tensors says so
    if not (pair or isinstance(data, (TensorDataset, DataLoader))):
        raise TypeError(
            "ds must be an r2et Dataset, an (x, y) pair, a TensorDataset or a DataLoader, "
            f"got {type(data).__name__}"
        )
    if role == "train":
        return from_tensors(data, **kwargs)
    if role == "evaluate":  # read once (a DataLoader is consumed a single time)
        pair = _tensors(data, "data", kwargs.pop("max_rows", MAX_LOADER_ROWS))
        return from_tensors(pair, val=pair, test=pair, **kwargs)
    raise ValueError(f"role={role!r} is not supported; allowed: ['train', 'evaluate']")
