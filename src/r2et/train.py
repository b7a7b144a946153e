"""Training loop and run folders: :func:`fit`, :func:`save_run`, :func:`load_run`.

:func:`fit` trains a model with one of the recipes of :mod:`r2et.methods`, from scratch or
fine-tuning a pre-trained model (the protocol of Chen et al., NeurIPS 2024: pre-train a vanilla
model, then fine-tune it with each method). A run folder holds ``model.safetensors``,
``config.json`` and ``metrics.json``, each written atomically; loading rebuilds the model from
its JSON spec and never unpickles. ``evaluate`` (from :mod:`r2et.evaluation`) is re-exported
here, as the design names it ``r2et.train.evaluate``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_int, check_positive
from r2et._io import atomic_write_bytes, read_json
from r2et.data.custom import as_dataset
from r2et.evaluation import evaluate
from r2et.methods import TrainingMethod, get_method
from r2et.models import build_model, relu_to_softplus

OPTIMIZERS = ("adam", "sgd")
KEEP = ("best", "last")
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"

__all__ = [
    "Run",
    "TrainResult",
    "apply_transforms",
    "build_optimizer",
    "evaluate",
    "fit",
    "load_model_into",
    "load_run",
    "save_run",
]


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`fit` returns.

    ``model`` (the best epoch's weights, in eval mode), ``history`` (one dict per epoch:
    ``epoch``, ``train_loss``, ``val_accuracy``, ``seconds`` of training, and the epoch mean of
    every entry of the method's logs), ``best_epoch`` (1-based; 0 when no epoch ran),
    ``best_val_accuracy``, ``seconds_per_epoch`` (mean training seconds per epoch, validation
    excluded) and ``config`` (JSON-ready: method config, epochs, lr, batch size, seed,
    optimizer, device, dataset summary).
    """

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    seconds_per_epoch: float = float("nan")
    config: dict[str, Any] = field(default_factory=dict)


