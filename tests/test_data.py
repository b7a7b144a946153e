"""Dataset loaders, splits, preprocessing, the download cache and the SHA-256 checks.

Counts and values are checked against independent parses of the raw files (``csv``, ``gzip``
and plain text), not against the loaders' own code paths.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_root, requires_data

from r2et.data import Dataset, graphs, images, list_datasets, load_dataset, tabular
from r2et.data import download as dl
from r2et.data._prep import stratified_split, three_way_split

EXPECTED = [
    "adult",
    "ba-2motifs",
    "ba-2motifs-edges",
    "bank",
    "breast-cancer",
    "cifar10",
    "cifar10-5k",
    "compas",
    "csv",
    "digits",
    "mnist",
    "mnist5k",
    "mutag",
]


_SHARED = data_root()  # read before any test's monkeypatch removes R2ET_DATA


def _root() -> Path:
    assert _SHARED is not None
    return _SHARED


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _all_x(ds: Dataset) -> torch.Tensor:
    return torch.cat([ds.train[0], ds.val[0], ds.test[0]])


def _all_y(ds: Dataset) -> torch.Tensor:
    return torch.cat([ds.train[1], ds.val[1], ds.test[1]])


def _check_common(ds: Dataset) -> None:
    for x, y in (ds.train, ds.val, ds.test):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(x) == len(y) > 0
        assert bool(torch.isfinite(x).all())
        assert int(y.min()) >= 0 and int(y.max()) < ds.n_classes
    assert ds.input_shape == tuple(ds.test[0].shape[1:])
    assert 1 <= ds.default_k < ds.n_features
    json.dumps(ds.summary())
    json.dumps(ds.default_model)
    assert set(ds.forward_kwargs) == {"train", "val", "test"}


# ----------------------------------------------------------------------------- registry


def test_list_datasets() -> None:
    assert list_datasets() == EXPECTED


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "imagenet"}, "allowed: \\['adult'"),
        ({"name": "adult", "seed": -1}, "seed"),
        ({"name": "adult", "bogus": 1}, "unknown keyword.*bogus.*val_fraction"),
        ({"name": "breast-cancer", "val_fraction": 1.5}, "val_fraction"),
        ({"name": "breast-cancer", "val_fraction": 0.5, "test_fraction": 0.5}, "< 1"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


def test_import_does_no_io(tmp_path: Path) -> None:
    """Importing the package creates no cache folder and loads no loader module."""
    env = {
        **os.environ,
        "R2ET_CACHE": str(tmp_path / "cache"),
        "R2ET_DATA": str(tmp_path / "data"),
    }
    code = (
        "import sys, r2et, r2et.data; "
        "print(sorted(m for m in sys.modules if m.startswith('r2et.data')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    mods = eval(out.stdout.strip())
    assert "r2et.data.tabular" not in mods and "r2et.data.graphs" not in mods
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------- splits


def test_stratified_split_keeps_class_proportions() -> None:
    y = np.repeat([0, 1, 2], [500, 300, 200])
    train, val, test = three_way_split(y, 0.1, 0.2, seed=3)
    parts = np.concatenate([train, val, test])
    assert sorted(parts.tolist()) == list(range(1000))  # a partition
    for part, frac in ((val, 0.1), (test, 0.2)):
        counts = np.bincount(y[part], minlength=3)
        np.testing.assert_array_equal(counts, np.round(np.array([500, 300, 200]) * frac))
    again = three_way_split(y, 0.1, 0.2, seed=3)
    other = three_way_split(y, 0.1, 0.2, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, other[1 + 1])


def test_stratified_split_gives_rare_classes_a_sample() -> None:
    y = np.array([0] * 50 + [1] * 3)
    test, rest = stratified_split(y, [0.1], seed=0)
    assert (y[test] == 1).sum() == 1 and len(test) + len(rest) == 53


# ----------------------------------------------------------------------------- adult


def _read_adult(path: Path, skip: int) -> list[list[str]]:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh, skipinitialspace=True) if len(r) == 15]
    return rows[skip:] if skip else rows


@requires_data
def test_adult_counts_names_and_labels() -> None:
    ds = load_dataset("adult")
    _check_common(ds)
    raw_tr = _read_adult(_root() / "adult" / "adult.data", 0)
    raw_te = _read_adult(_root() / "adult" / "adult.test", 0)
    assert len(raw_tr) == 32561 and len(raw_te) == 16281
    # the file counts: val is carved from adult.data, so train + val == 32,561
    assert len(ds.train[0]) + len(ds.val[0]) == 32561
    assert len(ds.test[0]) == 16281
    assert ds.n_features == 108 and ds.input_shape == (108,) and ds.default_k == 4
    assert ds.default_explainer == {"method": "grad_x_input", "groups": ds.groups}
    assert ds.feature_names[:6] == [
        "age",
        "fnlwgt",
        "education-num",
        "capital-gain",
        "capital-loss",
        "hours-per-week",
    ]
    for name in (
        "workclass=Private",
        "workclass=?",
        "sex=Female",
        "native-country=Holand-Netherlands",
    ):
        assert name in ds.feature_names
    # one-hot groups: exactly one indicator per categorical column and row
    x = _all_x(ds)
    groups = {n.split("=")[0] for n in ds.feature_names if "=" in n}
    assert len(groups) == 8
    for g in groups:
        cols = [i for i, n in enumerate(ds.feature_names) if n.startswith(g + "=")]
        assert bool((x[:, cols].sum(1) == 1).all())
    pos_test = sum(r[14].rstrip(".") == ">50K" for r in raw_te)
    assert int(ds.test[1].sum()) == pos_test == 3846
    pos_train = sum(r[14] == ">50K" for r in raw_tr)
    assert int(ds.train[1].sum() + ds.val[1].sum()) == pos_train
    assert ds.bounds is not None
    torch.testing.assert_close(ds.bounds[0], ds.train[0].amin(0))
    torch.testing.assert_close(ds.bounds[1], ds.train[0].amax(0))


@requires_data
def test_adult_scaling_uses_train_statistics_only() -> None:
    ds = load_dataset("adult", seed=1)
    xtr = ds.train[0][:, :6].double()
    # standardised with the train part's own mean/std (population): exactly 0 and 1 there
    torch.testing.assert_close(xtr.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        xtr.std(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # ... and not with statistics that include val or test rows
    both = torch.cat([ds.train[0], ds.test[0]])[:, :6].double()
    assert float(both.mean(0).abs().max()) > 1e-3
    # undoing the scaling recovers the raw test values of adult.test exactly
    pre = ds.info["preprocessing"]
    mean, std = np.array(pre["train_mean"]), np.array(pre["train_std"])
    raw = _read_adult(_root() / "adult" / "adult.test", 0)
    cols = [0, 2, 4, 10, 11, 12]
    raw_num = np.array([[float(r[c]) for c in cols] for r in raw])
    back = ds.test[0][:, :6].double().numpy() * std + mean
    # val/test values are clipped into the train range (the attack box): undo that too
    lo, hi = (b[:6].double().numpy() * std + mean for b in ds.bounds)
    np.testing.assert_allclose(back, np.clip(raw_num, lo, hi), rtol=1e-5, atol=1e-2)
    n_out = int(((raw_num < lo - 1e-2) | (raw_num > hi + 1e-2)).any(1).sum())
    assert ds.info["preprocessing"]["rows_clipped_to_train_range"]["test"] == n_out
    for x, _ in (ds.val, ds.test):
        assert bool((x >= ds.bounds[0]).all() and (x <= ds.bounds[1]).all())


@requires_data
def test_adult_seed_changes_val_not_test() -> None:
    a, b, c = (
        load_dataset("adult", seed=0),
        load_dataset("adult", seed=0),
        load_dataset("adult", seed=1),
    )
    assert torch.equal(a.val[0], b.val[0])
    assert not torch.equal(a.val[1], c.val[1]) or not torch.equal(a.val[0], c.val[0])
    assert torch.equal(a.test[1], c.test[1])
    assert abs(float(a.val[1].float().mean()) - float(a.train[1].float().mean())) < 0.002


# ----------------------------------------------------------------------------- bank, compas


@requires_data
def test_bank_counts() -> None:
    ds = load_dataset("bank")
    _check_common(ds)
    assert len(_all_y(ds)) == 45211
    text = (_root() / "bank" / "bank-full.csv").read_text().splitlines()
    assert int(_all_y(ds).sum()) == sum(line.endswith(";yes") for line in text[1:]) == 5289
    assert ds.n_features == 7 + 12 + 3 + 4 + 2 + 2 + 2 + 3 + 12 + 4 == 51
    assert {"balance", "job=management", "month=may", "poutcome=unknown"} <= set(ds.feature_names)
    assert ds.default_k == 4 and ds.default_explainer["groups"] == ds.groups  # 16 attributes


@requires_data
def test_bank_reads_the_quoted_uci_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UCI original quotes strings; the loader reads both layouts identically."""
    lines = (_root() / "bank" / "bank-full.csv").read_text().splitlines()

    def quote(line: str) -> str:
        return ";".join(v if v.lstrip("-").isdigit() else f'"{v}"' for v in line.split(";"))

    quoted = "\n".join(quote(line) for line in lines) + "\n"
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / "bank-full.csv").write_text(quoted)
    assert quoted.startswith('"age";"job"')
    src = replace(tabular.BANK_SOURCE, files={"bank-full.csv": _sha(quoted.encode())})
    monkeypatch.setattr(tabular, "BANK_SOURCE", src)
    a = load_dataset("bank", root=tmp_path, download=False)
    monkeypatch.undo()
    b = load_dataset("bank")
    assert a.feature_names == b.feature_names
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])


