"""Conformance-table rows of the order-statistic and distance-based rules."""

from __future__ import annotations

import jax
import numpy as np

from fljax import aggregators as agg
from tests.aggregators import references as ref
from tests.aggregators.entry import Entry



def _rank(n):
    """The tie-break rank fljax draws from the conformance tests' key (PRNGKey(0))."""
    return np.asarray(jax.random.permutation(jax.random.PRNGKey(0), n))


TABLE = [
    # The mean screens non-finite rows but follows huge finite ones (finite, unbounded).
    Entry("mean", lambda n, f: agg.mean(), lambda x, n, f: ref.mean_ref(x),
          f_max=lambda n: (n - 1) // 2, huge_bound=np.inf),
    Entry("coordinate_median", lambda n, f: agg.coordinate_median(),
          lambda x, n, f: ref.median_ref(x), f_max=lambda n: (n - 1) // 2),
    Entry("trimmed_mean", lambda n, f: agg.trimmed_mean(f),
          lambda x, n, f: ref.trimmed_mean_ref(x, f), f_max=lambda n: (n - 1) // 2),
    # Screened rows count towards f for the distance-based rules.
    Entry("krum", lambda n, f: agg.krum(f), lambda x, n, f: ref.krum_ref(x, f, rank=_rank(len(x))),
          f_max=lambda n: (n - 3) // 2, remaining=lambda n, f, k: (n - k, f - k)),
    Entry("multi_krum", lambda n, f: agg.multi_krum(f),
          lambda x, n, f: ref.multi_krum_ref(x, f, rank=_rank(len(x))),
          f_max=lambda n: (n - 3) // 2, remaining=lambda n, f, k: (n - k, f - k)),
    Entry("bulyan", lambda n, f: agg.bulyan(f), lambda x, n, f: ref.bulyan_ref(x, f, rank=_rank(len(x))),
          f_max=lambda n: (n - 3) // 4, remaining=None,
          # Its last Krum rounds use f - 1 neighbours: exact ties are the rule,
          # so the output follows the key's tie-break order, not client order.
          order_invariant=False),
    Entry("geometric_median", lambda n, f: agg.geometric_median(),
          lambda x, n, f: ref.geometric_median_ref(x), f_max=lambda n: (n - 1) // 2,
          rtol=1e-3, atol=1e-4),
    Entry("invariant", lambda n, f: agg.invariant(), lambda x, n, f: ref.invariant_ref(x),
          # It trims floor(0.45 n) per side: that many outliers on one side are tolerated.
          f_max=lambda n: int(0.45 * n)),
    # The rules above take kernel="auto": the compiled CPU kernel
    # (kernels/order_stats.py) where it can be built. The same rules on their
    # jnp paths, which serve every other backend:
    Entry("coordinate_median+jnp", lambda n, f: agg.coordinate_median(kernel=None),
          lambda x, n, f: ref.median_ref(x), f_max=lambda n: (n - 1) // 2),
    Entry("trimmed_mean+jnp", lambda n, f: agg.trimmed_mean(f, kernel=None),
          lambda x, n, f: ref.trimmed_mean_ref(x, f), f_max=lambda n: (n - 1) // 2),
    Entry("invariant+jnp", lambda n, f: agg.invariant(kernel=None),
          lambda x, n, f: ref.invariant_ref(x), f_max=lambda n: int(0.45 * n)),
    Entry("bulyan+jnp", lambda n, f: agg.bulyan(f, kernel=None),
          lambda x, n, f: ref.bulyan_ref(x, f, rank=_rank(len(x))),
          f_max=lambda n: (n - 3) // 4, remaining=None, order_invariant=False,
          ns=(7,)),  # one size: its Krum loop and bisections compile slowly
]

# Round two (issue 15): tests/aggregators/table_round2.py.
from tests.aggregators import table_round2  # noqa: E402

TABLE += table_round2.STATS
