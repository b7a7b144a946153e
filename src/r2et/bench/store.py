"""A results store that survives interruption and trusts nothing it did not write.

Every finished cell is committed by one atomic write of ``cells/<key>.json`` (its fine-tuned
model, when kept, is written before it as one atomically renamed folder ``models/<key>/``), so
an interrupted run (Ctrl-C, kill, a lost node) loses only the cells in flight. A cell file
counts only when it is valid: a JSON object whose cell fields (dataset, method, weight, seed,
key) are those of the cell its name says, whose ``config_sha256`` is the digest of the run's
result-relevant configuration, whose headline metrics are numbers in [0, 1], and whose model
folder (when models are kept) holds the weights it names, and whose ``cell_sha256`` is the
SHA-256 of its own content (:func:`cell_content_digest`: every other field, as canonical JSON).
Anything else in ``cells/`` (a stray, empty or edited file, a file of another configuration) is
ignored: it is recomputed when it is a cell of the grid, and never enters
``results.csv``/``results.json``.

Cell files written by r2et versions before content digests carry no ``cell_sha256``: they count
(when otherwise valid) until the folder is next resumed, which adds their digest and then marks
the folder (:data:`DIGEST_MARKER`); in a marked folder a cell file without a digest is an edited
one.
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

from r2et._io import atomic_write_json, atomic_write_text, json_text, read_json

#: Result columns every valid cell file holds, each a number in [0, 1].
REQUIRED_METRICS = ("accuracy", "val_accuracy", "ensemble_p_at_k_mean")
_CELL_FIELDS = ("dataset", "method", "weight_name", "weight", "seed")
#: The field of a cell file holding the digest of its own content.
CELL_DIGEST_FIELD = "cell_sha256"
#: A file in the store's folder saying that every cell file in it carries a content digest
#: (written once the cells of earlier versions have theirs); a cell without one is refused.
DIGEST_MARKER = "cells.digested"


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


def cell_content_digest(row: dict[str, Any]) -> str | None:
    """SHA-256 of a cell file's content: every field but :data:`CELL_DIGEST_FIELD`, as JSON with
    sorted keys, no whitespace and ASCII escapes, so that the digest does not depend on the
    file's layout or key order, only on its values. None for a row that is not valid JSON data
    (a NaN or infinity typed into the file)."""
    body = {k: v for k, v in row.items() if k != CELL_DIGEST_FIELD}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _is_unit_number(v: Any) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok and math.isfinite(v) and 0.0 <= v <= 1.0


class ResultStore:
    """Folder layout: ``cells/<key>.json`` (one finished cell each), ``results.csv``,
    ``results.json``, ``config.json``, ``pretrain/``, ``models/``, ``plots/``, ``report.md``.

    ``digest`` (see :func:`config_digest`) is the configuration tag every valid cell file must
    carry as ``config_sha256`` (or one of ``also_accept``: the same configuration's digest under
    an earlier digest rule); with ``models=True`` a cell is finished only when
    ``models/<key>/config.json`` records the weights digest the cell file names. Every cell file
    is checked against its own content digest (``cell_sha256``, see :meth:`problem`).
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
        why = self._digest_problem(row)
        if why is not None:
            return why
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

    def digests_required(self) -> bool:
        """True when the folder is marked (:data:`DIGEST_MARKER`): every cell file in it must
        carry its content digest."""
        return (self.root / DIGEST_MARKER).exists()

    def _digest_problem(self, row: dict[str, Any]) -> str | None:
        """Why a cell file's content digest does not vouch for it (None: it does, or it is a
        file of an earlier version in an unmarked folder)."""
        if CELL_DIGEST_FIELD not in row:
            if self.digests_required():
                return (
                    f"it has no content digest ({CELL_DIGEST_FIELD}), which every cell file of "
                    "this folder carries: it was edited"
                )
            return None  # written before content digests: accepted until re-tagged
        if row[CELL_DIGEST_FIELD] != cell_content_digest(row):
            return (
                f"its content does not match its digest ({CELL_DIGEST_FIELD}): it was edited "
                "after it was written"
            )
        return None

    def retag(self, cells: list[dict[str, Any]] | None = None) -> int:
        """Bring the folder's valid cell files of ``cells`` (None: every cell file whose own
        fields name it) up to date, one atomic write each: tag those of an accepted earlier
        configuration digest (``also_accept``) with :attr:`digest`, and give those written
        before content digests their ``cell_sha256``; then mark the folder
        (:data:`DIGEST_MARKER`), so that from now on a cell file without a digest is refused.
        The folder keeps its finished cells. Returns how many files were rewritten; a store
        without a :attr:`digest` (a reader) writes nothing."""
        n = 0
        if self.digest is None:
            return n
        everything = cells is None
        for cell in self._named_cells() if cells is None else cells:
            path = self.cell_path(cell)
            if self.problem(cell) is not None:
                continue
            row = read_json(path)
            tagged = row.get("config_sha256") == self.digest
            if tagged and CELL_DIGEST_FIELD in row:
                continue
            row = {k: v for k, v in row.items() if k != CELL_DIGEST_FIELD}
            row["config_sha256"] = self.digest
            row[CELL_DIGEST_FIELD] = cell_content_digest(row)
            atomic_write_json(path, row)
            n += 1
        if everything and not self.digests_required():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                self.root / DIGEST_MARKER,
                "every cells/*.json file of this folder carries the SHA-256 of its content "
                f"({CELL_DIGEST_FIELD})\n",
            )
        return n

    def is_done(self, cell: dict[str, Any]) -> bool:
        """True when the cell's result file exists and is valid (see :meth:`problem`)."""
        return self.problem(cell) is None

    def has_results(self) -> bool:
        return self.cells_dir.is_dir() and any(self.cells_dir.glob("*.json"))

    def save_cell(self, cell: dict[str, Any], row: dict[str, Any]) -> None:
        """Commit a finished cell: one atomic write, tagged with the configuration digest and
        carrying the digest of its own content (:func:`cell_content_digest`, computed on the
        row as JSON gives it back, so that reading the file reproduces it)."""
        row = {k: v for k, v in row.items() if k != CELL_DIGEST_FIELD}
        row["key"] = cell_key(cell)
        if self.digest is not None:
            row["config_sha256"] = self.digest
        row = json.loads(json_text(row))
        row[CELL_DIGEST_FIELD] = cell_content_digest(row)
        atomic_write_json(self.cell_path(cell), row)

    def _named_cells(self) -> list[dict[str, Any]]:
        """The cells of every file in ``cells/`` whose own fields name it (its file name is
        that cell's)."""
        cells: list[dict[str, Any]] = []
        if not self.cells_dir.is_dir():
            return cells
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
        return cells

    def rows(self, cells: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The valid finished cells among ``cells`` (None: every cell file whose own fields
        name it), sorted by dataset, method, weight and seed."""
        if not self.cells_dir.is_dir():
            return []
        if cells is None:
            cells = self._named_cells()
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
