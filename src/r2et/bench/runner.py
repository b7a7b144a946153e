"""The benchmark grid: pre-train once per dataset and seed, fine-tune and evaluate every cell.

A *cell* is one (dataset, method, weight, seed). Per dataset and seed a vanilla model is
pre-trained once (``pretrain/``) and every cell fine-tunes a copy of it with its method, then
evaluates accuracy, P@k under the ensemble attack (and the paper's ERAttack and MSEAttack),
top-k rank correlations, thickness, faithfulness, locality and cost. Cells are independent
tasks: the ``local`` executor runs them in this process, the ``process`` executor in
``workers`` processes of this machine (several cells side by side on many cores or one GPU),
the ``ray`` executor as Ray tasks (one GPU each when the cluster has GPUs); either way each
finished cell is written atomically, by this process alone, to the
:class:`~r2et.bench.store.ResultStore` as it arrives.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from r2et._io import (
    FolderLock,
    atomic_folder,
    atomic_write_json,
    read_json,
    remove_stale_temps,
)
from r2et.bench.config import SELECTION_KEYS, BenchConfig, dataset_settings, load_bench_dataset
from r2et.bench.store import ResultStore, cell_key, config_digest

#: The attacks every cell is evaluated with: the reported ensemble and the paper's two PGD
#: attacks (registered names, :func:`r2et.attacks.list_attacks`).
BENCH_ATTACKS = ("ensemble", "erattack", "mse")


# ---------------------------------------------------------------------------- grid
def grid_cells(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Every (dataset, method, weight, seed) cell of the configuration, in run order."""
    from r2et.methods import get_method

    cells = []
    for dataset in cfg.datasets:
        for seed in cfg.seeds:
            for method in cfg.methods:
                weight_name = get_method(method, k=1).weight_name
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


def _device(name: str | None) -> torch.device:
    from r2et._checks import check_device

    return check_device("device", name or None)


def _setup_threads(cfg: BenchConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))


def _model_bytes(model: torch.nn.Module) -> dict[str, Any]:
    """A model as plain data (spec, architecture transforms, safetensors bytes): what crosses
    process and machine boundaries between the driver and Ray workers, never a pickle."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "spec": dict(model.r2et_spec),
        "transforms": list(getattr(model, "r2et_transforms", [])),
        "state": save(state),
    }


def _model_from_bytes(blob: dict[str, Any]) -> torch.nn.Module:
    """Inverse of :func:`_model_bytes`: rebuild, re-apply transforms (``sp``), load tensors."""
    from safetensors.torch import load

    from r2et.models import build_model
    from r2et.train import apply_transforms

    model = apply_transforms(build_model(**blob["spec"]), blob.get("transforms", []))
    model.load_state_dict(load(blob["state"]))
    return model


# ---------------------------------------------------------------------------- tasks
def pretrain_task(dataset: str, seed: int, cfg: BenchConfig | dict[str, Any]) -> dict[str, Any]:
    """Train the vanilla model of ``dataset`` from scratch with seed ``seed`` (``pretrain``
    settings); returns the model as safetensors bytes with its spec and validation accuracy."""
    from r2et.models import build_model
    from r2et.train import fit

    cfg = BenchConfig.coerce(cfg)
    _setup_threads(cfg)
    ds = load_bench_dataset(dataset, seed, cfg)
    _, _, opts = dataset_settings(cfg, ds)
    spec = dict(opts.get("model", ds.default_model))
    name = spec.pop("name")
    torch.manual_seed(seed)
    model = build_model(name, list(ds.input_shape), ds.n_classes, **spec)
    pre = {**cfg.pretrain, **opts.get("pretrain", {})}
    t0 = time.perf_counter()
    val_acc = None
    if int(pre["epochs"]) > 0:
        res = fit(
            model,
            "vanilla",
            ds,
            epochs=int(pre["epochs"]),
            lr=float(pre["lr"]),
            batch_size=int(pre["batch_size"]),
            seed=seed,
            device=_device(cfg.device),
            progress=False,
        )
        model, val_acc = res.model, res.best_val_accuracy
    return {
        **_model_bytes(model.cpu()),
        "dataset": dataset,
        "seed": seed,
        "val_accuracy": val_acc,
        "seconds": time.perf_counter() - t0,
    }


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``evaluate()``'s nested dict as flat table columns (``ensemble_p_at_k_mean``,
    ``deletion_gain``, ...)."""
    row: dict[str, Any] = {
        "accuracy": metrics["accuracy"],
        "accuracy_evaluated": metrics.get("accuracy_evaluated"),
        "n_eval": metrics["n"],
        "n_test": metrics.get("n_split"),
    }
    if "ground_truth_precision" in metrics:
        row["ground_truth_precision"] = metrics["ground_truth_precision"]
    if "thickness" in metrics:
        row["thickness"] = metrics["thickness"]["mean"]
    for section in ("faithfulness", "locality"):
        for key, val in metrics.get(section, {}).items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                row[key] = val
    for name, vals in metrics.get("attacks", {}).items():
        for key, val in vals.items():
            if key not in ("eps", "steps", "norm"):
                row[f"{name}_{key}"] = val
    for name, vals in metrics.get("certified", {}).items():  # certified P@k: lower bounds
        for key in ("radius_mean", "radius_median", "certified_fraction", "seconds"):
            row[f"cert_{name}_{key}"] = vals[key]
        row[f"cert_{name}_norm"] = vals["norm"]
        row[f"cert_{name}_curve"] = {
            f"{r:g}": p for r, p in zip(vals["radii"], vals["p_at_k_mean"])
        }
    return row


