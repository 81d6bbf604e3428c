"""Attacks.

Update-level poisoning attacks are pure functions
``attack(updates: float[n, d], malicious: bool[n], key) -> float[n, d]``: benign
rows come back bit-identical, and ``malicious`` is a traced array, so changing
which clients are malicious never recompiles. Select one in a config by name
(``attack.name``) from :data:`UPDATE_ATTACKS`.

Data-level attacks are pure transforms of a malicious client's batch,
``poison(x, y, key) -> (x, y)``, applied inside local training where the
(traced) malicious mask is set; select them by name from :data:`DATA_ATTACKS`.

Data-leakage (reconstruction) attacks live in :mod:`fljax.attacks.leakage`.
"""

from fljax.attacks import leakage
from fljax.attacks.gaussian import gaussian
from fljax.attacks.label_flip import label_flip
from fljax.attacks.sign_flip import sign_flip

UPDATE_ATTACKS = {
    "sign_flip": sign_flip,
    "gaussian": gaussian,
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


__all__ = ["ATTACKS", "data_arguments", "DATA_ATTACKS", "UPDATE_ATTACKS", "gaussian", "label_flip", "leakage",
           "sign_flip"]
