"""The contract of a dataset entry: the :class:`Dataset` every loader returns.

A dataset entry is a loader function registered by name
(:func:`r2et.data.registry.register_dataset`, from inside r2et or from a plugin, see
:mod:`r2et.plugins`)::

    loader(root, download, seed, **kw) -> Dataset

* ``root``: a folder to look in first (None: ``$R2ET_DATA``), ``download``: whether a missing
  file may be fetched (from its canonical source, with a SHA-256 check, into the cache), ``seed``:
  the split seed; extra keywords are the loader's own options (``load_dataset(name, **kw)``).
* It returns a :class:`Dataset` whose splits are ``(x float32 (N, *input_shape), y int64 (N,))``
  with labels in ``0..n_classes-1``, one feature name per unit of the explanation, and a
  ``default_model`` spec and ``default_k`` that suit the data. Importing the loader's module
  reads no file and touches no network.

The one test every entry passes (``tests/test_extension.py`` runs it on an entry registered from
outside the package): loaded twice with one seed it gives identical tensors; the three splits
have the declared shapes and labels; its ``default_model`` builds and runs on a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from r2et._kwargs import take_rows

SPLITS = ("train", "val", "test")
MODALITIES = ("tabular", "image", "graph")
#: The attack budget (l_inf eps) of a modality, where a dataset sets none (``Dataset.eps``):
#: standardised tabular columns 0.3, pixels in [0, 1] 0.1, node/edge weights in [0, 1] 0.1.
DEFAULT_EPS = {"tabular": 0.3, "image": 0.1, "graph": 0.1}


#: Public name of :func:`r2et._kwargs.take_rows` (rows ``idx`` of per-sample keywords).
slice_forward_kwargs = take_rows


@dataclass
class Dataset:
    """A dataset split into train/val/test tensors, with what models, explainers and attacks need.

    ``train``, ``val``, ``test`` are ``(x, y)`` pairs (``x`` float32 of shape
    ``(N, *input_shape)``, ``y`` int64 of shape ``(N,)``). ``forward_kwargs[split]`` holds the
    per-sample keyword inputs of the model for that split (graphs: ``adj`` and ``mask``; empty
    for tabular and image data). ``bounds`` is the valid input range for attacks: a pair of
    scalars (images) or of per-feature tensors shaped like one input (tabular), or None.
    ``default_model`` is a model spec (``{"name": ..., **kwargs}``) that suits the data.
    ``groups`` (tabular data) partitions the columns into the table's attributes: a numeric
    attribute is one column, a categorical one is all its one-hot columns; ``group_names`` names
    them. Pass ``groups=ds.groups`` to an :class:`~r2et.Explainer` (or ``get_method``) to rank
    attributes instead of columns. None for images and graphs.
    ``ground_truth`` (synthetic data whose explanation is known, e.g. ``ba-2motifs``) maps each
    split to an ``(N, F)`` boolean mask of the units (nodes, edges) that make the label;
    :func:`~r2et.evaluate` reports ``ground_truth_precision`` against it. None otherwise.
    ``deletion_baseline`` is the value deletion and occlusion put in place of a unit when
    ``evaluate(baseline="auto")``: a number or a tensor shaped like one input (graphs whose
    units are node or edge weights: 0, the unit removed); None means the mean training input.
    ``eps`` is the dataset's attack budget (None: the modality's, see :attr:`default_eps`).
    ``default_fit`` holds :func:`~r2et.fit` defaults that suit the data (``epochs``,
    ``batch_size``), used where the caller gives none; small tables get more, smaller steps.
    ``default_explainer`` is the explanation that suits the data, as :class:`~r2et.Explainer`
    keywords (:meth:`explainer` builds it), and ``default_k`` counts its units: the logit
    gradient over features (``{"method": "grad"}``) by default; for a table with a categorical
    (one-hot) attribute, gradient × input ranked per attribute (``{"method": "grad_x_input",
    "groups": groups}``, see ``docs/faithfulness.md``). Training, attacks, evaluation and
    ``r2et explain`` use it unless told otherwise. ``default_params`` maps a training method's
    name to hyperparameters that suit the data (one-hot tables: ``{"r2et": {"lam": 0.3}}``),
    used by :func:`~r2et.fit` with a method name, ``r2et train`` and the bench wherever the
    caller sets none.
    """

    name: str
    modality: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    n_classes: int
    feature_names: list[str]
    default_k: int
    forward_kwargs: dict[str, dict[str, torch.Tensor]] = field(
        default_factory=lambda: {s: {} for s in SPLITS}
    )
    bounds: tuple[Any, Any] | None = None
    default_model: dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    info: dict[str, Any] = field(default_factory=dict)
    groups: list[list[int]] | None = None
    group_names: list[str] | None = None
    ground_truth: dict[str, torch.Tensor] | None = None
    deletion_baseline: float | torch.Tensor | None = None
    default_fit: dict[str, Any] = field(default_factory=dict)
    eps: float | None = None
    default_explainer: dict[str, Any] = field(default_factory=lambda: {"method": "grad"})
    default_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bounds is not None:  # an empty or non-finite box is refused where it is set
            from r2et._checks import check_bounds_pair

            check_bounds_pair("bounds", self.bounds, tuple(self.train[0].shape[1:]))

    @property
    def default_eps(self) -> float:
        """The attack budget that suits the data: ``eps`` when the dataset sets one, else the
        modality's :data:`DEFAULT_EPS` (what ``r2et evaluate`` and ``r2et bench`` use unless
        told otherwise)."""
        return float(self.eps) if self.eps is not None else DEFAULT_EPS[self.modality]

    def explainer(self, output: str = "logit", **overrides: Any) -> Any:
        """The :class:`~r2et.Explainer` of :attr:`default_explainer` explaining ``output``
        (``"logit"``, ``"prob"``, ``"loss"``); ``overrides`` replace its keywords, e.g.
        ``method="grad"`` or ``groups=None`` (rank single columns)."""
        from r2et.explain import Explainer

        return Explainer(**{**self.default_explainer, "output": output, **overrides})

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.train[0].shape[1:])

    @property
    def train_mean(self) -> torch.Tensor:
        """The mean training input, shaped like one input: the default baseline that
        deletion and occlusion put in place of a feature."""
        return self.train[0].mean(0)

    @property
    def n_features(self) -> int:
        """Number of ranked features F (columns, pixels or nodes)."""
        return len(self.feature_names)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(x, y, forward_kwargs)`` of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is not supported; allowed: {list(SPLITS)}")
        x, y = getattr(self, name)
        return x, y, self.forward_kwargs.get(name, {})

    def subset(
        self, name: str, n: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """The first ``n`` rows (all when None) of split ``name`` with their forward kwargs."""
        x, y, kw = self.split(name)
        if n is None or n >= len(x):
            return x, y, kw
        return x[:n], y[:n], take_rows(kw, slice(0, n), len(x))

    def ground_truth_of(self, name: str, n: int | None = None) -> torch.Tensor | None:
        """The ``(n, F)`` ground-truth mask of the first ``n`` rows (all when None) of split
        ``name``, aligned with :meth:`subset`; None when the dataset has no ground truth."""
        self.split(name)  # validates the name
        if self.ground_truth is None or name not in self.ground_truth:
            return None
        truth = self.ground_truth[name]
        return truth if n is None else truth[:n]

    def batches(
        self,
        name: str,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        """Mini-batches ``(x, y, forward_kwargs)`` of split ``name``; shuffled with
        ``generator`` when ``shuffle``."""
        x, y, kw = self.split(name)
        n = len(x)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size].to(x.device)
            yield x[idx], y[idx], take_rows(kw, idx, n)

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""

        def mv(v: Any) -> Any:
            return v.to(device) if isinstance(v, torch.Tensor) else v

        return replace(
            self,
            train=tuple(mv(t) for t in self.train),
            val=tuple(mv(t) for t in self.val),
            test=tuple(mv(t) for t in self.test),
            forward_kwargs={
                s: {k: mv(v) for k, v in kw.items()} for s, kw in self.forward_kwargs.items()
            },
            bounds=None if self.bounds is None else tuple(mv(b) for b in self.bounds),
            ground_truth=None
            if self.ground_truth is None
            else {s: mv(v) for s, v in self.ground_truth.items()},
            deletion_baseline=mv(self.deletion_baseline),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: name, modality, sizes, shape, classes, k."""
        return {
            "name": self.name,
            "modality": self.modality,
            "n_train": len(self.train[0]),
            "n_val": len(self.val[0]),
            "n_test": len(self.test[0]),
            "input_shape": list(self.input_shape),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "default_k": self.default_k,
            **({"n_groups": len(self.groups)} if self.groups is not None else {}),
            **self.info,
        }
