"""Data leakage: reconstruct a client's data from its gradient or weight update.

Every attack factory takes the shared model and returns an
:class:`~fljax.attacks.leakage.base.Attack` whose ``reconstruct`` handles ONE
victim (restarts vmapped inside); :func:`reconstruct_many` vmaps it over
victims and jit-compiles it. Updates use the gradient-like sign
``dW = W0 - W_T`` (see :mod:`fljax.attacks.leakage.observe`).

Attacks: :func:`dlg`, :func:`idlg`, :func:`inverting_gradients`, :func:`dlm`,
:func:`dlm_plus`. Select by name with :func:`get_attack`.
"""

from fljax.attacks.leakage import metrics, objectives, observe
from fljax.attacks.leakage.base import (Attack, Reconstruction, gradient_matching,
                                        infer_labels, reconstruct_many)
from fljax.attacks.leakage.dlg import dlg
from fljax.attacks.leakage.dlm import dlm, dlm_plus
from fljax.attacks.leakage.idlg import idlg
from fljax.attacks.leakage.inverting_gradients import inverting_gradients

ATTACKS = {
    "dlg": dlg,
    "idlg": idlg,
    "inverting_gradients": inverting_gradients,
    "dlm": dlm,
    "dlm_plus": dlm_plus,
    "gradient_matching": gradient_matching,
}


def get_attack(name: str, model, **kwargs) -> Attack:
    """Builds an attack by name; unknown names raise a ``ValueError``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown leakage attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name](model, **kwargs)


__all__ = ["Attack", "Reconstruction", "ATTACKS", "dlg", "dlm", "dlm_plus", "get_attack",
           "gradient_matching", "idlg", "infer_labels", "inverting_gradients", "metrics",
           "objectives", "observe", "reconstruct_many"]
