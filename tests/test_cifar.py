"""CIFAR-10 in the binary layout: the ``cifar10-5k`` subset of ``../shared/data``, the full-set
loader on synthetic tarballs and folders, checksum refusals, and no unpickling anywhere.

Counts, labels and pixels are checked against facts about the official files (the first test
image is a cat whose red channel starts 158, 159, 165, 166, 160; the first training image is a
frog, the second a truck) and against an independent parse of the raw bytes.
"""

from __future__ import annotations

import ast
import hashlib
import io
import pickle
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_root, requires_data

from r2et.data import images, load_dataset
from r2et.models import Standardize, build_model

_SHARED = data_root()  # read before any test's monkeypatch removes R2ET_DATA
RECORD = 3073


def _labels(path: Path) -> list[int]:
    return list(path.read_bytes()[::RECORD])


@requires_data
def test_cifar10_5k_counts_labels_and_known_pixels() -> None:
    assert _SHARED is not None
    folder = _SHARED / "cifar10-5k" / "cifar-10-batches-bin"
    ds = load_dataset("cifar10-5k")
    assert ds.modality == "image" and ds.input_shape == (3, 32, 32) and ds.n_classes == 10
    assert len(ds.train[0]) + len(ds.val[0]) == 4660 and len(ds.test[0]) == 846
    assert ds.n_features == 1024 and ds.default_k == 100 and ds.bounds == (0.0, 1.0)
    assert ds.info["classes"][3] == "cat" and ds.info["rows_files"] == [4660, 846]
    # label balance against an independent parse of the six files
    train_labels = sum((_labels(folder / f"data_batch_{i}.bin") for i in range(1, 6)), [])
    counts = torch.bincount(torch.cat([ds.train[1], ds.val[1]]), minlength=10)
    assert counts.tolist() == np.bincount(train_labels, minlength=10).tolist()
    assert 400 <= int(counts.min()) and int(counts.max()) <= 540  # near-balanced subset
    test_labels = _labels(folder / "test_batch.bin")
    assert ds.test[1].tolist() == test_labels
    # facts about the official files
    assert test_labels[0] == 3 and train_labels[:2] == [6, 9]
    first = (ds.test[0][0, 0, 0, :5] * 255).round().to(torch.int64).tolist()
    assert first == [158, 159, 165, 166, 160]
    # the val split is carved from train (stratified), so the frog is in train or val
    frog = torch.tensor([59, 43, 50, 68, 98]) / 255.0
    pool = torch.cat([ds.train[0], ds.val[0]])[:, 0, 0, :5]
    assert bool(torch.isclose(pool, frog, atol=1e-6).all(1).any())
    # channel order: record bytes 1..1024 are red, 1025..2048 green
    raw = (folder / "test_batch.bin").read_bytes()
    g = torch.tensor(list(raw[1 + 1024 : 1 + 1024 + 32]), dtype=torch.float32) / 255.0
    torch.testing.assert_close(ds.test[0][0, 1, 0], g)
    assert ds.default_model["name"] == "cnn" and len(ds.default_model["input_norm"]) == 2


@requires_data
def test_cifar10_5k_tampered_file_is_refused(isolated_cache: Path, tmp_path: Path) -> None:
    assert _SHARED is not None
    shutil.copytree(_SHARED / "cifar10-5k", tmp_path / "cifar10-5k")
    path = tmp_path / "cifar10-5k" / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[RECORD * 10] = (data[RECORD * 10] + 1) % 10  # relabel one image
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch.*data_batch_3.bin"):
        load_dataset("cifar10-5k", root=tmp_path)


