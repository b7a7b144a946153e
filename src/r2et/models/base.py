"""The model registry and the contract every model entry meets.

A model entry is a *builder* ``builder(input_shape, n_classes, **kw) -> nn.Module`` registered
under a name with :func:`register_model` (the built-in ones live one family per file,
:mod:`r2et.models.mlp`, :mod:`~r2et.models.cnn` and :mod:`~r2et.models.gnn`, each registering
its builders when imported). The contract:

* ``input_shape`` is the shape of one input without the batch dimension (a list of ints
  >= 1, checked by :func:`build_model`), ``n_classes`` an int >= 2, ``kw`` JSON-ready keywords
  (numbers, strings, lists, None; tuples are recorded as lists). A bad size or choice raises
  ``ValueError``; an unknown keyword's ``TypeError`` becomes a ``ValueError`` naming the model.
* The module's ``forward(x, **forward_kwargs)`` takes a batch ``(N, *input_shape)`` (plus the
  dataset's ``forward_kwargs``, e.g. a graph's ``adj``) and returns ``(N, n_classes)`` logits.
  Nonlinearities are ``nn.ReLU`` modules, not functional calls, so
  :func:`~r2et.models.relu_to_softplus` can swap them.
* :func:`build_model` records what it was called with as ``model.r2et_spec = {"name",
  "input_shape", "n_classes", **kw}``; run folders (:mod:`r2et.runs`), the bench's wire format
  and the CLI store that spec and rebuild the model with ``build_model(**spec)`` (never by
  unpickling), so the architecture must depend on the spec alone, and the builder must
  allocate only through torch's factory functions: :func:`count_model_parameters` and
  :func:`~r2et.runs.load_run` first build it on the ``meta`` device, where nothing is
  allocated.

The one test every registered model must pass, for an input shape and keywords it accepts:
it builds on the ``meta`` device (``with torch.device("meta"): build_model(name, shape, C,
**kw)``, and :func:`count_model_parameters` of its spec returns its parameter count); built
for real, its output on a batch ``(N, *shape)`` (with its ``forward_kwargs``) has shape
``(N, C)``; and ``build_model(**model.r2et_spec)``, the spec sent through JSON, rebuilds the
same architecture: the same state-dict names and shapes, and with ``model``'s state dict
loaded, the same outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from r2et._checks import MAX_PARAMETERS, check_choice, check_sizes
from r2et._registry import Registry

__all__ = ["MODELS", "build_model", "count_model_parameters", "list_models", "register_model"]

#: Model name -> builder. The built-in entries register themselves when their files are
#: imported (:mod:`r2et.models` imports ``mlp``, ``cnn``, ``gnn`` in that order).
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder(input_shape, n_classes, **kw) -> nn.Module`` as model ``name`` (then
    :func:`build_model`, run folders and the bench know it)."""
    if not callable(builder):
        raise ValueError(f"register_model needs a builder function, got {builder!r}")
    MODELS.register(name, builder)
    return builder


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(MODELS.names())


def build_model(name: str, input_shape: Sequence[int], n_classes: int, **kw: Any) -> nn.Module:
    """Build model ``name`` for inputs of shape ``input_shape`` (without the batch dimension)
    and ``n_classes`` outputs; the JSON spec is stored as ``model.r2et_spec``."""
    check_choice("name", name, list_models())
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    shape = check_sizes("input_shape", input_shape, min_len=1)
    try:
        model = MODELS.get(name)(shape, n_classes, **kw)
    except TypeError as err:
        raise ValueError(f"bad keyword arguments for model {name!r}: {err}") from None
    model.r2et_spec = {
        "name": name,
        "input_shape": shape,
        "n_classes": n_classes,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
    }
    return model


def count_model_parameters(spec: dict[str, object], where: str = "model spec") -> int:
    """Build ``spec`` (keywords of :func:`~r2et.build_model`) on the ``meta`` device, where
    nothing is allocated, and return its parameter count; raise ``ValueError`` for a spec
    that does not build or exceeds :data:`MAX_PARAMETERS`."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a table of build_model keywords, got {spec!r}")
    try:
        with torch.device("meta"):
            model = build_model(**spec)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"{where} does not describe a model ({msg})") from None
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(
            f"{where} describes a model of {count:,} parameters; the limit is {MAX_PARAMETERS:,}"
        )
    return count
