"""``r2et datasets``: list the datasets."""

from __future__ import annotations

import argparse


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the datasets, one plain line (at most 120 characters) each."""
    from r2et.data.registry import dataset_summary, list_datasets

    names = list_datasets()
    width = max(len(n) for n in names) + 2
    for name in names:
        line = f"{name:{width}s}{dataset_summary(name)}"
        print(line if len(line) <= 120 else line[:119].rstrip() + "…")
    return 0
