"""Image datasets: MNIST (IDX files; the full set or the 5,000-image ``mnist5k`` subset),
CIFAR-10 (the python tarball) and scikit-learn's 8×8 digits.

Inputs are ``(N, C, H, W)`` float32 scaled to [0, 1] and ``bounds = (0.0, 1.0)`` (the valid
range attacks clip to). Features (ranked by explanations) are pixels ``"pixel_r_c"``; scores
sum over the channel axis. Where the source has an official train/test split, the validation
split is carved from train, stratified by ``seed``.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from r2et.data._prep import carve_val, three_way_split, to_tensors
from r2et.data.base import Dataset
from r2et.data.download import Source, resolve

PathLike = str | os.PathLike[str]

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_SOURCE = Source(
    folder="mnist",
    files=dict(
        zip(
            MNIST_FILES,
            (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        )
    ),
    urls={f: _MNIST_URL + f for f in MNIST_FILES},
)
# The 5,000-image subset shipped in ../shared/data/mnist5k (no public URL: local only).
MNIST5K_SOURCE = Source(
    folder="mnist5k",
    files=dict(
        zip(
            MNIST_FILES,
            (
                "fd5870a7d0c129c73066c5185bd140f3fd2e687a49664302f85f5b444b368fe1",
                "b0ec418df5245d5163835c454ef1af4c338ba0dcc7a9698956c34677fb574234",
                "4e1ed994ea4b05ac9ad74a0a29d771faeb1a692476c17d551ea39d72b1bc96ed",
                "75898356302976bafb997b3d724bb3a77860495ff65037a554b77c20d7d0864e",
            ),
        )
    ),
)
CIFAR10_SOURCE = Source(
    folder="cifar10",
    files={
        "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    },
    urls={"cifar-10-python.tar.gz": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"},
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def pixel_names(height: int, width: int) -> list[str]:
    """``["pixel_0_0", "pixel_0_1", ...]`` in row-major order (the order of ``scores``)."""
    return [f"pixel_{r}_{c}" for r in range(height) for c in range(width)]


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzip-compressed or not) into a numpy array.

    Header: two zero bytes, a type code (``0x08`` = uint8), the number of dimensions ``d``,
    then ``d`` big-endian uint32 sizes, then the row-major data. Raises ``ValueError`` for a
    bad magic number, an unsupported type or a size that does not match the header.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(f"IDX file {str(path)!r} is not valid gzip: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"IDX file {str(path)!r} has a bad magic number (expected uint8 data)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:head], dtype=">u4"))
    if len(raw) != head + int(np.prod(dims)):
        raise ValueError(
            f"IDX file {str(path)!r} is truncated or corrupt: header says {dims}, "
            f"found {len(raw) - head} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _image_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_classes: int,
    default_k: int,
    default_model: dict[str, Any],
    info: dict[str, Any],
) -> Dataset:
    tr, va, te = (to_tensors(x[i], y[i]) for i in splits)
    _, _, h, w = x.shape
    return Dataset(
        name=name,
        modality="image",
        train=tr,
        val=va,
        test=te,
        n_classes=n_classes,
        feature_names=pixel_names(h, w),
        default_k=default_k,
        bounds=(0.0, 1.0),
        default_model=dict(default_model),
        info=info,
    )


def _load_mnist_source(
    name: str, source: Source, root: PathLike | None, download: bool, seed: int, val_fraction: float
) -> Dataset:
    paths = resolve(name, source, root, download)
    xs, ys = [], []
    for split in ("train", "t10k"):
        imgs = read_idx(paths[f"{split}-images-idx3-ubyte.gz"])
        labs = read_idx(paths[f"{split}-labels-idx1-ubyte.gz"])
        if imgs.ndim != 3 or labs.ndim != 1 or len(imgs) != len(labs) or labs.max() > 9:
            raise ValueError(
                f"{name}: {split} images {imgs.shape} and labels {labs.shape} do not match"
            )
        xs.append(imgs)
        ys.append(labs.astype(np.int64))
    n_tr = len(xs[0])
    x = (np.concatenate(xs)[:, None].astype(np.float32)) / 255.0
    y = np.concatenate(ys)
    t_idx, v_idx = carve_val(y[:n_tr], val_fraction, seed)
    info = {
        "source": _MNIST_URL if source is MNIST_SOURCE else f"local folder {source.folder}/",
        "files": list(source.files),
        "seed": seed,
        "split": f"official train/test; val = {val_fraction} of train (stratified)",
        "scaling": "pixel / 255 in [0, 1]",
        "rows_files": [n_tr, len(xs[1])],
    }
    return _image_dataset(
        name,
        x,
        y,
        (t_idx, v_idx, np.arange(n_tr, len(y))),
        10,
        50,
        {"name": "cnn"},
        info,
    )


def load_mnist(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """MNIST (LeCun et al., 1998): 60,000 + 10,000 handwritten digits, 1×28×28 in [0, 1].

    Reads the four IDX files of folder ``mnist/`` (downloaded from the canonical mirror with a
    SHA-256 check); val is ``val_fraction`` of train, stratified by ``seed``. Default model:
    ``cnn``; default ``k``: 50 pixels.
    """
    return _load_mnist_source("mnist", MNIST_SOURCE, root, download, seed, val_fraction)


def load_mnist5k(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """The 5,000-image MNIST subset (4,000 train + 1,000 test, balanced) in folder
    ``mnist5k/``, same IDX format as :func:`load_mnist`. It has no download URL: the files
    must be under the data root or the cache."""
    return _load_mnist_source("mnist5k", MNIST5K_SOURCE, root, False, seed, val_fraction)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else (the pattern of the Python docs'
    "Restricting Globals"): any other global in the stream raises ``UnpicklingError``."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_cifar_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` of one CIFAR-10 python batch.

    The batches are Python-2 pickles of ``{b"data": uint8 (N, 3072), b"labels": [...]}``; they
    are read with an unpickler restricted to numpy arrays (no arbitrary code), after the
    tarball's SHA-256 was checked. Raises ``ValueError`` for anything else.
    """
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(obj[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(obj[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as err:
        raise ValueError(f"corrupt CIFAR-10 batch: {err}") from None
    if len(x) != len(y) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise ValueError("corrupt CIFAR-10 batch: images and labels do not match")
    return x, y


def load_cifar10(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 + 10,000 colour images, 3×32×32 in [0, 1].

    Reads ``cifar-10-python.tar.gz`` (folder ``cifar10/``; downloaded with a SHA-256 check)
    without extracting it. Val is ``val_fraction`` of train, stratified by ``seed``. Default
    model: ``resnet9``; default ``k``: 50 pixels (of 1,024).
    """
    paths = resolve("cifar10", CIFAR10_SOURCE, root, download)
    members = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)]
    members.append("cifar-10-batches-py/test_batch")
    xs, ys = [], []
    try:
        with tarfile.open(paths["cifar-10-python.tar.gz"]) as tf:
            for m in members:
                fh = tf.extractfile(m)
                if fh is None:
                    raise KeyError(m)
                xb, yb = read_cifar_batch(fh.read())
                xs.append(xb)
                ys.append(yb)
    except (KeyError, tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"cifar-10-python.tar.gz is corrupt or incomplete: {err!r}") from None
    n_tr = sum(len(v) for v in ys[:-1])
    x = np.concatenate(xs).astype(np.float32) / 255.0
    y = np.concatenate(ys)
    t_idx, v_idx = carve_val(y[:n_tr], val_fraction, seed)
    info = {
        "source": CIFAR10_SOURCE.urls["cifar-10-python.tar.gz"],
        "files": list(CIFAR10_SOURCE.files),
        "seed": seed,
        "split": f"official train/test; val = {val_fraction} of train (stratified)",
        "scaling": "pixel / 255 in [0, 1]",
        "classes": list(CIFAR10_CLASSES),
    }
    return _image_dataset(
        "cifar10",
        x,
        y,
        (t_idx, v_idx, np.arange(n_tr, len(y))),
        10,
        50,
        {"name": "resnet9"},
        info,
    )


def load_digits(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download,
    ``root``/``download`` ignored), as 1×8×8 images in [0, 1] (pixel / 16). Stratified
    train/val/test by ``seed``. Default model: ``mlp`` [64, 64]; default ``k``: 8 pixels."""
    from sklearn.datasets import load_digits as sk_load

    bunch = sk_load()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    y = np.asarray(bunch.target, dtype=np.int64)
    splits = three_way_split(y, val_fraction, test_fraction, seed)
    info = {
        "source": "sklearn.datasets.load_digits",
        "files": [],
        "seed": seed,
        "split": f"stratified train/val/test, val={val_fraction}, test={test_fraction}",
        "scaling": "pixel / 16 in [0, 1]",
    }
    return _image_dataset("digits", x, y, splits, 10, 8, {"name": "mlp", "hidden": [64, 64]}, info)
