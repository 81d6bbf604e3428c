"""Observation model: what the server sees of one victim client.

The victim holds a batch ``x: float[B, *input_shape]`` with integer labels
``y: int[B]`` and starts from the server's weights ``W0``. It either sends its
gradient at ``W0`` (FedSGD) or runs ``local_steps`` full-batch SGD steps with
learning rate ``lr`` on the same batch and sends its weights (FedAvg). The
server then knows ``dW = W0 - W_T``.

**Sign convention.** Everything in :mod:`fljax.attacks.leakage` uses the
*gradient-like* sign: ``dW = W0 - W_T = +lr * sum_t g_t``, as in the DLM paper.
Frameworks that share ``W_T - W0`` (breaching, Inverting Gradients) must negate
it first; the iDLG label rule then flips from argmin to argmax.

All functions are written for ONE victim; ``vmap`` them over victims.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.models import Model
from fljax.types import Params


def soft_cross_entropy(logits: jax.Array, target: jax.Array) -> jax.Array:
    """``mean_b sum_c -target[b, c] * log_softmax(logits)[b, c]`` (DLG's loss).

    Args:
      logits: ``float[B, C]``.
      target: ``float[B, C]``, rows are probability vectors (one-hot or soft).
    """
    return jnp.mean(jnp.sum(-target * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def gradient(model: Model, params: Params, x: jax.Array, target: jax.Array) -> Params:
    """The gradient of the batch-mean cross-entropy at ``params``.

    Args:
      model: the shared model.
      params: the weights the gradient is taken at (``W0``).
      x: ``float[B, *input_shape]``.
      target: ``float[B, C]`` soft or one-hot labels.

    Returns:
      A pytree shaped like ``params``.
    """
    return jax.grad(lambda p: soft_cross_entropy(model.apply(p, x), target))(params)


def local_sgd(model: Model, params: Params, x: jax.Array, target: jax.Array,
              lr: jax.Array, local_steps: int) -> Params:
    """``local_steps`` full-batch SGD steps on one batch (static step count).

    The loop is unrolled in Python (``local_steps`` is small): XLA:CPU runs loop
    bodies markedly slower than straight-line code, and the result is also
    differentiable w.r.t. ``x`` (used by the unrolled Inverting-Gradients attack).
    """
    for _ in range(int(local_steps)):
        g = gradient(model, params, x, target)
        params = jax.tree_util.tree_map(lambda w, d: w - lr * d, params, g)
    return params


def weight_delta(model: Model, params: Params, x: jax.Array, target: jax.Array,
                 lr: jax.Array, local_steps: int) -> Params:
    """``dW = W0 - W_T`` after ``local_steps`` SGD steps (gradient-like sign)."""
    after = local_sgd(model, params, x, target, lr, local_steps)
    return jax.tree_util.tree_map(jnp.subtract, params, after)


def observe(model: Model, params: Params, x: jax.Array, y: jax.Array, *,
            kind: str = "delta", lr: float | jax.Array = 0.1,
            local_steps: int = 1) -> Params:
    """What the server observes from one victim.

    Args:
      model: the shared model.
      params: the server weights ``W0`` sent to the victim.
      x: ``float[B, *input_shape]`` the victim's batch.
      y: ``int[B]`` its labels.
      kind: ``"gradient"`` (FedSGD: the gradient at ``W0``) or ``"delta"``
        (FedAvg: ``W0 - W_T`` after ``local_steps`` SGD steps of size ``lr``).
      lr: the victim's learning rate (unknown to DLM / DLM+ attackers).
      local_steps: number of local steps (static).

    Returns:
      A pytree shaped like ``params``.
    """
    target = jax.nn.one_hot(y, model.num_classes)
    if kind == "gradient":
        return gradient(model, params, x, target)
    if kind == "delta":
        return weight_delta(model, params, x, target, jnp.asarray(lr, jnp.float32),
                            local_steps)
    raise ValueError(f"observe: kind must be 'gradient' or 'delta', got {kind!r}")


def uniform_init(params: Params, key: jax.Array, scale: float = 0.5) -> Params:
    """Re-draws every leaf from ``U(-scale, scale)`` (the DLG / iDLG / DLM init).

    References:
      Zhu et al. 2019 and Zhao et al. 2022 both use ``uniform(-0.5, 0.5)`` for
      weights and biases; leakage is much easier from such models than from
      trained ones.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [jax.random.uniform(k, l.shape, l.dtype, -scale, scale) for k, l in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, new)
