"""Conformance-table entries for the model-aware and stateful rules.

``TABLE`` is a list of :class:`Case` for the shared conformance harness
(``conformance_test.py``). Each case builds its rule for the harness's shapes
and gives a float64 NumPy reference for the *first* call from ``init`` (the
stateful rules' later rounds are tested in ``model_rules_test.py``).

Conventions the harness must follow for these entries:

* ``case.build(n, d, f)`` returns the :class:`Aggregator`; ``f`` is the number
  of bad rows (huge or non-finite) the harness will inject, so rules with a
  static count (``err`` / ``lfr``'s ``num_reject``) are built for it.
* Every call passes ``AggregationContext(params=params)`` with a finite
  ``params: float[d]`` (FLTrust, FLAME and ERR / LFR need it; the others
  ignore it); ``case.reference(updates, params, f)`` gets the same float64
  arrays and returns ``float64[d]``.
* Noise is switched off in the table builds (``weak_dp`` with ``sigma=0``,
  ``flame`` with ``noise_lambda=0``), so every entry is deterministic.
* ``fixed_point``: all rows equal to a ``v`` with ``‖v‖ <= 5`` return ``v``.
  ``bounded``: with ``f < n/2`` finite rows of any magnitude from 1e3 to
  float32's largest (``hostile.HUGE``) the output stays of the honest rows'
  order (FoolsGold's weighted sum and robust_lr's mean are not, by design;
  ERR's error-rate impacts tie when two such rows each ruin the model).
  Every entry's output stays finite under them, except where ``exact_when_huge``
  says the definition itself exceeds float32's range: those are compared with
  their float64 reference wherever it is representable. Non-finite rows
  (compared with the reference on the remaining rows, ``remaining_f``), tiny
  and mixed-scale rows, order invariance, one trace per build and the
  ``on_pytree`` adapter apply to every entry.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fljax import aggregators as A
from fljax.aggregators import Aggregator
from tests.aggregators import model_references as ref


class Case(NamedTuple):
    name: str  # the name in fljax.aggregators.RULES
    build: Callable[[int, int, int], Aggregator]  # (n, d, f) -> Aggregator
    reference: Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (updates, params, f)
    fixed_point: bool = True
    bounded: bool = True
    # Unbounded by definition, but exact: under huge rows the output equals the
    # float64 reference wherever that is representable in float32 (else inf).
    exact_when_huge: bool = False
    # (f, k) -> the f the reference gets on the rows left after screening k
    # non-finite ones (ERR / LFR spend their rejection budget on them first).
    remaining_f: Callable[[int, int], int] = lambda f, k: f
    rtol: float = 1e-5
    atol: float = 1e-6


def server_target(d: int) -> np.ndarray:
    """FLTrust's root-data optimum in the table: a fixed float64[d] vector."""
    return np.linspace(-1.0, 1.0, d) + 0.5


def _server_update_fn(d):
    target = jnp.asarray(server_target(d), jnp.float32)
    return lambda params, key: target - params  # one "training step" to the target


def loo_rank(n: int, key=None) -> np.ndarray:
    """The tie-break rank ERR / LFR draw from the harness's key (``PRNGKey(0)``).

    They split their key into (full, leave-one-out, final, tie) and rank the
    clients by ``jax.random.permutation(tie, n)`` among equal impacts.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    return np.asarray(jax.random.permutation(jax.random.split(key, 4)[3], n))


def linear_eval(d: int, m: int = 40):
    """A least-squares / sign-error task of dimension ``d``: (jax eval_fn, numpy twin)."""
    rng = np.random.default_rng(1234 + d)
    xv = rng.standard_normal((m, d))
    yv = xv @ rng.standard_normal(d)
    xj, yj = jnp.asarray(xv, jnp.float32), jnp.asarray(yv, jnp.float32)

    def eval_fn(w):  # at HIGHEST, as the rules' own products (conformance_test checks those)
        z = jnp.dot(xj, w, precision=jax.lax.Precision.HIGHEST)
        return jnp.mean(jnp.sign(z) != jnp.sign(yj)), jnp.mean((z - yj) ** 2)

    def eval_np(w):
        z = xv @ w
        return np.mean(np.sign(z) != np.sign(yv)), np.mean((z - yv) ** 2)

    return eval_fn, eval_np


TABLE = [
    Case(
        name="fltrust",
        build=lambda n, d, f: A.fltrust(server_update_fn=_server_update_fn(d)),
        reference=lambda x, p, f: ref.fltrust(x, server_target(x.shape[1]) - p),
        fixed_point=False,  # the output has the server update's norm
    ),
    Case(
        name="flame",
        build=lambda n, d, f: A.flame(noise_lambda=0.0),
        reference=lambda x, p, f: ref.flame_no_noise(x, p)[0],
    ),
    Case(
        name="foolsgold",
        build=lambda n, d, f: A.foolsgold(num_clients=n),
        reference=lambda x, p, f: ref.foolsgold_rounds([x])[0],
        fixed_point=False,  # identical rows are all sybils: weight 0
        bounded=False,  # weighted sum; it screens sybils, not scale
        exact_when_huge=True,
        rtol=1e-4,
        atol=1e-5,
    ),
    Case(
        name="err",
        build=lambda n, d, f: A.err(eval_fn=linear_eval(d)[0], num_reject=f),
        reference=lambda x, p, f: ref.loo_rejection(x, p, linear_eval(x.shape[1])[1], f, 0,
                                                    rank=loo_rank(len(x)))[0],
        # Leave-one-out masking: with f >= 2 huge rows (1e3 .. 1e18 here),
        # dropping one leaves the error rate unchanged, so the error impacts
        # tie. Rows whose own model has an overflowing loss (>= ~1e19 here)
        # are screened, so from there on ERR is bounded too (model_rules_test).
        bounded=False,
        remaining_f=lambda f, k: f - k,
    ),
    Case(
        name="lfr",
        build=lambda n, d, f: A.lfr(eval_fn=linear_eval(d)[0], num_reject=f),
        reference=lambda x, p, f: ref.loo_rejection(x, p, linear_eval(x.shape[1])[1], f, 1,
                                                    rank=loo_rank(len(x)))[0],
        remaining_f=lambda f, k: f - k,
    ),
    Case(
        name="robust_lr",
        build=lambda n, d, f: A.robust_lr(threshold=max(n // 4, 1)),
        reference=lambda x, p, f: ref.robust_lr(x, max(x.shape[0] // 4, 1)),
        bounded=False,  # a (sign-corrected) mean
        exact_when_huge=True,
    ),
    Case(
        name="norm_clipping",
        build=lambda n, d, f: A.norm_clipping(max_norm=10.0),
        reference=lambda x, p, f: ref.norm_clipping(x, 10.0),
    ),
    Case(
        name="weak_dp",
        build=lambda n, d, f: A.weak_dp(max_norm=10.0, sigma=0.0),
        reference=lambda x, p, f: ref.norm_clipping(x, 10.0),
    ),
    Case(
        name="centered_clipping",
        build=lambda n, d, f: A.centered_clipping(tau=10.0, iters=3),
        reference=lambda x, p, f: ref.centered_clipping_rounds([x], 10.0, 3)[0],
    ),
]

# Round two (issue 15): tests/aggregators/table_round2.py.
from tests.aggregators import table_round2  # noqa: E402

TABLE += table_round2.model_rows(Case)