def test_cifar10_5k_missing_offline(isolated_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar10-5k"):
        load_dataset("cifar10-5k", root=tmp_path)


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    blob = b"".join(bytes([int(lab)]) + img.tobytes() for lab, img in zip(y, x))
    return x, y, blob


def test_read_cifar_binary_layout_and_errors() -> None:
    x, y, blob = _synthetic(4, 0)
    xr, yr = images.read_cifar_binary(blob)
    np.testing.assert_array_equal(xr, x)
    np.testing.assert_array_equal(yr, y)
    with pytest.raises(ValueError, match="whole number of 3073-byte records"):
        images.read_cifar_binary(blob[:-1])
    with pytest.raises(ValueError, match="whole number"):
        images.read_cifar_binary(b"")
    bad = bytearray(blob)
    bad[RECORD] = 10
    with pytest.raises(ValueError, match="label 10"):
        images.read_cifar_binary(bytes(bad))


def _full_set(tmp_path: Path) -> tuple[list[np.ndarray], dict[str, bytes]]:
    arrays, files = [], {}
    for i, name in enumerate(images.CIFAR_BATCHES):
        x, _, blob = _synthetic(5, i)
        arrays.append(x)
        files[name] = blob
    return arrays, files


def test_cifar10_full_tarball_read_in_memory(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays, files = _full_set(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    tarball = buf.getvalue()
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / images.CIFAR10_TARBALL).write_bytes(tarball)
    with pytest.raises(ValueError, match="checksum mismatch"):  # not the official tarball
        load_dataset("cifar10", root=tmp_path, download=False)
    sha = hashlib.sha256(tarball).hexdigest()
    src = replace(images.CIFAR10_SOURCE, files={images.CIFAR10_TARBALL: sha})
    monkeypatch.setattr(images, "CIFAR10_SOURCE", src)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert len(ds.train[0]) + len(ds.val[0]) == 25 and len(ds.test[0]) == 5
    np.testing.assert_allclose(ds.test[0].numpy(), arrays[-1] / 255.0, atol=1e-7)
    assert ds.default_model["name"] == "resnet9" and ds.default_k == 100


def test_cifar10_full_folder_md5_checked(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays, files = _full_set(tmp_path)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    with pytest.raises(ValueError, match="not the official CIFAR-10 data_batch_1.bin"):
        load_dataset("cifar10", root=tmp_path, download=False)
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    monkeypatch.setattr(images, "CIFAR10_BATCH_MD5", md5)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    np.testing.assert_allclose(ds.test[0].numpy(), arrays[-1] / 255.0, atol=1e-7)


def test_image_loaders_never_unpickle(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image module imports no pickle and calls no unpickler; loading with every unpickling
    entry point booby-trapped still works."""
    tree = ast.parse(Path(images.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {"pickle", "_pickle", "cPickle", "dill", "joblib"} & imported

    def trap(*a: object, **k: object) -> None:
        raise AssertionError("an image loader unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, trap)
    monkeypatch.setattr(np, "load", trap)
    monkeypatch.setattr(torch, "load", trap)
    arrays, files = _full_set(tmp_path)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    md5 = {n: hashlib.md5(b).hexdigest() for n, b in files.items()}
    monkeypatch.setattr(images, "CIFAR10_BATCH_MD5", md5)
    assert len(load_dataset("cifar10", root=tmp_path, download=False).test[0]) == 5
    if _SHARED is not None:
        assert len(load_dataset("cifar10-5k", root=_SHARED).test[0]) == 846


def test_standardize_layer_and_models_with_input_norm() -> None:
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    layer = Standardize(mean, std)
    x = torch.rand(2, 3, 4, 4)
    ref = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(layer(x), ref)
    # per-sample: a sample's output does not depend on the rest of the batch
    torch.testing.assert_close(layer(x[:1]), layer(x)[:1])
    with pytest.raises(ValueError, match="std > 0"):
        Standardize([0.0], [0.0])
    for name in ("cnn", "resnet9"):
        kw = {"width": 4} if name == "resnet9" else {}
        torch.manual_seed(0)
        m = build_model(name, (3, 32, 32), 10, input_norm=[mean, std], **kw)
        torch.manual_seed(0)
        plain = build_model(name, (3, 32, 32), 10, **kw)
        plain.load_state_dict({k: v for k, v in m.state_dict().items() if k in plain.state_dict()})
        # the model with input_norm equals the plain model applied to standardised inputs
        torch.testing.assert_close(m(x.repeat(1, 1, 8, 8)), plain(ref.repeat(1, 1, 8, 8)))
        assert m.r2et_spec["input_norm"] == [mean, std]
        assert any(k.endswith("std") for k in m.state_dict())  # the checkpoint carries it
    with pytest.raises(ValueError, match="2 channels, the input has 3"):
        build_model("cnn", (3, 32, 32), 10, input_norm=[[0.0, 0.0], [1.0, 1.0]])
