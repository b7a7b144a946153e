"""Preprocessing shared by the loaders (internal): stratified splits and tabular encoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from r2et._checks import check_positive


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as float, raising ``ValueError`` unless ``0 < value < 1``."""
    check_positive(name, value)
    if not value < 1:
        raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}")
    return float(value)


def stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices ``0..len(y)-1`` into ``len(fractions) + 1`` stratified parts.

    Part ``j < len(fractions)`` gets ``round(fractions[j] * n_c)`` samples of every class ``c``
    (at least one when the class has more samples than parts), the last part the rest. The
    permutation within each class comes from ``numpy.random.default_rng(seed)``; every part is
    returned in a seeded random order (not sorted), so the first ``n`` rows of a split are a
    random sample of it even when the source file is ordered (Bank's rows run by date).
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_c, start = len(idx), 0
        for j, f in enumerate(fractions):
            m = int(round(f * n_c))
            if m == 0 and n_c > len(fractions):
                m = 1
            parts[j].append(idx[start : start + m])
            start += m
        parts[-1].append(idx[start:])
    return [rng.permutation(np.concatenate(p)) for p in parts]


def three_way_split(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified ``(train, val, test)`` indices: ``val_fraction`` and ``test_fraction`` of
    every class go to val and test, the rest to train."""
    val_fraction = check_fraction("val_fraction", val_fraction)
    test_fraction = check_fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    test, val, train = stratified_split(y, [test_fraction, val_fraction], seed)
    return train, val, test


def carve_val(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, val)`` indices of an official training set."""
    val_fraction = check_fraction("val_fraction", val_fraction)
    val, train = stratified_split(y, [val_fraction], seed)
    return train, val


@dataclass
class TableEncoder:
    """One-hot + standardisation of a table, fitted on the training rows only.

    Numeric columns become ``(v − mean_train) / std_train`` (``std`` of 0 is replaced by 1);
    categorical columns become one indicator column ``"col=value"`` per category of the
    vocabulary (sorted). The vocabulary is the schema (all values the source file can hold),
    not a statistic, so it is taken from all rows; no numeric statistic sees val/test rows.
    """

    numeric: list[str]
    categorical: list[str]
    vocab: dict[str, list[str]]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        train_rows: np.ndarray,
        numeric: Sequence[str],
        categorical: Sequence[str],
    ) -> TableEncoder:
        """Vocabulary from all rows of ``df``; means and stds from ``df.iloc[train_rows]``."""
        vocab = {c: sorted(df[c].astype(str).unique().tolist()) for c in categorical}
        num = df.iloc[train_rows][list(numeric)].to_numpy(dtype=np.float64)
        mean = num.mean(axis=0) if len(numeric) else np.zeros(0)
        std = num.std(axis=0) if len(numeric) else np.zeros(0)
        std = np.where(std > 0, std, 1.0)
        return cls(list(numeric), list(categorical), vocab, mean, std)

    @property
    def feature_names(self) -> list[str]:
        """Numeric column names, then ``"col=value"`` for every category."""
        return self.numeric + [f"{c}={v}" for c in self.categorical for v in self.vocab[c]]

    @property
    def groups(self) -> tuple[list[list[int]], list[str]]:
        """The encoded columns of each attribute (numeric: one column; categorical: its one-hot
        columns) and the attributes' names, in column order."""
        groups: list[list[int]] = [[i] for i in range(len(self.numeric))]
        start = len(self.numeric)
        for c in self.categorical:
            n = len(self.vocab[c])
            groups.append(list(range(start, start + n)))
            start += n
        return groups, self.numeric + self.categorical

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The encoded float32 matrix of ``df`` (vectorised: one ``Categorical`` per column)."""
        blocks = []
        if self.numeric:
            num = df[self.numeric].to_numpy(dtype=np.float64)
            blocks.append((num - self.mean) / self.std)
        for c in self.categorical:
            codes = pd.Categorical(df[c].astype(str), categories=self.vocab[c]).codes
            onehot = np.zeros((len(df), len(self.vocab[c])))
            ok = codes >= 0
            onehot[np.flatnonzero(ok), codes[ok]] = 1.0
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def info(self) -> dict[str, Any]:
        """JSON-ready preprocessing record: columns and train statistics."""
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "train_mean": [float(v) for v in self.mean],
            "train_std": [float(v) for v in self.std],
        }


def to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(float32 tensor, int64 tensor)`` copies of ``x`` and ``y``."""
    return (
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def minmax_bounds(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature ``(min, max)`` over the training inputs, each shaped like one input."""
    return x_train.amin(dim=0), x_train.amax(dim=0)