def build_optimizer(
    model: nn.Module, method: TrainingMethod, optimizer: str = "adam", lr: float = 1e-3
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` (momentum 0.9) over the model's parameters, with the
    method's ``optimizer_kwargs`` (e.g. ``weight_decay`` for ``wd``)."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive("lr", lr)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, **method.optimizer_kwargs)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, **method.optimizer_kwargs)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    from r2et._checks import check_device

    return check_device("device", device)


def _to(kw: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _val_accuracy(model: nn.Module, ds: Any, batch_size: int, dev: torch.device) -> float:
    correct, total = 0, 0
    with torch.no_grad():
        for xb, yb, kw in ds.batches("val", max(batch_size, 1024)):
            logits = model(xb.to(dev), **_to(kw, dev))
            correct += int((logits.argmax(1) == yb.to(dev)).sum())
            total += len(yb)
    if total == 0:
        raise ValueError("the dataset's val split is empty; fit selects epochs on it")
    return correct / total


def _check_data_for_model(model: nn.Module, ds: Any) -> None:
    """Before training: finite weights, and train/val inputs and labels that fit the model
    (shape from ``r2et_spec``, finite values, labels in ``0..n_classes-1``)."""
    from r2et._checks import check_finite, check_finite_model, check_labels

    check_finite_model(model)
    spec = getattr(model, "r2et_spec", None)
    n_classes = spec.get("n_classes") if isinstance(spec, dict) else None
    shape = spec.get("input_shape") if isinstance(spec, dict) else None
    for split in ("train", "val"):
        x, y, _ = ds.split(split)
        check_finite(f"the {split} inputs", x)
        if isinstance(shape, list) and tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(
                f"the {split} inputs have shape {tuple(x.shape[1:])} per row, but the model "
                f"takes {tuple(shape)}"
            )
        check_labels(f"the {split} labels", y, int(x.shape[0]), n_classes)


def fit(
    model: nn.Module,
    method: TrainingMethod | str,
    ds: Any,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
    optimizer: str = "adam",
    progress: bool = True,
    max_batches_per_epoch: int | None = None,
    keep: str = "best",
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``ds``'s train split with ``method`` and return a :class:`TrainResult`.

    ``ds`` is an r2et :class:`~r2et.data.Dataset`, or your own training data as an ``(x, y)``
    pair, a ``TensorDataset`` or a ``DataLoader`` of ``(x, y)`` batches
    (:func:`r2et.data.as_dataset`: a stratified 10% of it, seeded by ``seed``, becomes the
    validation split; use :func:`r2et.data.from_tensors` to give your own val split).

    ``method`` is a :class:`~r2et.methods.TrainingMethod` or a name (then built with
    ``k=ds.default_k``). The model is first passed through ``method.prepare`` (``sp`` returns a
    Softplus copy; other methods train ``model`` in place), moved to ``device`` (None: CUDA
    when available, else CPU) and trained for ``epochs`` epochs of shuffled mini-batches with
    Adam or SGD (momentum 0.9) at learning rate ``lr``, minimising ``method.loss``. It
    fine-tunes whatever weights ``model`` holds: pass a pre-trained model to fine-tune. After
    every epoch the validation accuracy is measured; ``keep="best"`` (default) restores the
    weights of the epoch with the highest validation accuracy (the latest one on ties: when
    accuracy plateaus, the regulariser has had the most steps),
    ``keep="last"`` keeps the final weights. Everything random is seeded by ``seed``: the
    shuffling uses its own ``torch.Generator`` and the method's randomness (e.g. ``at``'s random
    starts) runs under a forked global RNG seeded with ``seed``, so the caller's RNG state is
    untouched. ``max_batches_per_epoch`` caps an epoch (quick runs); ``progress`` shows a tqdm
    bar on stderr; ``callback(history_entry)`` is called after every epoch.

    The model is left in eval mode. A non-finite loss raises ``ValueError`` naming the epoch
    and batch.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not (hasattr(ds, "batches") and hasattr(ds, "default_k")):
        ds = as_dataset(ds, "train", seed=seed if isinstance(seed, int) else 0)
    if isinstance(method, str):
        method = get_method(method, k=ds.default_k)
    elif not isinstance(method, TrainingMethod):
        raise ValueError(
            f"method must be a TrainingMethod or a method name, got {type(method).__name__}"
        )
    check_int("epochs", epochs, 0)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    check_int("max_batches_per_epoch", max_batches_per_epoch, 1, allow_none=True)
    check_positive("lr", lr)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("keep", keep, KEEP)
    dev = _resolve_device(device)
    _check_data_for_model(model, ds)

    model = method.prepare(model).to(dev)
    opt = build_optimizer(model, method, optimizer, lr)
    params = [p for group in opt.param_groups for p in group["params"]]
    n_train = len(ds.split("train")[0])
    n_batches = -(-n_train // batch_size)
    if max_batches_per_epoch is not None:
        n_batches = min(n_batches, max_batches_per_epoch)
    config = {
        "method": method.config(),
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "optimizer": optimizer,
        "optimizer_kwargs": dict(method.optimizer_kwargs),
        "device": str(dev),
        "max_batches_per_epoch": max_batches_per_epoch,
        "keep": keep,
    }
    if hasattr(ds, "summary"):
        config["dataset"] = ds.summary()

    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_acc = 0, -math.inf
    gen = torch.Generator().manual_seed(seed)
    fork_devices = []
    if dev.type == "cuda":
        fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * n_batches, desc=f"fit {method.name}", file=sys.stderr)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            for epoch in range(1, epochs + 1):
                model.train()
                t0 = time.perf_counter()
                total_loss, sums, count = 0.0, {}, 0
                batches = ds.batches("train", batch_size, shuffle=True, generator=gen)
                for b, (xb, yb, kw) in enumerate(batches):
                    if b >= n_batches:
                        break
                    loss, logs = method.loss(model, xb.to(dev), yb.to(dev), **_to(kw, dev))
                    if not bool(torch.isfinite(loss)):
                        raise ValueError(
                            f"the {method.name} loss became non-finite at epoch {epoch}, "
                            f"batch {b + 1}; lower lr or the regularisation weights"
                        )
                    opt.zero_grad(set_to_none=True)
                    # only the parameters: the saliency terms' input leaves need no .grad
                    loss.backward(inputs=params)
                    opt.step()
                    total_loss += float(loss.detach())
                    for key, v in logs.items():
                        sums[key] = sums.get(key, 0.0) + float(v)
                    count += 1
                    if bar is not None:
                        bar.update(1)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - t0
                model.eval()
                acc = _val_accuracy(model, ds, batch_size, dev)
                entry = {
                    "epoch": epoch,
                    "train_loss": total_loss / max(count, 1),
                    "val_accuracy": acc,
                    "seconds": seconds,
                    **{key: v / max(count, 1) for key, v in sums.items()},
                }
                history.append(entry)
                if bar is not None:
                    bar.set_postfix(loss=f"{entry['train_loss']:.4f}", val_acc=f"{acc:.4f}")
                if keep == "last" or acc >= best_acc:
                    best_acc, best_epoch = acc, epoch
                    if keep == "best":
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if callback is not None:
                    callback(entry)
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if epochs == 0:
        best_acc = _val_accuracy(model, ds, batch_size, dev)
    spe = sum(h["seconds"] for h in history) / len(history) if history else float("nan")
    return TrainResult(model, history, best_epoch, best_acc, spe, config)


# ---------------------------------------------------------------------------- checkpoints
@dataclass
class Run:
    """A loaded run folder: the rebuilt ``model`` (eval mode), its ``config`` and ``metrics``."""

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]


def _versions() -> dict[str, str]:
    import r2et

    return {"r2et": getattr(r2et, "__version__", "unknown"), "torch": torch.__version__}


def save_run(
    folder: str | Path,
    model: nn.Module,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    *,
    dataset: Any = None,
) -> Path:
    """Write a run folder: ``model.safetensors`` (the state dict), ``config.json`` and
    ``metrics.json``.

    ``config.json`` holds the caller's ``config`` (e.g. :attr:`TrainResult.config`: method and
    every hyperparameter, seeds, optimiser) plus ``"model"`` (``model.r2et_spec``, required:
    build models with :func:`~r2et.build_model`), ``"transforms"`` (architecture changes made
    after building, such as ``sp``'s ReLU → Softplus, from ``model.r2et_transforms``),
    ``"dtype"``, ``"weights_sha256"`` (the SHA-256 of ``model.safetensors``, checked by
    :func:`load_run`), ``"dataset"`` (``dataset.summary()`` when ``dataset`` is given) and
    ``"versions"`` (r2et and torch). Returns the folder path.

    A new folder is written as one unit (into a hidden temporary sibling, then renamed), so an
    interruption leaves nothing or the whole run. An existing folder is updated file by file,
    each atomically, weights first and ``config.json`` (with the digest) last: an interrupted
    update is refused by :func:`load_run` rather than loaded half old, half new. Weights that
    are not finite are refused (``ValueError``).
    """
    from safetensors.torch import save

    from r2et._checks import check_finite_model
    from r2et._io import atomic_folder, json_text

    spec = getattr(model, "r2et_spec", None)
    if not isinstance(spec, dict):
        raise ValueError(
            "model has no r2et_spec: build it with r2et.build_model so that the checkpoint "
            "can rebuild it without pickling"
        )
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a dict or None, got {type(config).__name__}")
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict or None, got {type(metrics).__name__}")
    check_finite_model(model)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder; choose a folder for the run")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    dtypes = sorted({str(v.dtype) for v in state.values() if v.is_floating_point()})
    weights = save(state, metadata={"format": "pt"})
    full = {
        **copy.deepcopy(config or {}),
        "model": copy.deepcopy(spec),
        "transforms": copy.deepcopy(getattr(model, "r2et_transforms", [])),
        "dtype": dtypes[0].removeprefix("torch.") if len(dtypes) == 1 else None,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "versions": _versions(),
    }
    if dataset is not None:
        full["dataset"] = dataset.summary() if hasattr(dataset, "summary") else dataset
    files = [
        (MODEL_FILE, weights),
        (METRICS_FILE, json_text(metrics or {}).encode("utf-8")),
        (CONFIG_FILE, json_text(full).encode("utf-8")),
    ]
    if folder.is_dir():
        for name, data in files:
            atomic_write_bytes(folder / name, data)
    else:
        with atomic_folder(folder) as tmp:
            for name, data in files:
                atomic_write_bytes(tmp / name, data)
    return folder


def _read_weights(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path.read_bytes()


def _parse_state(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise ValueError(
            f"{path} is not a valid safetensors file ({type(err).__name__}: {err}); r2et never "
            "unpickles checkpoints"
        ) from None


def _check_digest(data: bytes, config: dict[str, Any], folder: Path, verify: bool) -> None:
    """Compare ``model.safetensors``'s SHA-256 with ``config["weights_sha256"]``."""
    if not verify:
        return
    recorded = config.get("weights_sha256")
    if recorded is None:
        raise ValueError(
            f"{folder / CONFIG_FILE} records no weights_sha256, so its weights cannot be "
            "verified (written by an older r2et?); load it with verify=False only if you "
            "trust it, then save it again"
        )
    actual = hashlib.sha256(data).hexdigest()
    if not isinstance(recorded, str) or recorded.lower() != actual:
        raise ValueError(
            f"{folder / MODEL_FILE} does not match the SHA-256 recorded in its config.json "
            f"({str(recorded)[:12]}... vs {actual[:12]}...): the weights were modified or the "
            "folder mixes two runs; refusing to load it"
        )


def apply_transforms(model: nn.Module, transforms: Any) -> nn.Module:
    """Re-apply the architecture changes recorded in ``model.r2et_transforms`` (and in a run's
    ``config["transforms"]``) to a freshly built model, in place: ``relu_to_softplus`` with
    its ``beta`` (method ``sp``). Anything else raises ``ValueError``. Use it whenever a model
    is rebuilt from ``r2et_spec`` alone, e.g. ``apply_transforms(build_model(**spec),
    trained.r2et_transforms)``, before loading a state dict."""
    if not isinstance(transforms, list):
        raise ValueError(f"config 'transforms' must be a list, got {type(transforms).__name__}")
    for t in transforms:
        ok = isinstance(t, dict) and t.get("name") == "relu_to_softplus"
        beta = t.get("beta") if ok else None
        if not ok or isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise ValueError(
                f"unknown model transform {t!r}; allowed: {{'name': 'relu_to_softplus', "
                "'beta': <float>}"
            )
        model = relu_to_softplus(model, float(beta), inplace=True)
    model.r2et_transforms = copy.deepcopy(transforms)
    return model


def load_model_into(
    model: nn.Module, folder: str | Path, strict: bool = True, *, verify: bool = True
) -> nn.Module:
    """Load the weights of run ``folder`` into ``model`` (e.g. to fine-tune it); with
    ``verify`` their SHA-256 must match the run's ``config.json`` (see :func:`load_run`).

    Every tensor name and shape must match (``strict``; with ``strict=False`` only the shared
    names are loaded, shapes must still match), else ``ValueError`` listing the differences.
    Tensors are cast to the model's dtype and device. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    folder = Path(folder)
    data = _read_weights(folder / MODEL_FILE)
    state = _parse_state(data, folder / MODEL_FILE)
    config = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    _check_digest(data, config if isinstance(config, dict) else {}, folder, verify)
    _check_state(model, state, strict, where=str(folder))
    own = model.state_dict()
    cast = {k: v.to(dtype=own[k].dtype, device=own[k].device) for k, v in state.items() if k in own}
    model.load_state_dict(cast, strict=strict)
    return model


def _check_state(
    model: nn.Module, state: dict[str, torch.Tensor], strict: bool, where: str
) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    problems = []
    if strict and missing:
        problems.append(f"missing from the checkpoint: {missing[:8]}")
    if strict and extra:
        problems.append(f"not in the model: {extra[:8]}")
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes[:8]))
    if problems:
        raise ValueError(
            f"the checkpoint in {where} does not match the model's architecture ("
            + " | ".join(problems)
            + ")"
        )


def load_run(
    folder: str | Path, device: str | torch.device | None = "cpu", *, verify: bool = True
) -> Run:
    """Load a run folder written by :func:`save_run`.

    The model is rebuilt with ``build_model(**config["model"])``, the recorded transforms are
    re-applied (``sp``'s Softplus), it is cast to the recorded dtype and the tensors of
    ``model.safetensors`` are loaded with a strict name and shape check, bit-exactly. Nothing
    is unpickled: a pickle, corrupt or truncated file raises ``ValueError``, a missing file
    ``FileNotFoundError``. With ``verify`` (default) the file's SHA-256 must equal the
    ``weights_sha256`` that :func:`save_run` recorded in ``config.json`` (a mismatch or a
    missing digest raises ``ValueError``). The spec is built on the ``meta`` device first and
    refused (``ValueError``) when it does not build, exceeds
    :data:`~r2et._checks.MAX_PARAMETERS` or does not match the stored tensors, before any
    memory is allocated; weights that are not finite are refused too. ``metrics.json`` may be
    absent (empty metrics). The model is returned in eval mode on ``device``.
    """
    from r2et._checks import check_finite_model, count_model_parameters

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    dev = _resolve_device(device)
    config = read_json(folder / CONFIG_FILE)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{folder / CONFIG_FILE} has no 'model' spec (not an r2et run folder)")
    metrics_path = folder / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_path} must hold a JSON object")
    data = _read_weights(folder / MODEL_FILE)
    state = _parse_state(data, folder / MODEL_FILE)
    _check_digest(data, config, folder, verify)
    count_model_parameters(config["model"], where=f"{folder / CONFIG_FILE}: the model spec")
    transforms = config.get("transforms", [])
    with torch.device("meta"):
        shadow = apply_transforms(build_model(**config["model"]), transforms)
    _check_state(shadow, state, strict=True, where=str(folder))
    model = apply_transforms(build_model(**config["model"]), transforms)
    dtype = config.get("dtype")
    if dtype is not None:
        torch_dtype = getattr(torch, str(dtype), None)
        if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
            raise ValueError(f"{folder / CONFIG_FILE}: unknown dtype {dtype!r}")
        model = model.to(torch_dtype)
    for key, val in state.items():
        own = model.state_dict()[key]
        if own.dtype != val.dtype:
            raise ValueError(
                f"the checkpoint in {folder} stores {key} as {val.dtype}, the model as {own.dtype}"
            )
    model.load_state_dict(state, strict=True)
    check_finite_model(model, name=f"the checkpoint in {folder}")
    model = model.to(dev).eval()
    return Run(model=model, config=config, metrics=metrics)
