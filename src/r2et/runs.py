"""Run folders and the one model wire format.

A run folder holds ``model.safetensors``, ``config.json`` and ``metrics.json``, each written
atomically (:func:`save_run`); loading (:func:`load_run`, :func:`load_model_into`) rebuilds
the model from its JSON spec (:mod:`r2et.rebuild`: factory paths and their trust check, the
meta-device build guard, :func:`apply_transforms`) and never unpickles. :func:`model_bytes` /
:func:`model_from_bytes` are the one wire format of a model between processes and machines:
plain data (spec, transforms, safetensors bytes), never a pickle.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r2et._io import atomic_write_bytes, read_json
from r2et._version import __version__
from r2et.models import build_model
from r2et.rebuild import (  # the public ones are re-exported here
    MAX_BUILD_CALLS,
    META_BUILD_SECONDS,
    apply_transforms,
    check_state,
    factory_path,
    rebuild_model,
    resolve_factory,
)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"

__all__ = [
    "CONFIG_FILE",
    "MAX_BUILD_CALLS",
    "META_BUILD_SECONDS",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_DIGEST_KEYS",
    "Run",
    "apply_transforms",
    "check_replaceable",
    "factory_path",
    "load_model_into",
    "load_run",
    "model_bytes",
    "model_from_bytes",
    "resolve_factory",
    "save_run",
]


@dataclass
class Run:
    """A loaded run folder: the rebuilt ``model`` (eval mode), its ``config`` and ``metrics``."""

    model: nn.Module
    config: dict[str, Any]
    metrics: dict[str, Any]


def _versions() -> dict[str, str]:
    return {"r2et": __version__, "torch": torch.__version__}


def _class_path(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


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

    ``config.json`` holds the caller's ``config`` (e.g. :attr:`~r2et.train.TrainResult.config`:
    method and every hyperparameter, seeds, optimiser) plus ``"model"``: how :func:`load_run`
    rebuilds the module without unpickling anything. For a model from :func:`~r2et.build_model`
    it is ``model.r2et_spec``. For your own module it is ``{"factory": "package.module:Name",
    "kwargs": factory_kwargs, "class": ...}`` when ``factory`` (an importable class or function
    returning the module, or its ``"module:qualname"`` path; ``factory_kwargs`` must be JSON) is
    given, else ``{"factory": None, "class": ...}`` (weights only: load them with
    ``load_run(folder, model=an_instance)``). ``"transforms"`` (architecture changes made after
    building, such as ``sp``'s ReLU → Softplus, from ``model.r2et_transforms``), ``"dtype"``,
    ``"weights_sha256"`` (the SHA-256 of ``model.safetensors``), ``"run_sha256"`` (the SHA-256
    of ``weights_sha256`` and the canonical JSON of :data:`RUN_DIGEST_KEYS`: ``model``,
    ``transforms``, ``dtype``, ``dataset``, ``data_seed``, ``data_params``; :func:`load_run`
    refuses weights or such a section changed after saving), ``"dataset"``
    (``dataset.summary()`` when ``dataset`` is given) and ``"versions"`` (r2et and torch).
    Returns the folder path. Saving trusts ``factory``: it is imported to check its path;
    loading the run later needs ``trust_factory=True`` unless it is a module class of r2et or
    torch.

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
    check_state(model, state, strict, where=str(folder))
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
    from r2et._checks import check_device, check_finite_model

    folder = Path(folder)
    if not _restore_if_moved_aside(folder):
        raise FileNotFoundError(f"run folder {folder} does not exist")
    dev = check_device("device", device)
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
        model = rebuild_model(
            config["model"], transforms, state, folder, trust_factory, folder / CONFIG_FILE
        )
    check_state(model, state, strict=True, where=str(folder))
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


# ---------------------------------------------------------------------------- wire format
def model_bytes(model: torch.nn.Module) -> dict[str, Any]:
    """A model as plain data (spec, architecture transforms, safetensors bytes): what crosses
    process and machine boundaries between the driver and Ray workers, never a pickle."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "spec": dict(model.r2et_spec),
        "transforms": list(getattr(model, "r2et_transforms", [])),
        "state": save(state),
    }


def model_from_bytes(blob: dict[str, Any]) -> torch.nn.Module:
    """Inverse of :func:`model_bytes`: rebuild, re-apply transforms (``sp``), load tensors."""
    from safetensors.torch import load

    model = apply_transforms(build_model(**blob["spec"]), blob.get("transforms", []))
    model.load_state_dict(load(blob["state"]))
    return model
