"""Attacks.

Update-level poisoning attacks are pure functions
``attack(updates: float[n, d], malicious: bool[n], key) -> float[n, d]``: benign
rows come back bit-identical, and ``malicious`` is a traced array, so changing
which clients are malicious never recompiles. Select one in a config by name
(``attack.name``) from :data:`UPDATE_ATTACKS`.

The untargeted model-poisoning attacks craft the malicious rows from what
the attacker knows (``knowledge="full"``: every honest row; ``"partial"``: the
malicious clients' own honest updates): ``fang_krum`` (also against Bulyan)
and ``fang_trimmed_mean`` (also against the median) after Fang et al.,
``alie``, ``ipm``, ``min_max`` / ``min_sum``, and ``scaling``. Their ``craft``
also returns diagnostics (Fang's lambda, gamma, z, ``fallback``).

Data-level attacks are pure transforms of a malicious client's batch,
``poison(x, y, key) -> (x, y)``, applied inside local training where the
(traced) malicious mask is set; select them by name from :data:`DATA_ATTACKS`.

Data-leakage (reconstruction) attacks live in :mod:`fljax.attacks.leakage`.
"""

from fljax.attacks import leakage
from fljax.attacks.alie import alie
from fljax.attacks.fang import fang_krum, fang_trimmed_mean
from fljax.attacks.gaussian import gaussian
from fljax.attacks.ipm import ipm
from fljax.attacks.label_flip import label_flip
from fljax.attacks.min_max import min_max, min_sum
from fljax.attacks.scaling import scaling
from fljax.attacks.sign_flip import sign_flip

UPDATE_ATTACKS = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
    "scaling": scaling,
    "ipm": ipm,
    "alie": alie,
    "min_max": min_max,
    "min_sum": min_sum,
    "fang_trimmed_mean": fang_trimmed_mean,
    "fang_krum": fang_krum,
}

# Factories that take the number of classes first (the simulator passes it).
DATA_ATTACKS = {
    "label_flip": label_flip,
}

# Every attack by name (what ``attack.name`` selects).
ATTACKS = {**UPDATE_ATTACKS, **DATA_ATTACKS}


def data_arguments(factory, num_classes: int, input_shape: tuple) -> tuple:
    """The positional data facts an attack factory takes first: data attacks
    (those in :data:`DATA_ATTACKS`) get ``num_classes``; factories whose second
    parameter is ``input_shape`` also get the example shape."""
    import inspect

    if factory not in DATA_ATTACKS.values():
        return ()
    names = list(inspect.signature(factory).parameters)
    return (num_classes, input_shape) if names[1:2] == ["input_shape"] else (num_classes,)


__all__ = ["ATTACKS", "data_arguments", "DATA_ATTACKS", "UPDATE_ATTACKS", "alie", "fang_krum",
           "fang_trimmed_mean", "gaussian", "ipm", "label_flip", "leakage", "min_max", "min_sum",
           "scaling",
           "sign_flip"]