def _certify_specs(
    specs: dict[str, Any] | None, eps: float, budgets: list[float], bounds: Any
) -> dict[str, Any] | None:
    """``evaluate.certify`` tables as ``certified_radius`` keywords: a deterministic
    certificate reports at the attack's radii (``eps`` times each budget, and ``eps``) inside
    the same data box, a smoothed one at l2 radii σ/4, σ/2 and σ, unless ``radii`` is given."""
    if not specs:
        return None
    out = {}
    for name, spec in specs.items():
        spec = dict(spec)
        if spec["method"] == "deterministic":
            spec.setdefault("radii", sorted({eps * float(b) for b in budgets} | {eps}))
            spec.setdefault("max_radius", 4 * eps)
            if bounds is not None:
                spec.setdefault("bounds", bounds)
        else:
            sigma = float(spec.get("sigma", 0.25))
            spec.setdefault("radii", [sigma / 4, sigma / 2, sigma])
        out[name] = spec
    return out


def evaluate_cell(
    model: torch.nn.Module, ds: Any, k: int, eps: float, ev: dict[str, Any], seed: int
) -> dict[str, Any]:
    """On the first ``ev["n"]`` test inputs: stability under the ``ev["preset"]``
    :class:`~r2et.EnsembleAttack` (the reported P@k) and under the paper's ERAttack and
    MSEAttack (``ev["steps"]`` steps), all at ``eps`` and inside the data box when
    ``ev["box"]``; thickness at radius ``eps``; faithfulness and locality; accuracy on the whole
    test split; and the P@k curve of the ``ev["budget_preset"]`` ensemble over the budget
    multipliers ``ev["budgets"]``. The explanation is ``ev["explainer"]`` (default the logit
    gradient) of the logit for every method, so all are attacked alike."""
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer

    groups = _units(ds, ev)
    ex = Explainer(ev.get("explainer", "grad"), groups=groups)
    n, steps = int(ev["n"]), int(ev["steps"])
    bounds = ds.bounds if ev.get("box", True) else None
    preset = ev.get("preset", "standard")
    options = {"bounds": bounds, "seed": seed, "steps": steps, "preset": preset}
    attacks = {a: create_attack(a, ex, k, eps, **options) for a in BENCH_ATTACKS}
    metrics = evaluate(
        model,
        ds,
        ex,
        k=k,
        attacks=attacks,
        n=n,
        thickness_radius=eps,
        thickness_samples=int(ev.get("thickness_samples", 8)),
        thickness_steps=int(ev.get("thickness_steps", 8)),
        seed=seed,
        certify=_certify_specs(ev.get("certify"), eps, ev.get("budgets", []), bounds),
    )
    row = flatten_metrics(metrics)
    row["box"] = bounds is not None
    row["preset"] = preset
    curve = {}
    curve_preset = ev.get("budget_preset", "fast")
    for b in ev.get("budgets", []):
        atk = create_attack(
            "ensemble", ex, k, eps * float(b), bounds=bounds, preset=curve_preset, seed=seed
        )
        m = evaluate(model, ds, ex, k=k, attacks={"curve": atk}, n=n, seed=seed, faithfulness=False)
        curve[f"{eps * float(b):g}"] = m["attacks"]["curve"]["p_at_k_mean"]
    row["curve"] = dict(sorted(curve.items(), key=lambda kv: float(kv[0])))
    row.update(_other_explainers(model, ds, k, eps, ev, seed, bounds, preset))
    return row


