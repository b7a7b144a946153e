"""The benchmark grid: pre-train once per dataset and seed, fine-tune and evaluate every cell.

A *cell* is one (dataset, method, weight, seed). Per dataset and seed a vanilla model is
pre-trained once (``pretrain/``) and every cell fine-tunes a copy of it with its method, then
evaluates accuracy, P@k under the configured attacks (``[evaluate] attacks``, by default the
ensemble attack and the paper's ERAttack and MSEAttack), top-k rank correlations, thickness,
faithfulness, locality and cost (the tasks: :mod:`r2et.bench.cells`). Cells are independent
tasks: the ``local`` executor runs them in this process, the ``process`` executor in
``workers`` processes of this machine (several cells side by side on many cores or one GPU),
the ``ray`` executor as Ray tasks (one GPU each when the cluster has GPUs; the executors:
:mod:`r2et.bench.executors`); either way each finished cell is written atomically, by this
process alone, to the :class:`~r2et.bench.store.ResultStore` as it arrives.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r2et._io import (
    FolderLock,
    atomic_folder,
    atomic_write_json,
    read_json,
    remove_stale_temps,
)
from r2et.bench.cells import (  # noqa: F401 - the tasks, importable from here as before
    cell_task,
    evaluate_cell,
    explainer_rule,
    flatten_metrics,
    method_params,
    pretrain_task,
    ranked_units,
)
from r2et.bench.config import (  # noqa: F401 - BENCH_ATTACKS: importable from here as before
    BENCH_ATTACKS,
    SELECTION_KEYS,
    BenchConfig,
    dataset_settings,
    load_bench_dataset,
)
from r2et.bench.executors import (  # noqa: F401 - importable from here as before
    EXECUTORS,
    PARENT_CHECK_SECONDS,
    WORKER_EXECUTORS,
    Job,
    OnResult,
    execute,
)
from r2et.bench.store import ResultStore, cell_key, config_digest


# ---------------------------------------------------------------------------- grid
def grid_cells(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Every (dataset, method, weight, seed) cell of the configuration, in run order."""
    from r2et.methods import method_row

    cells = []
    for dataset in cfg.datasets:
        for seed in cfg.seeds:
            for method in cfg.methods:
                weight_name = method_row(method).weight_name
                values = cfg.grid.get(method) or [None]
                if weight_name is None:
                    values = [None]
                for value in values:
                    cells.append(
                        {
                            "dataset": dataset,
                            "method": method,
                            "weight_name": weight_name if value is not None else None,
                            "weight": None if value is None else float(value),
                            "seed": int(seed),
                        }
                    )
    return cells


# ---------------------------------------------------------------------------- driver
_NOT_RESULTS = ("device", "threads", "save_models")
#: Which cells the grid has, not what any one cell computes: a grid grown by a method, weight,
#: seed or dataset resumes with its finished cells.
GRID_KEYS = ("datasets", "methods", "seeds", "grid")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that change a cell's results: not where or how fast they are computed, not
    which cells the grid holds, nor the selection rule (applied to stored cells when the report
    is written). ``evaluate.attacks`` equal to the default (:data:`BENCH_ATTACKS`) is left out:
    it computes what a configuration without the key computes, and has the same digest.
    ``evaluate.explainer`` and ``evaluate.groups`` left out enter as ``"auto"`` (the dataset's
    explanation), which earlier versions did not have: their cells ranked gradient columns."""
    out = {k: v for k, v in cfg.items() if k not in _NOT_RESULTS + SELECTION_KEYS + GRID_KEYS}
    ev = out.get("evaluate")
    if isinstance(ev, dict):
        ev = {"explainer": "auto", "groups": "auto", **ev}
        if ev.get("attacks") == list(BENCH_ATTACKS):
            ev = {k: v for k, v in ev.items() if k != "attacks"}
        out["evaluate"] = ev
    return out


def _legacy_digests(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The digest earlier r2et versions gave configuration ``cfg`` (everything but device,
    threads and models, and but the selection settings they did not have,
    ``min_distinct_ratio`` and ``require_faithful``): the cells and pre-trained models they
    wrote for it stay valid. The left-out keys only select among stored cells, whatever their
    value. A configuration that leaves ``evaluate.explainer`` or ``evaluate.groups`` out has
    none: earlier versions ranked gradient columns for it, now it ranks the dataset's own
    explanation."""
    ev = cfg.get("evaluate")
    if isinstance(ev, dict) and not {"explainer", "groups"} <= set(ev):
        return ()
    newer = ("min_distinct_ratio", "require_faithful")
    old = {k: v for k, v in cfg.items() if k not in _NOT_RESULTS + newer}
    return (config_digest(old),)


