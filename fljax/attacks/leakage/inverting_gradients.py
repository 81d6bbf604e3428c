"""Inverting Gradients: cosine matching + TV prior, signed Adam, box constraint."""

from __future__ import annotations

from fljax.attacks.leakage.base import Attack, gradient_matching
from fljax.models import Model


def inverting_gradients(model: Model, *, batch_size: int = 1, learning_rate: float = 0.1,
                        num_steps: int = 2000, restarts: int = 1, tv: float = 1e-2,
                        label: str = "idlg", unroll_steps: int = 0, unroll_lr: float = 0.1,
                        init: str = "randn", **kwargs) -> Attack:
    """Inverting Gradients (Geiping et al.): ``1 - cos(g_hat, g) + tv * TV(x_hat)``.

    Adam on the *sign* of the gradient, the step decayed x0.1 at 3/8, 5/8 and
    7/8 of the run, dummy images projected into [0, 1] after every step. The
    label comes from the iDLG rule by default (IG does this for one image).

    Against FedAvg weight updates (``unroll_steps > 0``) the attacker knows the
    victim's number of local steps and learning rate and unrolls them on the
    dummy data: the dummy update is ``W0 - W_T(x_hat)`` and is matched by cosine
    to the observed ``W0 - W_T`` (IG's ``FedAvgReconstructor``, full batch).

    Args:
      model: the shared model.
      batch_size: images per victim.
      learning_rate: Adam's step size (0.1 in the paper).
      num_steps: optimisation steps (paper: 4800-24000).
      restarts: random restarts (best by loss).
      tv: total-variation weight (1e-2 for LeNet in IG's Table 1 setup).
      label: ``"idlg"``, ``"learn"`` or ``"known"``.
      unroll_steps: local steps to unroll (0: match a gradient).
      unroll_lr: the victim's learning rate, assumed known when unrolling.
      init: dummy image init.
      **kwargs: passed to :func:`gradient_matching`.

    Returns:
      An :class:`Attack`.

    References:
      Geiping, Bauermeister, Droege, Moeller, "Inverting Gradients - How easy is
      it to break privacy in federated learning?", NeurIPS 2020;
      github.com/JonasGeiping/invertinggradients.
    """
    return gradient_matching(model, name=kwargs.pop("name", "inverting_gradients"),
                             batch_size=batch_size, objective="cosine", label=label,
                             optimizer="adam", learning_rate=learning_rate,
                             num_steps=num_steps, restarts=restarts, tv=tv, box=True,
                             signed=True, decay=True, unroll_steps=unroll_steps,
                             unroll_lr=unroll_lr, init=init, **kwargs)
