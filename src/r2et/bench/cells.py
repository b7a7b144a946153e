"""The benchmark's tasks: pre-train a vanilla model, fine-tune and evaluate one cell.

Each task takes and returns plain data (the configuration as a dict, models as
:func:`r2et.runs.model_bytes`), so that it runs alike in this process, in a spawned worker
process or as a Ray task (:mod:`r2et.bench.executors`).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from r2et.bench.config import BENCH_ATTACKS, BenchConfig, dataset_settings, load_bench_dataset
from r2et.bench.store import cell_key


def _device(name: str | None) -> torch.device:
    from r2et._checks import check_device

    return check_device("device", name or None)


def _setup_threads(cfg: BenchConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))


#: What a grid's cells train with besides its config's epochs, lr and batch size: the best
#: validation epoch and no weight decay, whatever the dataset's ``default_fit`` suggests (a
#: small CSV's weight decay, issue 27), so a grid's rows do not change with those defaults.
GRID_FIT: dict[str, Any] = {"keep": "best", "weight_decay": 0.0}


# ---------------------------------------------------------------------------- tasks
def pretrain_task(dataset: str, seed: int, cfg: BenchConfig | dict[str, Any]) -> dict[str, Any]:
    """Train the vanilla model of ``dataset`` from scratch with seed ``seed`` (``pretrain``
    settings); returns the model as safetensors bytes with its spec and validation accuracy."""
    from r2et.models import build_model
    from r2et.runs import model_bytes
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
            **GRID_FIT,
        )
        model, val_acc = res.model, res.best_val_accuracy
    return {
        **model_bytes(model.cpu()),
        "dataset": dataset,
        "seed": seed,
        "val_accuracy": val_acc,
        "seconds": time.perf_counter() - t0,
    }


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``evaluate()``'s nested dict as flat table columns (``ensemble_p_at_k_mean``,
    ``deletion_gain``, ``deletion_gain_ci_low``/``_high``, ``top_share``,
    ``distinct_per_100``, ...). Not among the columns a stored cell needs to count as finished
    (:data:`~r2et.bench.store.REQUIRED_METRICS`): cells of earlier versions lack the newer
    ones and stay valid."""
    row: dict[str, Any] = {
        "accuracy": metrics["accuracy"],
        "accuracy_evaluated": metrics.get("accuracy_evaluated"),
        "n_eval": metrics["n"],
        "n_test": metrics.get("n_split"),
    }
    for key in ("majority_rate", "random_p_at_k"):  # the yardsticks of accuracy and P@k
        if key in metrics:
            row[key] = metrics[key]
    if "ground_truth_precision" in metrics:
        row["ground_truth_precision"] = metrics["ground_truth_precision"]
    if "thickness" in metrics:
        row["thickness"] = metrics["thickness"]["mean"]
    for section in ("faithfulness", "locality"):  # with top_share and distinct_per_100
        for key, val in metrics.get(section, {}).items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                row[key] = val
    ci = metrics.get("faithfulness", {}).get("deletion_gain_ci")
    if ci is not None:  # the interval of the mean deletion gain (r2et.verdict)
        row["deletion_gain_ci_low"], row["deletion_gain_ci_high"] = (float(v) for v in ci)
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
    """On the first ``ev["n"]`` test inputs: stability under each registered attack named by
    ``ev["attacks"]`` (default :data:`~r2et.bench.config.BENCH_ATTACKS`: the ``ev["preset"]``
    :class:`~r2et.EnsembleAttack`, whose P@k is the reported one, and the paper's ERAttack and
    MSEAttack of ``ev["steps"]`` steps), all at ``eps`` and inside the data box when
    ``ev["box"]``; thickness at radius ``eps``; faithfulness and locality; accuracy on the whole
    test split; and the P@k curve of the ``ev["budget_preset"]`` ensemble over the budget
    multipliers ``ev["budgets"]``. The explanation is ``ev["explainer"]`` (default the logit
    gradient) of the logit for every method, so all are attacked alike."""
    from r2et.attacks import create_attack
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer

    groups = ranked_units(ds, ev)
    ex = Explainer(explainer_rule(ds, ev), groups=groups)
    n, steps = int(ev["n"]), int(ev["steps"])
    bounds = ds.bounds if ev.get("box", True) else None
    preset = ev.get("preset", "standard")
    options = {"bounds": bounds, "seed": seed, "steps": steps, "preset": preset}
    names = ev.get("attacks", BENCH_ATTACKS)
    attacks = {a: create_attack(a, ex, k, eps, **options) for a in names}
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


def method_params(
    cell: dict[str, Any], opts: dict[str, Any], ev: dict[str, Any], ds: Any
) -> dict[str, Any]:
    """``get_method`` keywords of a cell: the hyperparameters the dataset suggests for its
    method (``ds.default_params``), the configuration's ``params`` over them, the cell's
    weight, and the benchmark's explanation on ``ds`` (:func:`explainer_rule`, its units
    :func:`ranked_units`), so that every method trains on what is scored."""
    suggested = getattr(ds, "default_params", {}).get(cell["method"], {})
    params = {**suggested, **opts.get("params", {}).get(cell["method"], {})}
    params.setdefault("explainer", explainer_rule(ds, ev))
    units = ranked_units(ds, ev)
    if units is not None:
        params.setdefault("groups", units)
    if cell["weight"] is not None:
        params[cell["weight_name"]] = cell["weight"]
    return params


def ranked_units(ds: Any, ev: dict[str, Any]) -> Any:
    """The feature groups the benchmark ranks: ``ev["groups"]`` true, the dataset's attributes
    (``ValueError`` for a dataset without them); false, single features (None); ``"auto"``
    (the default), the dataset's explanation's unit (``ds.default_explainer``: the attributes
    of a table with categorical attributes)."""
    choice = ev.get("groups", "auto")
    if choice == "auto":
        return getattr(ds, "default_explainer", {}).get("groups")
    if not choice:
        return None
    if ds.groups is None:
        raise ValueError(f"evaluate.groups: dataset {ds.name!r} has no feature groups")
    return ds.groups


def explainer_rule(ds: Any, ev: dict[str, Any]) -> str:
    """The attribution every method trains on and is scored with: ``ev["explainer"]``, or for
    ``"auto"`` (the default) the dataset's (``ds.default_explainer``: gradient x input on a
    table with categorical attributes, else the gradient)."""
    rule = ev.get("explainer", "auto")
    if rule == "auto":
        return str(getattr(ds, "default_explainer", {}).get("method", "grad"))
    return str(rule)


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
        if name == explainer_rule(ds, ev):
            continue  # the benchmark's own explanation, measured above
        kw = {"seed": seed} if name == "smoothgrad" else {}
        ex = Explainer(name, groups=ranked_units(ds, ev), **kw)
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
    from r2et.runs import model_bytes, model_from_bytes
    from r2et.train import fit

    cfg = BenchConfig.coerce(cfg)
    _setup_threads(cfg)
    ds = load_bench_dataset(cell["dataset"], cell["seed"], cfg)
    k, eps, opts = dataset_settings(cfg, ds)
    model = model_from_bytes(pretrained)
    ev = {**cfg.evaluate, **opts.get("evaluate", {})}
    method = get_method(cell["method"], k=k, **method_params(cell, opts, ev, ds))
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
        **GRID_FIT,
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
    row["_model"] = model_bytes(res.model.cpu())
    return row
