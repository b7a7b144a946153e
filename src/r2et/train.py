"""Training loop: :func:`fit`.

:func:`fit` trains a model with one of the recipes of :mod:`r2et.methods`, from scratch or
fine-tuning a pre-trained model (the protocol of Chen et al., NeurIPS 2024: pre-train a vanilla
model, then fine-tune it with each method). Run folders (:func:`save_run`, :func:`load_run`
and the rest of :mod:`r2et.runs`) are re-exported here, where they lived first: a run folder
holds ``model.safetensors``, ``config.json`` and ``metrics.json``, each written atomically;
loading rebuilds the model from its JSON spec and never unpickles. ``evaluate`` (from
:mod:`r2et.evaluation`) is re-exported here, as the design names it ``r2et.train.evaluate``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from r2et._checks import check_choice, check_int, check_positive, not_logits
from r2et._threads import thread_budget
from r2et.data.custom import as_dataset
from r2et.evaluation import evaluate
from r2et.methods import TrainingMethod, get_method, method_row
from r2et.runs import (  # re-exported: run folders lived here first
    CONFIG_FILE,
    MAX_BUILD_CALLS,
    META_BUILD_SECONDS,
    METRICS_FILE,
    MODEL_FILE,
    RUN_DIGEST_KEYS,
    Run,
    apply_transforms,
    check_replaceable,
    factory_path,
    load_model_into,
    load_run,
    resolve_factory,
    save_run,
)

logger = logging.getLogger("r2et")

OPTIMIZERS = ("adam", "sgd")
KEEP = ("best", "last")
BATCHNORM_MODES = ("train", "eval")

__all__ = [
    "CONFIG_FILE",
    "MAX_BUILD_CALLS",
    "META_BUILD_SECONDS",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_DIGEST_KEYS",
    "Run",
    "TrainResult",
    "apply_transforms",
    "build_optimizer",
    "check_replaceable",
    "evaluate",
    "factory_path",
    "fit",
    "load_model_into",
    "load_run",
    "resolve_factory",
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
    model: nn.Module,
    method: TrainingMethod,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` (momentum 0.9) over the model's parameters with L2
    weight decay ``weight_decay`` (the gradient gets ``+ weight_decay · θ``); the method's
    ``optimizer_kwargs`` win over it (e.g. ``weight_decay`` for ``wd``)."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    kwargs = {"weight_decay": float(weight_decay), **method.optimizer_kwargs}
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, **kwargs)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, **kwargs)


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
    if (msg := not_logits(out)) is not None:
        raise ValueError(f"{msg}; fit trains a classifier that returns (N, {n_classes}) logits")
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
    keep: str | None = None,
    batchnorm: str = "train",
    weight_decay: float | None = None,
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
    ``k=ds.default_k``, the dataset's explanation, ``ds.default_explainer``: on a table
    with categorical attributes, gradient × input per attribute, and the hyperparameters it
    suggests, ``ds.default_params``). The model is first passed
    through ``method.prepare`` (``sp`` returns a
    Softplus copy; other methods train ``model`` in place), moved to ``device`` (None: where
    its parameters already are, so a model is never moved behind your back; floating inputs
    are cast to the model's dtype, so ``bfloat16``/``float16`` models train) and trained for
    ``epochs`` epochs of shuffled mini-batches with Adam or SGD (momentum 0.9) at learning rate
    ``lr``, minimising ``method.loss``; ``epochs``/``batch_size`` left None take the dataset's
    ``default_fit`` (small tables: 50 to 200 epochs of 32 rows, see
    :func:`r2et.data.tabular.small_table_defaults`), else 10 epochs of 128. It
    fine-tunes whatever weights ``model`` holds: pass a pre-trained model to fine-tune. After
    every epoch the validation accuracy is measured; ``keep="best"`` (default) restores the
    weights of the epoch with the highest validation accuracy (the latest one on ties: when
    accuracy plateaus, the regulariser has had the most steps),
    ``keep="last"`` keeps the final weights. ``weight_decay`` adds ``weight_decay · θ`` to
    every parameter's gradient (Adam's coupled L2, with any method; a method's own, ``wd``'s,
    wins). Both left None take the dataset's ``default_fit`` if it names them, else
    ``"best"`` and 0. Everything random is seeded by ``seed``: the
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
        keep, batchnorm, callback, weight_decay,
    )  # fmt: skip
    _check_data_for_model(model, ds)
    model = method.prepare(model).to(plan.device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    _check_output_width(model, ds, plan.device, dtype)
    opt = build_optimizer(model, method, plan.optimizer, plan.lr, plan.weight_decay)
    config = plan.config(method, ds)
    logger.info(
        "fit %s on %s (%s): %d epochs of batch %d, lr %g, seed %d", method.name, plan.device,
        str(dtype).removeprefix("torch."), plan.epochs, plan.batch_size, plan.lr, plan.seed,
    )  # fmt: skip
    history: list[dict[str, float]] = []
    best = _BestEpoch(plan.keep)
    gen = torch.Generator().manual_seed(plan.seed)
    xp, _, kwp = ds.subset("train", 1)  # the threads suit the model's work (r2et._threads)
    with thread_budget(model, _cast(xp, plan.device, dtype), plan.batch_size,
                       **_to(kwp, plan.device, dtype)):  # fmt: skip
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


def method_explanation(method: str, ds: Any) -> dict[str, Any]:
    """``get_method`` keywords for the explanation that suits ``ds``: ``{"explainer":
    config}``, the dataset's :attr:`~r2et.data.Dataset.default_explainer` (rule, options and
    units) explaining the method's own output (``method_row(method).output``); empty for data
    without one."""
    spec = getattr(ds, "default_explainer", None)
    if not isinstance(spec, dict):
        return {}
    return {"explainer": {**spec, "output": method_row(method).output}}


def method_defaults(method: str, ds: Any) -> dict[str, Any]:
    """The hyperparameters ``ds`` suggests for ``method`` (``ds.default_params``; one-hot
    tables: ``r2et``'s lam 0.3), empty when it suggests none."""
    params = getattr(ds, "default_params", None)
    return dict(params.get(method, {})) if isinstance(params, dict) else {}


def _resolve_method(method: TrainingMethod | str, ds: Any) -> TrainingMethod:
    if isinstance(method, str):
        kw = {**method_explanation(method, ds), **method_defaults(method, ds)}
        return get_method(method, k=ds.default_k, **kw)
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
    weight_decay: float

    @classmethod
    def resolve(
        cls, model: nn.Module, ds: Any, epochs: int | None, lr: float, batch_size: int | None,
        seed: int, device: Any, optimizer: str, max_batches: int | None, keep: str | None,
        batchnorm: str, callback: Any, weight_decay: float | None,
    ) -> _FitPlan:  # fmt: skip
        defaults = getattr(ds, "default_fit", None) or {}
        epochs = defaults.get("epochs", 10) if epochs is None else epochs
        batch_size = defaults.get("batch_size", 128) if batch_size is None else batch_size
        keep = defaults.get("keep", "best") if keep is None else keep
        if weight_decay is None:
            weight_decay = defaults.get("weight_decay", 0.0)
        check_positive("weight_decay", weight_decay, allow_zero=True)
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
            _callbacks(callback), n_batches, float(weight_decay),
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
            "weight_decay": self.weight_decay,
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
