"""Rebuilding a run's module from its ``config["model"]`` section, safely.

A run folder is data: :func:`rebuild_model` imports nothing outside ``r2et`` and ``torch``
unless trusted (:func:`factory_path`, :func:`resolve_factory` and the trust check on a factory
path, done before anything is imported), builds the module on the ``meta`` device first under a
guard that stops a build growing past the limits (:data:`META_BUILD_SECONDS`,
:data:`MAX_BUILD_CALLS`, :data:`~r2et._checks.MAX_PARAMETERS`), and checks it against the
stored tensors (:func:`check_state`) before any memory is allocated. :func:`apply_transforms`
re-applies the recorded architecture changes (``sp``'s Softplus).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from r2et.models import build_model, count_model_parameters, relu_to_softplus

__all__ = [
    "MAX_BUILD_CALLS",
    "META_BUILD_SECONDS",
    "apply_transforms",
    "check_state",
    "factory_path",
    "rebuild_model",
    "resolve_factory",
]


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
    if module.startswith("r2et."):  # record where r2et exports it, not the file it lives in
        parts = module.split(".")
        for i in range(1, len(parts)):
            short = f"{'.'.join(parts[:i])}:{qualname}"
            try:
                if resolve_factory(short) is factory:
                    path = short
                    break
            except ValueError:
                continue
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


def check_state(model: nn.Module, state: dict[str, torch.Tensor], strict: bool, where: str) -> None:
    """``ValueError`` (naming ``where``) unless ``state``'s tensors fit ``model``: the same
    names (``strict``) and the same shapes, listing up to 8 differences of each kind."""
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


def rebuild_model(
    spec: dict[str, Any],
    transforms: Any,
    state: dict[str, torch.Tensor],
    folder: Path,
    trust_factory: bool,
    config_path: Path,
) -> nn.Module:
    """A fresh module from ``config["model"]`` (``spec``; see :func:`~r2et.runs.load_run`) of
    the run in ``folder``, whose ``config.json`` is ``config_path`` (named in messages)."""

    if "factory" not in spec:
        count_model_parameters(spec, where=f"{config_path}: the model spec")
        with torch.device("meta"):
            shadow = apply_transforms(build_model(**spec), transforms)
        check_state(shadow, state, strict=True, where=str(folder))
        return apply_transforms(build_model(**spec), transforms)
    path, kwargs = spec.get("factory"), spec.get("kwargs", {})
    if path is None:
        raise ValueError(
            f"{folder} stores only the weights of a {spec.get('class', 'custom module')}; "
            "pass model=<an instance of that architecture> to load_run (or save with factory=)"
        )
    if not isinstance(path, str) or not isinstance(kwargs, dict):
        raise ValueError(f"{config_path}: malformed model factory spec {spec!r}")
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
    where = f"{config_path}: model factory {path!r}"
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
#: Read from this module at each build (``r2et.runs`` and ``r2et.train`` hold copies).
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
    check_state(model, state, strict=True, where=str(folder))
    return model
