"""A results store that survives interruption: one atomically written JSON file per cell.

An interrupted run (Ctrl-C, kill, a lost node) loses only the cells in flight; every finished
cell is a complete file, and ``results.csv``/``results.json`` are rebuilt from those files.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from r2et._io import atomic_write_json, atomic_write_text, read_json


def cell_key(cell: dict[str, Any]) -> str:
    """File-system-safe unique name of a grid cell (dataset, method, weight, seed)."""
    weight = (
        "default" if cell.get("weight") is None else f"{cell['weight_name']}={cell['weight']:g}"
    )
    raw = f"{cell['dataset']}__{cell['method']}__{weight}__seed{cell['seed']}"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", raw)


class ResultStore:
    """Folder layout: ``cells/<key>.json`` (one finished cell each), ``results.csv``,
    ``results.json``, ``config.json``, ``pretrain/``, ``models/``, ``plots/``, ``report.md``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def cell_path(self, cell: dict[str, Any]) -> Path:
        return self.cells_dir / f"{cell_key(cell)}.json"

    def is_done(self, cell: dict[str, Any]) -> bool:
        """True when the cell's result file exists and parses."""
        path = self.cell_path(cell)
        if not path.is_file():
            return False
        try:
            read_json(path)
        except ValueError:
            return False
        return True

    def has_results(self) -> bool:
        return self.cells_dir.is_dir() and any(self.cells_dir.glob("*.json"))

    def save_cell(self, cell: dict[str, Any], row: dict[str, Any]) -> None:
        """Record a finished cell atomically."""
        atomic_write_json(self.cell_path(cell), row)

    def rows(self) -> list[dict[str, Any]]:
        """All finished cells, sorted by dataset, method, weight and seed."""
        if not self.cells_dir.is_dir():
            return []
        rows = [read_json(p) for p in sorted(self.cells_dir.glob("*.json"))]
        return sorted(
            rows,
            key=lambda r: (
                str(r["dataset"]),
                str(r["method"]),
                -1e300 if r.get("weight") is None else float(r["weight"]),
                int(r["seed"]),
            ),
        )

    def write_tables(self, columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Rewrite ``results.json`` and ``results.csv`` from the finished cells; returns rows."""
        rows = self.rows()
        atomic_write_json(self.root / "results.json", rows)
        flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
        if columns is None:
            columns = []
            for r in flat:
                columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(flat)
        atomic_write_text(self.root / "results.csv", buf.getvalue())
        return rows
