"""Device check of r2et.certify: the certificates on CUDA agree with the CPU, stay on the
device, and what they cost there.

    PYTHONPATH=src python benchmarks/certify_device_check.py [--n 1000]

Deterministic radii on CUDA must equal the CPU's (same float64 arithmetic up to summation
order: at most 1% of inputs may differ, by at most one bisection step); the smoothed
certificate draws other noise on CUDA, so its mean radius and certified P@k are compared
within Monte Carlo error. ``evaluate(..., certify=...)`` is run on CUDA with a synthetic
dataset whose data box lives on the CPU. Prints one JSON line per check.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from r2et import Explainer, build_model
from r2et.certify import certified_radius


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model("mlp", [108], 2, hidden=[64, 64]).eval()
    x = torch.randn(args.n, 108)
    ex, k = Explainer("grad"), 8
    bounds = (torch.full((108,), -3.0), torch.full((108,), 3.0))
    radii = [0.001, 0.003, 0.01]
    cpu, t_cpu = timed(lambda: certified_radius(model, x, ex, k, radii=radii, bounds=bounds))
    model_d, x_d = model.to(dev), x.to(dev)
    certified_radius(model_d, x_d[:8], ex, k, radii=radii, bounds=bounds)  # warm-up
    gpu, t_gpu = timed(lambda: certified_radius(model_d, x_d, ex, k, radii=radii, bounds=bounds))
    assert gpu.radius.device == x_d.device and gpu.p_at_k.device == x_d.device
    diff = (gpu.radius.cpu() - cpu.radius).abs()
    step = 1.0 / 2**20
    same = float((diff <= 1e-6 * cpu.radius.abs().clamp_min(1e-12)).double().mean())
    ok = same >= 0.99 and float(diff.max()) <= 2 * step
    print(json.dumps({"check": "deterministic cpu vs cuda", "fraction_equal": same,
                      "max_diff": float(diff.max()), "cpu_s": t_cpu, "cuda_s": t_gpu,
                      "ok": ok}))  # fmt: skip
    sm_cpu, ts_cpu = timed(
        lambda: certified_radius(model.cpu(), x, ex, k, "smoothed", sigma=0.1, n=1000)
    )
    model_d = model.to(dev)
    certified_radius(model_d, x_d[:8], ex, k, "smoothed", sigma=0.1, n=64)  # warm-up
    sm_gpu, ts_gpu = timed(
        lambda: certified_radius(model_d, x_d, ex, k, "smoothed", sigma=0.1, n=1000)
    )
    assert sm_gpu.feature_radius.device == x_d.device
    m_cpu, m_gpu = float(sm_cpu.radius.mean()), float(sm_gpu.radius.cpu().mean())
    memb = float((sm_cpu.membership - sm_gpu.membership.cpu()).abs().max())
    ok_s = abs(m_cpu - m_gpu) < 0.01 and memb < 0.1
    print(json.dumps({"check": "smoothed cpu vs cuda", "radius_mean_cpu": m_cpu,
                      "radius_mean_cuda": m_gpu, "max_membership_diff": memb,
                      "cpu_s": ts_cpu, "cuda_s": ts_gpu, "ok": ok_s}))  # fmt: skip
    # evaluate() on CUDA with certificates, data box on the CPU
    from r2et.data.base import Dataset
    from r2et.evaluation import evaluate

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 108, generator=g).clamp(-3, 3), torch.randint(0, 2, (n,), generator=g)

    ds = Dataset(name="synthetic", modality="tabular", train=split(50), val=split(20),
                 test=split(200), n_classes=2, feature_names=[f"f{i}" for i in range(108)],
                 default_k=8, bounds=bounds)  # fmt: skip
    out = evaluate(model_d, ds, ex, k=8, n=200, faithfulness=False, certify={
        "det": {"method": "deterministic", "radii": radii, "bounds": bounds},
        "smooth": {"method": "smoothed", "sigma": 0.1, "n": 200}})  # fmt: skip
    cert = out["certified"]
    print(json.dumps({"check": f"evaluate on {dev.type}", "det": cert["det"]["radius_mean"],
                      "smooth": cert["smooth"]["radius_mean"], "ok": True}))  # fmt: skip
    return 0 if ok and ok_s else 1


if __name__ == "__main__":
    raise SystemExit(main())
