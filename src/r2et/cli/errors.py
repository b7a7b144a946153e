"""Exit codes and error reporting of the ``r2et`` command: every error becomes one line on
stderr (``--debug`` adds the traceback) and an exit code (see :mod:`r2et.cli`)."""

from __future__ import annotations

import sys
import traceback
from typing import Any

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_OS, EXIT_INTERNAL, EXIT_LOCKED = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

EXIT_CODES_HELP = (
    "exit codes: 0 success; 1 bench finished with failed cells; 2 bad input (usage, value, "
    "name, missing file, unwritable --out); 3 system error (disk full, permission, out of "
    "memory); 4 internal error (a bug; --debug shows the traceback); 5 output folder locked "
    "by another run; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM)"
)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that clean-up (temporary files, the lock) runs."""


#: Set once SIGINT arrived during :func:`r2et.cli.main`: whatever error follows is its
#: consequence (an import interrupted half-way can surface later as a RecursionError or an
#: ImportError).
INTERRUPTED = {"seen": False}


def one_line(err: BaseException) -> str:
    """An exception's message on one line."""
    msg = " ".join(str(err).split())
    return msg or type(err).__name__


def os_message(err: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` -> ``No space left on device: x``."""
    if err.strerror:
        where = f": {err.filename}" if err.filename is not None else ""
        return f"{err.strerror}{where}"
    return one_line(err)


def show_warning(message: Any, category: Any, filename: str, lineno: int, *a: Any) -> None:
    """Warnings as one line on stderr (``r2et: warning: ...``)."""
    print(f"r2et: warning: {one_line(message)}", file=sys.stderr)


def terminate(signum: int, frame: Any) -> None:
    """The SIGTERM handler: raise :class:`Terminated`."""
    raise Terminated()


def interrupt(signum: int, frame: Any) -> None:
    """The SIGINT handler: note the interrupt (see :data:`INTERRUPTED`) and raise it."""
    INTERRUPTED["seen"] = True
    raise KeyboardInterrupt()


def report(err: BaseException, debug: bool) -> int:
    """Print ``err`` as one line on stderr (with the traceback under ``--debug``) and return
    its exit code."""
    from r2et._io import FolderLockedError

    if isinstance(err, SystemExit):
        raise err
    if debug:
        traceback.print_exception(err)
    if isinstance(err, Terminated):
        code, msg = EXIT_TERMINATED, "r2et: terminated"
    elif isinstance(err, KeyboardInterrupt) or INTERRUPTED["seen"]:
        code, msg = EXIT_INTERRUPTED, "r2et: interrupted"
    elif isinstance(err, FolderLockedError):
        code, msg = EXIT_LOCKED, f"r2et: error: {one_line(err)}"
    elif isinstance(err, (ValueError, TypeError, FileNotFoundError, NotADirectoryError)):
        code, msg = EXIT_USAGE, f"r2et: error: {one_line(err)}"
    elif (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"
        or (isinstance(err, RuntimeError) and "can't allocate memory" in str(err))  # CPU
    ):
        code, msg = EXIT_OS, f"r2et: error: out of memory ({one_line(err)})"
    elif isinstance(err, OSError):
        code, msg = EXIT_OS, f"r2et: error: {os_message(err)}"
    else:
        hint = "" if debug else "; rerun with --debug for the traceback"
        code = EXIT_INTERNAL
        msg = f"r2et: internal error: {type(err).__name__}: {one_line(err)}{hint}"
    print(msg, file=sys.stderr)
    return code