def _method_params(
    cell: dict[str, Any], opts: dict[str, Any], ev: dict[str, Any], units: Any
) -> dict[str, Any]:
    """``get_method`` keywords of a cell: the dataset's ``params`` for its method, the cell's
    weight, and the benchmark's explanation (``ev["explainer"]``, attribute ``units``), so
    that every method trains on what is scored."""
    params = dict(opts.get("params", {}).get(cell["method"], {}))
    if "explainer" in ev:
        params.setdefault("explainer", ev["explainer"])
    if units is not None:
        params.setdefault("groups", units)
    if cell["weight"] is not None:
        params[cell["weight_name"]] = cell["weight"]
    return params


def _units(ds: Any, ev: dict[str, Any]) -> Any:
    """The feature groups the benchmark ranks (``ev["groups"]``: the dataset's attributes), or
    None for single features; ``ValueError`` for a dataset without groups."""
    if not ev.get("groups"):
        return None
    if ds.groups is None:
        raise ValueError(f"evaluate.groups: dataset {ds.name!r} has no feature groups")
    return ds.groups


def _other_explainers(
    model: torch.nn.Module, ds: Any, k: int, eps: float, ev: dict[str, Any], seed: int,
    bounds: Any, preset: str,
) -> dict[str, Any]:  # fmt: skip
    """Explainer generalisation (``ev["explainers"]``): the model trained on the benchmark's
    explainer (``ev["explainer"]``, default the gradient) explained by each other explainer,
    attacked through that explainer by the same ensemble on the first ``ev["explainer_n"]``
    (default ``n``) test inputs: ``x_<name>_p_at_k`` and ``x_<name>_deletion_gain``."""
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer

    out: dict[str, Any] = {}
    n = int(ev.get("explainer_n", ev["n"]))
    for name in ev.get("explainers", []):
        kw = {"seed": seed} if name == "smoothgrad" else {}
        ex = Explainer(name, groups=_units(ds, ev), **kw)
        atk = create_attack("ensemble", ex, k, eps, bounds=bounds, preset=preset, seed=seed)
        m = evaluate(model, ds, ex, k=k, attacks={"ensemble": atk}, n=n, seed=seed)
        out[f"x_{name}_p_at_k"] = m["attacks"]["ensemble"]["p_at_k_mean"]
        out[f"x_{name}_deletion_gain"] = m["faithfulness"]["deletion_gain"]
    return out


def cell_task(
    cell: dict[str, Any], cfg: BenchConfig | dict[str, Any], pretrained: dict[str, Any]
) -> dict[str, Any]:
    """Fine-tune the pre-trained model with the cell's method and evaluate it; returns the
    result row (JSON-ready) with the fine-tuned model as bytes under ``"_model"``, or
    ``{"_error": ...}`` when the cell fails (the grid goes on; the cell stays unfinished)."""
    try:
        return _cell_task(cell, cfg, pretrained)
    except Exception as err:  # noqa: BLE001 - one failing cell must not stop the grid
        import traceback

        return {"_error": f"{type(err).__name__}: {err}", "_traceback": traceback.format_exc()}


