"""Neurotoxin: the attacker trains only the coordinates benign clients rarely move.

The attacker estimates the benign clients' update by the last global update
(``G_t - G_{t-1}``, which it observes) and, while it trains, zeroes its
gradient on the ``mask_fraction`` of coordinates where that update is largest
in magnitude. Its backdoor then lives in coordinates the benign clients do
not overwrite, so it lasts longer after the attacker stops. Combine with
``pgd`` for the paper's norm-projected variant.

The mask is recomputed after every round (``end_round``) from the global
models before and after it, and kept in the attacker's state (a boolean per
parameter, checkpointed like the rest of the simulation). In the first round
there is no previous update and nothing is masked.

References:
  Zhang, Panda, Song, Yang, Mahoney, Mittal, Ramchandran, Gonzalez,
  "Neurotoxin: Durable Backdoors in Federated Learning", ICML 2022 (code:
  ``gradmask_ratio`` 0.99 keeps the bottom 99 %, i.e. masks the top 1 %).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from fljax.attacks import backdoor as bd
from fljax.attacks.attacker import Attacker, LocalTraining


class NeurotoxinState(NamedTuple):
    mask: Any  # pytree of bool like the parameters: True = the attacker leaves it alone


def top_fraction_mask(update, fraction) -> Any:
    """``bool`` pytree: the ``k = round(fraction * d)`` coordinates of largest ``|update|``.

    The threshold is the k-th largest magnitude, found by bisection on the
    magnitudes' float32 bit patterns (order-preserving for non-negative
    floats): 32 counting passes over ``d`` instead of a sort (XLA:CPU sorts
    ~200k floats far slower), with ``fraction`` traced. Ties at the threshold
    are all masked; zero coordinates never are (an all-zero update masks
    nothing).
    """
    flat, unravel = ravel_pytree(jax.tree_util.tree_map(jnp.abs, update))
    d = flat.shape[0]
    k = jnp.clip(jnp.round(jnp.asarray(fraction, jnp.float32) * d), 0, d).astype(jnp.int32)
    bits = jax.lax.bitcast_convert_type(flat.astype(jnp.float32), jnp.int32)  # >= 0, monotone

    def body(_, lo_hi):  # invariant: count(bits >= lo) >= k > count(bits >= hi)
        lo, hi = lo_hi
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits >= mid) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    top = jnp.int32(0x7F800000)  # +inf: no finite magnitude reaches it
    lo, _ = jax.lax.fori_loop(0, 32, body, (jnp.int32(0), top))
    chosen = (bits >= lo) & (bits > 0) & (k > 0)
    return unravel(chosen.astype(flat.dtype))


def neurotoxin(mask_fraction: float = 0.01) -> Attacker:
    """Malicious clients never update the top ``mask_fraction`` coordinates of the last global update.

    Args:
      mask_fraction: share of coordinates masked, in ``(0, 1]`` (a value;
        the paper's 0.99 ratio of kept coordinates is 0.01 here).

    Returns:
      An :class:`~fljax.attacks.attacker.Attacker` with state (``init``,
      ``end_round``) and a ``train.grads`` hook that zeroes the masked
      gradients of malicious clients (the identity for benign ones). With
      SGD-type optimizers (their state starts at zero every round) the masked
      coordinates of a malicious update stay exactly zero.

    References:
      Zhang et al., ICML 2022.
    """
    bd.check_fraction("neurotoxin", "mask_fraction", mask_fraction)

    def init(spec):
        return NeurotoxinState(jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, bool),
                                                      spec.params))

    def end_round(state, view):
        delta = jax.tree_util.tree_map(jnp.subtract, view.new_params, view.params)
        chosen = top_fraction_mask(delta, mask_fraction)
        return NeurotoxinState(jax.tree_util.tree_map(lambda c: c > 0, chosen))

    def grads(g, view):
        mask = view.state.mask
        return jax.tree_util.tree_map(
            lambda gi, mi: jnp.where(view.malicious & mi, jnp.zeros_like(gi), gi), g, mask)

    return Attacker(init=init, end_round=end_round, train=LocalTraining(grads=grads))
