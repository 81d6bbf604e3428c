"""iDLG: Improved Deep Leakage from Gradients (label from the output layer's signs)."""

from __future__ import annotations

from fljax.attacks.leakage.base import Attack, gradient_matching, infer_labels
from fljax.models import Model

__all__ = ["idlg", "infer_labels"]


def idlg(model: Model, *, batch_size: int = 1, optimizer: str = "lbfgs",
         learning_rate: float = 0.1, num_steps: int = 300, restarts: int = 1,
         objective: str = "l2", label_sign: float = 1.0, **kwargs) -> Attack:
    """iDLG: infer the label analytically, then optimise the image only.

    The label is ``argmin_i sum_j dW_last[j, i]`` (see
    :func:`fljax.attacks.leakage.base.infer_labels`): exact for one example with
    non-negative features, for a gradient and for a weight difference
    ``W0 - W_T`` (``label_sign=+1``) alike; use ``label_sign=-1`` for updates
    shared as ``W_T - W0``. With the label fixed, DLG's L2 matching runs on the
    image alone (``objective`` may be changed, e.g. to ``mean_norm_l2`` for a
    weight difference with an unknown learning rate).

    Args:
      model: the shared model.
      batch_size: images per victim (the rule is exact for 1).
      optimizer: ``"lbfgs"`` (paper) or ``"adam"``.
      learning_rate: Adam's step size.
      num_steps: optimisation steps.
      restarts: random restarts.
      objective: matching loss (``"l2"`` in the paper).
      label_sign: +1 for gradients / ``W0 - W_T``, -1 for ``W_T - W0``.
      **kwargs: passed to :func:`gradient_matching`.

    Returns:
      An :class:`Attack`.

    References:
      Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients",
      arXiv 2001.02610; github.com/PatrickZH/Improved-Deep-Leakage-from-Gradients.
    """
    return gradient_matching(model, name=kwargs.pop("name", "idlg"), batch_size=batch_size,
                             objective=objective, label="idlg", optimizer=optimizer,
                             learning_rate=learning_rate, num_steps=num_steps,
                             restarts=restarts, label_sign=label_sign, **kwargs)
