"""Second-order safety: PyTorch's math attention kernel wherever r2et differentiates twice.

R2ET's regularisers and the attacks on explanations differentiate a saliency map, i.e. they
back-propagate through a backward pass (double backward). PyTorch's fused attention kernels
behind ``F.scaled_dot_product_attention`` (and so ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer``, ViTs and Hugging Face transformers that use SDPA) have no
double backward: flash attention (on the CPU too, ``_scaled_dot_product_flash_attention_for_cpu``,
the default there in torch 2.13), memory-efficient attention and cuDNN attention raise
``derivative for ..._backward is not implemented`` at the second backward. The math kernel is
composed of ordinary differentiable operations (matmul, softmax, dropout), so its graph can be
differentiated any number of times.

:func:`second_order` selects the math kernel for the forward passes inside the block. The
kernel is chosen when the forward pass runs, so the block must hold the *forward* pass whose
graph is later differentiated twice; the backward passes may run outside it. r2et enters it in
:meth:`r2et.Explainer.attribute` (and ``scores``) with ``create_graph=True``, in
:meth:`r2et.methods.TrainingMethod.loss` of every method with saliency terms, in
:func:`r2et.methods.input_hessian` and in the gradient attacks (:class:`r2et.ERAttack`,
:class:`r2et.MSEAttack`, the APGD members of :class:`r2et.EnsembleAttack`). First-order paths
(plain saliency, thickness, the random-search attack, vanilla training) keep the fast kernels.

Cost: entering the block sets a few global flags (microseconds); models without attention are
unaffected, and attention models run the math kernel, which is slower and uses more memory
than a fused one but is the only kernel that supports a second derivative. The flags are
process-wide (not per thread), as with ``torch.nn.attention.sdpa_kernel`` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - torch 2.2
    SDPBackend = None  # type: ignore[assignment,misc]
    sdpa_kernel = None  # type: ignore[assignment]

__all__ = ["second_order"]


@contextlib.contextmanager
def second_order() -> Iterator[None]:
    """Run ``F.scaled_dot_product_attention`` with the math backend inside the block.

    Use it around any forward pass whose graph is differentiated twice (a loss of a saliency
    map, an attack on an explanation). Nesting is allowed; the previous backend selection is
    restored on exit. Without attention in the model the block changes nothing.

    Example::

        with r2et.models.second_order():
            s = ex.scores(model, x, create_graph=True)   # r2et already does this itself
        s.sum().backward()                                # outside is fine
    """
    if sdpa_kernel is not None:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
        return
    # torch 2.2: the same process-wide flags through the older (deprecated later) interface
    with torch.backends.cuda.sdp_kernel(  # pragma: no cover
        enable_flash=False, enable_math=True, enable_mem_efficient=False
    ):
        yield