@requires_data
def test_compas_propublica_filters() -> None:
    ds = load_dataset("compas")
    _check_common(ds)
    with open(_root() / "compas" / "compas-scores-two-years.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    head, body = rows[0], rows[1:]
    assert len(body) == 7214
    col = {n: head.index(n) for n in ("days_b_screening_arrest", "is_recid", "c_charge_degree")}
    col["score_text"] = head.index("score_text")
    col["two_year_recid"] = head.index("two_year_recid")
    kept = [
        r
        for r in body
        if r[col["days_b_screening_arrest"]] != ""
        and abs(float(r[col["days_b_screening_arrest"]])) <= 30
        and r[col["is_recid"]] != "-1"
        and r[col["c_charge_degree"]] != "O"
        and r[col["score_text"]] not in ("", "N/A")
    ]
    assert len(kept) == 6172 == len(_all_y(ds))
    assert int(_all_y(ds).sum()) == sum(r[col["two_year_recid"]] == "1" for r in kept)
    assert "race=African-American" in ds.feature_names and "c_charge_degree=F" in ds.feature_names
    assert ds.n_features == 7 + 2 + 6 + 3 + 2 and ds.default_k == 4  # 11 attributes


# ----------------------------------------------------------------------------- images


def _idx_images(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    return np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, h, w)


@requires_data
def test_mnist5k() -> None:
    ds = load_dataset("mnist5k")
    _check_common(ds)
    assert ds.modality == "image" and ds.input_shape == (1, 28, 28)
    assert len(ds.train[0]) + len(ds.val[0]) == 4000 and len(ds.test[0]) == 1000
    counts = torch.bincount(torch.cat([ds.train[1], ds.val[1]]), minlength=10)
    assert counts.tolist() == [400] * 10
    assert torch.bincount(ds.test[1], minlength=10).tolist() == [100] * 10
    assert torch.bincount(ds.val[1], minlength=10).tolist() == [40] * 10
    assert ds.bounds == (0.0, 1.0) and float(_all_x(ds).min()) == 0.0
    assert float(_all_x(ds).max()) == 1.0
    assert ds.feature_names[0] == "pixel_0_0" and ds.feature_names[-1] == "pixel_27_27"
    assert ds.n_features == 784 and ds.default_k == 50 and ds.default_model["name"] == "cnn"
    raw = _idx_images(_root() / "mnist5k" / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_allclose(ds.test[0][:, 0].numpy() * 255.0, raw, atol=1e-4)


def test_read_idx_rejects_truncated_file(tmp_path: Path) -> None:
    good = bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes([1, 2, 3, 4])
    (tmp_path / "a").write_bytes(gzip.compress(good))
    np.testing.assert_array_equal(images.read_idx(tmp_path / "a"), [1, 2, 3, 4])
    (tmp_path / "b").write_bytes(good[:-1])
    with pytest.raises(ValueError, match="truncated"):
        images.read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(ValueError, match="magic"):
        images.read_idx(tmp_path / "c")


def test_mnist_full_set_missing_offline(isolated_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz.*mnist"):
        load_dataset("mnist", root=tmp_path / "nothing", download=False)


def test_mnist_reads_full_layout(isolated_cache: Path, tmp_path: Path, monkeypatch) -> None:
    """The ``mnist`` loader reads any IDX set under ``mnist/`` (here a tiny synthetic one)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    sums = {}
    for split, n in (("train", 40), ("t10k", 20)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = np.arange(n, dtype=np.uint8) % 10
        for kind, arr, magic in (("images-idx3", img, 3), ("labels-idx1", lab, 1)):
            head = bytes([0, 0, 8, magic]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
            data = gzip.compress(head + arr.tobytes())
            name = f"{split}-{kind}-ubyte.gz"
            (folder / name).write_bytes(data)
            sums[name] = _sha(data)
        if split == "t10k":
            test_img = img
    monkeypatch.setattr(images, "MNIST_SOURCE", replace(images.MNIST_SOURCE, files=sums))
    ds = load_dataset("mnist", root=tmp_path, download=False)
    assert len(ds.train[0]) + len(ds.val[0]) == 40 and len(ds.test[0]) == 20
    np.testing.assert_allclose(ds.test[0][:, 0].numpy(), test_img / 255.0, atol=1e-7)


def test_digits() -> None:
    ds = load_dataset("digits")
    _check_common(ds)
    assert ds.modality == "image" and ds.input_shape == (1, 8, 8) and ds.n_classes == 10
    assert len(_all_y(ds)) == 1797 and ds.bounds == (0.0, 1.0)
    assert float(_all_x(ds).max()) == 1.0 and float(_all_x(ds).min()) == 0.0


def test_breast_cancer() -> None:
    from sklearn.datasets import load_breast_cancer

    ds = load_dataset("breast-cancer", seed=2)
    _check_common(ds)
    raw = load_breast_cancer()
    assert len(_all_y(ds)) == 569 and ds.n_features == 30 and ds.default_k == 8
    assert ds.feature_names == list(raw.feature_names)
    assert int(_all_y(ds).sum()) == int(raw.target.sum())
    xtr = ds.train[0].double()
    torch.testing.assert_close(xtr.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- graphs


def _mutag_raw() -> tuple[list[list[int]], list[int], list[int], list[int]]:
    d = _root() / "MUTAG"
    edges = [
        [int(v) for v in line.split(",")]
        for line in (d / "MUTAG_A.txt").read_text().split("\n")
        if line.strip()
    ]
    gi = [int(v) for v in (d / "MUTAG_graph_indicator.txt").read_text().split()]
    gl = [int(v) for v in (d / "MUTAG_graph_labels.txt").read_text().split()]
    nl = [int(v) for v in (d / "MUTAG_node_labels.txt").read_text().split()]
    return edges, gi, gl, nl


@requires_data
def test_mutag_dense_graphs() -> None:
    ds = load_dataset("mutag")
    _check_common(ds)
    assert ds.modality == "graph" and ds.input_shape == (28, 7) and ds.n_features == 28
    assert ds.feature_names[0] == "node_0" and ds.default_k == 5 and ds.bounds == (0.0, 1.0)
    y = _all_y(ds)
    assert len(y) == 188 and int(y.sum()) == 125 and int((y == 0).sum()) == 63
    adj = torch.cat([ds.forward_kwargs[s]["adj"] for s in ("train", "val", "test")])
    mask = torch.cat([ds.forward_kwargs[s]["mask"] for s in ("train", "val", "test")])
    x = _all_x(ds)
    assert adj.shape == (188, 28, 28) and mask.shape == (188, 28)
    assert int(mask.sum()) == 3371
    eye = torch.eye(28, dtype=torch.bool)
    assert int((adj[:, ~eye] != 0).sum()) == 7442  # directed edge lines
    torch.testing.assert_close(adj, adj.transpose(1, 2))
    torch.testing.assert_close(x.sum(-1), mask)  # one-hot on real nodes, zero on padding
    pad = mask == 0
    assert float(adj.abs().sum(-1)[pad].sum()) == 0.0
    assert int(mask.sum(1).min()) == 10 and int(mask.sum(1).max()) == 28

    # independent rebuild of every graph from the raw files
    edges, gi, gl, nl = _mutag_raw()
    assert len(edges) == 7442 and len(gi) == 3371 and len(gl) == 188
    labels01 = np.array([int(v == 1) for v in gl])
    order = np.concatenate(three_way_split(labels01, 0.1, 0.2, 0))  # graph id - 1 per row
    first: dict[int, int] = {}
    for node, g in enumerate(gi, start=1):
        first.setdefault(g, node)
    for row in range(0, 188, 37):
        g = int(order[row]) + 1
        nodes = [i + 1 for i, v in enumerate(gi) if v == g]
        n = len(nodes)
        a = np.eye(n)
        for r, c in edges:
            if gi[r - 1] == g:
                a[r - first[g], c - first[g]] = 1.0
        d = a.sum(1) ** -0.5
        norm = d[:, None] * a * d[None, :]
        np.testing.assert_allclose(adj[row, :n, :n].numpy(), norm, rtol=1e-6, atol=1e-7)
        onehot = np.eye(7)[[nl[v - 1] for v in nodes]]
        np.testing.assert_array_equal(x[row, :n].numpy(), onehot)
        assert int(y[row]) == int(gl[g - 1] == 1)


def test_tu_to_dense_rejects_cross_graph_edges() -> None:
    gi = np.array([1, 1, 2, 2])
    nl = np.array([0, 1, 0, 1])
    x, adj, mask = graphs.tu_to_dense(np.array([[1, 2], [2, 1]]), gi, nl, 2)
    assert x.shape == (2, 2, 2) and adj[0, 0, 1] == 1 and adj[1].sum() == 0
    with pytest.raises(ValueError, match="across graphs"):
        graphs.tu_to_dense(np.array([[1, 3]]), gi, nl, 2)
    with pytest.raises(ValueError, match="max_nodes"):
        graphs.tu_to_dense(np.array([[1, 2]]), gi, nl, 2, max_nodes=1)


# ----------------------------------------------------------------------------- files, cache


def _copy_folder(name: str, dest: Path) -> Path:
    shutil.copytree(_root() / name, dest / name)
    for p in (dest / name).iterdir():
        p.chmod(0o644)
    return dest / name


def test_missing_files_offline_say_where(isolated_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("adult", root=tmp_path / "mydata", download=False)
    msg = str(err.value)
    assert "adult.data" in msg and "adult.test" in msg
    assert str(tmp_path / "mydata" / "adult") in msg and str(isolated_cache / "adult") in msg
    assert "download=True" in msg


@requires_data
def test_corrupt_file_is_a_checksum_error(isolated_cache: Path, tmp_path: Path) -> None:
    folder = _copy_folder("adult", tmp_path)
    load_dataset("adult", root=tmp_path, download=False)  # the exact copy loads
    data = bytearray((folder / "adult.test").read_bytes())
    data[500] = ord("9") if data[500] != ord("9") else ord("8")
    (folder / "adult.test").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch.*adult.test"):
        load_dataset("adult", root=tmp_path, download=False)


@requires_data
def test_truncated_graph_file_is_rejected(isolated_cache: Path, tmp_path: Path) -> None:
    folder = _copy_folder("MUTAG", tmp_path)
    text = (folder / "MUTAG_A.txt").read_text()
    (folder / "MUTAG_A.txt").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="checksum mismatch.*MUTAG_A.txt"):
        load_dataset("mutag", root=tmp_path, download=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served on 127.0.0.1 by a local HTTP server (no internet needed)."""
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args: object, **kw: object) -> _Quiet:
        return _Quiet(*args, directory=str(served), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_caches_and_rejects_tampered_files(http_dir, tmp_path: Path) -> None:
    served, url = http_dir
    good = b"feature,label\n1,0\n" * 1000
    (served / "good.csv").write_bytes(good)
    (served / "tampered.csv").write_bytes(good.replace(b"1,0", b"1,1", 1))
    dest = tmp_path / "cache" / "x" / "good.csv"
    assert dl.fetch(url + "good.csv", _sha(good), dest) == dest
    assert dest.read_bytes() == good
    # cached: served again without network (the URL now points at a closed port)
    dead = f"http://127.0.0.1:{_free_port()}/good.csv"
    assert dl.fetch(dead, _sha(good), dest).read_bytes() == good
    # tampered download: a clear error, nothing kept, no temporary files left behind
    bad_dest = tmp_path / "cache" / "x" / "tampered.csv"
    with pytest.raises(ValueError, match="checksum mismatch"):
        dl.fetch(url + "tampered.csv", _sha(good), bad_dest)
    assert not bad_dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good.csv"]
    # a corrupted cache file is downloaded again
    dest.write_bytes(b"garbage")
    assert dl.fetch(url + "good.csv", _sha(good), dest).read_bytes() == good
    # unreachable server: FileNotFoundError naming URL and destination
    with pytest.raises(FileNotFoundError, match="could not download.*put the file"):
        dl.fetch(dead.replace("good", "other"), _sha(good), tmp_path / "other.csv")


@requires_data
def test_adult_download_path(http_dir, isolated_cache: Path, monkeypatch) -> None:
    """load_dataset fetches into the cache, then loads offline from the cache."""
    served, url = http_dir
    for f in ("adult.data", "adult.test"):
        shutil.copy(_root() / "adult" / f, served / f)
    src = replace(tabular.ADULT_SOURCE, urls={f: url + f for f in ("adult.data", "adult.test")})
    monkeypatch.setattr(tabular, "ADULT_SOURCE", src)
    a = load_dataset("adult")
    assert sorted(p.name for p in (isolated_cache / "adult").iterdir()) == [
        "adult.data",
        "adult.test",
    ]
    for f in ("adult.data", "adult.test"):
        (served / f).unlink()
    b = load_dataset("adult", download=False)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.test[1], b.test[1])
    monkeypatch.delenv("R2ET_CACHE")
    monkeypatch.setenv("R2ET_DATA", str(_root()))
    c = load_dataset("adult")
    assert torch.equal(a.val[0], c.val[0])


@requires_data
def test_mutag_download_from_zip(http_dir, isolated_cache: Path, monkeypatch) -> None:
    """Archive sources: members are extracted and checked against their own sums."""
    served, url = http_dir
    with zipfile.ZipFile(served / "MUTAG.zip", "w") as zf:
        for f in graphs.MUTAG_FILES:
            zf.write(_root() / "MUTAG" / f, f"MUTAG/{f}")
    src = replace(graphs.MUTAG_SOURCE, archive=(url + "MUTAG.zip", None, "MUTAG.zip"))
    monkeypatch.setattr(graphs, "MUTAG_SOURCE", src)
    ds = load_dataset("mutag")
    assert len(_all_y(ds)) == 188
    assert (isolated_cache / "MUTAG" / "MUTAG_A.txt").is_file()
    # a zip with a tampered member is refused and the bad member is not kept
    shutil.rmtree(isolated_cache)
    with zipfile.ZipFile(served / "MUTAG.zip", "w") as zf:
        for f in graphs.MUTAG_FILES:
            data = (_root() / "MUTAG" / f).read_bytes()
            zf.writestr(f"MUTAG/{f}", data.replace(b"1", b"2", 1) if "labels" in f else data)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_dataset("mutag")
    assert not (isolated_cache / "MUTAG" / "MUTAG_graph_labels.txt").exists()


@requires_data
def test_bank_download_from_verified_zip(http_dir, isolated_cache: Path, monkeypatch) -> None:
    served, url = http_dir
    with zipfile.ZipFile(served / "bank.zip", "w") as zf:
        zf.write(_root() / "bank" / "bank-full.csv", "bank-full.csv")
    blob = (served / "bank.zip").read_bytes()
    src = replace(tabular.BANK_SOURCE, archive=(url + "bank.zip", _sha(blob), "bank.zip"))
    monkeypatch.setattr(tabular, "BANK_SOURCE", src)
    assert len(_all_y(load_dataset("bank"))) == 45211
    (served / "bank.zip").unlink()
    assert len(_all_y(load_dataset("bank", download=False))) == 45211  # cached archive
    (isolated_cache / "bank" / "bank.zip").write_bytes(blob[:-10])
    with pytest.raises(ValueError, match="checksum mismatch.*bank.zip"):
        load_dataset("bank", download=False)


# ----------------------------------------------------------------------------- csv


def _write_csv(path: Path, n: int = 200, nan: bool = False) -> None:
    rng = np.random.default_rng(0)
    rows = ["height,colour,score,animal"]
    animals = ["cat", "dog", "bird"]
    for i in range(n):
        h = "" if nan and i % 17 == 0 else f"{rng.normal(170, 10):.2f}"
        c = "" if nan and i % 23 == 0 else ["red", "green", "blue"][i % 3]
        rows.append(f"{h},{c},{i % 7},{animals[i % 3]}")
    path.write_text("\n".join(rows) + "\n")


def test_csv_loader(tmp_path: Path) -> None:
    p = tmp_path / "pets.csv"
    _write_csv(p)
    ds = load_dataset("csv", path=p, target="animal", seed=1)
    _check_common(ds)
    assert ds.name == "pets" and ds.n_classes == 3 and ds.modality == "tabular"
    assert ds.info["classes"] == ["bird", "cat", "dog"]
    assert ds.feature_names == ["height", "score", "colour=blue", "colour=green", "colour=red"]
    assert len(_all_y(ds)) == 200 and ds.default_k == 2  # 3 attributes: k in 1..2
    # stratified: round(0.2 * n_c) of bird/cat/dog = 66/67/67 rows
    assert torch.bincount(ds.test[1]).tolist() == [13, 13, 13]
    assert torch.bincount(ds.val[1]).tolist() == [7, 7, 7]
    xtr = ds.train[0][:, :2].double()
    torch.testing.assert_close(xtr.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0)
    # row i has colour i % 3 and animal i % 3: each one-hot colour maps to its animal
    colour = ds.train[0][:, 2:].argmax(1)  # blue, green, red
    animal = ds.train[1]  # bird, cat, dog
    raw = {"red": "cat", "green": "dog", "blue": "bird"}
    names = ["blue", "green", "red"]
    classes = ds.info["classes"]
    assert all(classes[int(a)] == raw[names[int(c)]] for c, a in zip(colour, animal))


def test_csv_missing_values(tmp_path: Path) -> None:
    p = tmp_path / "holes.csv"
    _write_csv(p, nan=True)
    with pytest.raises(
        ValueError, match="'height', 'colour'.* missing values; pass missing='drop'"
    ):
        load_dataset("csv", path=p, target="animal")
    imp = load_dataset("csv", path=p, target="animal", missing="impute")
    assert bool(torch.isfinite(_all_x(imp)).all()) and len(_all_y(imp)) == 200
    assert "colour=nan" in imp.feature_names
    dropped = load_dataset("csv", path=p, target="animal", missing="drop")
    n_bad = len({i for i in range(200) if i % 17 == 0 or i % 23 == 0})
    assert len(_all_y(dropped)) == 200 - n_bad
    assert "colour=nan" not in dropped.feature_names


def test_csv_bad_arguments(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    _write_csv(p)
    with pytest.raises(ValueError, match="target='species' is not a column.*animal"):
        load_dataset("csv", path=p, target="species")
    with pytest.raises(ValueError, match="target"):
        load_dataset("csv", path=p)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset("csv", path=tmp_path / "nope.csv", target="animal")
    with pytest.raises(ValueError, match="missing='fill'"):
        load_dataset("csv", path=p, target="animal", missing="fill")
    q = tmp_path / "nolabel.csv"
    q.write_text("a,b\n1,\n2,x\n")
    with pytest.raises(ValueError, match="target column 'b' has 1 missing"):
        load_dataset("csv", path=q, target="b")
