"""Explanations in the data's own terms: each ranked unit of a table named with the row's own
value in the file's units and category names (:func:`unit_labels`), classes by their names
(:func:`class_name`), and one row's explanation as a ranking a person can read
(:func:`explain_row`, what ``r2et explain`` prints)."""

from __future__ import annotations

from typing import Any

import torch

from r2et.explain import as_explainer, group_index

__all__ = ["class_name", "explain_row", "format_value", "unit_labels"]


def format_value(v: float) -> str:
    """A number as a person writes it: whole numbers without decimals, else 6 significant
    digits, enough for a value read from a file (``30.0`` -> ``"30"``, ``3580.37`` ->
    ``"3580.37"``, ``0.12345678`` -> ``"0.123457"``)."""
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-6 * max(1.0, abs(v)) else f"{v:.6g}"


def _raw_numbers(ds: Any) -> dict[str, tuple[float, float]]:
    """``column -> (train mean, train std)`` of the columns r2et's table encoder standardised
    (``ds.info["preprocessing"]``); empty for other data."""
    prep = getattr(ds, "info", {}).get("preprocessing")
    if not isinstance(prep, dict) or "train_mean" not in prep:
        return {}
    names = prep.get("numeric", [])
    return dict(zip(names, zip(prep["train_mean"], prep["train_std"])))


def unit_labels(ds: Any, x: torch.Tensor, groups: Any = None) -> list[str]:
    """A readable label per ranked unit of one tabular row ``x``, in the file's own terms.

    Columns (``groups=None``): ``"column = value"``, a standardised number shown in the file's
    units (``x · train_std + train_mean``, the inverse of r2et's table encoder), a one-hot
    column as ``"attribute=category = 1"`` or ``0``. With ``groups`` (one list of columns per
    attribute, ``ds.groups`` order, in any form :func:`r2et.explain.group_index` takes): the
    attribute's name with the row's own category (the one-hot column that is set) or its value
    in the file's units — never a category the row does not have. A value the encoder clipped
    to the training range (``ds.info["preprocessing"]["rows_clipped_to_train_range"]``) shows
    clipped: the model's input. Data without the encoder's statistics show the stored
    numbers."""
    row = x.detach().cpu().flatten().double()
    raw = _raw_numbers(ds)

    def number(label: str, i: int) -> str:
        v, column = float(row[i]), ds.feature_names[i]
        if column in raw:
            mean, std = raw[column]
            v = v * std + mean
        return f"{label} = {format_value(v)}"

    if groups is None:
        return [number(n, i) for i, n in enumerate(ds.feature_names)]
    gid = group_index(groups, row.numel())
    members = [torch.nonzero(gid == g).flatten().tolist() for g in range(int(gid.max()) + 1)]
    names = ds.group_names or [f"attribute {g}" for g in range(len(members))]
    out = []
    for name, cols in zip(names, members):
        if len(cols) == 1:
            out.append(number(name, cols[0]))
            continue
        j = cols[int(row[list(cols)].argmax())]
        column = ds.feature_names[j]
        category = column.split("=", 1)[1] if "=" in column else column
        out.append(f"{name} = {category}" if float(row[j]) > 0 else f"{name} = (none)")
    return out


def class_name(ds: Any, c: int) -> str:
    """Class ``c`` by its name: the label column's value for a CSV (``ds.info["classes"]``),
    ``"label=c"`` where only the label column is known, else ``"class c"``."""
    info = getattr(ds, "info", {})
    classes = info.get("classes")
    if isinstance(classes, (list, tuple)) and 0 <= c < len(classes):
        return str(classes[c])
    label = info.get("label") or info.get("target")
    return f"{label}={c}" if label else f"class {c}"


def explain_row(
    model: Any,
    ds: Any,
    index: int,
    *,
    split: str = "test",
    explainer: Any = None,
    k: int | None = None,
) -> dict[str, Any]:
    """One row's explanation as a ranking a person can read.

    Row ``index`` of ``ds``'s ``split`` is explained by ``explainer`` (default: the dataset's
    own, :meth:`r2et.data.Dataset.explainer`: attributes ranked by |gradient x input| summed
    over their one-hot columns for a table with categorical attributes) for the predicted
    class. Returns ``{"label", "predicted", "probability", "unit", "k", "ranking"}`` with
    ``label``/``predicted`` class names (:func:`class_name`), ``probability`` the predicted
    class's softmax probability, ``unit`` ``"attribute"`` or ``"column"``, and ``ranking``
    every unit by descending saliency: ``{"rank", "position", "unit", "score", "top_k"}``
    (``position``: the unit's index in the explanation), with ``unit``
    the :func:`unit_labels` label (the row's own value or category) and ``top_k`` whether it is
    among the ``k`` (default ``ds.default_k``) largest scores."""
    x, y, kw = ds.split(split)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(x):
        raise ValueError(f"index must be an int in 0..{len(x) - 1} for the {split} split")
    from r2et._kwargs import take_rows

    kw = take_rows(kw, slice(index, index + 1), len(x))
    ex = ds.explainer() if explainer is None else as_explainer(explainer)
    k = ds.default_k if k is None else k
    xi = x[index : index + 1]
    was = model.training
    model.eval()
    try:
        scores = ex.scores(model, xi, **kw)[0].detach().cpu()
        with torch.no_grad():
            prob = torch.softmax(model(xi, **kw), 1)[0]
    finally:
        model.train(was)
    groups = ex.config().get("groups")
    tabular = ds.modality == "tabular"
    labels = unit_labels(ds, xi[0], groups) if tabular else list(ds.feature_names)
    order = scores.argsort(descending=True).tolist()
    pred = int(prob.argmax())
    return {
        "label": class_name(ds, int(y[index])),
        "predicted": class_name(ds, pred),
        "probability": float(prob[pred]),
        "unit": "attribute" if groups is not None else "column",
        "k": int(k),
        "ranking": [
            {
                "rank": r,
                "position": i,
                "unit": labels[i],
                "score": float(scores[i]),
                "top_k": r <= k,
            }  # fmt: skip
            for r, i in enumerate(order, 1)
        ],
    }