def check_out(out: str | Path) -> Path:
    """``out`` as a ``Path`` if it can hold a benchmark (a new or existing folder); else
    ``ValueError`` (an empty name, a file, a path through a file)."""
    if not str(out).strip():
        raise ValueError("--out must name a folder, got an empty string")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the benchmark")
    parent = next((a for a in out.absolute().parents if a.exists()), None)
    if not out.exists() and parent is not None and not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, not a folder")
    return out


def check_grid(cfg: BenchConfig) -> None:
    """Everything about ``cfg`` that needs the data, checked before anything is trained: each
    dataset loads; ``k`` lies in 1..F-1 for its F ranked units; the model spec builds (on the
    ``meta`` device, nothing allocated) within :data:`~r2et._checks.MAX_PARAMETERS`; every
    cell's method accepts its hyperparameters and weight. Raises ``ValueError``."""
    from r2et._checks import check_k
    from r2et.explain import Explainer
    from r2et.methods import get_method
    from r2et.models import count_model_parameters

    for name in cfg.datasets:
        ds = load_bench_dataset(name, int(cfg.seeds[0]), cfg)
        k, _, opts = dataset_settings(cfg, ds)
        ev = {**cfg.evaluate, **opts.get("evaluate", {})}
        try:
            units = ranked_units(ds, ev)
        except ValueError as err:
            raise ValueError(f"dataset {name!r}: {err}") from None
        ex = Explainer(explainer_rule(ds, ev), groups=units)
        n_units = int(ex.unit_index(tuple(ds.input_shape)).max()) + 1
        try:
            check_k(k, n_units)
        except ValueError as err:
            raise ValueError(f"dataset {name!r}: {err}") from None
        spec = dict(opts.get("model", ds.default_model))
        spec.update(input_shape=list(ds.input_shape), n_classes=ds.n_classes)
        count_model_parameters(spec, where=f"the model of dataset {name!r}")
        for cell in grid_cells(cfg):
            if cell["dataset"] != name:
                continue
            try:
                get_method(cell["method"], k=k, **method_params(cell, opts, ev, ds))
            except (TypeError, ValueError) as err:
                raise ValueError(f"dataset {name!r}, method {cell['method']!r}: {err}") from None


def _pretrain_folder(out: Path, dataset: str, seed: int) -> Path:
    return out / "pretrain" / f"{dataset}__seed{seed}"


def _retag_pretrained(folder: Path, digest: str, legacy: set[str]) -> None:
    """Tag a pre-trained model written under an earlier digest rule with ``digest`` (one atomic
    rewrite of its ``config.json``; the weights are untouched)."""
    path = folder / "config.json"
    if not legacy or not path.is_file():
        return
    try:
        meta = read_json(path)
    except (ValueError, OSError):
        return
    if isinstance(meta, dict) and meta.get("config_sha256") in legacy:
        atomic_write_json(path, {**meta, "config_sha256": digest})


def _load_pretrained(folder: Path, accepted: set[str | None]) -> dict[str, Any] | None:
    """A committed pre-training unit as model bytes, or None (with a warning) when it is
    invalid: unreadable, weights not matching their digest, another configuration."""
    from r2et.runs import load_run, model_bytes

    try:
        run = load_run(folder)
    except (ValueError, OSError) as err:
        warnings.warn(
            f"pre-trained model {folder} is invalid ({err}); training it again", stacklevel=3
        )
        return None
    if run.config.get("config_sha256") not in accepted or "val_accuracy" not in run.metrics:
        warnings.warn(
            f"pre-trained model {folder} belongs to another configuration; training it again",
            stacklevel=3,
        )
        return None
    blob = model_bytes(run.model)
    blob["val_accuracy"] = run.metrics["val_accuracy"]
    return blob


