"""Local training of ONE client (vmap it at the call site).

A client starts from the global parameters, runs ``steps`` optax steps on its
batches, and returns its new parameters. Steps whose batch is fully masked
(a client with fewer examples than the largest one) leave the parameters and
the optimizer state unchanged.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fljax.types import Params, PRNGKey


def cross_entropy(logits, labels, mask):
    """Mean softmax cross-entropy over the unmasked examples (0 if none)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    m = mask.astype(ce.dtype)
    return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)


class ClientOutput(NamedTuple):
    params: Params  # the client's parameters after local training
    loss: jax.Array  # mean training loss over its real steps
    num_examples: jax.Array  # examples it trained on (counting repeats over epochs)


def make_client_update(apply_fn: Callable, optimizer: optax.GradientTransformation, *,
                       unroll: int | bool = True,
                       loss_fn: Callable = cross_entropy,
                       full_batches: bool = False,
                       hooks=None) -> Callable:
    """Builds ``client_update(params, x, y, mask, key, view=None) -> ClientOutput`` for one client.

    Args:
      apply_fn: ``apply(params, x, key=None) -> logits``; a key turns dropout on.
      optimizer: the client's optax optimizer (initialised afresh every round).
      unroll: ``lax.scan`` unrolling of the local-step loop. XLA:CPU runs
        convolutions inside while-loops far slower than unrolled, so the
        default unrolls fully (local step counts are small).
      loss_fn: ``loss(logits, labels, mask) -> scalar``.
      full_batches: the caller guarantees every mask entry is True (equal-size
        clients, whole batches); skips the per-step masking work.
      hooks: an attacker's :class:`~fljax.attacks.attacker.LocalTraining`
        (``loss(params, logits, y, mask, view)`` replaces ``loss_fn``,
        ``grads(grads, view)`` transforms the gradients, ``project(params,
        view)`` runs after every step); ``view`` is the
        :class:`~fljax.attacks.attacker.ClientView` passed to
        ``client_update``. The hooks are the identity for benign clients.

    The returned function takes ``x: float[S, B, ...]``, ``y: int[S, B]``,
    ``mask: bool[S, B]`` (S local steps of batch B) and a PRNG key.
    """

    def step(carry, batch, view=None):
        params, opt_state = carry
        x, y, m, key = batch

        def loss_of(p):
            logits = apply_fn(p, x, key)
            if hooks is not None and hooks.loss is not None:
                return hooks.loss(p, logits, y, m, view)
            return loss_fn(logits, y, m)

        loss, grads = jax.value_and_grad(loss_of)(params)
        if hooks is not None and hooks.grads is not None:
            grads = hooks.grads(grads, view)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if hooks is not None and hooks.project is not None:
            new_params = hooks.project(new_params, view)
        if full_batches:
            return (new_params, new_opt_state), (loss, jnp.ones((), bool))
        active = jnp.any(m)
        keep = lambda new, old: jax.tree_util.tree_map(
            lambda a, b: jnp.where(active, a, b), new, old)
        return (keep(new_params, params), keep(new_opt_state, opt_state)), (loss, active)

    def client_update(params, x, y, mask, key, view=None) -> ClientOutput:
        steps = x.shape[0]
        keys = jax.random.split(key, steps)
        (params, _), (losses, active) = jax.lax.scan(
            lambda c, b: step(c, b, view), (params, optimizer.init(params)), (x, y, mask, keys),
            unroll=steps if unroll is True else max(1, min(steps, int(unroll))))
        a = active.astype(losses.dtype)
        loss = jnp.sum(losses * a) / jnp.maximum(jnp.sum(a), 1.0)
        return ClientOutput(params, loss, jnp.sum(mask).astype(jnp.float32))

    return client_update
