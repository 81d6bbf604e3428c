"""ERR / LFR (``fljax/aggregators/_rejection.py``): the parts the mutation run
of 2026-11-30 found untested. Each test's docstring names the mutants it kills
(docs/testing.md, the ``_rejection.py`` paragraph)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax.aggregators._rejection import mean_and_leave_one_out
from fljax.aggregators.base import AggregationContext
from tests.aggregators.model_rules_test import _linear_task, _run


def _rows(seed, n=7, d=5):
    _, _, w_true = _linear_task()
    rng = np.random.default_rng(seed)
    return (w_true + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


def test_a_wrapped_rule_is_that_rule_and_num_reject_zero_keeps_all():
    """LFR around the trimmed mean with ``num_reject = 0`` is the trimmed mean
    of every row (one row far out, so it differs from the mean).

    Catches: the wrapped rule dropped for the mean (``base_agg = base`` ->
    ``None``), ``num_reject = 0`` refused (``>= 0`` -> ``> 0``, ``>= 1``).
    """
    eval_fn, _, _ = _linear_task()
    x = _rows(30)
    x[3] = 25.0
    agg = A.lfr(eval_fn=eval_fn, num_reject=0, base=A.trimmed_mean(1))
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(5)))
    assert bool(np.all(info["accepted"]))
    s = np.sort(x.astype(np.float64), axis=0)[1:-1]
    np.testing.assert_allclose(out, s.mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out, x.mean(0), rtol=1e-2)


@pytest.mark.parametrize("rule,metric", [("err", 0), ("lfr", 1)])
def test_client_weights_reach_the_output_and_metric_full(rule, metric):
    """With client weights (example counts) and nothing rejected, the output
    is the weighted mean, and ``info["metric_full"]`` is the metric of the
    model made from it.

    Catches: the weights ignored (``context is not None`` -> ``is None``),
    ``metric_full`` read from a leave-one-out candidate (``[0]`` -> ``[1]``)
    or renamed.
    """
    eval_fn, eval_np, _ = _linear_task()
    x = _rows(31)
    w = np.array([1, 9, 2, 30, 4, 1, 3], np.float32)
    agg = getattr(A, rule)(eval_fn=eval_fn, num_reject=0)
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(5), weights=jnp.asarray(w)))
    want = (w[:, None] * x.astype(np.float64)).sum(0) / w.sum()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(info["metric_full"]), eval_np(want)[metric], rtol=1e-4,
                               atol=1e-6)


def test_the_smallest_settings_are_accepted_and_the_message_gives_the_bound():
    """``n = 2`` with ``num_reject = n - 1 = 1`` runs (the one kept row is the
    output); ``num_reject = n`` fails with the bound ``n - 1`` in its message.

    Catches: ``n >= 2`` -> ``n > 2`` / ``n >= 3``, ``num_reject <= n - 1`` ->
    ``< n - 1`` / ``<= n - 2``, the message's bound ``{n - 1}`` -> ``{n + 1}``
    / ``{n - 2}``.
    """
    eval_fn, _, _ = _linear_task()
    x = _rows(32, n=2)
    x[1] = -3.0 * x[1]  # the harmful one
    out, _, info = _run(A.err(eval_fn=eval_fn, num_reject=1), x,
                        AggregationContext(params=jnp.zeros(5)))
    assert np.asarray(info["accepted"]).tolist() == [True, False]
    np.testing.assert_allclose(out, x[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"n - 1 = 2 "):
        _run(A.lfr(eval_fn=eval_fn, num_reject=3), _rows(33, n=3),
             AggregationContext(params=jnp.zeros(5)))


@pytest.mark.parametrize("big", [1e30, 3e38])
def test_leave_one_out_means_stay_exact_beside_a_dominant_row(big):
    """``mean_and_leave_one_out`` against float64: the mean and every
    leave-one-out mean, with one row ``big`` times the others (and weights),
    to float32 accuracy of each mean's own scale. The mean without the big row
    is the small rows' mean, which the closed form ``(S - w_i x_i) / (W - w_i)``
    would lose entirely: only the product form keeps it.

    Catches: the dominance test turned off (``p * max|x|`` -> ``p / max|x|``,
    ``sum - mass`` -> ``sum + mass``), the product form counting the left-out
    row (its diagonal ``0.0`` -> ``1.0``) or dividing by the remaining weight
    instead of multiplying by its inverse (``p * inv_rest`` -> ``p / inv_rest``).
    """
    rng = np.random.default_rng(34)
    n, d = 6, 4
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[2] = np.float32(big) * np.sign(rng.standard_normal(d)).astype(np.float32)
    w = np.array([1, 2, 3, 1, 2, 3], np.float32)
    valid = np.ones(n, bool)
    got = np.asarray(jax.jit(mean_and_leave_one_out)(
        jnp.asarray(x), jnp.asarray(w), jnp.asarray(valid), jnp.max(jnp.abs(x), axis=1)))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    want = [(w64[:, None] * x64).sum(0) / w64.sum()]
    for i in range(n):
        keep = np.arange(n) != i
        want.append((w64[keep, None] * x64[keep]).sum(0) / w64[keep].sum())
    for row, (g, e) in enumerate(zip(got, want)):
        scale = np.max(np.abs(e))
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * scale, err_msg=f"row {row}")


def test_a_wrapped_rule_never_sees_the_screened_rows():
    """Two finite rows near float32's largest make every candidate model
    unscorable; they are screened, and the candidates are rebuilt without
    them: a wrapped rule (here the mean as an Aggregator, which screens NaN)
    must get them as NaN, so the harmful row is rejected third and the result
    is the mean of the five honest rows.

    Catches: the rebuilt candidates handing the wrapped rule the screened rows
    as they are (``candidates(usable, True)`` -> ``False``: every candidate
    stays unscorable, the key picks what is kept).
    """
    eval_fn, _, w_true = _linear_task()
    rng = np.random.default_rng(20)
    honest = np.delete(np.arange(8), [2, 4, 6])
    x = (w_true + 0.3 * rng.standard_normal((8, 5))).astype(np.float32)
    x[[2, 6]] = np.float32(3e38)
    x[4] = -3.0 * w_true  # harmful: the third rejection, chosen by the rebuilt candidates
    agg = A.lfr(eval_fn=eval_fn, num_reject=3, base=A.mean())
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(5)))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(info["accepted"])), honest)
    assert int(info["num_unscorable"]) == 2
    np.testing.assert_allclose(out, x[honest].astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)



def test_a_stateful_wrapped_rule_sees_each_rows_client():
    """LFR around FoolsGold (histories per client, clients 7, 2, 9, 0, 4, 5 of
    10, a history from an earlier round): every leave-one-out candidate is
    FoolsGold on the other rows *with their client ids*, and the output is
    FoolsGold on the kept rows; impacts equal the losses of those candidates.

    Catches: the subsets' client ids dropped (``ids = None`` in ``_subset``:
    FoolsGold would read rows as clients 0..n-2, or refuse the call).
    """
    eval_fn, _, _ = _linear_task()
    fg = A.foolsgold(10, normalize=True)
    ids = np.array([7, 2, 9, 0, 4, 5], np.int32)
    x = _rows(36, n=6)
    x[1] = -3.0 * x[1]
    earlier = _rows(37, n=6)
    key = jax.random.PRNGKey(0)

    def fg_on(rows, state):
        ctx = AggregationContext(params=jnp.zeros(5), client_ids=jnp.asarray(ids[rows]))
        return jax.jit(fg.aggregate)(jnp.asarray(x[rows]), state, key, ctx)

    state = jax.jit(fg.aggregate)(jnp.asarray(earlier), fg.init(5), key, AggregationContext(
        client_ids=jnp.asarray(ids)))[1]
    agg = A.lfr(eval_fn=eval_fn, num_reject=1, base=fg)
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(5),
                                                   client_ids=jnp.asarray(ids)), state=state)
    loss = lambda v: float(eval_fn(jnp.asarray(v))[1])  # noqa: E731
    everyone = loss(fg_on(np.arange(6), state)[0])
    impact = [everyone - loss(fg_on(np.delete(np.arange(6), i), state)[0]) for i in range(6)]
    np.testing.assert_allclose(np.asarray(info["impact"]), impact, rtol=1e-4, atol=1e-6)
    kept = np.flatnonzero(np.asarray(info["accepted"]))
    assert len(kept) == 5
    np.testing.assert_allclose(out, fg_on(kept, state)[0], rtol=1e-5, atol=1e-6)


def test_err_and_lfr_name_themselves_in_errors():
    """Catches the rule's name left out of (or wrong in) a build error."""
    fn = lambda p: (jnp.float32(0.0), jnp.float32(0.0))  # noqa: E731
    for make, name in ((A.err, "err"), (A.lfr, "lfr")):
        with pytest.raises(ValueError, match=rf"^{name}: num_reject=-1 must be an int >= 0$"):
            make(fn, -1)
