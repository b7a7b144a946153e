"""Training loop and run folders: :func:`fit`, :func:`save_run`, :func:`load_run`.

:func:`fit` trains a model with one of the recipes of :mod:`r2et.methods`, from scratch or
fine-tuning a pre-trained model (the protocol of Chen et al., NeurIPS 2024: pre-train a vanilla
model, then fine-tune it with each method). A run folder holds ``model.safetensors``,
``config.json`` and ``metrics.json``, each written atomically; loading rebuilds the model from
its JSON spec and never unpickles. ``evaluate`` (from :mod:`r2et.evaluation`) is re-exported
here, as the design names it ``r2et.train.evaluate``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
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

logger = logging.getLogger("r2et")

OPTIMIZERS = ("adam", "sgd")
KEEP = ("best", "last")
BATCHNORM_MODES = ("train", "eval")
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


def _cast(v: torch.Tensor, dev: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and v.is_floating_point():
        return v.to(dev, dtype)
    return v.to(dev)


def _to(kw: dict[str, Any], dev: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    return {k: _cast(v, dev, dtype) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


def _freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: normalise with the running statistics (kept fixed), so
    each sample's saliency depends on that sample only."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _callbacks(callback: Any) -> list[Callable[[dict[str, float]], None]]:
    if callback is None:
        return []
    found = [callback] if callable(callback) else list(callback)
    for cb in found:
        if not callable(cb):
            raise ValueError(f"callback must be callable or a list of callables, got {cb!r}")
    return found


def _val_accuracy(model: nn.Module, ds: Any, batch_size: int, dev: torch.device) -> float:
    correct, total = 0, 0
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    with torch.no_grad():
        for xb, yb, kw in ds.batches("val", max(batch_size, 1024)):
            logits = model(_cast(xb, dev, dtype), **_to(kw, dev, dtype))
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
    y = ds.split("train")[1]
    if len(y) == 0:
        raise ValueError("the train split is empty; fit needs training rows")
    if int(y.min()) == int(y.max()):
        raise ValueError(
            f"the train labels hold a single class ({int(y.min())}); a classifier needs at "
            "least 2 classes"
        )


def _check_output_width(model: nn.Module, ds: Any, dev: torch.device, dtype: torch.dtype) -> None:
    """Before training: the model's output on two training rows (eval mode, no gradient) is an
    ``(N, C)`` tensor of logits with ``C >= ds.n_classes``; else one ``ValueError``."""
    x, _, kw = ds.subset("train", 2)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(_cast(x, dev, dtype), **_to(kw, dev, dtype))
    finally:
        for m, mode in modes:
            m.training = mode
    n_classes = int(ds.n_classes)
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"the model returns {type(out).__name__}; fit trains a classifier that returns an "
            f"(N, {n_classes}) tensor of logits"
        )
    if out.dim() != 2 or out.shape[0] != len(x) or out.shape[1] < n_classes:
        raise ValueError(
            f"the model outputs shape {tuple(out.shape)} for {len(x)} inputs, but the data has "
            f"{n_classes} classes; fit needs (N, {n_classes}) logits (build the model with "
            f"n_classes={n_classes})"
        )


def fit(
    model: nn.Module,
    method: TrainingMethod | str,
    ds: Any,
    *,
    epochs: int | None = None,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    optimizer: str = "adam",
    progress: bool = True,
    max_batches_per_epoch: int | None = None,
    keep: str = "best",
    batchnorm: str = "train",
    callback: Callable[[dict[str, float]], None]
    | Sequence[Callable[[dict[str, float]], None]]
    | None = None,
) -> TrainResult:
    """Train ``model`` on ``ds``'s train split with ``method`` and return a :class:`TrainResult`.

    ``ds`` is an r2et :class:`~r2et.data.Dataset`, or your own training data as an ``(x, y)``
    pair, a ``TensorDataset`` or a ``DataLoader`` of ``(x, y)`` batches
    (:func:`r2et.data.as_dataset`: a stratified 10% of it, seeded by ``seed``, becomes the
    validation split; use :func:`r2et.data.from_tensors` to give your own val split).

    ``method`` is a :class:`~r2et.methods.TrainingMethod` or a name (then built with
    ``k=ds.default_k``). The model is first passed through ``method.prepare`` (``sp`` returns a
    Softplus copy; other methods train ``model`` in place), moved to ``device`` (None: where
    its parameters already are, so a model is never moved behind your back; floating inputs
    are cast to the model's dtype, so ``bfloat16``/``float16`` models train) and trained for
    ``epochs`` epochs of shuffled mini-batches with Adam or SGD (momentum 0.9) at learning rate
    ``lr``, minimising ``method.loss``; ``epochs``/``batch_size`` left None take the dataset's
    ``default_fit`` (small tables: about 4,000 steps of 32 rows, see
    :func:`r2et.data.tabular.small_table_defaults`), else 10 epochs of 128. It
    fine-tunes whatever weights ``model`` holds: pass a pre-trained model to fine-tune. After
    every epoch the validation accuracy is measured; ``keep="best"`` (default) restores the
    weights of the epoch with the highest validation accuracy (the latest one on ties: when
    accuracy plateaus, the regulariser has had the most steps),
    ``keep="last"`` keeps the final weights. Everything random is seeded by ``seed``: the
    shuffling uses its own ``torch.Generator`` and the method's randomness (e.g. ``at``'s random
    starts) runs under a forked global RNG seeded with ``seed``, so the caller's RNG state is
    untouched. ``max_batches_per_epoch`` caps an epoch (quick runs); ``progress`` shows a tqdm
    bar on stderr; ``callback(history_entry)`` (or each of a list of callbacks: an experiment
    tracker's ``log``, an early stop that raises ``StopIteration``) is called after every
    epoch, and the same entry is logged at INFO level on the ``"r2et"`` logger.
    ``batchnorm="eval"`` keeps BatchNorm layers in eval mode while training (running
    statistics, frozen), so per-sample saliency is per-sample; the default ``"train"`` keeps
    PyTorch's behaviour, and the regularised methods warn once that batch statistics couple
    the samples of a batch.

    The model is left in eval mode. A non-finite loss raises ``ValueError`` naming the epoch
    and batch.

    Before any step, one ``ValueError`` refuses: training labels of a single class (a
    classifier needs at least 2), labels that are not an integer dtype (convert with
    ``y.long()``), a model whose output on one batch is not ``(N, C)`` logits with at least
    ``ds.n_classes`` columns (e.g. one output on two-class data), and for a DataLoader: batches
    with items beyond ``(x, y)``, batches of different input shapes, and a loader that yields
    more than :data:`r2et.data.custom.MAX_LOADER_ROWS` rows. A DataLoader, sized or not (an
    ``IterableDataset``), is read once into memory, counting rows as it goes, so an endless
    loader stops with that error instead of never returning; pass
    ``from_tensors(loader, max_rows=...)`` to read more.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not (hasattr(ds, "batches") and hasattr(ds, "default_k")):
        ds = as_dataset(ds, "train", seed=seed if isinstance(seed, int) else 0)
    method = _resolve_method(method, ds)
    plan = _FitPlan.resolve(
        model, ds, epochs, lr, batch_size, seed, device, optimizer, max_batches_per_epoch,
        keep, batchnorm, callback,
    )  # fmt: skip
    _check_data_for_model(model, ds)
    model = method.prepare(model).to(plan.device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    _check_output_width(model, ds, plan.device, dtype)
    opt = build_optimizer(model, method, plan.optimizer, plan.lr)
    config = plan.config(method, ds)
    logger.info(
        "fit %s on %s (%s): %d epochs of batch %d, lr %g, seed %d", method.name, plan.device,
        str(dtype).removeprefix("torch."), plan.epochs, plan.batch_size, plan.lr, plan.seed,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    best = _BestEpoch(plan.keep)
    gen = torch.Generator().manual_seed(plan.seed)
    bar = _progress_bar(progress, plan.epochs * plan.n_batches, f"fit {method.name}")
    try:
        with torch.random.fork_rng(devices=plan.fork_devices):
            torch.manual_seed(plan.seed)
            for epoch in range(1, plan.epochs + 1):
                entry = _train_epoch(model, method, opt, ds, plan, dtype, gen, epoch, bar)
                history.append(entry)
                best.update(entry, model)
                if _notify(plan.callbacks, entry, plan.epochs):
                    break
    finally:
        if bar is not None:
            bar.close()
    best.restore(model)
    model.eval()
    if plan.epochs == 0:
        best.accuracy = _val_accuracy(model, ds, plan.batch_size, plan.device)
    spe = sum(h["seconds"] for h in history) / len(history) if history else float("nan")
    return TrainResult(model, history, best.epoch, best.accuracy, spe, config)


def _resolve_method(method: TrainingMethod | str, ds: Any) -> TrainingMethod:
    if isinstance(method, str):
        return get_method(method, k=ds.default_k)
    if not isinstance(method, TrainingMethod):
        raise ValueError(
            f"method must be a TrainingMethod or a method name, got {type(method).__name__}"
        )
    return method


@dataclass
class _FitPlan:
    """:func:`fit`'s settings, validated, with the dataset's defaults filled in."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    device: torch.device
    optimizer: str
    max_batches_per_epoch: int | None
    keep: str
    batchnorm: str
    callbacks: list[Callable[[dict[str, float]], None]]
    n_batches: int

    @classmethod
    def resolve(
        cls, model: nn.Module, ds: Any, epochs: int | None, lr: float, batch_size: int | None,
        seed: int, device: Any, optimizer: str, max_batches: int | None, keep: str,
        batchnorm: str, callback: Any,
    ) -> _FitPlan:  # fmt: skip
        defaults = getattr(ds, "default_fit", None) or {}
        epochs = defaults.get("epochs", 10) if epochs is None else epochs
        batch_size = defaults.get("batch_size", 128) if batch_size is None else batch_size
        check_int("epochs", epochs, 0)
        check_int("batch_size", batch_size, 1)
        check_int("seed", seed, 0)
        check_int("max_batches_per_epoch", max_batches, 1, allow_none=True)
        check_positive("lr", lr)
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_choice("keep", keep, KEEP)
        check_choice("batchnorm", batchnorm, BATCHNORM_MODES)
        if device is None:  # where the parameters are: never moved behind the caller's back
            first = next(iter(model.parameters()), None)
            dev = first.device if first is not None else torch.device("cpu")
        else:
            dev = _resolve_device(device)
        n_batches = -(-len(ds.split("train")[0]) // batch_size)
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        return cls(
            epochs, lr, batch_size, seed, dev, optimizer, max_batches, keep, batchnorm,
            _callbacks(callback), n_batches,
        )  # fmt: skip

    @property
    def fork_devices(self) -> list[int]:
        """The CUDA devices whose RNG :func:`fit` forks (none on the CPU)."""
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def config(self, method: TrainingMethod, ds: Any) -> dict[str, Any]:
        """The JSON-ready :attr:`TrainResult.config`."""
        config = {
            "method": method.config(),
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "optimizer": self.optimizer,
            "optimizer_kwargs": dict(method.optimizer_kwargs),
            "device": str(self.device),
            "max_batches_per_epoch": self.max_batches_per_epoch,
            "keep": self.keep,
        }
        if hasattr(ds, "summary"):
            config["dataset"] = ds.summary()
        return config


def _progress_bar(show: bool, total: int, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr)


def _train_epoch(
    model: nn.Module, method: TrainingMethod, opt: torch.optim.Optimizer, ds: Any,
    plan: _FitPlan, dtype: torch.dtype, gen: torch.Generator, epoch: int, bar: Any,
) -> dict[str, float]:  # fmt: skip
    """One epoch of shuffled mini-batches, then the validation accuracy: the history entry
    (``epoch``, ``train_loss``, ``val_accuracy``, ``seconds`` and the mean of each log)."""
    dev = plan.device
    params = [p for group in opt.param_groups for p in group["params"]]
    model.train()
    if plan.batchnorm == "eval":
        _freeze_batchnorm(model)
    t0 = time.perf_counter()
    total_loss, sums, count = 0.0, {}, 0
    batches = ds.batches("train", plan.batch_size, shuffle=True, generator=gen)
    for b, (xb, yb, kw) in enumerate(batches):
        if b >= plan.n_batches:
            break
        loss, logs = method.loss(model, _cast(xb, dev, dtype), yb.to(dev), **_to(kw, dev, dtype))
        if not bool(torch.isfinite(loss)):
            raise ValueError(
                f"the {method.name} loss became non-finite at epoch {epoch}, batch {b + 1}; "
                "lower lr or the regularisation weights"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params)  # only the parameters: saliency input leaves need no .grad
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
    acc = _val_accuracy(model, ds, plan.batch_size, dev)
    if bar is not None:
        bar.set_postfix(loss=f"{total_loss / max(count, 1):.4f}", val_acc=f"{acc:.4f}")
    return {
        "epoch": epoch,
        "train_loss": total_loss / max(count, 1),
        "val_accuracy": acc,
        "seconds": seconds,
        **{key: v / max(count, 1) for key, v in sums.items()},
    }


class _BestEpoch:
    """The epoch :func:`fit` keeps: the highest validation accuracy (the latest on ties) with
    ``keep="best"``, the last one with ``keep="last"``."""

    def __init__(self, keep: str) -> None:
        self.keep, self.epoch, self.accuracy = keep, 0, -math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, entry: dict[str, float], model: nn.Module) -> None:
        if self.keep == "last" or entry["val_accuracy"] >= self.accuracy:
            self.accuracy, self.epoch = entry["val_accuracy"], int(entry["epoch"])
            if self.keep == "best":
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def _notify(callbacks: list[Callable[[dict[str, float]], None]], entry: dict, epochs: int) -> bool:
    """Log the epoch and call every callback; True when one raised ``StopIteration``."""
    logger.info(
        "epoch %d/%d: train loss %.4f, val accuracy %.4f, %.2f s", entry["epoch"], epochs,
        entry["train_loss"], entry["val_accuracy"], entry["seconds"],
    )  # fmt: skip
    stop = False
    for cb in callbacks:
        try:
            cb(entry)
        except StopIteration:
            stop = True
    if stop:
        logger.info("a callback stopped training after epoch %d", entry["epoch"])
    return stop


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


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def factory_path(factory: str | Callable[..., Any]) -> str:
    """The ``"module:qualname"`` import path of a model factory (a class or a function), checked
    to import back to the same object; ``ValueError`` for a lambda, a local function, or
    anything defined in ``__main__`` (a later process could not import it)."""
    if isinstance(factory, str):
        resolve_factory(factory)
        return factory
    if not callable(factory):
        raise ValueError(f"factory must be a callable or a 'module:name' string, got {factory!r}")
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ValueError(
            f"factory {qualname or factory!r} cannot be imported by a later process (defined in "
            "__main__, locally or as a lambda); move it into an importable module"
        )
    path = f"{module}:{qualname}"
    if resolve_factory(path) is not factory:
        raise ValueError(f"factory path {path!r} does not import back to the given factory")
    return path


_PLAIN_PACKAGES = ("r2et", "torch")


def _split_factory_path(path: Any) -> tuple[list[str], list[str]]:
    """``"a.b:C.D"`` -> ``(["a", "b"], ["C", "D"])``; ``ValueError`` unless every part is a
    Python name, and always for a dunder part such as ``__main__`` (never imported)."""
    module, sep, qualname = str(path).partition(":")
    if not isinstance(path, str) or not sep or not module or not qualname:
        raise ValueError(f"model factory {path!r} must read 'package.module:Name'")
    modules, names = module.split("."), qualname.split(".")
    for part in modules + names:
        if not part.isidentifier():
            raise ValueError(
                f"model factory {path!r} must read 'package.module:Name' (dotted Python names)"
            )
        if part.startswith("__") and part.endswith("__"):
            raise ValueError(
                f"model factory {path!r} is refused: a factory path with a dunder part "
                f"({part!r}) is never imported or called, even with trust_factory=True"
            )
    return modules, names


def _check_factory_trust(path: str, trust_factory: bool, where: str) -> None:
    """Before anything is imported: without ``trust_factory`` a factory must be a plain
    public name inside the ``r2et`` or ``torch`` packages (``ValueError`` naming it)."""
    modules, names = _split_factory_path(path)
    if trust_factory:
        return
    if modules[0] not in _PLAIN_PACKAGES or any(p.startswith("_") for p in modules + names):
        raise ValueError(
            f"{where} is rebuilt by importing and calling {path!r}, code outside r2et and torch "
            "that loading would run; load it with trust_factory=True (CLI: --trust-factory) "
            "only if you trust that code, or pass model=<an instance of that architecture>"
        )


def resolve_factory(path: str) -> Callable[..., Any]:
    """Import ``"package.module:Qualified.name"`` and return the object (``ValueError`` when the
    path is malformed, has a dunder part such as ``__main__``, or does not import; the message
    says to check ``PYTHONPATH``). It imports whatever the path names: check trust first."""
    import importlib

    _split_factory_path(path)
    module, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"model factory {path!r} does not import ({err}); install its package or add its "
            "folder to PYTHONPATH"
        ) from None
    if not callable(obj):
        raise ValueError(f"model factory {path!r} is not callable")
    return obj


def _model_spec(
    model: nn.Module, factory: str | Callable[..., Any] | None, kwargs: dict[str, Any] | None
) -> dict[str, Any]:
    """``config["model"]``: the build_model spec, a factory spec, or a weights-only spec."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    spec = getattr(model, "r2et_spec", None)
    if factory is None and kwargs is not None:
        raise ValueError("factory_kwargs needs factory=")
    if isinstance(spec, dict) and factory is None:
        return copy.deepcopy(spec)
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"factory_kwargs must be a dict, got {type(kwargs).__name__}")
    try:
        json.dumps(kwargs or {}, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"factory_kwargs must be JSON (numbers, strings, lists): {err}") from None
    path = None if factory is None else factory_path(factory)
    return {"factory": path, "kwargs": dict(kwargs or {}), "class": _class_path(model)}


def save_run(
    folder: str | Path,
    model: nn.Module,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    *,
    dataset: Any = None,
    factory: str | Callable[..., nn.Module] | None = None,
    factory_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write a run folder: ``model.safetensors`` (the state dict), ``config.json`` and
    ``metrics.json``. Works for any ``nn.Module``.

    ``config.json`` holds the caller's ``config`` (e.g. :attr:`TrainResult.config`: method and
    every hyperparameter, seeds, optimiser) plus ``"model"``: how :func:`load_run` rebuilds the
    module without unpickling anything. For a model from :func:`~r2et.build_model` it is
    ``model.r2et_spec``. For your own module it is ``{"factory": "package.module:Name",
    "kwargs": factory_kwargs, "class": ...}`` when ``factory`` (an importable class or function
    returning the module, or its ``"module:qualname"`` path; ``factory_kwargs`` must be JSON) is
    given, else ``{"factory": None, "class": ...}`` (weights only: load them with
    ``load_run(folder, model=an_instance)``). ``"transforms"`` (architecture changes made
    after building, such as ``sp``'s ReLU → Softplus, from ``model.r2et_transforms``),
    ``"dtype"``, ``"weights_sha256"`` (the SHA-256 of ``model.safetensors``), ``"run_sha256"``
    (the SHA-256 of ``weights_sha256`` and the canonical JSON of :data:`RUN_DIGEST_KEYS`:
    ``model``, ``transforms``, ``dtype``, ``dataset``, ``data_seed``, ``data_params``;
    :func:`load_run` refuses weights or such a section changed after saving),
    ``"dataset"`` (``dataset.summary()`` when ``dataset`` is given) and ``"versions"`` (r2et
    and torch). Returns the folder path. Saving trusts ``factory``: it is imported to check
    its path; loading the run later needs ``trust_factory=True`` unless it is a module class
    of r2et or torch.

    Every write is one unit: the complete run is written into a hidden temporary sibling
    (``.NAME.<hex>.tmpdir``), then renamed into place; an existing run folder is swapped
    with it in one atomic step on Linux (else moved aside to ``.NAME.<hex>.old`` first, which
    :func:`load_run` puts back after a kill), so at every instant ``folder`` holds the old run
    or the new one, never a mix. An existing folder is replaced as a whole (files that
    ``save_run`` does not write, e.g. an earlier evaluation, go with the old run), so it must
    be empty or a run folder (``config.json`` with a ``"model"`` section), else
    ``ValueError``. Weights that are not finite are refused (``ValueError``).
    """
    from safetensors.torch import save

    from r2et._checks import check_finite_model
    from r2et._io import atomic_folder, json_text

    spec = _model_spec(model, factory, factory_kwargs)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a dict or None, got {type(config).__name__}")
    if metrics is not None and not isinstance(metrics, dict):
        raise ValueError(f"metrics must be a dict or None, got {type(metrics).__name__}")
    check_finite_model(model)
    folder = Path(folder)
    check_replaceable(folder)
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
    full["run_sha256"] = _run_digest(full["weights_sha256"], json.loads(json_text(full)))
    files = [
        (MODEL_FILE, weights),
        (METRICS_FILE, json_text(metrics or {}).encode("utf-8")),
        (CONFIG_FILE, json_text(full).encode("utf-8")),
    ]
    with atomic_folder(folder) as tmp:
        for name, data in files:
            atomic_write_bytes(tmp / name, data)
    return folder


def check_replaceable(folder: Path, flag: str | None = None) -> None:
    """``ValueError`` unless ``folder`` is new, empty or a run folder (which a save may
    replace as a whole); ``flag`` names the CLI option in the message."""
    name = f"{flag} {folder}" if flag else str(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} exists and is not a folder; choose a folder for the run")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        config = read_json(folder / CONFIG_FILE)
    except (OSError, ValueError):
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(
            f"{name} is not empty and holds no run ({CONFIG_FILE} with a 'model' section); "
            "a run replaces its folder as a whole, so choose a new or empty folder"
        )


#: The config.json sections covered by ``run_sha256`` together with the weights.
RUN_DIGEST_KEYS = ("model", "transforms", "dtype", "dataset", "data_seed", "data_params")


def _run_digest(weights_sha256: Any, config: dict[str, Any]) -> str:
    """SHA-256 of the weights' digest and the canonical JSON of the sections that decide what
    a loaded run computes: the model (``model``, ``transforms``, ``dtype``) and its data
    (``dataset``, ``data_seed``, ``data_params``: an edited seed would evaluate on another
    split)."""
    section = {key: config.get(key) for key in RUN_DIGEST_KEYS}
    text = json.dumps(section, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{weights_sha256}\n{text}".encode()).hexdigest()


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
    """Compare ``model.safetensors``'s SHA-256 with ``config["weights_sha256"]``, then (when
    recorded: runs saved before it existed have none) ``config["run_sha256"]`` with the digest
    of that and the model section."""
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
    if "run_sha256" not in config:
        return
    run_sha = config["run_sha256"]
    if not isinstance(run_sha, str) or run_sha.lower() != _run_digest(recorded, config):
        raise ValueError(
            f"{folder / CONFIG_FILE}: its model or data sections ({', '.join(RUN_DIGEST_KEYS)}) "
            "or the weights were changed after the run was saved (run_sha256 does not match); "
            "refusing to load it"
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
    ``verify`` their SHA-256 and the run digest must match the run's ``config.json`` (see
    :func:`load_run`). Nothing is imported from the run's model section.

    Every tensor name and shape must match (``strict``; with ``strict=False`` only the shared
    names are loaded, shapes must still match), else ``ValueError`` listing the differences.
    Tensors are cast to the model's dtype and device. Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
    folder = Path(folder)
    _restore_if_moved_aside(folder)
    data = _read_weights(folder / MODEL_FILE)
    state = _parse_state(data, folder / MODEL_FILE)
    config = read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    _check_digest(data, config if isinstance(config, dict) else {}, folder, verify)
    _check_state(model, state, strict, where=str(folder))
    own = model.state_dict()
    cast = {k: v.to(dtype=own[k].dtype, device=own[k].device) for k, v in state.items() if k in own}
    model.load_state_dict(cast, strict=strict)
    return model


def _restore_if_moved_aside(folder: Path) -> bool:
    """True when ``folder`` is a folder, after putting back (with a warning) the old run that
    an overwrite killed between its two renames left at ``.NAME.<hex>.old`` (only where the
    atomic exchange is unavailable); ``FileNotFoundError`` when the choice is ambiguous."""
    from r2et._io import restore_moved_aside

    if folder.is_dir():
        return True
    if folder.exists() or not restore_moved_aside(folder, (CONFIG_FILE, MODEL_FILE)):
        return False
    warnings.warn(
        f"run folder {folder} was missing after an interrupted overwrite; restored the "
        "previous run, which had been moved aside",
        stacklevel=3,
    )
    return True


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
    folder: str | Path,
    device: str | torch.device | None = "cpu",
    *,
    verify: bool = True,
    model: nn.Module | None = None,
    trust_factory: bool = False,
) -> Run:
    """Load a run folder written by :func:`save_run`.

    A run folder is data: without ``trust_factory`` loading imports nothing outside the
    ``r2et`` and ``torch`` packages and calls nothing but r2et's and torch's module classes.
    How the module is rebuilt depends on ``config["model"]``: a :func:`~r2et.build_model` spec
    is rebuilt by ``build_model(**spec)``; a factory spec (``"package.module:Name"`` + JSON
    kwargs) by importing and calling its factory, which, checked before anything is imported,
    must be a public ``nn.Module`` class of r2et or torch (e.g. ``"torch.nn:Linear"``) unless
    ``trust_factory=True`` (anything else: ``ValueError`` naming the factory, to be trusted
    with ``trust_factory=True``, CLI ``--trust-factory``, or bypassed with ``model=``). A
    factory path with a dunder part (``__main__``, ``__init__``...) is refused even with
    trust. A weights-only run needs ``model=`` (an instance of the same architecture, loaded
    in place); ``model=`` also overrides any spec. The recorded transforms are re-applied
    (``sp``'s Softplus), the model is cast to the recorded dtype and the tensors of
    ``model.safetensors`` are loaded with a strict name and shape check, bit-exactly. Nothing
    is unpickled: a pickle, corrupt or truncated file raises ``ValueError``, a missing file
    ``FileNotFoundError``.

    With ``verify`` (default) the file's SHA-256 must equal the ``weights_sha256`` that
    :func:`save_run` recorded in ``config.json`` (a mismatch or a missing digest raises
    ``ValueError``), and ``run_sha256``, which covers that digest and the model and data
    sections (:data:`RUN_DIGEST_KEYS`), must match it: an edited section is refused.
    Runs saved before ``run_sha256`` existed load as before. A ``build_model`` spec and a
    factory alike are built on the ``meta`` device first and refused (``ValueError``) when
    they do not build, exceed :data:`~r2et._checks.MAX_PARAMETERS` or do not match the stored
    tensors, before any memory is allocated (a trusted factory that cannot be built on
    ``meta`` is built for real, then checked); weights that are not finite are refused too.
    If ``folder`` is missing because an overwrite was killed between its two renames (only
    where the atomic exchange is unavailable), the old run moved aside to
    ``.NAME.<hex>.old`` is put back, with a warning. ``metrics.json`` may be absent (empty
    metrics). The model is returned in eval mode on ``device``.
    """
    from r2et._checks import check_finite_model

    folder = Path(folder)
    if not _restore_if_moved_aside(folder):
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
    transforms = config.get("transforms", [])
    if model is not None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if transforms:
            model = apply_transforms(model, transforms)
    else:
        model = _rebuild(config["model"], transforms, state, folder, trust_factory)
    _check_state(model, state, strict=True, where=str(folder))
    dtype = config.get("dtype")
    if dtype is not None:
        plain = isinstance(dtype, str) and dtype.isidentifier() and not dtype.startswith("_")
        torch_dtype = getattr(torch, dtype, None) if plain else None
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


def _rebuild(
    spec: dict[str, Any],
    transforms: Any,
    state: dict[str, torch.Tensor],
    folder: Path,
    trust_factory: bool,
) -> nn.Module:
    """A fresh module from ``config["model"]`` (see :func:`load_run`)."""
    from r2et.models import count_model_parameters

    if "factory" not in spec:
        count_model_parameters(spec, where=f"{folder / CONFIG_FILE}: the model spec")
        with torch.device("meta"):
            shadow = apply_transforms(build_model(**spec), transforms)
        _check_state(shadow, state, strict=True, where=str(folder))
        return apply_transforms(build_model(**spec), transforms)
    path, kwargs = spec.get("factory"), spec.get("kwargs", {})
    if path is None:
        raise ValueError(
            f"{folder} stores only the weights of a {spec.get('class', 'custom module')}; "
            "pass model=<an instance of that architecture> to load_run (or save with factory=)"
        )
    if not isinstance(path, str) or not isinstance(kwargs, dict):
        raise ValueError(f"{folder / CONFIG_FILE}: malformed model factory spec {spec!r}")
    _check_factory_trust(path, trust_factory, str(folder))  # before anything is imported
    factory = resolve_factory(path)
    if not trust_factory:
        is_module_class = isinstance(factory, type) and issubclass(factory, nn.Module)
        home = str(getattr(factory, "__module__", "")).split(".")[0]
        if not is_module_class or home not in _PLAIN_PACKAGES:
            raise ValueError(
                f"{folder} is rebuilt by calling {path!r}, which is not an nn.Module class of "
                "r2et or torch; load it with trust_factory=True (CLI: --trust-factory) if you "
                "trust that code, or pass model=<an instance of that architecture>"
            )
    where = f"{folder / CONFIG_FILE}: model factory {path!r}"
    try:
        # nothing is allocated on meta; the guard stops a build that grows past the limits
        # while it runs (10^8 layers would otherwise take hours even on meta)
        # an explicit device= in the kwargs would override the meta default: point it at meta
        shadow_kwargs = {**kwargs, "device": "meta"} if "device" in kwargs else kwargs
        with torch.device("meta"), _build_guard(len(state), where):
            shadow = factory(**shadow_kwargs)
    except _BuildTooLarge as err:
        raise ValueError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - any failure means it cannot be checked
        if not trust_factory:
            msg = " ".join(str(err).split())[:300]
            raise ValueError(
                f"{where} cannot be built on the meta device with its kwargs, so it cannot be "
                f"checked before memory is allocated ({type(err).__name__}: {msg})"
            ) from None
        shadow = None  # trusted: build it for real, then check the same things
    if shadow is not None:
        _check_built(shadow, transforms, state, folder, where)
    built = factory(**kwargs)
    if not isinstance(built, nn.Module):
        raise ValueError(f"model factory {path!r} returned {type(built).__name__}, not a module")
    if shadow is None:
        return _check_built(built, transforms, state, folder, where)
    return apply_transforms(built, transforms) if transforms else built


#: Seconds and Python calls a model factory may take to build on the meta device when a run
#: is loaded (resnet9 takes 2,000 calls, a 12-layer nn.Transformer 26,000).
META_BUILD_SECONDS = 60.0
MAX_BUILD_CALLS = 1_000_000


class _BuildTooLarge(Exception):
    """Raised inside a factory's meta build once it passes :func:`_build_guard`'s limits."""


@contextlib.contextmanager
def _build_guard(n_tensors: int, where: str) -> Iterator[None]:
    """While a factory is built, count the submodules and parameter elements it registers
    (torch's global registration hooks) and abort the build (:class:`_BuildTooLarge`) once it
    passes :data:`~r2et._checks.MAX_PARAMETERS` elements or ``max(10_000, 8 * n_tensors)``
    submodules or parameters (far more than a model storing ``n_tensors`` tensors can have),
    :data:`MAX_BUILD_CALLS` Python calls or :data:`META_BUILD_SECONDS` seconds (a trace
    function on ``call`` events; one already set, a debugger's, is chained)."""
    from torch.nn.modules import module as nn_module

    from r2et._checks import MAX_PARAMETERS

    max_modules = max(10_000, 8 * n_tensors)
    seen = {"modules": 0, "parameters": 0, "elements": 0}

    def on_module(parent: Any, name: str, sub: Any) -> None:
        seen["modules"] += 1
        if seen["modules"] > max_modules:
            raise _BuildTooLarge(
                f"{where} registers more than {max_modules:,} submodules while it is built, for "
                f"{n_tensors} stored tensors; refusing to build it"
            )

    def on_parameter(parent: Any, name: str, param: Any) -> None:  # and buffers
        seen["parameters"] += 1
        if seen["parameters"] > max_modules:
            raise _BuildTooLarge(
                f"{where} registers more than {max_modules:,} parameters while it is built, for "
                f"{n_tensors} stored tensors; refusing to build it"
            )
        seen["elements"] += 0 if param is None else int(param.numel())
        if seen["elements"] > MAX_PARAMETERS:
            raise _BuildTooLarge(
                f"{where} describes a model of more than {MAX_PARAMETERS:,} parameters and "
                f"buffers; the limit is {MAX_PARAMETERS:,}"
            )

    started = time.monotonic()
    previous = sys.gettrace()

    def on_call(frame: Any, event: str, arg: Any) -> Any:
        # a build can loop in code that registers nothing (deep copies of one layer, say):
        # count its Python calls and watch the clock, with no signal and in any thread
        seen["calls"] += 1
        if seen["calls"] > MAX_BUILD_CALLS:
            raise _BuildTooLarge(
                f"{where} made more than {MAX_BUILD_CALLS:,} Python calls while it was built "
                "on the meta device (nothing allocated); refusing it"
            )
        if seen["calls"] % 1024 == 0 and time.monotonic() - started > META_BUILD_SECONDS:
            raise _BuildTooLarge(
                f"{where} took more than {META_BUILD_SECONDS:g} s to build on the meta device "
                "(nothing allocated); refusing it"
            )
        return previous(frame, event, arg) if previous is not None else None

    seen["calls"] = 0
    handles = [
        nn_module.register_module_module_registration_hook(on_module),
        nn_module.register_module_parameter_registration_hook(on_parameter),
        nn_module.register_module_buffer_registration_hook(on_parameter),
    ]
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)
        for handle in handles:
            handle.remove()


def _check_built(
    model: Any, transforms: Any, state: dict[str, torch.Tensor], folder: Path, where: str
) -> nn.Module:
    """A built factory's module, transforms applied, checked against the parameter limit and
    the stored tensors' names and shapes (``ValueError``)."""
    from r2et._checks import MAX_PARAMETERS

    if not isinstance(model, nn.Module):
        raise ValueError(f"{where} returned {type(model).__name__}, not a module")
    model = apply_transforms(model, transforms) if transforms else model
    count = sum(t.numel() for t in model.parameters()) + sum(b.numel() for b in model.buffers())
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where} describes a model of {count:,} parameters and buffers; the limit is "
            f"{MAX_PARAMETERS:,}"
        )
    _check_state(model, state, strict=True, where=str(folder))
    return model
