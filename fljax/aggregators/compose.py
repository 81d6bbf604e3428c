"""Pre-aggregation stage: per-client transforms and pre-aggregators, then a rule.

References:
  optax ``experimental/_aggregating.py`` (``process(preprocessor,
  aggregator, postprocessor)``), the pattern this follows.
"""

from __future__ import annotations

import jax

from fljax.aggregators.base import Aggregator, PreAggregator, rule_memory
from fljax.transforms import Transform, apply_rows, chain


def compose(*stages, aggregator: Aggregator) -> Aggregator:
    """An aggregator that runs ``stages`` left to right, then ``aggregator``.

    A stage is either

    * a per-client transform (see :mod:`fljax.transforms`), written for one
      client's ``float[d]`` update and vmapped over the rows with one key per
      client (:func:`fljax.transforms.apply_rows`); consecutive transforms are
      chained; or
    * a :class:`~fljax.aggregators.base.PreAggregator` (``nnm``, ``bucketing``,
      ``arc``), which maps the whole ``float[n, d]`` matrix to ``float[m, d]``
      and may change the context the next stage sees (bucketing drops the
      per-row weights and client ids).

    The key passed to ``aggregate`` is split in two: one half for the stages
    (split again per stage when there is a pre-aggregator), one for the rule.
    The state and ``init`` are the rule's; ``info`` is the rule's, plus each
    pre-aggregator's entries as ``'<name>/<key>'``.

    Args:
      *stages: transforms and pre-aggregators, e.g. ``clip_by_norm(3.0)``,
        ``nnm(2)``.
      aggregator: the rule that receives the transformed rows (keyword-only).

    Returns:
      An :class:`Aggregator`; with no stages, ``aggregator`` itself.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from fljax.aggregators.mean import mean
      >>> from fljax.transforms import clip_by_norm
      >>> agg = compose(clip_by_norm(1.0), aggregator=mean())
      >>> out, _, _ = agg.aggregate(jnp.array([[3., 4.], [0., 0.5]]), agg.init(2),
      ...                           jax.random.PRNGKey(0))
      >>> [round(v, 4) for v in out.tolist()]
      [0.3, 0.65]
      >>> from fljax.aggregators.nnm import nnm
      >>> agg = compose(nnm(1), aggregator=mean(weighted=False))
      >>> out, _, _ = agg.aggregate(jnp.array([[1., 2.], [4., 5.], [7., 8.]]), agg.init(2),
      ...                           jax.random.PRNGKey(0))
      >>> out.tolist()
      [3.5, 4.5]
    """
    if not stages:
        return aggregator
    if not any(isinstance(s, PreAggregator) for s in stages):
        # Per-client transforms only: one chain, one vmap (and the same keys as before
        # pre-aggregators existed, so results of such configs are unchanged).
        transform = chain(*stages)

        def aggregate(updates, state, key, context=None):
            k_transform, k_rule = jax.random.split(key)
            updates = apply_rows(transform, updates, k_transform)  # float[n, d]
            return aggregator.aggregate(updates, state, k_rule, context)

        return Aggregator(aggregator.init, aggregate)

    groups: list = []  # PreAggregator or a list of consecutive transforms
    for s in stages:
        if isinstance(s, PreAggregator):
            groups.append(s)
        elif callable(s):
            if groups and isinstance(groups[-1], list):
                groups[-1].append(s)
            else:
                groups.append([s])
        else:
            raise TypeError(f"compose: a stage must be a transform or a PreAggregator, got {s!r}")
    groups = [g if isinstance(g, PreAggregator) else chain(*g) for g in groups]

    def aggregate(updates, state, key, context=None):
        k_stages, k_rule = jax.random.split(key)
        keys = jax.random.split(k_stages, len(groups))
        pre_info = {}
        for g, k in zip(groups, keys):
            if isinstance(g, PreAggregator):
                updates, context, info = g.apply(updates, k, context)
                pre_info.update({f"{g.name}/{name}": v for name, v in info.items()})
            else:
                updates = apply_rows(g, updates, k)
        out, state, info = aggregator.aggregate(updates, state, k_rule, context)
        return out, state, {**pre_info, **info}

    def memory(n, d, itemsize):  # the transformed copy of the rows, then the rule's own
        return n * d * itemsize + rule_memory(aggregator, n, d, itemsize)

    return Aggregator(aggregator.init, aggregate, memory=memory)
