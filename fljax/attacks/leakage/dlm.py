"""DLM and DLM+: deep leakage from the weights a FedAvg client uploads."""

from __future__ import annotations

from fljax.attacks.leakage.base import Attack, gradient_matching
from fljax.models import Model


def dlm(model: Model, *, batch_size: int = 1, optimizer: str = "adam",
        learning_rate: float = 0.1, num_steps: int = 2000, restarts: int = 1,
        k_init: float = 1.0, label: str = "learn", **kwargs) -> Attack:
    """DLM: match ``k * dW`` with a learned scale ``k`` (the unknown ``1/lr``).

    Minimises ``sum_l ||grad_W CE(f(x_hat; W0), softmax(y_hat)) - k dW_l||^2``
    jointly over ``x_hat``, ``y_hat`` and ``k``, with ``dW = W0 - W_T``. For one
    local SGD step the optimum is ``k = 1/lr``; after ``T`` steps on the same
    data ``dW ~ T lr g`` to first order and ``k ~ 1/(T lr)``.

    The loss has a trivial global optimum, ``k = 0`` with a dummy gradient of
    zero (soft labels equal to the model's prediction), so DLM depends on its
    initial guess ``k_init`` and on ``k`` moving slowly: as in the official
    code ``k`` itself is optimised by Adam (about ``learning_rate`` per step),
    from ``k_init`` (the paper sweeps 60..240 for a true 100).
    ``scale_param="log"`` optimises ``log k`` instead.

    Args:
      model: the shared model.
      batch_size: images per victim.
      optimizer: ``"adam"`` (paper's MLP setup) or ``"lbfgs"`` (LeNet setup).
      learning_rate: Adam's step size (0.1 in the paper).
      num_steps: optimisation steps (paper: 5000 Adam / 200 L-BFGS).
      restarts: random restarts (best by loss).
      k_init: initial guess of ``1/lr``.
      label: ``"learn"`` (paper), ``"idlg"`` or ``"known"``.
      **kwargs: passed to :func:`gradient_matching`.

    Returns:
      An :class:`Attack`; its reconstructions carry the learned ``k``.

    References:
      Zhao, Luo, Ding, "Deep Leakage from Model in Federated Learning",
      CPAL 2024, PMLR 234:324-340 (arXiv 2206.04887);
      github.com/Zihao-Kevin/DLM (``DLM.py``).
    """
    return gradient_matching(model, name=kwargs.pop("name", "dlm"), batch_size=batch_size,
                             objective="scaled_l2", label=label, optimizer=optimizer,
                             learning_rate=learning_rate, num_steps=num_steps,
                             restarts=restarts, learn_scale=True, k_init=k_init, **kwargs)


def dlm_plus(model: Model, *, batch_size: int = 1, optimizer: str = "adam",
             learning_rate: float = 0.1, num_steps: int = 2000, restarts: int = 1,
             label: str = "learn", **kwargs) -> Attack:
    """DLM+: normalise both sides by their mean per-layer norm, then match.

    Minimises ``sum_l ||g_l / mean_j ||g_j|| - dW_l / mean_j ||dW_j||||^2``
    (:func:`fljax.attacks.leakage.objectives.mean_norm_l2`). For one local step
    the learning rate cancels exactly; for several steps on the same data the
    observed ``dW`` is treated as proportional to the gradient at ``W0`` (the
    paper's first-order model; nothing is unrolled).

    Args:
      model: the shared model.
      batch_size: images per victim.
      optimizer: ``"adam"`` or ``"lbfgs"``.
      learning_rate: Adam's step size (paper: 0.01 for 5000 steps).
      num_steps: optimisation steps.
      restarts: random restarts (best by loss).
      label: ``"learn"`` (``dlm_defense.py``), ``"idlg"`` or ``"known"``
        (``DLM_plus.py``).
      **kwargs: passed to :func:`gradient_matching`.

    Returns:
      An :class:`Attack`.

    References:
      Zhao, Luo, Ding, arXiv 2206.04887; github.com/Zihao-Kevin/DLM
      (``DLM_plus.py``, ``dlm_defense.py``).
    """
    return gradient_matching(model, name=kwargs.pop("name", "dlm_plus"),
                             batch_size=batch_size, objective="mean_norm_l2", label=label,
                             optimizer=optimizer, learning_rate=learning_rate,
                             num_steps=num_steps, restarts=restarts, **kwargs)