def _cell_task(
    cell: dict[str, Any], cfg: BenchConfig | dict[str, Any], pretrained: dict[str, Any]
) -> dict[str, Any]:
    from r2et.methods import get_method
    from r2et.train import fit

    cfg = BenchConfig.coerce(cfg)
    _setup_threads(cfg)
    ds = load_bench_dataset(cell["dataset"], cell["seed"], cfg)
    k, eps, opts = dataset_settings(cfg, ds)
    model = _model_from_bytes(pretrained)
    ev = {**cfg.evaluate, **opts.get("evaluate", {})}
    method = get_method(cell["method"], k=k, **_method_params(cell, opts, ev, _units(ds, ev)))
    ft = {**cfg.finetune, **opts.get("finetune", {})}
    t0 = time.perf_counter()
    res = fit(
        model,
        method,
        ds,
        epochs=int(ft["epochs"]),
        lr=float(ft["lr"]),
        batch_size=int(ft["batch_size"]),
        seed=int(cell["seed"]),
        device=_device(cfg.device),
        progress=False,
    )
    train_seconds = time.perf_counter() - t0
    row = {
        **cell,
        "key": cell_key(cell),
        "modality": ds.modality,
        "k": k,
        "eps": eps,
        "val_accuracy": res.best_val_accuracy,
        "pretrain_val_accuracy": pretrained.get("val_accuracy"),
        "train_seconds_per_epoch": res.seconds_per_epoch,
        "train_seconds": train_seconds,
    }
    row.update(evaluate_cell(res.model, ds, k, eps, ev, int(cell["seed"])))
    row["method_config"] = method.config()
    row["_model"] = _model_bytes(res.model.cpu())
    return row


# ---------------------------------------------------------------------------- executors
Job = tuple[Any, ...]
OnResult = Callable[[int, dict[str, Any]], None]


def _run_local(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    for i, args in enumerate(jobs):
        on_result(i, fn(*args))
        progress.update(1)


#: Seconds between two checks of a process-executor worker's watchdog on its parent.
PARENT_CHECK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _set_parent_death_signal() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc prctl (e.g. a static or exotic runtime)
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Exit this process at once (``os._exit``: no clean-up, as under SIGKILL) as soon as its
    parent is no longer ``parent_pid``, i.e. the parent died and the process was re-parented."""
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)


def _worker_init(parent_pid: int) -> None:
    """Initializer of every process-executor worker: the worker dies with the process that
    started it, so that a killed ``r2et bench`` leaves no orphan computing beside (or holding
    the GPU memory of) the ``--resume`` that follows. On Linux the kernel kills it
    (parent-death signal); everywhere a daemon thread checks every
    :data:`PARENT_CHECK_SECONDS` whether the parent changed and exits the worker. A parent
    that died before the signal was set is caught by comparing the parent pid afterwards."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(
        target=_watch_parent,
        args=(parent_pid, PARENT_CHECK_SECONDS),
        name="r2et-parent-watchdog",
        daemon=True,
    ).start()


def _indexed_call(item: tuple[Callable[..., dict[str, Any]], int, Job]) -> tuple[int, Any]:
    fn, i, args = item
    return i, fn(*args)


