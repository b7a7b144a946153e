"""A results store that survives interruption and trusts nothing it did not write.

Every finished cell is committed by one atomic write of ``cells/<key>.json`` (its fine-tuned
model, when kept, is written before it as one atomically renamed folder ``models/<key>/``), so
an interrupted run (Ctrl-C, kill, a lost node) loses only the cells in flight. A cell file
counts only when it is valid: a JSON object whose cell fields (dataset, method, weight, seed,
key) are those of the cell its name says, whose ``config_sha256`` is the digest of the run's
result-relevant configuration, whose headline metrics are numbers in [0, 1], and whose model
folder (when models are kept) holds the weights it names. Anything else in ``cells/`` (a stray,
empty or edited file, a file of another configuration) is ignored: it is recomputed when it is
a cell of the grid, and never enters ``results.csv``/``results.json``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from r2et._io import atomic_write_json, atomic_write_text, read_json

#: Result columns every valid cell file holds, each a number in [0, 1].
REQUIRED_METRICS = ("accuracy", "val_accuracy", "ensemble_p_at_k_mean")
_CELL_FIELDS = ("dataset", "method", "weight_name", "weight", "seed")


def cell_key(cell: dict[str, Any]) -> str:
    """File-system-safe unique name of a grid cell (dataset, method, weight, seed)."""
    weight = (
        "default" if cell.get("weight") is None else f"{cell['weight_name']}={cell['weight']:g}"
    )
    raw = f"{cell['dataset']}__{cell['method']}__{weight}__seed{cell['seed']}"
    return re.sub(r"[^A-Za-z0-9._=-]", "_", raw)


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of a JSON-ready configuration (keys sorted): the tag that ties a cell file or a
    pre-trained model to the configuration that produced it."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_unit_number(v: Any) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok and math.isfinite(v) and 0.0 <= v <= 1.0


class ResultStore:
    """Folder layout: ``cells/<key>.json`` (one finished cell each), ``results.csv``,
    ``results.json``, ``config.json``, ``pretrain/``, ``models/``, ``plots/``, ``report.md``.

    ``digest`` (see :func:`config_digest`) is the configuration tag every valid cell file must
    carry as ``config_sha256`` (or one of ``also_accept``: the same configuration's digest under
    an earlier digest rule); with ``models=True`` a cell is finished only when
    ``models/<key>/config.json`` records the weights digest the cell file names.
    """

    def __init__(
        self,
        root: str | Path,
        digest: str | None = None,
        models: bool = False,
        also_accept: tuple[str, ...] = (),
    ) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.models_dir = self.root / "models"
        self.digest = digest
        self.models = models
        # digests of the same configuration under earlier versions' digest rule
        self.accepted = {digest, *also_accept}

    def cell_path(self, cell: dict[str, Any]) -> Path:
        return self.cells_dir / f"{cell_key(cell)}.json"

    def problem(self, cell: dict[str, Any]) -> str | None:
        """Why the cell's file does not count as finished (None: it does)."""
        path = self.cell_path(cell)
        if not path.is_file():
            return "no result file"
        try:
            row = read_json(path)
        except (ValueError, OSError) as err:
            return f"unreadable ({err})"
        if not isinstance(row, dict):
            return "not a JSON object"
        if row.get("key") != cell_key(cell):
            return f"its key {row.get('key')!r} is not {cell_key(cell)!r}"
        for field in _CELL_FIELDS:
            if row.get(field) != cell.get(field):
                return f"its {field} {row.get(field)!r} is not {cell.get(field)!r}"
        if self.digest is not None and row.get("config_sha256") not in self.accepted:
            return "it was computed under another configuration"
        for col in REQUIRED_METRICS:
            if not _is_unit_number(row.get(col)):
                return f"its {col} {row.get(col)!r} is not a number in [0, 1]"
        if self.models:
            cfg_path = self.models_dir / cell_key(cell) / "config.json"
            try:
                model_cfg = read_json(cfg_path)
            except (ValueError, OSError):
                return "its model folder is missing or unreadable"
            sha = model_cfg.get("weights_sha256") if isinstance(model_cfg, dict) else None
            if sha is None or sha != row.get("model_sha256"):
                return "its model folder holds other weights"
        return None

    def retag(self, cells: list[dict[str, Any]]) -> int:
        """Rewrite each valid cell file of ``cells`` tagged with an accepted earlier digest
        (``also_accept``) with :attr:`digest`, one atomic write each, so that the folder keeps
        its finished cells after the configuration file is updated. Returns how many."""
        n = 0
        if self.digest is None or self.accepted == {self.digest}:
            return n  # nothing earlier is accepted: nothing to re-tag
        for cell in cells:
            path = self.cell_path(cell)
            if self.problem(cell) is not None:
                continue
            row = read_json(path)
            if row.get("config_sha256") != self.digest:
                atomic_write_json(path, {**row, "config_sha256": self.digest})
                n += 1
        return n

    def is_done(self, cell: dict[str, Any]) -> bool:
        """True when the cell's result file exists and is valid (see :meth:`problem`)."""
        return self.problem(cell) is None

    def has_results(self) -> bool:
        return self.cells_dir.is_dir() and any(self.cells_dir.glob("*.json"))

    def save_cell(self, cell: dict[str, Any], row: dict[str, Any]) -> None:
        """Commit a finished cell: one atomic write, tagged with the configuration digest."""
        row = {**row, "key": cell_key(cell)}
        if self.digest is not None:
            row["config_sha256"] = self.digest
        atomic_write_json(self.cell_path(cell), row)

    def rows(self, cells: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The valid finished cells among ``cells`` (None: every cell file whose own fields
        name it), sorted by dataset, method, weight and seed."""
        if not self.cells_dir.is_dir():
            return []
        if cells is None:
            cells = []
            for p in sorted(self.cells_dir.glob("*.json")):
                try:
                    row = read_json(p)
                except (ValueError, OSError):
                    continue
                if isinstance(row, dict) and all(f in row for f in _CELL_FIELDS):
                    cell = {f: row[f] for f in _CELL_FIELDS}
                    try:
                        if self.cell_path(cell) == p:
                            cells.append(cell)
                    except (KeyError, TypeError, ValueError):
                        continue
        rows = [read_json(self.cell_path(c)) for c in cells if self.is_done(c)]
        return sorted(
            rows,
            key=lambda r: (
                str(r["dataset"]),
                str(r["method"]),
                -1e300 if r.get("weight") is None else float(r["weight"]),
                int(r["seed"]),
            ),
        )

    def ignored_files(self, cells: list[dict[str, Any]]) -> list[Path]:
        """Files in ``cells/`` that are not a valid result of one of ``cells``."""
        if not self.cells_dir.is_dir():
            return []
        valid = {self.cell_path(c) for c in cells if self.is_done(c)}
        return [p for p in sorted(self.cells_dir.iterdir()) if p not in valid]

    def write_tables(
        self, columns: list[str] | None = None, cells: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Rewrite ``results.json`` and ``results.csv`` from the valid finished cells (of
        ``cells`` when given); returns the rows."""
        rows = self.rows(cells)
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
