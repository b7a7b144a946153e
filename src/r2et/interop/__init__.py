"""Captum and Quantus interoperability (optional: ``pip install "r2et[interop]"``).

* :class:`CaptumExplainer` — any Captum attribution (``Saliency``, ``IntegratedGradients``,
  ``DeepLift``, ``Occlusion``, ``NoiseTunnel(...)``, ...) as an r2et explainer for
  *evaluation*: clean scores, P@k, thickness, deletion and occlusion, and the gradient-free
  :class:`~r2et.attacks.RandomSearchAttack`. Captum computes its attributions without
  ``create_graph`` (pytorch/captum#361), so they carry no graph to the input: the gradient
  attacks (ERAttack, MSEAttack, ExplanationPGD, the APGD members of EnsembleAttack) and the
  training methods refuse it with one line, rather than run a silently weaker first-order
  attack (``supports_second_order = False``, :func:`r2et.explain.check_second_order`).
* :func:`quantus_explain_func` — an r2et explainer as a Quantus ``explain_func``
  ``(model, inputs, targets, **kwargs) -> np.ndarray``, e.g. inside ``quantus.MaxSensitivity``.
* :class:`PrecisionAtKUnderAttack` and :class:`Thickness` — r2et's P@k under an attack that
  keeps the prediction and the explanation thickness Θ as Quantus-style metrics:
  ``metric(model=, x_batch=, y_batch=, a_batch=None, ...) -> list[float]`` (one score per
  input), usable in ``quantus.evaluate``. They need neither Quantus nor Captum.

Captum is imported when a :class:`CaptumExplainer` is built; Quantus is never imported here.
"""

from r2et.interop.captum import CAPTUM_FIRST_ORDER, CaptumExplainer
from r2et.interop.quantus import PrecisionAtKUnderAttack, Thickness, quantus_explain_func

__all__ = [
    "CAPTUM_FIRST_ORDER",
    "CaptumExplainer",
    "PrecisionAtKUnderAttack",
    "Thickness",
    "quantus_explain_func",
]
