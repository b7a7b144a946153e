"""Datasets: a registry of loaders returning :class:`~r2et.data.base.Dataset` objects.

``load_dataset(name, root=None, download=True, seed=0, **kw)``, ``list_datasets()`` and
``load_run_dataset(run)`` (a run's data, reloaded and checked against its recorded digest); see
:mod:`r2et.data.download` for where files are looked up and how they are verified. Importing
this package reads no file and touches no network.
"""

from r2et.data.base import Dataset, slice_forward_kwargs
from r2et.data.custom import as_dataset, from_tensors
from r2et.data.registry import list_datasets, load_dataset, load_run_dataset

__all__ = [
    "Dataset",
    "as_dataset",
    "from_tensors",
    "list_datasets",
    "load_dataset",
    "load_run_dataset",
    "slice_forward_kwargs",
]
