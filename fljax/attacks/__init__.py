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
also returns diagnostics (Fang's lambda, gamma, z, ``fallback``). The adaptive
attacks search against the server's rule (``context.aggregator``; the plain
mean without a context): ``optimal_alie`` and ``optimal_ipm`` (ByzFL's
expansion / contraction search over the scale, in vectorised waves of
candidates). ``mimic`` copies one honest row; ``inf`` sends infinities.

Data-level attacks are pure transforms of a malicious client's batch,
``poison(x, y, key) -> (x, y)``, applied inside local training where the
(traced) malicious mask is set; select them by name from :data:`DATA_ATTACKS`.
The backdoors among them (``pixel_backdoor``, ``dba``, ``targeted_task``,
``edge_case``, and for several attackers with their own targets ``badnets``
and ``m2m``) are :class:`~fljax.attacks.attacker.Attacker` s that also
report ``backdoor_accuracy``; :func:`attacker_triggers` and
:func:`stamp_trigger` show each attacker's trigger of a ``badnets`` or ``m2m``
run on images.

:data:`STRATEGIES` change how a malicious client trains or what it sends
(model replacement, constrain-and-scale, PGD, Neurotoxin); a backdoor
combines with them through ``attack.combine``.

Data-leakage (reconstruction) attacks live in :mod:`fljax.attacks.leakage`.
"""

from fljax.attacks import leakage
from fljax.attacks.alie import alie
from fljax.attacks.badnets import badnets
from fljax.attacks.fang import fang_krum, fang_trimmed_mean
from fljax.attacks.gaussian import gaussian
from fljax.attacks.inf import inf
from fljax.attacks.ipm import ipm
from fljax.attacks.label_flip import label_flip
from fljax.attacks.m2m import m2m
from fljax.attacks.mimic import mimic
from fljax.attacks.min_max import min_max, min_sum
from fljax.attacks.neurotoxin import neurotoxin
from fljax.attacks.optimal_alie import optimal_alie
from fljax.attacks.optimal_ipm import optimal_ipm
from fljax.attacks.pgd import pgd
from fljax.attacks.pixel_backdoor import dba, pixel_backdoor
from fljax.attacks.replacement import constrain_and_scale, model_replacement
from fljax.attacks.scaling import scaling
from fljax.attacks.sign_flip import sign_flip
from fljax.attacks.subset_backdoor import (edge_case, select_edge_case, select_targeted_task,
                                           targeted_task)
from fljax.attacks.triggers import Triggers, attacker_triggers, stamp_trigger

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
    "optimal_alie": optimal_alie,
    "optimal_ipm": optimal_ipm,
    "mimic": mimic,
    "inf": inf,
}

# Factories that take the number of classes first (the simulator passes it).
DATA_ATTACKS = {
    "label_flip": label_flip,
    "pixel_backdoor": pixel_backdoor,
    "dba": dba,
    "targeted_task": targeted_task,
    "edge_case": edge_case,
    "badnets": badnets,
    "m2m": m2m,
}

# How malicious clients train and what they send (combine with a backdoor).
STRATEGIES = {
    "model_replacement": model_replacement,
    "constrain_and_scale": constrain_and_scale,
    "pgd": pgd,
    "neurotoxin": neurotoxin,
}

# Every attack by name (what ``attack.name`` selects).
ATTACKS = {**UPDATE_ATTACKS, **STRATEGIES, **DATA_ATTACKS}

# Data attacks that train on a natural subset of the data, and the host
# function that chooses it when the experiment is prepared:
# ``select(fed, batch=..., **the attack's kwargs) -> (Subset, fed)`` (the data
# comes back without the examples the subset holds out). The factory then
# gets the subset as ``subset=``.
SUBSETS = {
    targeted_task: select_targeted_task,
    edge_case: select_edge_case,
}


def data_arguments(factory, num_classes: int, input_shape: tuple) -> tuple:
    """The positional data facts an attack factory takes first: data attacks
    (those in :data:`DATA_ATTACKS`) get ``num_classes``; factories whose second
    parameter is ``input_shape`` also get the example shape."""
    import inspect

    if factory not in DATA_ATTACKS.values():
        return ()
    names = list(inspect.signature(factory).parameters)
    return (num_classes, input_shape) if names[1:2] == ["input_shape"] else (num_classes,)


def needs_model(factory) -> bool:
    """Whether ``factory`` takes the :class:`~fljax.models.Model` (a parameter
    named ``model``, filled in by the simulator like ``num_classes``)."""
    import inspect

    return "model" in inspect.signature(factory).parameters


def subset_selector(factory):
    """The host function choosing ``factory``'s subset (:data:`SUBSETS`), or None."""
    return SUBSETS.get(factory)


__all__ = ["ATTACKS", "attacker_triggers", "data_arguments", "DATA_ATTACKS", "needs_model",
           "STRATEGIES", "SUBSETS", "UPDATE_ATTACKS", "alie", "badnets", "constrain_and_scale",
           "dba", "edge_case", "fang_krum", "fang_trimmed_mean", "gaussian", "inf", "ipm",
           "label_flip", "leakage", "m2m", "mimic", "min_max", "min_sum", "model_replacement",
           "neurotoxin", "optimal_alie", "optimal_ipm", "pgd", "pixel_backdoor", "scaling",
           "sign_flip", "stamp_trigger", "subset_selector", "targeted_task", "Triggers"]
