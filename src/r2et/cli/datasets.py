"""``r2et datasets``: list the datasets."""

from __future__ import annotations

import argparse


def cmd_datasets(args: argparse.Namespace) -> int:
    """List the datasets with a one-line description."""
    from r2et.data.registry import get_loader, list_datasets

    for name in list_datasets():
        doc = (get_loader(name).__doc__ or "").strip().splitlines()
        print(f"{name:14s} {doc[0] if doc else ''}")
    return 0
