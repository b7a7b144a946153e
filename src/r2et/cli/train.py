"""``r2et train``: train (or fine-tune) a model with one method and save a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from r2et.cli.args import (
    check_k_arg,
    parse_data_params,
    parse_params,
    probe_writable,
    unit_groups,
)


def train_explanation(args: argparse.Namespace, ds: object) -> dict[str, Any]:
    """``get_method`` keywords of the explanation ``r2et train`` trains: the dataset's
    (``ds.default_explainer``, of the method's output) unless ``--explainer`` names another
    rule or ``--unit`` another unit."""
    from r2et.train import method_explanation

    spec = dict(method_explanation(args.method, ds)["explainer"])  # CLI data: always a Dataset
    if args.explainer is not None:
        spec["method"] = args.explainer
    spec["groups"] = unit_groups(args.unit, ds, spec.get("groups"))
    return {"explainer": spec}


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or fine-tune) a model with one method and save a run folder."""
    from r2et.data import load_dataset
    from r2et.evaluation import evaluate
    from r2et.explain import Explainer
    from r2et.methods import get_method, method_row
    from r2et.models import build_model, count_model_parameters
    from r2et.runs import check_replaceable, load_run, save_run
    from r2et.train import fit, method_defaults

    probe_writable("--out", Path(args.out), "folder")
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise ValueError(
                f"--out {out} is not empty; give --overwrite to replace the run in it (the old "
                "run stays until the new one is complete)"
            )
        check_replaceable(out, "--out")
    from r2et._checks import check_device

    device = check_device("--device", args.device)  # None: CUDA when available
    params = parse_params(args.param)
    if "groups" in params:
        raise ValueError("--param groups=... is not allowed; use --unit attribute or column")
    if "explainer" in params:  # the older spelling of --explainer
        if args.explainer is not None:
            raise ValueError("give the explainer once: --explainer or --param explainer=...")
        args.explainer = params.pop("explainer")
    model_params = parse_params(args.model_param, "--model-param")
    for key in ("name", "input_shape", "n_classes"):
        if key in model_params:
            raise ValueError(
                f"--model-param {key}=... is not allowed; it comes from --model and the data"
            )
    k = args.k
    if "k" in params:
        if k is not None:
            raise ValueError("give k once: --k or --param k=..., not both")
        k = params.pop("k")
        if isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"--param k must be an int, got {k!r}")
    data_params = parse_data_params(args)
    ds = load_dataset(args.dataset, seed=args.seed, **data_params)
    k = check_k_arg("--k" if args.k is not None else "k", k if k is not None else ds.default_k, ds)
    if args.weight is not None and method_row(args.method).weight_name is None:
        raise ValueError(f"method {args.method!r} has no weight; drop --weight")
    params = {**method_defaults(args.method, ds), **params}  # the data's suggestion first
    if args.weight is not None:
        params[method_row(args.method).weight_name] = args.weight
    if method_row(args.method).needs_anchor and not args.pretrained:
        raise ValueError(
            f"method {args.method!r} keeps the ranking of the model it starts from, so it "
            "fine-tunes a trained one: pass --pretrained RUN (e.g. a --method vanilla run)"
        )
    method = get_method(args.method, k=k, **train_explanation(args, ds), **params)
    if args.pretrained:
        run = load_run(args.pretrained, trust_factory=args.trust_factory)
        model = run.model
        shape = run.config["model"].get("input_shape")
        if shape is not None and tuple(shape) != tuple(ds.input_shape):
            raise ValueError(
                f"--pretrained {args.pretrained} expects inputs of shape {shape}, dataset "
                f"{args.dataset} has {list(ds.input_shape)}"
            )
    else:
        spec = dict(ds.default_model)
        if args.model:
            spec = {"name": args.model}
        spec.update(model_params)
        name = spec.pop("name")
        count_model_parameters(
            {"name": name, "input_shape": list(ds.input_shape), "n_classes": ds.n_classes, **spec},
            where="--model/--model-param",
        )
        import torch

        torch.manual_seed(args.seed)
        model = build_model(name, list(ds.input_shape), ds.n_classes, **spec)
    res = fit(
        model,
        method,
        ds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        progress=not args.no_progress,
        weight_decay=args.weight_decay,
    )
    scored = evaluate(res.model, ds, Explainer("grad"), k=k, batch_size=1024, faithfulness=False)
    test_acc, majority = scored["accuracy"], scored["majority_rate"]
    config = {
        "dataset": ds.summary(),
        "data_seed": args.seed,
        "data_params": data_params,
        "pretrained": args.pretrained,
        **res.config,
    }
    metrics = {
        "val_accuracy": res.best_val_accuracy,
        "test_accuracy": test_acc,
        "majority_rate": majority,
        "best_epoch": res.best_epoch,
        "seconds_per_epoch": res.seconds_per_epoch,
        "history": res.history,
    }
    save_run(args.out, res.model, config, metrics)
    print(
        f"{ds.name or args.dataset} {args.method}: val acc {res.best_val_accuracy:.4f}, "
        f"test acc {test_acc:.4f} (majority class {majority:.4f}), "
        f"{res.config['epochs']} epochs of {res.config['batch_size']}"
        f"{_kept(res.config, res.best_epoch)}, "
        f"{res.seconds_per_epoch:.2f} s/epoch -> {args.out}"
    )
    if test_acc < majority:
        print(
            f"WARNING: test accuracy {test_acc:.4f} is below the majority-class rate "
            f"{majority:.4f}: always predicting the test split's most common class does better"
        )
    return 0


def _kept(config: dict, epoch: int) -> str:
    """How the schedule's weights were chosen, for the summary line."""
    decay = config.get("weight_decay") or 0.0
    wd = f", weight decay {decay:g}" if decay else ""
    if config.get("keep") == "last":
        return f"{wd}, last epoch kept"
    return f"{wd} (best {epoch})"
