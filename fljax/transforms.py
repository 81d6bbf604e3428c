"""Per-client update transforms: clipping, noise, and (client-side) defences.

A transform is written for ONE client's flat update and vmapped at the call
site: ``transform(update: float[d], key) -> float[d]``. The same transform
runs in the simulator (before aggregation, or on the client before it sends
its update) and in front of a leakage attack, so its accuracy cost and the
leakage it stops are measured with the same code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from fljax.types import PRNGKey

Transform = Callable[[jax.Array, PRNGKey], jax.Array]


def identity() -> Transform:
    def transform(update, key):
        del key
        return update
    return transform


def clip_by_norm(max_norm: float) -> Transform:
    """Scales the update into the L2 ball of radius ``max_norm``.

    Non-finite updates are mapped to zero (they carry no usable direction).
    """

    def transform(update, key):
        del key
        finite = jnp.all(jnp.isfinite(update))
        safe = jnp.where(finite, update, 0.0)
        norm = jnp.linalg.norm(safe)
        scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))
        return safe * scale
    return transform


def gaussian_noise(stddev: float) -> Transform:
    """Adds i.i.d. ``N(0, stddev^2)`` noise to every coordinate."""

    def transform(update, key):
        return update + stddev * jax.random.normal(key, update.shape, update.dtype)
    return transform


def chain(*transforms: Transform) -> Transform:
    """Applies transforms left to right, each with its own key."""

    def transform(update, key):
        keys = jax.random.split(key, max(len(transforms), 1))
        for t, k in zip(transforms, keys):
            update = t(update, k)
        return update
    return transform


def apply_rows(transform: Transform, updates: jax.Array, key: PRNGKey) -> jax.Array:
    """Applies a one-client transform to every row of ``float[n, d]``."""
    keys = jax.random.split(key, updates.shape[0])
    return jax.vmap(transform)(updates, keys)


# Names usable in configs (``client_transforms`` / ``server_transforms``):
# each maps to a factory returning a Transform.
TRANSFORMS = {
    "identity": identity,
    "clip_by_norm": clip_by_norm,
    "gaussian_noise": gaussian_noise,
}


def get_transform(name: str, **kwargs) -> Transform:
    """Builds a transform by name; unknown names raise a ``ValueError``."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    return TRANSFORMS[name](**kwargs)
