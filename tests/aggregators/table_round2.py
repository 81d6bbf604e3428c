"""Conformance-table rows of the round-two rules (issue 15).

``STATS`` joins ``table_stats.TABLE`` (``conformance_test.py``) and
``model_rows(Case)`` joins ``table_model.TABLE`` (``model_table_test.py``);
the references are in ``references_round2.py``.
"""

from __future__ import annotations

import jax
import numpy as np

from fljax import aggregators as agg
from fljax.aggregators.dnc import dnc_coordinates
from fljax.aggregators.signguard import signguard_block
from tests.aggregators import references_round2 as ref
from tests.aggregators.entry import Entry

KEY = jax.random.PRNGKey(0)  # the conformance tests' key


def _dnc_reference(x, n, f, sub_dim=10000, num_iters=5, key=KEY):
    k_coords, k_tie = jax.random.split(key)
    coords = dnc_coordinates(k_coords, x.shape[1], sub_dim, num_iters)
    coords = [np.arange(x.shape[1])] if coords is None else list(np.asarray(coords))
    rank = np.asarray(jax.random.permutation(k_tie, len(x)))
    return ref.dnc_ref(x, f, coords, rank)


def _signguard_reference(x, n, f, key=KEY):
    start, size = signguard_block(key, x.shape[1], 0.1)
    return ref.signguard_ref(x, int(start), size)


def _majority(n):
    return (n - 1) // 2


# One client count each (two for meamed's even-n median) keeps the compile
# time of the default run small; round2_test.py covers more (n, f).
STATS = [
    # Screened rows count towards f for the subset / distance rules.
    Entry("mda", lambda n, f: agg.mda(f), lambda x, n, f: ref.mda_ref(x, f),
          f_max=_majority, remaining=lambda n, f, k: (n - k, f - k), ns=(7,)),
    Entry("smea", lambda n, f: agg.smea(f), lambda x, n, f: ref.smea_ref(x, f),
          f_max=_majority, remaining=lambda n, f, k: (n - k, f - k), ns=(7,)),
    Entry("meamed", lambda n, f: agg.meamed(f), lambda x, n, f: ref.meamed_ref(x, f),
          f_max=_majority, remaining=lambda n, f, k: (n - k, f - k), ns=(7, 8)),
    # The pivot is the last row (the huge rows of the table are the first f).
    # The reference screens itself (it must know where the pivot went).
    Entry("monna", lambda n, f: agg.monna(f, pivot=n - 1),
          lambda x, n, f: ref.monna_ref(x, f, pivot=len(x) - 1),
          f_max=_majority, remaining=None, order_invariant=False, ns=(7,)),
    Entry("caf", lambda n, f: agg.caf(f), lambda x, n, f: ref.caf_ref(x, f),
          f_max=_majority, remaining=lambda n, f, k: (n - k, f - k), ns=(7,)),
    Entry("dnc", lambda n, f: agg.dnc(f), _dnc_reference,
          f_max=_majority, remaining=lambda n, f, k: (n - k, f - k), ns=(7,)),
    Entry("signguard", lambda n, f: agg.signguard(), _signguard_reference,
          f_max=_majority, ns=(7,)),
]


def model_rows(case):
    """The rows of ``table_model.TABLE`` (``case`` is its ``Case`` class)."""
    return [
        case(
            name="multi_metrics",
            build=lambda n, d, f: agg.multi_metrics(),
            reference=lambda x, p, f: ref.multi_metrics_ref(
                x, p, rank=np.asarray(jax.random.permutation(KEY, len(x)))),
            rtol=1e-4, atol=1e-5,
        ),
        case(
            name="crfl",
            build=lambda n, d, f: agg.crfl(clip=20.0, sigma=0.0),
            reference=lambda x, p, f: ref.crfl_ref(x, p, 20.0),
        ),
    ]
