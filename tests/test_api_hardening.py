"""Issue 23, library inputs: every bad input to certify, evaluate, the attacks, the metrics and
build_model is one clear ValueError/TypeError (never a torch RuntimeError or a silent wrong
number); inputs of another floating dtype or device follow the model, and results come back
where the caller's inputs are."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from r2et import EnsembleAttack, ERAttack, Explainer, build_model, evaluate
from r2et._checks import check_forward, model_placement, to_model
from r2et.attacks import AttackResult, RandomSearchAttack
from r2et.attacks._common import to_caller
from r2et.certify import certified_radius
from r2et.metrics import (
    cosine_distance,
    deletion,
    locality,
    occlusion_agreement,
    occlusion_scores,
    precision_at_k,
    thickness,
    topk_kendall,
    topk_spearman,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _mlp(n_in: int = 6, n_out: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", [n_in], n_out, hidden=[8]).eval()


def _rows(n: int = 4, f: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, f, generator=torch.Generator().manual_seed(seed))


def _plain_mlp(n_in: int = 6, n_out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, n_out)).eval()


SMOOTH = {"method": "smoothed", "n0": 8, "n": 40, "seed": 0}


# ----------------------------------------------------------------------------- 1. certify
@pytest.mark.parametrize("opts", [{}, SMOOTH], ids=["deterministic", "smoothed"])
def test_certify_refuses_an_empty_or_non_finite_box(opts):
    model, x, ex = _mlp(), _rows(), Explainer("grad")
    with pytest.raises(ValueError, match="empty"):
        certified_radius(model, x, ex, 2, bounds=(1, 0), **opts)
    low, high = torch.zeros(6), torch.ones(6)
    high[4] = -0.5  # one feature's interval is empty
    with pytest.raises(ValueError, match=r"low 0 > high -0\.5 at entry 4"):
        certified_radius(model, x, ex, 2, bounds=(low, high), **opts)
    with pytest.raises(ValueError, match="NaN or infinite"):
        certified_radius(model, x, ex, 2, bounds=(float("nan"), 1.0), **opts)
    with pytest.raises(ValueError, match="NaN or infinite"):
        certified_radius(model, x, ex, 2, bounds=(0.0, float("inf")), **opts)
    with pytest.raises(ValueError, match="broadcast|fit one input"):
        certified_radius(model, x, ex, 2, bounds=(torch.zeros(4, 6), torch.ones(4, 6)), **opts)


@pytest.mark.parametrize("opts", [{}, SMOOTH], ids=["deterministic", "smoothed"])
@pytest.mark.parametrize("plain", [False, True], ids=["built", "plain-sequential"])
def test_certify_wrong_shape_or_dtype_is_one_clear_error(opts, plain):
    model, ex = (_plain_mlp() if plain else _mlp()), Explainer("grad")
    with pytest.raises(ValueError, match=r"\(4, 5\).*does not fit"):
        certified_radius(model, _rows(f=5), ex, 2, **opts)
    with pytest.raises(ValueError, match="batch dimension"):
        certified_radius(model, _rows()[0], ex, 2, **opts)
    with pytest.raises(ValueError, match="floating"):
        certified_radius(model, torch.ones(4, 6, dtype=torch.long), ex, 2, **opts)


@pytest.mark.parametrize("opts", [{}, SMOOTH], ids=["deterministic", "smoothed"])
def test_certify_casts_float_inputs_to_the_model_dtype(opts):
    model, x, ex = _mlp(), _rows(), Explainer("grad")
    ref = certified_radius(model, x, ex, 2, **opts)
    for dtype in (torch.float64, torch.float16):
        xd = x.to(dtype)
        got = certified_radius(model, xd, ex, 2, **opts)
        same = certified_radius(model, xd.float(), ex, 2, **opts)  # what the model sees
        torch.testing.assert_close(got.radius, same.radius)
        torch.testing.assert_close(got.p_at_k, same.p_at_k)
        assert torch.equal(got.topk, same.topk)
    got64 = certified_radius(model, x.double(), ex, 2, **opts)  # float32 values: exact
    torch.testing.assert_close(got64.radius, ref.radius, rtol=0, atol=0)


# ----------------------------------------------------------------------------- 2. evaluate
def test_evaluate_refuses_labels_outside_the_model_classes():
    model = _mlp(n_out=2)
    x = _rows(20)
    y = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(1))
    y[3], y[11] = 5, 7
    with pytest.raises(ValueError, match=r"5, 7 \(2 label\(s\)\).*2 outputs.*0\.\.1"):
        evaluate(model, (x, y), Explainer("grad"), k=2, faithfulness=False)
    ok = evaluate(model, (x, y.clamp(0, 1)), Explainer("grad"), k=2, faithfulness=False)
    assert 0.0 <= ok["accuracy"] <= 1.0


def test_evaluate_refuses_non_integer_labels():
    from r2et.data.base import Dataset

    x, y = _rows(8).double(), torch.tensor([0.0, 1.0] * 4)
    with pytest.raises(ValueError, match="integer class labels"):
        ds = Dataset(
            name="floaty", modality="tabular", train=(x, y), val=(x, y), test=(x, y),
            n_classes=2, feature_names=[f"f{i}" for i in range(6)], default_k=2,
        )  # fmt: skip
        evaluate(_mlp(n_out=2).double(), ds, Explainer("grad"), faithfulness=False)


# ----------------------------------------------------------------------------- 3. attacks
@pytest.mark.parametrize(
    "make",
    [
        lambda ex: ERAttack(ex, 2, 0.1, steps=6, seed=0),
        lambda ex: RandomSearchAttack(ex, 2, 0.1, steps=12, seed=0, bounds=(0.0, 1.0)),
        lambda ex: EnsembleAttack(ex, 2, 0.1, preset="fast", seed=0, bounds=(0.0, 1.0)),
    ],
    ids=["er", "search", "ensemble"],
)
def test_attacks_run_float64_inputs_of_a_float32_model(make):
    model, x, ex = _mlp(), _rows(6), Explainer("grad")
    atk = make(ex)
    ref = atk(model, x)
    got = atk(model, x.double())
    assert got.x_adv.dtype == torch.float64 and got.scores_adv.dtype == torch.float64
    torch.testing.assert_close(got.p_at_k, ref.p_at_k.double(), rtol=0, atol=0)
    torch.testing.assert_close(got.x_adv, ref.x_adv.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.scores_adv, ref.scores_adv.double())
    assert float((got.x_adv - x.double()).abs().max()) <= 0.1  # the ball, in float64
    assert float(got.x_adv.min()) >= 0.0 and float(got.x_adv.max()) <= 1.0


def test_attack_meta_model_or_input_is_a_clear_error():
    ex = Explainer("grad")
    with pytest.raises(ValueError, match="model's weights are on the meta device"):
        ERAttack(ex, 2, 0.1, steps=2)(_mlp().to("meta"), _rows())
    with pytest.raises(ValueError, match="x is on the meta device"):
        ERAttack(ex, 2, 0.1, steps=2)(_mlp(), _rows().to("meta"))


def test_inputs_follow_the_model_and_results_return_to_the_caller():
    """No second device here: the moves are checked on the ``meta`` device, where only
    shapes, dtypes and devices exist (a tensor moved there keeps its shape)."""
    model = _mlp()
    assert model_placement(model) == (torch.device("cpu"), torch.float32)
    assert model_placement(lambda x: x) == (None, None)
    moved = to_model(model, _rows().double())
    assert moved.dtype == torch.float32 and moved.device.type == "cpu"
    assert to_model(model, torch.zeros(3, dtype=torch.long)).dtype == torch.long  # labels
    res = ERAttack(Explainer("grad"), 2, 0.1, steps=2, seed=0)(model, _rows())
    home = torch.empty(0, device="meta")  # the caller's device, as seen by to_caller
    back = to_caller(res, home.new_empty(res.x_adv.shape), 0.1, "linf", None)
    assert isinstance(back, AttackResult)
    for name in ("x_adv", "scores_clean", "scores_adv", "p_at_k", "flipped", "steps_taken"):
        t = getattr(back, name)
        assert t.device.type == "meta" and t.shape == getattr(res, name).shape, name
    assert back.flipped.dtype == torch.bool and back.steps_taken.dtype == torch.long


@CUDA
def test_attack_and_metrics_with_a_cuda_model_and_cpu_inputs():
    x, ex = _rows(6), Explainer("grad")
    model = _mlp().cuda()
    atk = ERAttack(ex, 2, 0.1, steps=6, seed=0)
    got = atk(model, x)
    assert got.x_adv.device.type == "cpu" and got.p_at_k.device.type == "cpu"
    ref = atk(model, x.cuda())  # the same computation, on the model's device
    torch.testing.assert_close(got.p_at_k, ref.p_at_k.cpu(), rtol=0, atol=0)
    torch.testing.assert_close(got.x_adv, ref.x_adv.cpu(), rtol=0, atol=0)
    th = thickness(model, x, ex, 2, radius=0.1, seed=0)
    assert th.device.type == "cpu"
    cert = certified_radius(model, x, ex, 2)
    assert cert.radius.device.type == "cpu"
    assert precision_at_k(x.cuda(), x, 2).device.type == "cuda"


# ----------------------------------------------------------------------------- 4. precision_at_k
def test_precision_at_k_devices_dtypes_shapes_and_k():
    a, b = _rows(), _rows(seed=1)
    with pytest.raises(ValueError, match="b is on the meta device"):
        precision_at_k(a, b.to("meta"), 2)
    with pytest.raises(ValueError, match="a is on the meta device"):
        topk_kendall(a.to("meta"), b, 2)
    p = precision_at_k(a, b.double(), 2)  # mixed dtypes: compared in the common one
    torch.testing.assert_close(p, precision_at_k(a.double(), b.double(), 2))
    with pytest.raises(ValueError, match="same shape"):
        precision_at_k(a, b[:, :5], 2)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        precision_at_k(a[0], b[0], 2)
    for bad_k in (0, 6, "2", 2.0, True):
        with pytest.raises(ValueError, match="k"):
            precision_at_k(a, b, bad_k)
    with pytest.raises(ValueError, match="real-valued"):
        precision_at_k(a > 0.5, b > 0.5, 2)


# ----------------------------------------------------------------------------- 5. names
def test_explainer_names_are_accepted_like_explainers():
    model, x = _mlp(), _rows()
    ex = Explainer("grad")
    by_name = thickness(model, x, "grad", 2, radius=0.1, seed=3)
    torch.testing.assert_close(by_name, thickness(model, x, ex, 2, radius=0.1, seed=3))
    d_name, d_obj = deletion(model, x, "grad", 2, seed=0), deletion(model, x, ex, 2, seed=0)
    for key in d_obj:
        torch.testing.assert_close(d_name[key], d_obj[key])
    torch.testing.assert_close(
        occlusion_agreement(model, x, "grad", 2), occlusion_agreement(model, x, ex, 2)
    )
    torch.testing.assert_close(
        certified_radius(model, x, "grad", 2).radius, certified_radius(model, x, ex, 2).radius
    )
    torch.testing.assert_close(
        ERAttack("grad", 2, 0.1, steps=3, seed=0)(model, x).p_at_k,
        ERAttack(ex, 2, 0.1, steps=3, seed=0)(model, x).p_at_k,
    )
    with pytest.raises(ValueError, match="not a known explainer"):
        thickness(model, x, "gradd", 2, radius=0.1)
    with pytest.raises(ValueError, match="Explainer"):
        thickness(model, x, 42, 2, radius=0.1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- 6. build_model
BAD_SIZES = [
    ("mlp", [6], {"hidden": [-5]}, r"hidden\[0\]"),
    ("mlp", [6], {"hidden": [8, 0]}, r"hidden\[1\]"),
    ("mlp", [6], {"hidden": [2.5]}, r"hidden\[0\]"),
    ("mlp", [6], {"hidden": [True]}, r"hidden\[0\]"),
    ("mlp", [6], {"hidden": 5}, "hidden must be a list"),
    ("mlp", [-6], {}, r"input_shape\[0\]"),
    ("mlp", [0], {}, r"input_shape\[0\]"),
    ("mlp", [6], {"activation": "softplus", "beta": -1.0}, "beta"),
    ("cnn", [1, 8, 8], {"channels": [-4, 8]}, r"channels\[0\]"),
    ("cnn", [1, 8, 8], {"channels": [4, 8, 8]}, "channels must list exactly 2"),
    ("cnn", [1, 8, 8], {"hidden": 0}, "hidden"),
    ("cnn", [1, 2, 2], {}, "at least 4x4"),
    ("cnn", [0, 8, 8], {}, r"input_shape\[0\]"),
    ("resnet9", [3, 8, 8], {"width": -1}, "width"),
    ("resnet9", [3, 8, 8], {"width": 2.5}, "width"),
    ("resnet9", [3, 8, 8], {"width": 2, "groups": 0}, "groups"),
    ("resnet9", [3, 4, 4], {"width": 2}, "at least 8x8"),
    ("gcn", [5, 3], {"hidden": [-5]}, r"hidden\[0\]"),
    ("gcn", [5, -3], {}, r"input_shape\[1\]"),
    ("gin", [5, 3], {"hidden": [4, 0]}, r"hidden\[1\]"),
    ("edge-gnn", [10], {"n_nodes": 5, "node_features": 3, "hidden": [-1]}, r"hidden\[0\]"),
    ("edge-gnn", [0], {"n_nodes": 5, "node_features": 3}, r"input_shape\[0\]"),
    ("edge-gnn", [10], {"n_nodes": -5, "node_features": 3}, "n_nodes"),
]


@pytest.mark.parametrize("name, shape, kw, match", BAD_SIZES)
def test_build_model_refuses_bad_sizes(name, shape, kw, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, shape, 3, **kw)


def test_bad_sizes_cover_every_registered_model():
    builtin = {"mlp", "cnn", "resnet9", "gcn", "gin", "edge-gnn"}
    assert builtin <= {name for name, *_ in BAD_SIZES}
    # the good sizes still build, and give the same parameter counts as before
    assert sum(p.numel() for p in build_model("mlp", [6], 3, hidden=[8]).parameters()) == 83


# ----------------------------------------------------------------------------- 7. metrics
def test_metrics_shape_mismatches_are_value_errors():
    model, x, ex = _mlp(), _rows(), Explainer("grad")
    with pytest.raises(ValueError, match=r"scores must be the clean \(N, U\) = \(4, 6\)"):
        deletion(model, x, ex, 2, scores=torch.rand(4, 5))
    with pytest.raises(ValueError, match=r"scores must be the clean \(N, U\)"):
        occlusion_agreement(model, x, ex, 2, scores=torch.rand(3, 6))
    with pytest.raises(ValueError, match="unit_index"):
        occlusion_scores(model, x, ex, unit_index=torch.zeros(5, dtype=torch.long))
    plain = _plain_mlp()
    for fn in (
        lambda: deletion(plain, _rows(f=5), ex, 2),
        lambda: occlusion_agreement(plain, _rows(f=5), ex, 2),
        lambda: thickness(plain, _rows(f=5), ex, 2, radius=0.1),
    ):
        with pytest.raises(ValueError, match=r"\(4, 5\).*does not fit the model"):
            fn()
    with pytest.raises(ValueError, match="floating"):
        locality(torch.ones(4, 6, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="a is on the meta device"):
        cosine_distance(torch.rand(4, 6, device="meta"), torch.rand(4, 6))
    ints = torch.arange(24).view(4, 6)
    torch.testing.assert_close(cosine_distance(ints, ints), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        topk_spearman(x, x.double(), 3), topk_spearman(x.double(), x.double(), 3)
    )


def test_metrics_cast_float64_inputs_for_a_float32_model():
    model, x, ex = _mlp(), _rows(), Explainer("grad")
    torch.testing.assert_close(
        thickness(model, x.double(), ex, 2, radius=0.1, seed=0),
        thickness(model, x, ex, 2, radius=0.1, seed=0),
    )
    a, b = deletion(model, x.double(), ex, 2, seed=0), deletion(model, x, ex, 2, seed=0)
    for key in b:
        torch.testing.assert_close(a[key], b[key])


def test_check_forward_turns_runtime_errors_into_one_value_error():
    plain = _plain_mlp()
    check_forward(plain, _rows())  # fits: no error
    with pytest.raises(ValueError, match=r"x of shape \(4, 5\) \(torch\.float32, on cpu\)"):
        check_forward(plain, _rows(f=5))
