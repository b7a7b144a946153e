"""One registry helper: datasets and models are one registration each (explainers, attacks and
methods have their own tests), and unknown names are one clear line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r2et import build_model, from_tensors, load_dataset
from r2et._registry import Registry
from r2et.data.registry import DATASETS, list_datasets, register_dataset
from r2et.models import MODELS, list_models, register_model


def test_registry_basics():
    reg: Registry[int] = Registry("widget")
    reg.register("One", 1)

    @reg.register("two")
    def two() -> int:
        return 2

    assert reg.names() == ["one", "two"] and reg.get("ONE") == 1 and reg.get("two") is two
    assert "one" in reg and "three" not in reg and 5 not in reg
    with pytest.raises(ValueError, match="already registered"):
        reg.register("one", 3)
    reg.register("one", 3, overwrite=True)
    assert reg.get("one") == 3
    with pytest.raises(ValueError, match=r"name='x' is not a known widget; allowed: \['one'"):
        reg.get("x")
    reg.unregister("one")
    assert reg.names() == ["two"]
    with pytest.raises(ValueError, match="non-empty"):
        reg.register("  ", 1)


def test_a_new_dataset_and_model_are_one_registration_each():
    def load_toy(root=None, download=True, seed=0, n=60):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return from_tensors((x, (x[:, 0] > 0).long()), test=(x[:10], (x[:10, 0] > 0).long()))

    class Tiny(nn.Module):
        def __init__(self, f: int, c: int) -> None:
            super().__init__()
            self.lin = nn.Linear(f, c)

        def forward(self, x):
            return self.lin(x)

    register_dataset("toy-table", load_toy)
    register_model("tiny", lambda shape, n_classes, **kw: Tiny(shape[0], n_classes))
    try:
        assert "toy-table" in list_datasets() and "tiny" in list_models()
        ds = load_dataset("toy-table", seed=1, n=40)
        assert len(ds.train[0]) + len(ds.val[0]) == 40 and ds.info["loader"] == "toy-table"
        model = build_model("tiny", ds.input_shape, 2)
        assert isinstance(model, Tiny) and model.r2et_spec["name"] == "tiny"
        with pytest.raises(ValueError, match="unknown keyword"):
            load_dataset("toy-table", bogus=1)
    finally:
        DATASETS.unregister("toy-table")
        MODELS.unregister("tiny")
    with pytest.raises(ValueError, match="not a known dataset"):
        load_dataset("toy-table")
    with pytest.raises(ValueError, match="name"):
        build_model("tiny", [4], 2)
