"""The update-attack protocol: craft the malicious rows of a round's update matrix.

An update attack is built by a factory that captures what fixes shapes and
code (``num_byzantine``, ``knowledge``) and returns an :class:`UpdateAttack`,
a callable NamedTuple around one pure function::

    craft(updates: float[n, d], malicious: bool[n], key, context) -> (float[n, d], info)

* ``updates`` are the honest updates every client of the round computed
  (``w_local - w_global``); rows where ``malicious`` is True are the ones the
  attacker controls and may replace.
* Rows where ``malicious`` is False come back **bit-identical**
  (``jnp.where(malicious[:, None], crafted, updates)``).
* ``malicious`` is a traced array: changing which clients are malicious, or
  how many, never recompiles. So is every *value* argument of a factory
  (annotated ``float``): a sweep may pass a traced scalar, and the factory
  validates it only when it is a Python number.
* ``context`` (:class:`AttackContext`, may be None) carries what the threat
  model allows beyond the updates: the global parameters, the round, the
  server's rule. Every attack works with ``context=None``.
* ``info`` is a dict of arrays (scalars or ``[n]``) reported in the run's
  metrics (e.g. Fang's ``lambda``, or ``fallback`` when the attacker had
  nothing to learn from and sent its honest update).

Calling the NamedTuple directly returns only the updates, so
``attack(updates, malicious, key)`` is the plain function of the papers.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

from fljax.types import ClientMask, Info, PRNGKey, Updates

KNOWLEDGE = ("full", "partial")


class AttackContext(NamedTuple):
    """What an update attack may see besides the rows (every field optional).

    Attributes:
      params: ``float[d]`` the current global parameters, flattened like the
        updates.
      round: ``int32[]`` the round being played (0-based).
      aggregator: the server's :class:`~fljax.aggregators.Aggregator` (a
        Python object, static under jit) for attacks that simulate the rule.
      agg_state: the rule's state this round.
      weights: ``float[n]`` the rows' client weights (example counts).
      client_ids: ``int32[n]`` which client sent each row.
      state: the attacker's own state (see ``fljax.attacks.Attacker``).
      server_lr: ``float[]`` the server optimizer's learning rate (model
        replacement boosts by ``n / server_lr``).
    """

    params: Optional[jax.Array] = None
    round: Optional[jax.Array] = None
    aggregator: Any = None
    agg_state: Any = None
    weights: Optional[jax.Array] = None
    client_ids: Optional[jax.Array] = None
    state: Any = None
    server_lr: Optional[jax.Array] = None


CraftFn = Callable[[Updates, ClientMask, PRNGKey, Optional[AttackContext]], tuple[Updates, Info]]


class UpdateAttack(NamedTuple):
    """An update-level attack; ``attack(updates, malicious, key, context=None)``
    returns the updates with the malicious rows crafted, ``attack.craft(...)``
    also returns ``info``."""

    craft: CraftFn

    def __call__(self, updates: Updates, malicious: ClientMask, key: PRNGKey,
                 context: Optional[AttackContext] = None) -> Updates:
        return self.craft(updates, malicious, key, context)[0]


def check_knowledge(attack: str, knowledge: str) -> None:
    if knowledge not in KNOWLEDGE:
        raise ValueError(f"{attack}: knowledge={knowledge!r} must be one of {KNOWLEDGE}")


def is_number(x) -> bool:
    """True for a Python (or NumPy) number: a value that can be checked now.
    A traced or device array is checked where it was chosen, not here."""
    import numbers

    return isinstance(x, numbers.Number)
