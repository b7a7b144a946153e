"""Ranked units: how an attribution ``a`` (shaped like the input) becomes scores ``(N, F)``.

The importance of a feature is ``|a|``, summed over the channel axis of images
``(N, C, H, W)`` and over the node-feature axis of graphs ``(N, nodes, d)``
(:func:`reduce_scores`, :func:`reduce_abs`); with feature ``groups`` (:func:`group_index`, a
partition of the columns) a group's score is the sum of its columns' scores
(:func:`sum_columns`); :func:`unit_columns` maps every entry of one input to its score column.
Also the quadrature rules of integrated gradients (:func:`quadrature`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from r2et._checks import check_choice

REDUCTIONS = ("auto", "channel", "last", None)
IG_RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(n_steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes ``α_m`` in [0, 1] and weights ``w_m`` (summing to 1) of an ``n_steps``-point rule.

    Riemann rules use ``w_m = 1/n`` at the left/right/middle points; the trapezoid rule puts
    ``1/(2(n−1))`` on the end points and ``1/(n−1)`` inside; Gauss-Legendre maps the Legendre
    nodes ``ξ_m`` on [−1, 1] to ``α_m = (ξ_m + 1)/2`` with weights ``w_m/2``, exact for
    polynomials of degree ``2n − 1``. Returned as float64 CPU tensors. (Captum's
    ``riemann_trapezoid`` uses ``1/n`` with halved end points, weights summing to ``(n−1)/n``;
    ours sum to 1, so its attributions are ours times ``(n−1)/n``.)
    """
    check_choice("rule", rule, IG_RULES)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    n = n_steps
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)
    if rule == "riemann_trapezoid":
        if n < 2:
            raise ValueError("the trapezoid rule needs n_steps >= 2")
        alphas = torch.linspace(0, 1, n, dtype=torch.float64)
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
        return alphas, w
    w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_left":
        return torch.linspace(0, 1 - 1 / n, n, dtype=torch.float64), w
    if rule == "riemann_right":
        return torch.linspace(1 / n, 1, n, dtype=torch.float64), w
    return torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n, dtype=torch.float64), w


def group_index(groups: Any, n_features: int | None = None) -> torch.Tensor:
    """Feature groups as a ``(F,)`` long tensor mapping each column to its group ``0..G−1``.

    ``groups`` is either such a tensor/sequence of ints (one group id per column, every id in
    ``0..G−1`` used) or a sequence of column-index lists that partitions ``0..F−1`` (each column
    in exactly one group). ``n_features`` (F), when given, is checked. Raises ``ValueError``
    for anything that is not a partition.
    """
    if isinstance(groups, torch.Tensor):
        gid = groups.detach().to("cpu")
        if gid.dim() != 1 or gid.is_floating_point() or gid.dtype == torch.bool:
            raise ValueError("groups as a tensor must be a 1-D integer tensor of group ids")
        gid = gid.long()
    else:
        try:
            items = list(groups)
        except TypeError:
            raise ValueError(
                f"groups must be a list of column-index lists or one group id per column, "
                f"got {type(groups).__name__}"
            ) from None
        if not items:
            raise ValueError("groups must not be empty")
        if all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) for g in items):
            gid = torch.tensor([int(g) for g in items], dtype=torch.long)
        else:
            cols: list[int] = []
            ids: list[int] = []
            for i, g in enumerate(items):
                try:
                    members = [int(c) for c in g]
                except (TypeError, ValueError):
                    raise ValueError(
                        f"groups[{i}] must be a list of column indices, got {g!r}"
                    ) from None
                if not members:
                    raise ValueError(f"groups[{i}] is empty")
                cols += members
                ids += [i] * len(members)
            f = max(cols) + 1
            if min(cols) < 0 or len(cols) != f or len(set(cols)) != f:
                raise ValueError(
                    "groups must partition the columns 0..F-1: every column in exactly one group"
                )
            gid = torch.empty(f, dtype=torch.long)
            gid[torch.tensor(cols)] = torch.tensor(ids)
    if gid.numel() == 0 or int(gid.min()) < 0:
        raise ValueError("group ids must be >= 0")
    n_groups = int(gid.max()) + 1
    if torch.bincount(gid, minlength=n_groups).min() == 0:
        raise ValueError(f"group ids must use every value in 0..{n_groups - 1}")
    if n_features is not None and gid.numel() != n_features:
        raise ValueError(f"groups cover {gid.numel()} columns, but there are {n_features} features")
    return gid


