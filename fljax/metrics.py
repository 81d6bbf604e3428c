"""Metrics as pure functions: evaluation over padded test batches, and the
per-round diagnostics of attacks against a rule.

Evaluation is jit-compiled over a :class:`~fljax.attacks.attacker.TestSet`
(``x: float[nb, B, ...]``, ``y: int32[nb, B]``, ``mask: bool[nb, B]``): a
``lax.scan`` over the ``nb`` batches, no host loop, so it vmaps over a
sweep's cells and over ERR / LFR's candidate models alike.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fljax.attacks.attacker import TestSet


def test_set(x: np.ndarray, y: np.ndarray, batch: int) -> TestSet:
    """Pads ``(x, y)`` to whole batches of ``batch`` (host arrays, once)."""
    n = len(y)
    if n == 0:
        raise ValueError("the test set is empty")
    batch = max(1, min(int(batch), n))
    nb = -(-n // batch)
    pad = nb * batch - n
    xp = np.concatenate([np.asarray(x), np.zeros((pad,) + x.shape[1:], x.dtype)])
    yp = np.concatenate([np.asarray(y, np.int32), np.zeros((pad,), np.int32)])
    mp = np.arange(nb * batch) < n
    return TestSet(xp.reshape((nb, batch) + x.shape[1:]), yp.reshape(nb, batch),
                   mp.reshape(nb, batch))


def make_predict(apply_fn: Callable) -> Callable:
    """``predict(params, x: float[nb, B, ...]) -> int32[nb, B]`` (argmax labels)."""

    def predict(params, x):
        return jax.lax.map(lambda xb: jnp.argmax(apply_fn(params, xb), -1).astype(jnp.int32), x)

    return predict


def make_evaluate(apply_fn: Callable) -> Callable:
    """``evaluate(params, test: TestSet) -> {'accuracy', 'loss', 'error_rate'}``.

    Mean accuracy and softmax cross-entropy over the unpadded examples; jit-
    and vmap-friendly (one ``lax.scan`` over the batches).
    """

    def evaluate(params, test: TestSet):
        def body(carry, batch):
            xb, yb, mb = batch
            logits = apply_fn(params, xb)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
            m = mb.astype(jnp.float32)
            correct = (jnp.argmax(logits, -1) == yb).astype(jnp.float32)
            c, l = carry
            return (c + jnp.sum(correct * m), l + jnp.sum(ce * m)), None

        zero = jnp.zeros((), jnp.float32)
        (c, l), _ = jax.lax.scan(body, (zero, zero), (test.x, test.y, test.mask))
        n = jnp.maximum(jnp.sum(test.mask.astype(jnp.float32)), 1.0)
        acc = c / n
        return {"accuracy": acc, "loss": l / n, "error_rate": 1.0 - acc}

    return evaluate


def kept_rows(info: dict, n: int):
    """``bool[n]``: the rows a rule selected or kept, from its ``info``, or None
    when the rule does not select (mean, median, ...).

    ``accepted`` (ERR / LFR / FLTrust / FoolsGold), ``admitted`` (FLAME),
    ``selected`` (Multi-Krum, Bulyan: indices; SignGuard, Multi-Metrics: a
    mask) and ``index`` (Krum) are understood: a ``bool[n]`` mask or integer
    row indices.
    """
    for name in ("accepted", "admitted", "selected", "index"):
        if name not in info:
            continue
        v = jnp.asarray(info[name])
        if v.dtype == jnp.bool_:
            if v.shape == (n,):  # a mask over the rows
                return v
            continue
        if jnp.issubdtype(v.dtype, jnp.integer):  # row indices
            return jnp.zeros((n,), bool).at[v.reshape(-1)].set(True)
    return None


def round_diagnostics(updates: jax.Array, malicious: jax.Array, aggregate: jax.Array,
                      info: dict, axis: str | None = None) -> dict:
    """What the attack did to this round's aggregate.

    Args:
      updates: ``float[K, d]`` the rows the rule received (with ``axis``: a
        block of their columns, the other blocks on the devices of ``axis``).
      malicious: ``bool[K]`` the rows the attackers controlled this round.
      aggregate: ``float[d]`` the rule's output (the same block with ``axis``).
      info: the rule's ``info``.
      axis: a mesh axis over which the columns are split (sums over
        columns are reduced over it).

    Returns:
      ``malicious_rows`` (count), ``malicious_kept`` (fraction of the
      malicious rows the rule selected or kept; NaN when it does not select
      or no row was malicious), ``cosine_to_honest`` and
      ``norm_ratio_to_honest`` (the aggregate against the unweighted mean of
      the benign, finite rows).
    """
    from fljax.aggregators import _linalg
    from fljax.aggregators.base import finite_rows

    k = updates.shape[0]
    benign = (~malicious) & finite_rows(updates, axis)
    w = benign.astype(updates.dtype) / jnp.maximum(jnp.sum(benign), 1).astype(updates.dtype)
    honest = _linalg.weighted_row_sum(updates, w, benign)  # float[d]
    return compare_to_honest(honest, malicious, aggregate, kept_rows(info, k), axis)


def compare_to_honest(honest: jax.Array, malicious: jax.Array, aggregate: jax.Array,
                      kept, axis: str | None = None) -> dict:
    """:func:`round_diagnostics` from the honest mean ``float[d]`` (a streamed
    round accumulates it chunk by chunk) and the rows the rule kept
    (``bool[K]`` or None, :func:`kept_rows`)."""
    from fljax.aggregators import _linalg
    from fljax.aggregators.base import finite_rows

    nmal = jnp.sum(malicious.astype(jnp.int32))
    if kept is None:
        frac = jnp.full((), jnp.nan, jnp.float32)
    else:
        frac = jnp.where(nmal > 0, jnp.sum((kept & malicious).astype(jnp.float32))
                         / jnp.maximum(nmal, 1).astype(jnp.float32), jnp.nan)
    both = jnp.stack([honest, aggregate.astype(honest.dtype)])
    scale, base = _linalg.row_norms(both, finite_rows(both, axis), axis=axis)
    hn, an = scale[0] * base[0], scale[1] * base[1]
    unit = both / jnp.where(scale > 0, scale, 1.0)[:, None]
    dot = jnp.dot(unit[0], unit[1], precision=jax.lax.Precision.HIGHEST)
    if axis is not None:
        dot = jax.lax.psum(dot, axis)
    cos = dot / jnp.maximum(base[0] * base[1], 1e-30)
    ok = (hn > 0) & (an > 0) & jnp.isfinite(cos)
    return {
        "malicious_rows": nmal,
        "malicious_kept": frac,
        "cosine_to_honest": jnp.where(ok, cos, jnp.nan),
        "norm_ratio_to_honest": jnp.where(hn > 0, an / jnp.where(hn > 0, hn, 1.0), jnp.nan),
    }


def no_diagnostics() -> dict:
    """:func:`round_diagnostics`' fields for a round without attackers (NaN;
    ``malicious_rows`` 0)."""
    nan = jnp.full((), jnp.nan, jnp.float32)
    return {"malicious_rows": jnp.zeros((), jnp.int32), "malicious_kept": nan,
            "cosine_to_honest": nan, "norm_ratio_to_honest": nan}
