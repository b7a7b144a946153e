"""Datasets: a registry of loaders returning :class:`~r2et.data.base.Dataset` objects."""

from r2et.data.base import Dataset, slice_forward_kwargs

__all__ = ["Dataset", "slice_forward_kwargs"]