def reduce_scores(
    attr: torch.Tensor, reduce: str | None = "auto", groups: Any = None
) -> torch.Tensor:
    """Per-feature importance ``s = |a|`` reduced to shape ``(N, F)``.

    ``reduce="auto"``: 2-D tabular ``(N, F)`` is kept; 3-D graphs ``(N, nodes, d)`` sum over
    ``d`` (F = nodes); 4-D images ``(N, C, H, W)`` sum over ``C`` (F = H·W). ``"channel"`` sums
    dimension 1, ``"last"`` the last dimension; ``None`` flattens ``|a|`` unchanged.
    ``groups`` (see :func:`group_index`) then sums the columns of each group:
    ``s_g = Σ_{j∈g} s_j``, shape ``(N, G)``.
    """
    s = reduce_abs(attr, reduce)
    if groups is None:
        return s
    return sum_columns(s, group_index(groups, s.shape[1]))


def sum_columns(s: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(N, F)`` scores summed into ``(N, G)`` units: column ``j`` goes to unit ``index[j]``
    (ids ``0..G−1``), ``out_g = Σ_{j: index_j = g} s_j``."""
    index = index.to(s.device)
    return s.new_zeros(s.shape[0], int(index.max()) + 1).index_add(1, index, s)


def unit_columns(shape: tuple[int, ...], reduce: str | None) -> torch.Tensor:
    """For one input of ``shape``, the score column each entry is summed into by ``reduce``
    (mirrors :func:`reduce_abs`)."""
    check_choice("reduce", reduce, REDUCTIONS)
    if not shape:
        raise ValueError("inputs need at least one feature dimension")

    def spread(lead: tuple[int, ...], inner: tuple[int, ...]) -> torch.Tensor:
        # columns numbered over ``inner``, repeated over the summed ``lead`` dimensions
        idx = torch.arange(int(np.prod(inner)) if inner else 1).view(inner)
        return idx.expand(*lead, *inner)

    if reduce == "auto":
        if len(shape) == 1:
            return torch.arange(shape[0])
        if len(shape) == 2:  # graphs (nodes, d): one column per node
            return torch.arange(shape[0])[:, None].expand(shape).contiguous()
        if len(shape) == 3:  # images (C, H, W): one column per pixel
            return spread(shape[:1], shape[1:]).contiguous()
        raise ValueError(f"reduce='auto' handles 2-D, 3-D and 4-D inputs, got {shape}")
    if reduce == "channel":
        return spread(shape[:1], shape[1:]).contiguous()
    if reduce == "last":
        idx = torch.arange(int(np.prod(shape[:-1])) if shape[:-1] else 1).view(*shape[:-1], 1)
        return idx.expand(shape).contiguous()
    return torch.arange(int(np.prod(shape))).view(shape)


def reduce_abs(attr: torch.Tensor, reduce: str | None) -> torch.Tensor:
    check_choice("reduce", reduce, REDUCTIONS)
    s = attr.abs()
    if reduce == "auto":
        if s.dim() == 2:
            return s
        if s.dim() == 3:
            return s.sum(-1)
        if s.dim() == 4:
            return s.sum(1).flatten(1)
        raise ValueError(
            f"reduce='auto' handles 2-D, 3-D and 4-D inputs, got shape {tuple(s.shape)}; "
            "pass reduce=None to flatten"
        )
    if reduce == "channel":
        return s.sum(1).flatten(1)
    if reduce == "last":
        return s.sum(-1).flatten(1)
    return s.flatten(1)
