"""DLG: Deep Leakage from Gradients."""

from __future__ import annotations

from fljax.attacks.leakage.base import Attack, gradient_matching
from fljax.models import Model


def dlg(model: Model, *, batch_size: int = 1, optimizer: str = "lbfgs",
        learning_rate: float = 0.1, num_steps: int = 300, restarts: int = 1,
        assumed_lr=None, **kwargs) -> Attack:
    """DLG: optimise dummy images and soft labels so that their gradient matches.

    Minimises ``sum_l ||grad_W CE(f(x_hat; W0), softmax(y_hat)) - g_l||^2`` over
    ``x_hat`` and ``y_hat`` (both drawn from N(0, 1)). Against a weight
    difference the attacker must convert it to a gradient with a learning-rate
    guess (``assumed_lr``): ``g = dW / lr``; a wrong guess mis-scales the target
    and is the "DLG with the wrong learning rate" baseline of the DLM paper.

    Args:
      model: the shared model (twice differentiable; sigmoid nets in the paper).
      batch_size: images per victim.
      optimizer: ``"lbfgs"`` (paper; fixed evaluation budget) or ``"adam"``.
      learning_rate: Adam's step size.
      num_steps: optimisation steps.
      restarts: random restarts (best by loss).
      assumed_lr: the attacker's learning-rate guess for weight differences
        (``None``: the observation is used as a gradient).
      **kwargs: passed to :func:`gradient_matching`.

    Returns:
      An :class:`Attack`.

    References:
      Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019;
      github.com/mit-han-lab/dlg.
    """
    return gradient_matching(model, name=kwargs.pop("name", "dlg"), batch_size=batch_size,
                             objective="l2", label=kwargs.pop("label", "learn"),
                             optimizer=optimizer, learning_rate=learning_rate,
                             num_steps=num_steps, restarts=restarts, assumed_lr=assumed_lr,
                             **kwargs)
