"""Atomic file and folder writes, stale-temporary clean-up and an output-folder lock
(internal).

* :func:`atomic_write_bytes` writes to a temporary file in the target folder, then renames it
  over the target: a reader never sees a half-written file, and an interrupted write leaves
  the previous version (or nothing) in place.
* :func:`atomic_folder` does the same for a whole folder (a run folder, a benchmark unit):
  everything is written into a temporary sibling folder, which is renamed into place only
  when complete, so a kill at any instant leaves either nothing or the whole folder. An
  existing folder is swapped with the new one in one step (Linux ``renameat2`` with
  ``RENAME_EXCHANGE``); where that is not available it is moved aside to ``.NAME.<hex>.old``
  and the new one renamed in, and :func:`restore_moved_aside` puts a folder moved aside by a
  killed writer back, so the path always leads to the old or the new folder.
* Temporary names all start with ``.`` and contain ``.tmp`` (``.NAME.<hex>.tmp``,
  ``.NAME.<hex>.tmpdir``, ``.NAME.<hex>.old``); :func:`remove_stale_temps` deletes the
  leftovers of a killed writer. Files and folders are created with the ordinary modes
  (``0o666``/``0o777`` minus the umask), not ``0o600``.
* :class:`FolderLock` is an exclusive, non-blocking lock on a folder (``fcntl.flock`` on
  ``.r2et.lock``; the operating system releases it when its process dies, so a lock is never
  stale).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import math
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = ".r2et.lock"
_MOVED_ASIDE_RE = re.compile(r"^\.(.+)\.[0-9a-f]+\.old$")
_TEMP_RE = re.compile(r"^\..+\.(tmp|tmpdir|old)(\.[A-Za-z0-9]+)?$")


def _temp_sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name next to ``path``: ``.NAME.<hex>.<suffix>``."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.{suffix}")


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_data(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open file descriptor ``fd``."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, ``fsync``,
    ``os.replace``). The file gets mode ``0o666`` minus the umask; on any error, including
    ``KeyboardInterrupt``, the temporary file is removed and the old ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            _write_data(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    return obj


def json_text(obj: Any) -> str:
    """``obj`` as indented JSON text; NaN/Inf become ``null`` (valid JSON)."""
    return json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN/Inf become ``null`` (valid JSON)."""
    atomic_write_text(path, json_text(obj))


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising ``ValueError`` naming the file when it is not valid JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", -1)}


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange_paths(a: str | Path, b: str | Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one atomic step (``renameat2`` with
    ``RENAME_EXCHANGE``); False, with nothing changed, where the platform or the file system
    does not support it. Other failures raise ``OSError``."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace the existing folder ``target`` by the complete folder ``tmp``: swapped in one
    step where possible, else moved aside to ``.NAME.<hex>.old`` (put back if the rename in
    fails) and the new one renamed in. A ``.old`` folder is only ever a complete old folder:
    it is renamed to a ``.tmpdir`` name before it is deleted."""
    if exchange_paths(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    old = _temp_sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    trash = _temp_sibling(target, "tmpdir")
    try:
        os.rename(old, trash)
    except OSError:
        trash = old
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Build a folder atomically: ``with atomic_folder(dst) as tmp:`` write the files into
    ``tmp`` (a fresh hidden sibling of ``dst``); when the block ends without an error ``tmp``
    is renamed to ``dst``. An existing ``dst`` is replaced as a whole: swapped with ``tmp``
    in one step (Linux ``renameat2`` ``RENAME_EXCHANGE``), else moved aside to
    ``.NAME.<hex>.old`` and ``tmp`` renamed in; then the old folder is deleted. On any error,
    including ``KeyboardInterrupt``, ``tmp`` is deleted and ``dst`` is untouched. A kill at
    any instant leaves ``dst`` the old folder or the new one (absent only if there was none
    before, or, without the exchange, moved aside to ``.NAME.<hex>.old``, which
    :func:`restore_moved_aside` puts back), plus hidden temporaries that
    :func:`remove_stale_temps` deletes."""
    target = Path(os.path.abspath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder")
    tmp = _temp_sibling(target, "tmpdir")
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        _fsync_dir(tmp)
        if target.exists():
            _swap_in(tmp, target)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_moved_aside(target: str | Path, required: tuple[str, ...] = ()) -> bool:
    """Put back a folder that :func:`atomic_folder` moved aside to ``.NAME.<hex>.old`` when
    its writer was killed before the new folder was renamed in: if ``target`` is missing and
    exactly one such sibling holds every file of ``required``, it is renamed to ``target``
    and True is returned. False when there is nothing to restore; ``FileNotFoundError``
    naming the candidates when there are several or the rename fails."""
    target = Path(os.path.abspath(target))
    if target.exists() or not target.parent.is_dir():
        return False
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.[0-9a-f]+\.old$")
    found = [
        p
        for p in target.parent.iterdir()
        if pattern.match(p.name) and p.is_dir() and all((p / r).is_file() for r in required)
    ]
    if not found:
        return False
    if len(found) == 1:
        try:
            os.rename(found[0], target)
            _fsync_dir(target.parent)
            return True
        except OSError:
            if target.is_dir():  # restored by someone else meanwhile
                return True
    names = ", ".join(sorted(p.name for p in found))
    raise FileNotFoundError(
        f"{target} does not exist, but an interrupted overwrite left the old folder beside it "
        f"({names}); rename it to {target.name} to recover it"
    )


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary names written by this module and the plot savers."""
    return bool(_TEMP_RE.match(name))


def remove_stale_temps(root: str | Path, recursive: bool = True) -> list[Path]:
    """Delete the temporary files and folders a killed writer left in ``root`` (and below it
    with ``recursive``; names matched by :func:`is_temp_name`); returns what was removed.
    Call it only while holding the folder's :class:`FolderLock`, when no writer is active.
    A ``.NAME.<hex>.old`` folder whose ``NAME`` is missing is the only copy of a folder that a
    killed overwrite moved aside (no atomic exchange on this platform): it is put back
    (:func:`restore_moved_aside`), not deleted."""
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        if not recursive:
            dirnames[:] = [d for d in dirnames if is_temp_name(d)]
        for name in list(dirnames):
            moved = _MOVED_ASIDE_RE.match(name)
            if moved and not (Path(dirpath) / moved.group(1)).exists():
                with contextlib.suppress(FileNotFoundError):  # several copies: left to the user
                    restore_moved_aside(Path(dirpath) / moved.group(1))
                dirnames.remove(name)
                continue
            if is_temp_name(name):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                removed.append(Path(dirpath) / name)
                dirnames.remove(name)
        for name in filenames:
            if is_temp_name(name):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed.append(Path(dirpath) / name)
    return removed


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's :class:`FolderLock`."""


class FolderLock:
    """An exclusive, non-blocking lock on ``folder`` (created if needed), for one writer at a
    time: ``with FolderLock(out): ...``.

    It is an ``fcntl.flock`` on ``folder/.r2et.lock``, which holds the owner's process id. The
    operating system drops the lock when the owning process exits or is killed, so a leftover
    lock file is never a stale lock: the next run simply takes it. Where ``fcntl`` is missing
    (Windows) the file is created with ``O_EXCL`` instead and a file whose process is gone is
    taken over. A held lock raises :class:`FolderLockedError` naming the owner.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._acquire_exclusive_file()
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = self._owner()
            os.close(fd)
            raise FolderLockedError(self._message(owner)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _owner(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    def _message(self, owner: str) -> str:
        return (
            f"{self.folder} is in use by another r2et process (pid {owner}); wait for it to "
            "finish or choose another output folder"
        )

    def _acquire_exclusive_file(self) -> None:  # pragma: no cover - Windows
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                owner = self._owner()
                if owner.isdigit() and _pid_alive(int(owner)):
                    raise FolderLockedError(self._message(owner)) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            self._fd = -1
            return
        raise FolderLockedError(self._message(self._owner()))

    def release(self) -> None:
        """Release the lock (the lock file stays: removing it would race with a new owner)."""
        if self._fd is None:
            return
        if self._fd == -1:  # pragma: no cover - Windows
            self.path.unlink(missing_ok=True)
        else:
            os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:  # pragma: no cover - Windows fallback only
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
