"""``r2et methods``: list the training methods."""

from __future__ import annotations

import argparse


def cmd_methods(args: argparse.Namespace) -> int:
    """List the training methods with their main weight and a one-line description."""
    from r2et.methods import TrainingMethod, list_methods, method_row

    for name in list_methods():
        row = method_row(name)
        doc = row.summary or (TrainingMethod.__doc__ or "").strip().splitlines()[0]
        print(f"{name:12s} weight={row.weight_name or '-':13s} {doc}")
    return 0
