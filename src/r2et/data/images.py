"""Image datasets: MNIST (IDX files; the full set or the 5,000-image ``mnist5k`` subset),
CIFAR-10 (the binary version; the full set or the 5,506-image ``cifar10-5k`` subset) and
scikit-learn's 8×8 digits. Nothing here unpickles.

Inputs are ``(N, C, H, W)`` float32 scaled to [0, 1] and ``bounds = (0.0, 1.0)`` (the valid
range attacks clip to). Features (ranked by explanations) are pixels ``"pixel_r_c"``; scores
sum over the channel axis. Where the source has an official train/test split, the validation
split is carved from train, stratified by ``seed``.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from r2et.data._prep import carve_val, three_way_split, to_tensors
from r2et.data.base import Dataset
from r2et.data.download import Source, cache_dir, data_root, file_digest, resolve

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
#: The CIFAR-10 binary version (Krizhevsky, 2009): one tarball holding ``cifar-10-batches-bin/``.
#: Its SHA-256 is the one of the canonical file (170,052,171 bytes, whose MD5
#: c32a1d4ab5d03f1284b67883e8d87530 is the one the dataset's page publishes).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_TARBALL = "cifar-10-binary.tar.gz"
CIFAR10_SOURCE = Source(
    folder="cifar10",
    files={CIFAR10_TARBALL: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
    urls={CIFAR10_TARBALL: CIFAR10_URL},
)
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
#: One record: a label byte, then 1,024 red, 1,024 green and 1,024 blue bytes (row-major).
CIFAR_RECORD = 1 + 3 * 32 * 32
#: MD5 sums of the six batch files of the official tarball, for an already extracted
#: ``cifar10/cifar-10-batches-bin/`` folder (the tarball itself is checked by SHA-256).
CIFAR10_BATCH_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
# The 5,506-image subset shipped in ../shared/data/cifar10-5k (no public URL: local only): the
# first 932 records of each official training batch and the first 846 test records.
CIFAR10_5K_SOURCE = Source(
    folder="cifar10-5k",
    files={
        f"{CIFAR_DIR}/{f}": s
        for f, s in zip(
            CIFAR_BATCHES + ("batches.meta.txt",),
            (
                "b0f27afee5ca668579a2e93ee3681e063ff732dc2df61078190ed27754426fbb",
                "d8be2e394f486275122ee559eafeb27c7b361cd515e8b22af157135d0c8bdcb1",
                "ff9dc9eb2d46ee4901a27a6a8bb2eb17e81a34f029c976d4731066200935a780",
                "9a0ce4a95c35e50eb9c7dbf3066b5edec5f9c1f0c409be6168393b488b7944e7",
                "fdda7fa3b14c06a9fd2ca26f99a341480beed33e5eabfe0339bb04f209281f36",
                "7a6b65454614904e75805388c6c869be5921ba19464232b1d871dc44f4d54402",
                "558e74b5e208382e186da55784b4bac2cd52e558448e1b5800990fdb28ed8033",
            ),
        )
    },
)
#: Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images in [0, 1];
#: the ``input_norm`` of the default models (a fixed layer inside the model, see
#: :class:`r2et.models.Standardize`), so data, bounds and budgets stay in pixel units.
CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
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
    """A 5,000-image MNIST subset (4,000 train + 1,000 test, balanced), read from the data root.

    The 5,000-image MNIST subset (4,000 train + 1,000 test, balanced) in folder
    ``mnist5k/``, same IDX format as :func:`load_mnist`. It has no download URL: the files
    must be under the data root or the cache."""
    return _load_mnist_source("mnist5k", MNIST5K_SOURCE, root, False, seed, val_fraction)


def read_cifar_binary(data: bytes, name: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` of one CIFAR-10 binary batch.

    The binary layout (no pickle): ``N`` records of 3,073 bytes, each a label byte in 0-9 and
    the 3,072 pixel bytes of one image, 1,024 per channel (red, green, blue), rows first.
    Raises ``ValueError`` when the length is not a whole number of records or a label is > 9.
    """
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise ValueError(
            f"{name} is corrupt: {len(data)} bytes is not a whole number of "
            f"{CIFAR_RECORD}-byte records"
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() > 9:
        raise ValueError(f"{name} is corrupt: label {int(y.max())} is not in 0-9")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


def _cifar10_full_batches(root: PathLike | None, download: bool) -> tuple[list[bytes], str]:
    """The six batch files of the full CIFAR-10 binary set, and where they came from: an
    extracted ``cifar10/cifar-10-batches-bin/`` folder under the data root or the cache (each
    file MD5-checked), else the SHA-256-checked tarball (found or downloaded), read in memory."""
    base = data_root(root)
    for top in ([base] if base is not None else []) + [cache_dir()]:
        folder = top / "cifar10" / CIFAR_DIR
        if all((folder / f).is_file() for f in CIFAR_BATCHES):
            for f in CIFAR_BATCHES:
                if file_digest(folder / f, "md5") != CIFAR10_BATCH_MD5[f]:
                    raise ValueError(
                        f"checksum mismatch for data file {str(folder / f)!r}: it is not the "
                        f"official CIFAR-10 {f} (corrupt or modified); replace the folder by "
                        f"the original {CIFAR10_TARBALL}"
                    )
            return [(folder / f).read_bytes() for f in CIFAR_BATCHES], str(folder)
    tarball = resolve("cifar10", CIFAR10_SOURCE, root, download)[CIFAR10_TARBALL]
    blobs = []
    try:
        with tarfile.open(tarball) as tf:
            for f in CIFAR_BATCHES:
                fh = tf.extractfile(f"{CIFAR_DIR}/{f}")
                if fh is None:
                    raise KeyError(f)
                blobs.append(fh.read())
    except (KeyError, tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{CIFAR10_TARBALL} is corrupt or incomplete: {err!r}") from None
    return blobs, CIFAR10_URL


def _cifar_dataset(
    name: str, blobs: list[bytes], source: str, seed: int, val_fraction: float, model: str
) -> Dataset:
    xs, ys = zip(*(read_cifar_binary(b, f"{name} {f}") for b, f in zip(blobs, CIFAR_BATCHES)))
    n_tr = sum(len(v) for v in ys[:-1])
    x = np.concatenate(xs).astype(np.float32) / 255.0
    y = np.concatenate(ys)
    t_idx, v_idx = carve_val(y[:n_tr], val_fraction, seed)
    info = {
        "source": source,
        "files": [f"{CIFAR_DIR}/{f}" for f in CIFAR_BATCHES],
        "seed": seed,
        "split": f"official train/test; val = {val_fraction} of train (stratified)",
        "scaling": "pixel / 255 in [0, 1]; the model standardises per channel (input_norm)",
        "classes": list(CIFAR10_CLASSES),
        "rows_files": [n_tr, len(ys[-1])],
    }
    mean, std = CIFAR10_MEAN_STD
    default = {"name": model, "input_norm": [list(mean), list(std)]}
    return _image_dataset(
        name, x, y, (t_idx, v_idx, np.arange(n_tr, len(y))), 10, 100, default, info
    )


def load_cifar10(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """CIFAR-10 (Krizhevsky, 2009): 50,000 + 10,000 colour images, 3×32×32 in [0, 1].

    Reads the **binary** version (no unpickling anywhere): an extracted
    ``cifar10/cifar-10-batches-bin/`` folder under the data root or the cache (each batch
    checked against the MD5 of the official file), else ``cifar10/cifar-10-binary.tar.gz``
    (SHA-256-checked; downloaded from the canonical URL when ``download=True``), read without
    extracting. Val is ``val_fraction`` of train, stratified by ``seed``. Default model:
    ``resnet9`` with the per-channel standardisation of :data:`CIFAR10_MEAN_STD` as its first
    layer; default ``k``: 100 pixels of 1,024 (the official code's).
    """
    blobs, source = _cifar10_full_batches(root, download)
    return _cifar_dataset("cifar10", blobs, source, seed, val_fraction, "resnet9")


def load_cifar10_5k(
    root: PathLike | None = None, download: bool = True, seed: int = 0, val_fraction: float = 0.1
) -> Dataset:
    """A 5,506-image CIFAR-10 subset (4,660 train + 846 test), read from the data root.

    The 5,506-image CIFAR-10 subset (4,660 train = the first 932 of each official training
    batch, 846 test = the first official test images) in folder
    ``cifar10-5k/cifar-10-batches-bin/``, same binary layout as :func:`load_cifar10`, every
    file SHA-256-checked. It has no download URL: the files must be under the data root or the
    cache. Default model: the CPU-sized ``cnn`` with the same ``input_norm``; default ``k``: 100.
    """
    paths = resolve("cifar10-5k", CIFAR10_5K_SOURCE, root, False)
    classes = paths[f"{CIFAR_DIR}/batches.meta.txt"].read_text(encoding="ascii").split()
    if tuple(classes) != CIFAR10_CLASSES:
        raise ValueError(f"cifar10-5k: batches.meta.txt lists {classes}, not the CIFAR-10 classes")
    blobs = [paths[f"{CIFAR_DIR}/{f}"].read_bytes() for f in CIFAR_BATCHES]
    return _cifar_dataset(
        "cifar10-5k", blobs, "local folder cifar10-5k/", seed, val_fraction, "cnn"
    )


def load_digits(
    root: PathLike | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits: 1,797 images, 10 classes, no download.

    scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download,
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
