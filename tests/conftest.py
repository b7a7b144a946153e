"""Shared fixtures: small models with fixed seeds, and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
if "R2ET_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["R2ET_DATA"] = str(SHARED_DATA)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def data_root() -> Path | None:
    """The real-data folder tests read (``R2ET_DATA``), or None when absent."""
    root = os.environ.get("R2ET_DATA")
    return Path(root) if root and Path(root).is_dir() else None


requires_data = pytest.mark.skipif(
    data_root() is None, reason="R2ET_DATA (../shared/data) not found"
)


def make_mlp(
    n_in: int = 10,
    n_out: int = 3,
    activation: str = "relu",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> nn.Module:
    from r2et import build_model

    torch.manual_seed(seed)
    return (
        build_model("mlp", [n_in], n_out, hidden=[16, 16], activation=activation).to(dtype).eval()
    )


def make_cnn(
    shape: tuple[int, int, int] = (2, 8, 8),
    n_out: int = 3,
    activation: str = "relu",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> nn.Module:
    from r2et import build_model

    torch.manual_seed(seed)
    return (
        build_model("cnn", list(shape), n_out, channels=[4, 8], hidden=16, activation=activation)
        .to(dtype)
        .eval()
    )


@pytest.fixture
def mlp() -> nn.Module:
    return make_mlp()


@pytest.fixture
def cnn() -> nn.Module:
    return make_cnn()


@pytest.fixture(scope="module")
def one_thread():
    """Small models run faster on one thread, and far faster on a shared, busy machine (two
    OpenMP threads were measured 30x slower than one under load). Use it module-wide with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randn_rows(n: int, f: int = 10, seed: int = 0) -> torch.Tensor:
    """``n`` standard-normal float64 rows of ``f`` features, seeded."""
    return torch.randn(n, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache and no data root: only what the test provides is found."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("R2ET_CACHE", str(cache))
    monkeypatch.delenv("R2ET_DATA", raising=False)
    return cache


#: A benchmark grid that runs in seconds (2 methods, 1 seed, 1 epoch, 16 inputs, fast ensemble).
TINY_BENCH_TOML = """
datasets = ["breast-cancer"]
methods = ["vanilla", "r2et-noh"]
seeds = [0]
threads = 1

[pretrain]
epochs = 1
batch_size = 64

[finetune]
epochs = 1
batch_size = 64

[evaluate]
n = 16
steps = 2
preset = "fast"
budgets = [1.0]
budget_preset = "fast"
thickness_samples = 1
thickness_steps = 1
"""