def _run_process(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    """``workers`` fresh (spawned) processes of this machine, each running one job at a time;
    results are handed to ``on_result`` in this process as they finish. An interruption
    (Ctrl-C, SIGTERM) terminates the workers at once; finished results are already saved. A
    kill of this process (SIGKILL) takes the workers with it (:func:`_worker_init`)."""
    import multiprocessing

    workers = min(int(options.get("workers") or 1), len(jobs))
    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
    pool = ctx.Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        items = [(fn, i, args) for i, args in enumerate(jobs)]
        for i, result in pool.imap_unordered(_indexed_call, items, chunksize=1):
            on_result(i, result)
            progress.update(1)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _run_ray(
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    progress: Any,
    options: dict[str, Any],
) -> None:
    """Each job a Ray task (one GPU each when the cluster has GPUs) on the cluster at
    ``options["address"]`` (a new local one when None and Ray is not initialised), at most
    ``options["workers"]`` in flight when given; results are handed to ``on_result`` in this
    process as they finish."""
    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' needs Ray: pip install 'r2et[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("R2ET_DATA", "R2ET_CACHE") if k in os.environ}
        ray.init(
            address=options.get("address"),
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False,
            log_to_driver=False,
        )
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    remote = ray.remote(num_gpus=gpus, max_retries=1)(fn)
    limit = int(options.get("workers") or len(jobs))  # tasks in flight at once
    queue = list(enumerate(jobs))[::-1]  # popped from the end: submitted in order
    pending: dict[Any, int] = {}
    while queue or pending:
        while queue and len(pending) < limit:
            i, args = queue.pop()
            pending[remote.remote(*args)] = i
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            on_result(pending.pop(ref), ray.get(ref))
            progress.update(1)


#: How the grid's independent tasks are run, by name: ``fn(task, jobs, on_result, progress,
#: options)`` with ``options`` ``{"address": ..., "workers": ...}``.
EXECUTORS: dict[str, Callable[..., None]] = {
    "local": _run_local,
    "process": _run_process,
    "ray": _run_ray,
}
#: The executors that use ``workers`` (processes of this machine; Ray tasks in flight).
WORKER_EXECUTORS = ("process", "ray")


def _execute(
    executor: str,
    fn: Callable[..., dict[str, Any]],
    jobs: list[Job],
    on_result: OnResult,
    desc: str,
    show: bool,
    options: dict[str, Any],
) -> None:
    from tqdm.auto import tqdm

    if not jobs:
        return
    with tqdm(total=len(jobs), desc=desc, disable=not show, unit="cell") as bar:
        EXECUTORS[executor](fn, jobs, on_result, bar, options)


# ---------------------------------------------------------------------------- driver
_NOT_RESULTS = ("device", "threads", "save_models")
#: Which cells the grid has, not what any one cell computes: a grid grown by a method, weight,
#: seed or dataset resumes with its finished cells.
GRID_KEYS = ("datasets", "methods", "seeds", "grid")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that change a cell's results: not where or how fast they are computed, not
    which cells the grid holds, nor the selection rule (applied to stored cells when the report
    is written)."""
    return {k: v for k, v in cfg.items() if k not in _NOT_RESULTS + SELECTION_KEYS + GRID_KEYS}


def _legacy_digests(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The digest earlier r2et versions gave configuration ``cfg`` (everything but device,
    threads and models; no ``min_distinct_ratio``): the cells and pre-trained models they wrote
    for it stay valid."""
    if cfg.get("min_distinct_ratio") is not None:
        return ()
    old = {k: v for k, v in cfg.items() if k not in _NOT_RESULTS + ("min_distinct_ratio",)}
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
            units = _units(ds, ev)
        except ValueError as err:
            raise ValueError(f"dataset {name!r}: {err}") from None
        ex = Explainer("grad", groups=units)
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
                get_method(cell["method"], k=k, **_method_params(cell, opts, ev, units))
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
    from r2et.train import load_run

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
    blob = _model_bytes(run.model)
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
    if executor not in EXECUTORS:
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
                diff = sorted(
                    k
                    for k in set(_comparable(old)) | set(_comparable(config))
                    if old.get(k) != config.get(k)
                )
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
    from r2et.train import save_run

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
                _model_from_bytes(result),
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

    _execute(
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
            model = _model_from_bytes(blob)
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
    _execute(executor, cell_task, jobs, save_cell, "cells", progress, options)
    if failed:
        warnings.warn(
            f"{len(failed)} cell(s) failed (details in {out / 'errors'}): {', '.join(failed)}; "
            "rerun with --resume to retry them",
            stacklevel=3,
        )
