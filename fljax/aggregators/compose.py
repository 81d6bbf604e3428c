"""Pre-aggregation stage: per-client transforms, then a rule.

References:
  optax ``experimental/_aggregating.py`` (``process(preprocessor,
  aggregator, postprocessor)``), the pattern this follows.
"""

from __future__ import annotations

import jax

from fljax.aggregators.base import Aggregator, rule_memory
from fljax.transforms import Transform, apply_rows, chain


def compose(*transforms: Transform, aggregator: Aggregator) -> Aggregator:
    """An aggregator that runs per-client ``transforms`` before ``aggregator``.

    Each transform is written for one client's ``float[d]`` update (see
    :mod:`fljax.transforms`); they are chained left to right and vmapped over
    the rows with one key per client (:func:`fljax.transforms.apply_rows`).
    The key passed to ``aggregate`` is split in two: one half for the
    transforms, one for the rule. The state, ``init`` and ``info`` are the
    rule's.

    Args:
      *transforms: per-client transforms, e.g. ``clip_by_norm(3.0)``,
        ``gaussian_noise(0.01)``.
      aggregator: the rule that receives the transformed rows (keyword-only).

    Returns:
      An :class:`Aggregator`; with no transforms, ``aggregator`` itself.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from fljax.aggregators.mean import mean
      >>> from fljax.transforms import clip_by_norm
      >>> agg = compose(clip_by_norm(1.0), aggregator=mean())
      >>> out, _, _ = agg.aggregate(jnp.array([[3., 4.], [0., 0.5]]), agg.init(2),
      ...                           jax.random.PRNGKey(0))
      >>> [round(v, 4) for v in out.tolist()]
      [0.3, 0.65]
    """
    if not transforms:
        return aggregator
    transform = chain(*transforms)

    def aggregate(updates, state, key, context=None):
        k_transform, k_rule = jax.random.split(key)
        updates = apply_rows(transform, updates, k_transform)  # float[n, d]
        return aggregator.aggregate(updates, state, k_rule, context)

    def memory(n, d, itemsize):  # the transformed copy of the rows, then the rule's own
        return n * d * itemsize + rule_memory(aggregator, n, d, itemsize)

    return Aggregator(aggregator.init, aggregate, memory=memory)