def _warn_recomputed(store: ResultStore, todo: list[dict[str, Any]]) -> None:
    """One warning naming the cells of ``todo`` that have a stored file which is not a valid
    result (edited after it was written, another configuration, unreadable): they are
    computed again."""
    stale = [(c, store.problem(c)) for c in todo if store.cell_path(c).exists()]
    if not stale:
        return
    shown = "; ".join(f"{cell_key(c)} ({why})" for c, why in stale[:5])
    more = f"; and {len(stale) - 5} more" if len(stale) > 5 else ""
    warnings.warn(
        f"computing {len(stale)} cell(s) again whose stored file in {store.cells_dir} is not a "
        f"valid result: {shown}{more}",
        stacklevel=3,
    )


def run_bench(
    cfg: BenchConfig,
    out: str | Path,
    *,
    executor: str = "local",
    resume: bool = False,
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    report: bool = True,
    cells: Iterable[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark ``cfg`` into folder ``out``; returns the result rows.

    Writes ``config.json`` (resolved configuration), ``pretrain/`` (one vanilla checkpoint per
    dataset and seed), ``cells/`` (one JSON per finished cell), ``models/`` (fine-tuned
    checkpoints), ``results.csv``, ``results.json``, and with ``report`` ``report.md`` and
    ``plots/*.png``. ``resume=True`` skips finished cells and reuses pre-trained models; a
    folder that already holds results is refused without it, and a resumed run must have the
    same result-relevant configuration.

    ``executor`` runs the pre-training runs and the cells (:data:`EXECUTORS`): ``"local"`` one
    after another in this process, ``"process"`` in ``workers`` spawned processes of this
    machine (default 1; give each ``cfg.threads`` torch threads so that ``workers * threads``
    fits the cores, or share one GPU; the workers die with this process), ``"ray"`` on the Ray
    cluster at ``address`` (at most ``workers`` tasks at once when given). ``workers`` with the
    ``"local"`` executor is refused (``ValueError``).

    Everything is validated before any work starts (:meth:`BenchConfig.validate`,
    :func:`check_out`, :func:`check_grid`). The run holds an exclusive lock on ``out``
    (:class:`~r2et._io.FolderLock`; a second run on the same folder raises
    :class:`~r2et._io.FolderLockedError`), first deletes the temporaries a killed run left,
    and commits each pre-training run and each cell as one unit (written into a temporary
    folder or file, then renamed), so a kill at any instant leaves either nothing or a whole
    unit, and ``resume=True`` finishes the grid. Cell files and pre-trained models are
    validated against the cell and the configuration (:class:`ResultStore`); invalid ones are
    computed again.
    """
    if executor not in EXECUTORS.names():
        raise ValueError(f"executor={executor!r} is not supported; allowed: {list(EXECUTORS)}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if workers is not None and executor not in WORKER_EXECUTORS:
        raise ValueError(
            f"workers={workers} needs executor 'process' or 'ray'; the {executor!r} executor "
            "runs one cell at a time in this process"
        )
    if not isinstance(cfg, BenchConfig):
        raise ValueError(f"cfg must be a BenchConfig, got {type(cfg).__name__}")
    cfg.validate()
    out = check_out(out)
    all_cells = grid_cells(cfg)
    chosen = all_cells if cells is None else list(cells)
    unknown = [c for c in chosen if c not in all_cells]
    if unknown:
        raise ValueError(f"cells must be cells of the grid; {cell_key(unknown[0])} is not")
    check_grid(cfg)
    config = cfg.to_dict()
    digest = config_digest(_comparable(config))
    with FolderLock(out):
        for sub in ("cells", "pretrain", "models", "errors", "plots"):
            remove_stale_temps(out / sub)
        remove_stale_temps(out, recursive=False)
        legacy: set[str] = set()  # the folder's own digest under the earlier rule
        cfg_path = out / "config.json"
        if ResultStore(out).has_results() or cfg_path.exists():
            if not resume:
                raise ValueError(
                    f"{out} already holds a benchmark; pass --resume to continue it or choose "
                    "another --out"
                )
            if cfg_path.exists():
                old = read_json(cfg_path)
                if not isinstance(old, dict):
                    raise ValueError(f"{cfg_path} is not a benchmark configuration")
                before, now = _comparable(old), _comparable(config)
                diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                if diff:
                    raise ValueError(
                        f"cannot resume {out}: its configuration differs in {diff}; "
                        "use the same settings or another --out"
                    )
                legacy = set(_legacy_digests(old))
        store = ResultStore(out, digest, models=cfg.save_models, also_accept=tuple(legacy))
        store.retag()  # earlier versions' cells: this digest, their content digest
        for ds_name, seed in sorted({(c["dataset"], c["seed"]) for c in all_cells}):
            _retag_pretrained(_pretrain_folder(out, ds_name, seed), digest, legacy)
        atomic_write_json(cfg_path, config)
        ignored = store.ignored_files(all_cells)
        todo = [c for c in chosen if not store.is_done(c)]
        ignored = [p for p in ignored if p.stem not in {cell_key(c) for c in todo}]
        _warn_recomputed(store, todo)
        if ignored:
            warnings.warn(
                f"ignoring {len(ignored)} file(s) in {store.cells_dir} that are not valid cells "
                f"of this benchmark: {', '.join(p.name for p in ignored[:5])}",
                stacklevel=2,
            )
        options = {"address": address, "workers": workers}
        _run_grid(cfg, config, digest, out, store, todo, executor, options, progress)
        rows = store.write_tables(cells=all_cells)
        if report:
            from r2et.bench.panels import compute_saliency_panels

            remove_stale_temps(out / "panels")
            compute_saliency_panels(out, rows, cfg, digest)
            from r2et.bench.report import write_report

            write_report(out, rows, cfg)
    return rows


def _run_grid(
    cfg: BenchConfig,
    config: dict[str, Any],
    digest: str,
    out: Path,
    store: ResultStore,
    todo: list[dict[str, Any]],
    executor: str,
    options: dict[str, Any],
    progress: bool,
) -> None:
    """Pre-train what ``todo`` needs, then fine-tune and evaluate every cell of ``todo``,
    committing each unit as it arrives."""
    from r2et.runs import model_from_bytes, save_run

    # 1. pre-train (dataset, seed) pairs that still have cells to run
    pretrained: dict[tuple[str, int], dict[str, Any]] = {}
    missing = []
    for ds_name, seed in sorted({(c["dataset"], c["seed"]) for c in todo}):
        folder = _pretrain_folder(out, ds_name, seed)
        blob = _load_pretrained(folder, store.accepted) if folder.exists() else None
        if blob is None:
            missing.append((ds_name, seed))
        else:
            pretrained[(ds_name, seed)] = blob

    def save_pretrained(i: int, result: dict[str, Any]) -> None:
        ds_name, seed = missing[i]
        with atomic_folder(_pretrain_folder(out, ds_name, seed)) as tmp:
            save_run(
                tmp,
                model_from_bytes(result),
                {
                    "dataset": ds_name,
                    "seed": seed,
                    "method": "vanilla",
                    "stage": "pretrain",
                    "settings": config["pretrain"],
                    "config_sha256": digest,
                },
                {"val_accuracy": result["val_accuracy"], "seconds": result["seconds"]},
            )
        pretrained[(ds_name, seed)] = result

    execute(
        executor,
        pretrain_task,
        [(d, s, config) for d, s in missing],
        save_pretrained,
        "pre-train",
        progress,
        options,
    )

    # 2. the grid: each cell commits its model folder, then its cell file
    failed: list[str] = []

    def save_cell(i: int, row: dict[str, Any]) -> None:
        cell = todo[i]
        key = cell_key(cell)
        if "_error" in row:
            failed.append(key)
            atomic_write_json(out / "errors" / f"{key}.json", {**cell, **row})
            warnings.warn(f"cell {key} failed: {row['_error']}", stacklevel=1)
            return
        blob = row.pop("_model")
        if cfg.save_models:
            model = model_from_bytes(blob)
            with atomic_folder(out / "models" / key) as tmp:
                save_run(
                    tmp,
                    model,
                    {**cell, "stage": "finetune", "method_config": row["method_config"]},
                    {k: v for k, v in row.items() if not isinstance(v, dict)},
                )
            row["model_sha256"] = read_json(out / "models" / key / "config.json")["weights_sha256"]
        store.save_cell(cell, row)
        (out / "errors" / f"{key}.json").unlink(missing_ok=True)
        store.write_tables(cells=grid_cells(cfg))

    jobs = [(c, config, pretrained[(c["dataset"], c["seed"])]) for c in todo]
    execute(executor, cell_task, jobs, save_cell, "cells", progress, options)
    if failed:
        warnings.warn(
            f"{len(failed)} cell(s) failed (details in {out / 'errors'}): {', '.join(failed)}; "
            "rerun with --resume to retry them",
            stacklevel=3,
        )
