"""The ``r2et`` command line: train, evaluate, bench, explain, datasets, methods, demo.

Every argument is checked before any work starts. Errors are one line on stderr (``--debug``
adds the traceback) and the exit code says what happened:

====  ===================================================================================
0     success
1     ``r2et bench`` finished, but some cells failed (see ``OUT/errors``; ``--resume``)
2     bad input: a usage error, a bad value, an unknown name, a missing or invalid file, an
      unwritable or ill-chosen ``--out`` (``ValueError``, ``TypeError``, ``FileNotFoundError``),
      a plugin (:mod:`r2et.plugins`) that fails to import
3     the system refused: an ``OSError`` while working (disk full, permission denied,
      read-only file system) or out of memory
4     an unexpected internal error (a bug: please report it with the ``--debug`` traceback)
5     the output folder is locked by another running ``r2et bench``
130   interrupted (Ctrl-C); 143: terminated (SIGTERM). Finished benchmark cells are kept.
====  ===================================================================================

One module per command (:mod:`r2et.cli.train`, ``evaluate``, ``bench``, ``explain``,
``datasets``, ``methods``, ``demo``), the shared argument types and checks in
:mod:`r2et.cli.args`, exit codes and error reporting in :mod:`r2et.cli.errors`, the parser and
:func:`main` in :mod:`r2et.cli.app`. Importing this package imports no torch: each command
imports what it needs when it runs.
"""

from __future__ import annotations

from r2et.cli.app import build_parser, main
from r2et.cli.bench import cmd_bench
from r2et.cli.datasets import cmd_datasets
from r2et.cli.demo import cmd_demo
from r2et.cli.errors import (
    EXIT_CODES_HELP,
    EXIT_FAILED_CELLS,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_OS,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
)
from r2et.cli.evaluate import cmd_evaluate
from r2et.cli.explain import cmd_explain
from r2et.cli.methods import cmd_methods
from r2et.cli.train import cmd_train

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED_CELLS",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_OS",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "build_parser",
    "cmd_bench",
    "cmd_datasets",
    "cmd_demo",
    "cmd_evaluate",
    "cmd_explain",
    "cmd_methods",
    "cmd_train",
    "main",
]
