"""Matching losses between a dummy gradient and the observed update, and priors.

Each objective is ``objective(dummy: PyTree, observed: PyTree, k) -> float[]``;
``k`` is a learned scale used only by :func:`scaled_l2` (DLM). All of them
treat the pytree leaves as the "layers" of the papers (a Dense kernel and its
bias are two layers, as in a PyTorch ``state_dict``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fljax.types import PyTree

_leaves = jax.tree_util.tree_leaves


def _sq_norms(tree: PyTree) -> list[jax.Array]:
    return [jnp.sum(jnp.square(leaf)) for leaf in _leaves(tree)]


def l2(dummy: PyTree, observed: PyTree, k: jax.Array = 1.0) -> jax.Array:
    """DLG: ``sum_l ||g_l - o_l||^2``.

    References:
      Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019.
    """
    del k
    return sum(jnp.sum(jnp.square(g - o)) for g, o in zip(_leaves(dummy), _leaves(observed)))


def scaled_l2(dummy: PyTree, observed: PyTree, k: jax.Array) -> jax.Array:
    """DLM: ``sum_l ||g_l - k * dW_l||^2`` with a learned scale ``k`` (~ 1/lr).

    References:
      Zhao, Luo, Ding, "Deep Leakage from Model in Federated Learning",
      CPAL 2024 (arXiv 2206.04887); official code ``DLM.py``.
    """
    return sum(jnp.sum(jnp.square(g - k * o)) for g, o in zip(_leaves(dummy), _leaves(observed)))


def _mean_layer_norm(tree: PyTree) -> jax.Array:
    return jnp.mean(jnp.sqrt(jnp.stack(_sq_norms(tree))))


def mean_norm_l2(dummy: PyTree, observed: PyTree, k: jax.Array = 1.0) -> jax.Array:
    """DLM+: ``sum_l ||g_l / n_g - dW_l / n_dW||^2``, ``n = mean_l ||.||_2``.

    Both sides are divided by the mean of their per-layer L2 norms (one scalar
    per side), so for one SGD step (``dW = lr * g``) the learning rate cancels
    exactly.

    References:
      Zhao, Luo, Ding, arXiv 2206.04887; official code ``DLM_plus.py``.
    """
    del k
    ng = _mean_layer_norm(dummy)
    no = _mean_layer_norm(observed)
    return sum(jnp.sum(jnp.square(g / ng - o / no))
               for g, o in zip(_leaves(dummy), _leaves(observed)))


def cosine(dummy: PyTree, observed: PyTree, k: jax.Array = 1.0) -> jax.Array:
    """Inverting Gradients: ``1 - <g, o> / (||g|| ||o||)`` over all layers at once.

    References:
      Geiping, Bauermeister, Droege, Moeller, "Inverting Gradients - How easy is
      it to break privacy in federated learning?", NeurIPS 2020.
    """
    del k
    dot = sum(jnp.sum(g * o) for g, o in zip(_leaves(dummy), _leaves(observed)))
    ng = jnp.sqrt(sum(_sq_norms(dummy)))
    no = jnp.sqrt(sum(_sq_norms(observed)))
    return 1.0 - dot / jnp.maximum(ng * no, 1e-30)


OBJECTIVES = {
    "l2": l2,
    "scaled_l2": scaled_l2,
    "mean_norm_l2": mean_norm_l2,
    "cosine": cosine,
}


def total_variation(x: jax.Array) -> jax.Array:
    """Anisotropic TV of ``float[B, H, W, C]``: ``mean|dx| + mean|dy|`` (IG's form)."""
    dx = jnp.mean(jnp.abs(x[:, :, 1:, :] - x[:, :, :-1, :]))
    dy = jnp.mean(jnp.abs(x[:, 1:, :, :] - x[:, :-1, :, :]))
    return dx + dy
