"""Per-client update transforms: clipping, noise, and (client-side) defences.

A transform is written for ONE client's flat update and vmapped at the call
site: ``transform(update: float[d], key) -> float[d]``. The same transform
runs in the simulator (before aggregation, or on the client before it sends
its update) and in front of a leakage attack, so its accuracy cost and the
leakage it stops are measured with the same code.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fljax.types import PRNGKey

Transform = Callable[[jax.Array, PRNGKey], jax.Array]


def _check(name: str, arg: str, value, ok: bool, allowed: str) -> None:
    """Raises a ``ValueError`` naming the transform, the argument, the value and
    what is allowed unless ``ok``. Arrays pass unchecked (a sweep's traced values)."""
    if hasattr(value, "shape") or ok:
        return
    raise ValueError(f"{name}: {arg}={value!r} is not allowed; {allowed}")


def _number(value) -> bool:
    """A finite Python number (not a bool)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and bool(np.isfinite(value)))


def identity() -> Transform:
    """Leaves the update as it is (the default: no client-side defence)."""

    def transform(update, key):
        del key
        return update
    return transform


def clip_by_norm(max_norm: float) -> Transform:
    """Scales the update into the L2 ball of radius ``max_norm``.

    Non-finite updates are mapped to zero (they carry no usable direction).
    Any finite update is clipped exactly, also one whose norm overflows
    float32 (entries near 1e38): the norm is taken as a power-of-two scale
    times a finite factor (``aggregators._linalg.row_norms``).
    """
    _check("clip_by_norm", "max_norm", max_norm, _number(max_norm) and max_norm > 0,
           "a number > 0")

    def transform(update, key):
        del key
        # Imported here: fljax.aggregators imports this module (compose).
        from fljax.aggregators import _linalg

        finite = jnp.all(jnp.isfinite(update))
        safe = jnp.where(finite, update, 0.0)
        flat = safe.reshape(1, -1)  # float[1, d]
        scale, base = _linalg.row_norms(flat, jnp.ones((1,), bool))
        weight = _linalg.clip_weights(scale, base, max_norm)
        return ((flat / scale[:, None]) * weight[:, None]).reshape(update.shape)
    return transform


def gaussian_noise(stddev: float) -> Transform:
    """Adds i.i.d. ``N(0, stddev^2)`` noise to every coordinate."""
    _check("gaussian_noise", "stddev", stddev, _number(stddev) and stddev >= 0, "a number >= 0")

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


# --------------------------------------------------------------------------
# Client-side defences against data leakage. Each is the identity at strength
# zero. Per-tensor defences need the tensor boundaries of the flat update:
# pass ``shapes`` (the parameter leaf shapes in ``ravel_pytree`` order, see
# :func:`tensor_shapes`); without it the whole update is treated as one tensor.
# --------------------------------------------------------------------------


def tensor_shapes(params) -> list[tuple[int, ...]]:
    """Leaf shapes of a params pytree in the order ``ravel_pytree`` lays them out."""
    return [tuple(int(s) for s in leaf.shape) for leaf in jax.tree_util.tree_leaves(params)]


def _segments(update: jax.Array, shapes) -> list[tuple[int, int, tuple[int, ...]]]:
    """(start, stop, shape) of every tensor in a flat update (static)."""
    if shapes is None:
        return [(0, update.shape[0], (update.shape[0],))]
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape)) if len(shape) else 1
        out.append((start, start + size, tuple(shape)))
        start += size
    if start != update.shape[0]:
        raise ValueError(f"shapes cover {start} entries but the update has {update.shape[0]}")
    return out


def _per_tensor(fn, update, shapes, key=None):
    """Applies ``fn(tensor, key) -> tensor`` to every tensor of a flat update."""
    segs = _segments(update, shapes)
    keys = jax.random.split(key, len(segs)) if key is not None else [None] * len(segs)
    parts = [fn(update[a:b].reshape(shape), k).reshape(-1)
             for (a, b, shape), k in zip(segs, keys)]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def laplace_noise(scale: float) -> Transform:
    """Adds i.i.d. ``Laplace(0, scale)`` noise to every coordinate.

    References:
      Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019 (Sec. 5).
    """
    _check("laplace_noise", "scale", scale, _number(scale) and scale >= 0, "a number >= 0")

    def transform(update, key):
        return update + scale * jax.random.laplace(key, update.shape, update.dtype)
    return transform


def row_noise(scale: float, distribution: str = "gaussian", clip: float = 0.2,
              shapes: Sequence[tuple[int, ...]] | None = None) -> Transform:
    """The DLM paper's noise defence: noise scaled by a per-tensor row-norm factor.

    For every tensor ``t`` the factor is ``nf = max(1, max_row_norm(t) / clip)``
    and the result is ``(t / nf + noise) * nf = t + nf * noise`` with
    ``noise ~ N(0, scale^2)`` or ``Laplace(0, scale)``. A "row" is one output
    unit: the norm runs over all axes but the last (flax ``kernel[..., out]``,
    which matches PyTorch's row norm of ``weight[out, in]`` for dense layers);
    1-D tensors use their whole norm. Note that the signal is *not* clipped in
    the end (``nf`` only scales the noise), exactly as in the official code.
    The paper applies it to the uploaded weights; here it acts on the update.

    Args:
      scale: noise scale ``s`` (the paper sweeps 0, 1e-5 ... 1).
      distribution: ``"gaussian"`` or ``"laplace"``.
      clip: the row-norm threshold (0.2 in the paper).
      shapes: tensor shapes of the flat update (:func:`tensor_shapes`).

    References:
      Zhao, Luo, Ding, "Deep Leakage from Model in Federated Learning",
      arXiv 2206.04887; official code ``defense.py::dp_defense``.
    """
    if distribution not in ("gaussian", "laplace"):
        raise ValueError(f"distribution must be 'gaussian' or 'laplace', got {distribution!r}")
    _check("row_noise", "scale", scale, _number(scale) and scale >= 0, "a number >= 0")
    _check("row_noise", "clip", clip, _number(clip) and clip > 0, "a number > 0")

    def one(t, key):
        if t.ndim >= 2:
            rows = jnp.sqrt(jnp.sum(jnp.square(t.reshape(-1, t.shape[-1])), axis=0))
            row_max = jnp.max(rows)
        else:
            row_max = jnp.linalg.norm(t)
        nf = jnp.maximum(1.0, row_max / clip)
        if distribution == "gaussian":
            noise = jax.random.normal(key, t.shape, t.dtype)
        else:
            noise = jax.random.laplace(key, t.shape, t.dtype)
        return t + nf * scale * noise

    def transform(update, key):
        return _per_tensor(one, update, shapes, key)
    return transform


def prune(percent: float, shapes: Sequence[tuple[int, ...]] | None = None) -> Transform:
    """Magnitude pruning: zeroes the ``percent`` % smallest-magnitude entries per tensor.

    An entry is zeroed when ``|u| < quantile(|u|, percent / 100)`` of its tensor
    (GradAttack / DLM ``sparsification``); ``percent=0`` is the identity.

    Args:
      percent: 0..100.
      shapes: tensor shapes of the flat update (:func:`tensor_shapes`); None
        prunes over the whole update at once.

    References:
      Zhu, Liu, Han, NeurIPS 2019 (gradient pruning, Sec. 5);
      Zhao, Luo, Ding, arXiv 2206.04887 (``defense.py::sparsification``).
    """
    _check("prune", "percent", percent, _number(percent) and 0 <= percent <= 100,
           "a number in [0, 100]")

    def one(t, key):
        del key
        threshold = jnp.quantile(jnp.abs(t), percent / 100.0)
        return jnp.where(jnp.abs(t) < threshold, 0.0, t).astype(t.dtype)

    def transform(update, key):
        del key
        return _per_tensor(one, update, shapes)
    return transform


def quantize(bits: int = 0, stochastic: bool = False,
             shapes: Sequence[tuple[int, ...]] | None = None) -> Transform:
    """Uniform symmetric quantisation to ``bits`` bits per tensor; ``bits=0`` is off.

    Each tensor is scaled by ``max|t| / (2^(bits-1) - 1)``, rounded (to nearest,
    or stochastically with the key) and scaled back. ``bits=16`` is a cast to
    IEEE float16 and back (DLG's half-precision defence).

    References:
      Zhu, Liu, Han, NeurIPS 2019 (fp16 / int8 defences, Sec. 5).
    """
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 0 or bits == 1 or bits > 32:
        raise ValueError(f"quantize: bits={bits!r} is not allowed; 0 (off) or an int in [2, 32]")

    def one(t, key):
        if bits == 16:
            return t.astype(jnp.float16).astype(t.dtype)
        levels = 2.0 ** (bits - 1) - 1.0
        step = jnp.maximum(jnp.max(jnp.abs(t)), 1e-30) / levels
        q = t / step
        if stochastic:
            q = jnp.floor(q + jax.random.uniform(key, t.shape, t.dtype))
        else:
            q = jnp.round(q)
        return (jnp.clip(q, -levels, levels) * step).astype(t.dtype)

    def transform(update, key):
        if bits == 0:
            return update
        return _per_tensor(one, update, shapes, key)
    return transform


def dp(clip: float | None = None, noise_multiplier: float = 0.0) -> Transform:
    """DP-style client update: clip to L2 norm ``clip``, add ``N(0, (noise_multiplier*clip)^2)``.

    ``clip=None`` skips clipping (the noise std is then ``noise_multiplier``);
    with ``noise_multiplier=0`` and no clipping it is the identity. There is no
    privacy accounting here: this is the mechanism only.

    References:
      McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private
      Recurrent Language Models", ICLR 2018 (DP-FedAvg).
    """
    if clip is not None:
        _check("dp", "clip", clip, _number(clip) and clip > 0, "a number > 0 (or None)")
    _check("dp", "noise_multiplier", noise_multiplier,
           _number(noise_multiplier) and noise_multiplier >= 0, "a number >= 0")

    def transform(update, key):
        if clip is not None:
            update = clip_by_norm(clip)(update, key)
        std = noise_multiplier * (clip if clip is not None else 1.0)
        return update + std * jax.random.normal(key, update.shape, update.dtype)
    return transform


# Names usable in configs (``client_transforms`` / ``server_transforms``):
# each maps to a factory returning a Transform.
TRANSFORMS = {
    "identity": identity,
    "clip_by_norm": clip_by_norm,
    "gaussian_noise": gaussian_noise,
    "laplace_noise": laplace_noise,
    "row_noise": row_noise,
    "prune": prune,
    "quantize": quantize,
    "dp": dp,
}


def get_transform(name: str, shapes=None, **kwargs) -> Transform:
    """Builds a transform by name; unknown names raise a ``ValueError``.

    ``shapes`` (the parameter tensor shapes, :func:`tensor_shapes`) is passed to
    the factories that act per tensor (``row_noise``, ``prune``, ``quantize``)
    and ignored by the others, so a caller that knows the model can always
    pass it.
    """
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of {sorted(TRANSFORMS)}")
    factory = TRANSFORMS[name]
    if shapes is not None and "shapes" in inspect.signature(factory).parameters:
        kwargs.setdefault("shapes", shapes)
    return factory(**kwargs)
