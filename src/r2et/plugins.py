"""Plugins: modules that register datasets, models, explainers, training methods or attacks
from outside r2et, so that the command line and the bench's worker processes see them.

A plugin is an importable module whose import registers its entries (``register_dataset``,
``register_model``, ``register_explainer``, ``register_method``, ``register_attack``). It is
named either by an installed package's entry point in the group :data:`ENTRY_POINT_GROUP`::

    # pyproject.toml of the plugin's package
    [project.entry-points."r2et.plugins"]
    mine = "my_package.r2et_entries"

or, without installing anything, by the environment variable :data:`ENV_VAR` (a
comma-separated list of module names importable from ``PYTHONPATH``)::

    R2ET_PLUGINS=my_entries r2et train --dataset my-dataset --model my-model

:func:`load_plugins` imports each once per process (the CLI calls it before running a command,
the bench's process and Ray workers when they start). Plugins are code the user installed or
named: a run folder never names one and loading a run never imports one.
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

#: The entry-point group an installed package lists its plugin modules under.
ENTRY_POINT_GROUP = "r2et.plugins"
#: The environment variable naming plugin modules (comma-separated).
ENV_VAR = "R2ET_PLUGINS"

_LOADED: list[str] = []


def plugin_modules() -> list[str]:
    """The plugin module names, entry points first (sorted by entry-point name), then
    :data:`ENV_VAR`'s in its order, each once."""
    names = [
        ep.value.partition(":")[0].strip()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    ]
    names += [part.strip() for part in os.environ.get(ENV_VAR, "").split(",") if part.strip()]
    return list(dict.fromkeys(names))


def load_plugins() -> list[str]:
    """Import every plugin module (:func:`plugin_modules`) not imported yet by this function
    and return the names of those it imported. A module that is not a dotted Python name, or
    that fails to import, raises ``ValueError`` naming it and where it was listed."""
    done = []
    for name in plugin_modules():
        if name in _LOADED:
            continue
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(
                f"plugin {name!r} (from {ENV_VAR} or the {ENTRY_POINT_GROUP!r} entry points) "
                "is not a module name such as 'my_package.entries'"
            )
        try:
            importlib.import_module(name)
        except Exception as err:  # a plugin's own error: one line naming the plugin
            msg = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(
                f"plugin {name!r} (from {ENV_VAR} or the {ENTRY_POINT_GROUP!r} entry points) "
                f"failed to import: {msg}"
            ) from None
        _LOADED.append(name)
        done.append(name)
    return done
