"""For any ``nn.Module``: :func:`relu_to_softplus` and :func:`has_relu` (the ``sp`` method's
architecture change), :func:`eval_mode` (attacks and evaluation) and :func:`adapt_output`
(a model returning a dict or tuple seen as one returning logits)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from r2et.models.layers import check_beta

__all__ = ["OutputAdapter", "adapt_output", "eval_mode", "has_relu", "relu_to_softplus"]


def relu_to_softplus(model: nn.Module, beta: float = 10.0, inplace: bool = False) -> nn.Module:
    """Replace every ``nn.ReLU`` module (nested, in-place or not) by ``nn.Softplus(beta)``.

    ``softplus_β(z) = log(1 + e^{βz})/β`` → ReLU as β → ∞, so a large β keeps the function while
    giving the input-gradient curvature (Dombrowski et al., NeurIPS 2019). Returns a copy unless
    ``inplace``; parameters are copied, not shared. ReLUs applied functionally
    (``F.relu``/``torch.relu`` inside ``forward``) cannot be seen and are left unchanged.
    """
    check_beta(beta)
    target = model if inplace else copy.deepcopy(model)
    for name, child in list(target.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(target, name, nn.Softplus(beta=beta))
        else:
            relu_to_softplus(child, beta, inplace=True)
    return target


def has_relu(model: nn.Module) -> bool:
    """True if any submodule is an ``nn.ReLU``."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in eval mode inside the block and restore its previous mode afterwards
    (anything that is not an ``nn.Module`` is left alone). Attacks and evaluation measure the
    model as it is deployed: no dropout, BatchNorm with its running statistics."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class OutputAdapter(nn.Module):
    """A model whose output is not a logits tensor, seen as one that returns ``(N, C)`` logits.

    ``output`` picks the logits out of what ``model`` returns: a callable
    (``lambda out: out["logits"]``), a string (a mapping key, else an attribute: Hugging
    Face's ``ModelOutput`` has both) or an int (a tuple/list position). Everything in r2et
    (training, explainers, attacks, evaluation) calls the adapter like any model; the
    parameters, train/eval mode and device are those of the wrapped ``model`` (a submodule,
    so the adapter's ``state_dict`` keys start with ``model.``). Forward keywords pass through.
    """

    def __init__(self, model: nn.Module, output: Callable[[Any], torch.Tensor] | str | int) -> None:
        super().__init__()
        if not (callable(output) or isinstance(output, (str, int))) or isinstance(output, bool):
            raise ValueError(
                f"output must be a callable, a key (str) or a position (int), got {output!r}"
            )
        self.model = model
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        if callable(self.output):
            return self.output(out)
        if isinstance(self.output, int):
            return out[self.output]
        try:
            return out[self.output]
        except (KeyError, TypeError, IndexError):
            if hasattr(out, self.output):
                return getattr(out, self.output)
            raise ValueError(
                f"the model's output ({type(out).__name__}) has no key or attribute {self.output!r}"
            ) from None


def adapt_output(model: nn.Module, output: Callable[[Any], torch.Tensor] | str | int) -> nn.Module:
    """``model`` as a module returning logits; see :class:`OutputAdapter`.

    Example: ``fit(adapt_output(hf_like, "logits"), ...)``, ``adapt_output(net, 0)`` for a
    model returning ``(logits, aux)``."""
    return OutputAdapter(model, output)
