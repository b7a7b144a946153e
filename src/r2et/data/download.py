"""Finding, downloading and verifying dataset files.

Every loader names its files with their SHA-256 sums (a :class:`Source`). :func:`resolve`
looks for each file, in order, under

1. the data root: ``root=`` or the ``R2ET_DATA`` environment variable, as
   ``<root>/<folder>/<file>`` (the layout of ``../shared/data``: one folder per dataset);
2. the cache: ``R2ET_CACHE`` or ``~/.cache/r2et``, as ``<cache>/<folder>/<file>``;
3. the canonical URL (when ``download=True``), fetched into the cache with an atomic write
   (temporary file, then rename), extracting from a zip or tar archive where the canonical
   source is one.

Every file that is read is checked against its SHA-256 sum first; a mismatch raises
``ValueError`` naming the file and both sums, so a corrupt or tampered file is never loaded.
Missing files with ``download=False`` (or an unreachable URL) raise ``FileNotFoundError``
saying which files to put where. Nothing happens at import time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The download cache: ``$R2ET_CACHE`` if set, else ``~/.cache/r2et`` (not created here)."""
    env = os.environ.get("R2ET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "r2et"


def data_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The user's data root: ``root`` if given, else ``$R2ET_DATA``, else None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("R2ET_DATA")
    return Path(env).expanduser() if env else None


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest (``hashlib`` ``algorithm``) of the file at ``path``, read in 1 MiB chunks.
    ``"md5"`` is used only where the canonical source publishes nothing stronger."""
    h = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of the file at ``path`` (:func:`file_digest`)."""
    return file_digest(path, "sha256")


def _accepted(sha256: str | Sequence[str] | None) -> tuple[str, ...]:
    if sha256 is None:
        return ()
    if isinstance(sha256, str):
        return (sha256.lower(),)
    return tuple(s.lower() for s in sha256)


def verify(path: str | os.PathLike[str], sha256: str | Sequence[str] | None) -> Path:
    """Check the SHA-256 of ``path`` against one accepted sum (or any of several); return the
    path. Raises ``FileNotFoundError`` if it is missing and ``ValueError`` on a mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    accepted = _accepted(sha256)
    if accepted:
        got = sha256_file(path)
        if got not in accepted:
            raise ValueError(
                f"checksum mismatch for data file {str(path)!r}: SHA-256 is {got}, expected "
                f"{' or '.join(accepted)}; the file is corrupt or not the canonical one "
                "(delete it and download again, or replace it with the original file)"
            )
    return path


def _atomic_tmp(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    return Path(tmp)


def fetch(
    url: str,
    sha256: str | Sequence[str] | None,
    dest: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify its SHA-256; return ``dest``.

    If ``dest`` already holds a file with an accepted sum, nothing is downloaded (the cache).
    The bytes are streamed to a temporary file next to ``dest``, checked, and only then renamed
    onto ``dest`` (atomic on POSIX), so an interrupted or tampered download never leaves a file
    that a later call would trust. A sum mismatch raises ``ValueError`` (the temporary file is
    removed); a network failure raises ``FileNotFoundError`` naming the URL and the destination.
    ``sha256=None`` skips the check (used only for archives whose members are verified).
    """
    dest = Path(dest)
    accepted = _accepted(sha256)
    if dest.is_file() and (not accepted or sha256_file(dest) in accepted):
        return dest
    tmp = _atomic_tmp(dest)
    try:
        h = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise FileNotFoundError(
                f"could not download {url!r} to {str(dest)!r}: {err}. Without internet access, "
                f"put the file at {str(dest)!r} yourself (or under the data root R2ET_DATA)"
            ) from None
        got = h.hexdigest()
        if accepted and got not in accepted:
            raise ValueError(
                f"checksum mismatch for download {url!r}: SHA-256 is {got}, expected "
                f"{' or '.join(accepted)}; the file was not kept"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def extract(archive: str | os.PathLike[str], member: str, dest: str | os.PathLike[str]) -> Path:
    """Copy ``member`` (a path inside a zip or tar archive) to ``dest`` atomically.

    Only the named member is read; its path inside the archive is never used to build a
    path on disk, so archive entries cannot write outside ``dest``. Raises ``ValueError`` if
    the archive is unreadable or lacks the member.
    """
    archive, dest = Path(archive), Path(dest)
    tmp = _atomic_tmp(dest)
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as o:
                    shutil.copyfileobj(src, o, _CHUNK)
            else:
                with tarfile.open(archive) as tf:
                    src = tf.extractfile(member)
                    if src is None:
                        raise KeyError(member)
                    with src, open(tmp, "wb") as o:
                        shutil.copyfileobj(src, o, _CHUNK)
        except (KeyError, zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
            raise ValueError(
                f"archive {str(archive)!r} is corrupt or has no member {member!r} ({err!r})"
            ) from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


@dataclass(frozen=True)
class Source:
    """Where a dataset's files live.

    ``folder``: the folder under the data root and the cache. ``files``: file name -> accepted
    SHA-256 sum(s). ``urls``: file name -> URL, for files downloaded directly. ``archive``:
    ``(url, sha256 or None, archive file name)`` for files that come inside an archive;
    ``members`` maps each file name to its path inside that archive.
    """

    folder: str
    files: Mapping[str, str | tuple[str, ...]]
    urls: Mapping[str, str] = field(default_factory=dict)
    archive: tuple[str, str | None, str] | None = None
    members: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming the files and their canonical source."""
        where = self.archive[0] if self.archive else ", ".join(sorted(set(self.urls.values())))
        return f"{', '.join(self.files)} (from {where})"


def _missing_error(name: str, source: Source, root: Path | None, missing: list[str]) -> str:
    places = []
    if root is not None:
        places.append(str(root / source.folder))
    places.append(str(cache_dir() / source.folder))
    archive = f" or put the archive {source.archive[2]!r} there" if source.archive else ""
    if source.archive:
        fetch_hint = f", or call with download=True to fetch them from {source.archive[0]}"
    elif source.urls:
        fetch_hint = (
            f", or call with download=True to fetch them from {sorted(set(source.urls.values()))}"
        )
    else:
        fetch_hint = " (this dataset has no download URL)"
    return (
        f"dataset {name!r}: file(s) {missing} not found. Put them in "
        f"{' or '.join(repr(p) for p in places)} (set R2ET_DATA to a folder holding "
        f"'{source.folder}/'){archive}{fetch_hint}"
    )


def _archive_path(source: Source, base: Path | None, download: bool) -> Path | None:
    """The verified archive of ``source``: under the data root, the cache, or downloaded."""
    assert source.archive is not None
    url, asha, aname = source.archive
    cache = cache_dir() / source.folder / aname
    if base is not None and (base / source.folder / aname).is_file():
        return verify(base / source.folder / aname, asha)
    if download:
        return fetch(url, asha, cache)
    return verify(cache, asha) if cache.is_file() else None


def resolve(
    name: str,
    source: Source,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> dict[str, Path]:
    """Paths of every file of ``source``, each verified against its SHA-256 sum.

    Looks under the data root, then the cache, then downloads into the cache (see the module
    docstring). Files that come inside an archive are extracted from the (cached, verified)
    archive: when the archive's own sum is known they go to ``<cache>/<folder>/<archive>.d/``
    and are re-extracted from the re-verified archive on every call (their member sums may
    differ from the listed ones, e.g. the quoted UCI ``bank-full.csv``); otherwise each member
    is checked against its listed sum and stored next to the other cached files. Raises
    ``FileNotFoundError`` for missing files that cannot be downloaded and ``ValueError`` for a
    checksum mismatch or a corrupt archive.
    """
    base = data_root(root)
    cache = cache_dir() / source.folder
    found: dict[str, Path] = {}
    missing: list[str] = []
    for fname, sha in source.files.items():
        cands = ([base / source.folder / fname] if base is not None else []) + [cache / fname]
        hit = next((p for p in cands if p.is_file()), None)
        if hit is not None:
            found[fname] = verify(hit, sha)
        else:
            missing.append(fname)
    if not missing:
        return found
    archive_path = None
    if source.archive is not None and any(f not in source.urls for f in missing):
        archive_path = _archive_path(source, base, download)
    for fname in missing:
        if fname in source.urls and download:
            found[fname] = fetch(source.urls[fname], source.files[fname], cache / fname)
        elif fname not in source.urls and archive_path is not None:
            member = source.members.get(fname, fname)
            if source.archive is not None and source.archive[1] is not None:
                found[fname] = extract(
                    archive_path, member, cache / f"{archive_path.name}.d" / fname
                )
            else:
                dest = extract(archive_path, member, cache / fname)
                try:
                    found[fname] = verify(dest, source.files[fname])
                except ValueError:
                    dest.unlink()
                    raise
        else:
            raise FileNotFoundError(_missing_error(name, source, base, missing))
    return {f: found[f] for f in source.files}
