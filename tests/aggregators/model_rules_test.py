"""Focused tests of the model-aware and stateful rules against float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators as A
from fljax import transforms as T
from fljax.aggregators import AggregationContext
from tests.aggregators import model_references as ref

KEY = jax.random.PRNGKey(0)


def _run(agg, updates, context=None, key=KEY, state=None):
    updates = jnp.asarray(updates, jnp.float32)
    if state is None:
        state = agg.init(updates.shape[1])
    return jax.jit(agg.aggregate)(updates, state, key, context)


def _honest(rng, n, d, center=1.0, spread=0.1):
    direction = np.ones(d) * center
    return direction + spread * rng.standard_normal((n, d))


def _with_nonfinite(x, rows=(0, 2)):
    x = np.array(x, np.float32)
    x[rows[0], 1] = np.nan
    x[rows[1], 0] = np.inf
    return x


# ---------------------------------------------------------------- FLTrust

def _server_fn(target):
    target = jnp.asarray(target, jnp.float32)
    return lambda params, key: target - params  # pulls towards `target`


def test_fltrust_matches_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5))
    params = rng.standard_normal(5)
    target = params + rng.standard_normal(5)
    agg = A.fltrust(server_update_fn=_server_fn(target))
    out, _, info = _run(agg, x, AggregationContext(params=jnp.asarray(params, jnp.float32)))
    expected = ref.fltrust(x, target - params)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert int(info["num_nonfinite"]) == 0


def test_fltrust_small_trust_bad_server_update_huge_rows_and_info():
    """Trust scores summing below 1 are still normalised by their sum; a
    non-finite server-update coordinate counts as 0; rows that are all huge
    (every row rescaled) give the same result as the rows themselves
    (FLTrust is blind to magnitude); ``info`` reports the normalised
    ``weights``, ``accepted = trust > 0`` and the server update's norm.

    Catches: the normalisation skipped below a total of 1 (``total > 1``),
    a NaN server coordinate read as 1, the scaled pass skipped when every
    row needs it (``scale == 1``), the ``weights`` / ``server_update_norm``
    info renamed, ``accepted`` as ``trust > 1``.
    """
    x = np.array([[1.0, 1.0, 0.0], [0.2, 1.0, 0.0], [-1.0, 0.0, 0.0]], np.float32)
    ctx = AggregationContext(params=jnp.zeros(3, jnp.float32))
    g0 = np.array([2.0, 0.0, 0.0])
    cos = (x @ g0) / (np.linalg.norm(x, axis=1) * np.linalg.norm(g0))
    trust = np.maximum(cos, 0)
    assert 0 < trust.sum() < 1
    want = ((trust / trust.sum())[:, None] * x / np.linalg.norm(x, axis=1)[:, None]).sum(0) * 2.0
    np.testing.assert_allclose(want, ref.fltrust(x, g0), rtol=1e-6)
    for server in ([2.0, 0.0, 0.0], [2.0, 0.0, np.nan]):
        agg = A.fltrust(server_update_fn=lambda p, k, s=jnp.asarray(server, jnp.float32): s + p)
        out, _, info = _run(agg, x, ctx)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(info["weights"]), trust / trust.sum(), rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(info["accepted"]), [True, True, False])
        np.testing.assert_allclose(float(info["server_update_norm"]), 2.0, rtol=1e-6)
        # Every row's squares overflow, each with its own power-of-two scale.
        huge, _, _ = _run(agg, x * np.array([[1e30], [1e25], [1e28]], np.float32), ctx)
        np.testing.assert_allclose(np.asarray(huge), want, rtol=1e-5, atol=1e-7)


def test_fltrust_rejects_flipped_update():
    rng = np.random.default_rng(1)
    params = np.zeros(6)
    x = _honest(rng, 5, 6)
    x[3] = -10 * x[3]  # sign-flipped and scaled
    agg = A.fltrust(server_update_fn=_server_fn(np.ones(6)))
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(6)))
    assert not bool(info["accepted"][3])
    assert float(info["trust"][3]) == 0.0
    # Every accepted update is rescaled to ||g0|| = sqrt(6).
    assert np.linalg.norm(out) <= np.sqrt(6) + 1e-5
    np.testing.assert_allclose(out, ref.fltrust(np.delete(x, 3, 0), np.ones(6)), rtol=1e-5)


@pytest.mark.parametrize("factor", [1e-37, 1e30, 3e36])
def test_fltrust_is_blind_to_an_update_s_magnitude(factor):
    # ḡ_i = g_i / ‖g_i‖ · ‖g_0‖: scaling one update changes nothing, also when
    # its products with g_0 would flush to zero (1e-37) or overflow (3e36).
    rng = np.random.default_rng(3)
    x = _honest(rng, 5, 300).astype(np.float32)
    agg = A.fltrust(server_update_fn=_server_fn(np.ones(300)))
    ctx = AggregationContext(params=jnp.zeros(300))
    want, _, want_info = _run(agg, x, ctx)
    y = x.copy()
    y[2] *= np.float32(factor)
    got, _, info = _run(agg, y, ctx)
    np.testing.assert_allclose(info["trust"], want_info["trust"], rtol=1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fltrust_all_zero_trust_gives_zero_update():
    agg = A.fltrust(server_update_fn=_server_fn(np.ones(3)))
    out, _, info = _run(agg, -np.ones((4, 3)), AggregationContext(params=jnp.zeros(3)))
    np.testing.assert_array_equal(out, np.zeros(3))
    assert not bool(jnp.any(info["accepted"]))


def test_fltrust_screens_nonfinite_and_needs_params():
    rng = np.random.default_rng(2)
    x = _with_nonfinite(_honest(rng, 5, 4))
    agg = A.fltrust(server_update_fn=_server_fn(np.ones(4)))
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(4)))
    assert np.all(np.isfinite(out)) and int(info["num_nonfinite"]) == 2
    np.testing.assert_allclose(out, ref.fltrust(np.delete(x, [0, 2], 0), np.ones(4)), rtol=1e-5)
    with pytest.raises(ValueError, match="fltrust"):
        agg.aggregate(jnp.ones((3, 4)), agg.init(4), KEY, None)


# ---------------------------------------------------------------- FLAME

def test_flame_rejects_outlier_cluster_and_matches_reference():
    rng = np.random.default_rng(3)
    params = rng.standard_normal(8)
    x = _honest(rng, 7, 8, spread=0.2)
    x[:3] = -2.0 + 0.05 * rng.standard_normal((3, 8))  # a minority cluster
    for cluster_on, p in (("models", params), ("updates", None)):
        agg = A.flame(noise_lambda=0.0, cluster_on=cluster_on)
        ctx = AggregationContext(params=jnp.asarray(params, jnp.float32))
        out, _, info = _run(agg, x, ctx)
        expected, labels = ref.flame_no_noise(x, p)
        np.testing.assert_array_equal(np.asarray(info["labels"]) >= 0, labels >= 0)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(info["admitted"])[:3])
    assert np.all(np.asarray(info["admitted"])[3:])


def test_flame_small_rounds_edges_and_info():
    """Two rows (the smallest n) form the one cluster; three finite rows of
    five are exactly ``min_cluster_size`` and still clustered (the non-finite
    rows labelled -1, never counted); the default ``lambda`` is 0.001 (the
    reported ``noise_std`` is ``lambda * S``); with every row non-finite the
    result is exactly 0; with one finite row ``S`` is its norm.

    Catches: ``n > 2`` required, clustering only above ``min_cluster_size``
    (``>``) or from 3 rows, non-finite rows labelled +1 (counted in a
    cluster's size), another default ``lambda``, ``S`` with no finite row
    NaN or 1, ``S`` of one finite row 0, the ``num_admitted`` /
    ``noise_std`` info renamed.
    """
    quiet = A.flame(noise_lambda=0.0, cluster_on="updates")
    x2 = np.array([[1.0, 0.1], [1.0, 0.12]], np.float32)
    out, _, info = _run(quiet, x2)
    want, _ = ref.flame_clipped_mean(x2, np.array([True, True]))
    assert int(info["num_admitted"]) == 2
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5)
    x5 = np.array([[1.0, 0.1, 0.0], [np.nan, 0, 0], [1.0, 0.12, 0.01], [np.inf, 1, 1],
                   [1.1, 0.1, 0.0]], np.float32)
    out, _, info = _run(A.flame(cluster_on="updates"), x5)
    admitted = np.array([True, False, True, False, True])
    np.testing.assert_array_equal(np.asarray(info["admitted"]), admitted)
    np.testing.assert_array_equal(np.asarray(info["labels"])[[1, 3]], -1)
    assert int(info["num_admitted"]) == 3
    want, s = ref.flame_clipped_mean(x5, admitted)
    np.testing.assert_allclose(float(info["median_norm"]), s, rtol=1e-5)
    np.testing.assert_allclose(float(info["noise_std"]), 0.001 * s, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out), want, atol=0.02)  # the noise: std 0.001
    out, _, info = _run(A.flame(noise_lambda=0.01, cluster_on="updates"),
                        np.full((3, 2), np.nan, np.float32))
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    assert float(info["noise_std"]) == 0.0
    one = np.array([[3.0, 4.0], [np.nan, 0.0], [np.nan, 1.0]], np.float32)
    _, _, info = _run(A.flame(noise_lambda=0.01, cluster_on="updates"), one)
    np.testing.assert_allclose(float(info["noise_std"]), 0.05, rtol=1e-6)
    assert int(info["num_admitted"]) == 0


def test_flame_noise_scale_and_nonfinite():
    rng = np.random.default_rng(4)
    x = _with_nonfinite(_honest(rng, 6, 2000, spread=0.05))
    agg = A.flame(noise_lambda=0.01, cluster_on="updates")
    out, _, info = _run(agg, x)
    quiet, _, _ = _run(A.flame(noise_lambda=0.0, cluster_on="updates"), x)
    assert np.all(np.isfinite(out)) and int(info["num_nonfinite"]) == 2
    assert not bool(info["admitted"][0]) and not bool(info["admitted"][2])
    s = float(info["median_norm"])
    np.testing.assert_allclose(s, np.median(np.linalg.norm(np.delete(x, [0, 2], 0), axis=1)),
                               rtol=1e-5)
    np.testing.assert_allclose(np.std(np.asarray(out - quiet)), 0.01 * s, rtol=0.1)


def test_flame_vmaps_and_validates():
    """Under vmap every instance is clustered on its own (the HDBSCAN callback sees
    one instance's distances): each instance's admitted rows and value are its own
    (the reference run on that instance alone).

    Catches: a batched callback that clusters the stacked instances together or
    returns instance 0's labels for all (the old test checked the shape only).
    """
    rng = np.random.default_rng(5)
    x = 1.0 + 0.2 * rng.standard_normal((2, 7, 6))
    x[0, :3] = -2.0 + 0.05 * rng.standard_normal((3, 6))  # a different minority per instance
    x[1, 4:] = -2.0 + 0.05 * rng.standard_normal((3, 6))
    x = jnp.asarray(x, jnp.float32)
    keys = jax.random.split(KEY, 2)
    agg = A.flame(cluster_on="updates", noise_lambda=0.0)
    out, _, info = jax.jit(jax.vmap(lambda u, k: agg.aggregate(u, agg.init(6), k)))(x, keys)
    np.testing.assert_array_equal(info["admitted"], [[0, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    for i in range(2):
        np.testing.assert_allclose(out[i], ref.flame_no_noise(np.asarray(x[i]))[0],
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="flame"):
        A.flame(cluster_on="gradients")
    with pytest.raises(ValueError, match="flame"):
        A.flame().aggregate(jnp.ones((4, 3)), (), KEY, None)  # models need params


# ---------------------------------------------------------------- FoolsGold

def test_foolsgold_matches_reference_over_rounds():
    rng = np.random.default_rng(6)
    rounds = [rng.standard_normal((6, 5)) for _ in range(3)]
    for normalize in (False, True):
        agg = A.foolsgold(num_clients=6, normalize=normalize)
        state = agg.init(5)
        expected = ref.foolsgold_rounds(rounds, normalize=normalize)
        for x, e in zip(rounds, expected):
            out, state, _ = _run(agg, x, state=state)
            np.testing.assert_allclose(out, e, rtol=1e-4, atol=1e-5)


def test_foolsgold_downweights_sybils():
    rng = np.random.default_rng(7)
    agg = A.foolsgold(num_clients=8)
    state = agg.init(10)
    sybil = rng.standard_normal(10)
    for _ in range(3):
        x = rng.standard_normal((8, 10))
        x[5:] = sybil  # three identical sybils
        _, state, info = _run(agg, x, state=state)
    w = np.asarray(info["weights"])
    np.testing.assert_array_equal(w[5:], 0.0)
    assert np.all(w[:5] > 0.5)


def test_foolsgold_client_ids_partial_participation():
    rng = np.random.default_rng(8)
    agg = A.foolsgold(num_clients=10)
    state = agg.init(4)
    x = rng.standard_normal((3, 4))
    ids = jnp.array([7, 2, 9])
    _, state, _ = _run(agg, x, AggregationContext(client_ids=ids), state=state)
    np.testing.assert_allclose(state.history[jnp.array([7, 2, 9])], x, rtol=1e-6)
    assert float(jnp.abs(state.history[0]).sum()) == 0.0
    with pytest.raises(ValueError, match="foolsgold"):
        agg.aggregate(jnp.ones((3, 4)), state, KEY, None)  # no ids, n != num_clients
    with pytest.raises(ValueError, match="foolsgold"):
        A.foolsgold(num_clients=0)


def test_foolsgold_nonfinite_rows_keep_history_clean():
    rng = np.random.default_rng(9)
    agg = A.foolsgold(num_clients=5)
    x = _with_nonfinite(rng.standard_normal((5, 3)))
    out, state, info = _run(agg, x)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(state.history))
    assert float(info["weights"][0]) == 0.0 and int(info["num_nonfinite"]) == 2
    np.testing.assert_array_equal(np.asarray(state.history)[[0, 2]], 0.0)  # screened: add 0


def test_foolsgold_edge_cases_match_the_reference():
    """Against the reference loop: clients with no positive similarity to
    any other (their largest is the diagonal's ``cos(i, i) - 1``, 0 up to
    rounding: the pardon by a zero ``v_j`` is skipped, as documented), with
    ``kappa = 0.1`` (the logits stay inside (0, 1), the 0.99 substitution
    matters, weights sum below 1) and the default ``kappa``, a row marked
    invalid that duplicates a valid one (it takes no part), everyone a
    sybil (all weights 0, a zero result, never NaN), and the edges of the
    arguments.

    Catches: the pardon applied when ``v_j = 0`` or skipped when ``v_j = 1``,
    the 0.99 substitution dropped, invalid rows paired
    (``|`` for ``&``), an all-sybil round giving ones or NaN, the sum of the
    weights floored at 1, ``accepted`` not ``w > 0``, another default
    ``kappa``, ``foolsgold(1)`` or ``n == num_clients`` with ids refused,
    ``kappa = 0`` accepted.
    """
    from fljax.aggregators.foolsgold import foolsgold_weights as fw
    # kappa = 0.1 keeps the logits inside (0, 1), so every alpha shows.
    h = np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    want = ref.foolsgold_weights(h, kappa=0.1, skip_zero=True)
    np.testing.assert_allclose(np.asarray(fw(jnp.asarray(h), 0.1)), want, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(31)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    x[1] = x[0] + 0.05 * rng.standard_normal(5)  # a near sybil pair
    want = ref.foolsgold_weights(x)  # the default kappa = 1; one weight strictly inside (0, 1)
    assert np.any((want > 0) & (want < 1))
    np.testing.assert_allclose(np.asarray(fw(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)
    want = ref.foolsgold_weights(x, kappa=0.1)
    assert 0 < want.sum() < 1 and np.any(want == 0) and np.any(want > 0)
    out, _, info = _run(A.foolsgold(6, kappa=0.1), x)
    np.testing.assert_allclose(np.asarray(info["weights"]), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), want @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(info["accepted"]), want > 0)
    dup = np.concatenate([x[:4], x[3:4]])  # row 4 duplicates row 3 (weight 1) but is invalid
    valid = jnp.asarray([True] * 4 + [False])
    got = np.asarray(fw(jnp.asarray(dup), 1.0, valid))
    np.testing.assert_allclose(got[:4], ref.foolsgold_weights(x[:4]), rtol=1e-5, atol=1e-6)
    assert got[4] == 0.0
    same = np.tile(np.array([[2.0, 0.0, 0.0, 0.0, 0.0]], np.float32), (4, 1))  # all sybils
    # (cosines exactly 1: with rounding, 1 - cos > 0 and the normalisation by
    # the largest alpha makes everyone honest again, as in the reference)
    for normalize in (False, True):
        out, _, info = _run(A.foolsgold(4, normalize=normalize), same)
        np.testing.assert_array_equal(np.asarray(info["weights"]), 0.0)
        np.testing.assert_array_equal(np.asarray(out), 0.0)
    out, _, info = _run(A.foolsgold(1), x[:1])
    np.testing.assert_allclose(np.asarray(out), x[0], rtol=1e-6)  # alone: weight 1
    ctx = AggregationContext(client_ids=jnp.arange(6, dtype=jnp.int32))
    np.testing.assert_allclose(np.asarray(_run(A.foolsgold(6, kappa=0.1), x, ctx)[0]), want @ x,
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="kappa"):
        A.foolsgold(3, kappa=0.0)



def test_foolsgold_history_beyond_float32_keeps_its_direction():
    """A client sending a 3e38 update every round: its history overflows to ±inf,
    is read as ±float32's largest (same direction), and never turns NaN.

    Catches: reading the inf history as is: NaN cosines and zero weight to
    every client in every later round.
    """
    rng = np.random.default_rng(30)
    agg = A.foolsgold(num_clients=6, normalize=True)
    state = agg.init(4)
    history = np.zeros((6, 4))
    attack = np.float32(3e38) * np.array([1, -1, -1, 1], np.float32)
    for _ in range(3):
        x = rng.standard_normal((6, 4)).astype(np.float32)
        x[0] = attack
        history += x.astype(np.float64)
        out, state, info = _run(agg, x, state=state)
        assert not np.any(np.isnan(np.asarray(state.history))) and np.all(np.isfinite(out))
        # Saturation keeps the attacker's direction here (the same update each round).
        want = ref.foolsgold_weights(history)
        np.testing.assert_allclose(info["weights"], want, rtol=1e-4, atol=1e-5)
    assert float(jnp.sum(info["weights"])) > 0

# ---------------------------------------------------------------- ERR / LFR

def _linear_task(seed=10, m=64, d=5):
    """Logistic regression validation set; returns (eval_fn, numpy eval_fn, w_true)."""
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d)
    xv = rng.standard_normal((m, d))
    yv = (xv @ w_true > 0).astype(np.float64)

    def eval_np(w):
        z = xv @ w
        err = np.mean((z > 0) != (yv > 0))
        loss = np.mean(np.logaddexp(0, z) - yv * z)
        return err, loss

    xj, yj = jnp.asarray(xv, jnp.float32), jnp.asarray(yv, jnp.float32)

    def eval_fn(w):
        z = xj @ w
        err = jnp.mean((z > 0) != (yj > 0))
        loss = jnp.mean(jnp.logaddexp(0.0, z) - yj * z)
        return err, loss

    return eval_fn, eval_np, w_true


@pytest.mark.parametrize("rule,metric", [("err", 0), ("lfr", 1)])
def test_err_lfr_reject_the_most_harmful(rule, metric):
    eval_fn, eval_np, w_true = _linear_task()
    rng = np.random.default_rng(11)
    params = np.zeros(5)
    x = w_true + 0.3 * rng.standard_normal((6, 5))
    x[4] = -3.0 * w_true  # the harmful client
    agg = getattr(A, rule)(eval_fn=eval_fn, num_reject=1)
    ctx = AggregationContext(params=jnp.zeros(5))
    out, _, info = _run(agg, x, ctx)
    assert not bool(info["accepted"][4]) and int(jnp.sum(info["accepted"])) == 5
    expected, impact, _ = ref.loo_rejection(x, params, eval_np, 1, metric)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if metric == 1:  # the loss is smooth: impacts agree to float32 accuracy
        np.testing.assert_allclose(info["impact"], impact, rtol=1e-3, atol=1e-5)


def test_lfr_with_wrapped_rule_and_nonfinite():
    eval_fn, eval_np, w_true = _linear_task()
    rng = np.random.default_rng(12)
    x = (w_true + 0.3 * rng.standard_normal((7, 5))).astype(np.float32)
    x[5] = -3.0 * w_true
    x = _with_nonfinite(x, rows=(0, 2))
    ctx = AggregationContext(params=jnp.zeros(5))
    agg = A.lfr(eval_fn=eval_fn, num_reject=3, base=A.norm_clipping(10.0))
    out, _, info = _run(agg, x, ctx)
    accepted = np.asarray(info["accepted"])
    assert not accepted[[0, 2, 5]].any() and accepted.sum() == 4
    np.testing.assert_allclose(out, ref.norm_clipping(x[accepted], 10.0), rtol=1e-5)
    # The mean base: test_lfr_with_nonfinite_rows_is_lfr_on_the_finite_rows.


def test_lfr_with_nonfinite_rows_is_lfr_on_the_finite_rows():
    """Impacts and output equal the reference run on the five finite rows.

    Catches: non-finite rows keeping their weight in the candidate means
    (``jnp.where(usable, w, 0.0)`` -> ``w``: every impact shifts) or in the
    final mean (``accepted & usable`` -> ``accepted``: the output shrinks by
    the screened rows' share, ~17 % here).
    """
    eval_fn, eval_np, w_true = _linear_task()
    rng = np.random.default_rng(12)
    x = (w_true + 0.3 * rng.standard_normal((7, 5))).astype(np.float32)
    x[5] = -3.0 * w_true
    x = _with_nonfinite(x, rows=(0, 2))
    finite = np.flatnonzero(np.isfinite(x).all(1))
    ctx = AggregationContext(params=jnp.zeros(5))
    # A budget below the two screened rows: one stays "accepted" but out of the mean.
    out, _, info = _run(A.lfr(eval_fn=eval_fn, num_reject=1), x, ctx)
    want, impact, _ = ref.loo_rejection(x[finite], np.zeros(5), eval_np, 0, 1)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(info["impact"])[finite], impact, rtol=1e-3, atol=1e-5)
    assert int(info["num_nonfinite"]) == 2


@pytest.mark.parametrize("rule", ["err", "lfr"])
def test_err_lfr_screen_rows_whose_own_model_cannot_be_scored(rule):
    """Two finite rows near float32's largest: every candidate model's loss overflows.

    Their own models cannot be scored either, so they are screened like NaN
    rows; the result is the mean of the six honest rows (equal or random-signed
    attackers, 3e38 and float32's largest).

    Catches: unscorable metrics ranked as harmless (``NaN -> -inf``: ERR kept
    both attackers and rejected two honest rows, the output was inf), skipping
    the own-model screen (all impacts undetermined: the key picks), and means
    that sum before dividing (inf).
    """
    eval_fn, _, w_true = _linear_task()
    agg = getattr(A, rule)(eval_fn=eval_fn, num_reject=2)
    fn = jax.jit(agg.aggregate)
    rng = np.random.default_rng(20)
    honest = np.delete(np.arange(8), [2, 6])
    for kind in ("same", "signs"):
        for magnitude in (3e38, float(np.finfo(np.float32).max)):
            x = (w_true + 0.3 * rng.standard_normal((8, 5))).astype(np.float32)
            signs = np.sign(rng.standard_normal((2, 5))) if kind == "signs" else np.ones((2, 5))
            x[[2, 6]] = np.float32(magnitude) * signs
            out, _, info = fn(jnp.asarray(x), agg.init(5), KEY,
                              AggregationContext(params=jnp.zeros(5)))
            where = (kind, magnitude)
            np.testing.assert_array_equal(np.flatnonzero(np.asarray(info["accepted"])), honest,
                                          err_msg=str(where))
            assert int(info["num_unscorable"]) == 2 and int(info["num_nonfinite"]) == 0, where
            np.testing.assert_allclose(out, x[honest].astype(np.float64).mean(0), rtol=1e-5,
                                       atol=1e-6, err_msg=str(where))



@pytest.mark.parametrize("rule", ["err", "lfr"])
def test_err_lfr_unscorable_model_is_the_worst(rule):
    """A validation function that is NaN for 5 < w_0 < 50: the model with
    everyone (w_0 ~ 14) cannot be scored, the one without the attacker can,
    and the attacker's own model (w_0 = 100) can too, so nothing is screened.

    Catches: a NaN metric ranked as harmless (``-inf``): the attacker's impact
    became -inf and it was kept.
    """
    def eval_fn(w):
        bad = (w[0] > 5.0) & (w[0] < 50.0)
        value = jnp.sum(jnp.square(w))
        return jnp.where(bad, jnp.nan, value / (1.0 + value)), jnp.where(bad, jnp.nan, value)

    x = np.full((7, 3), 0.1, np.float32) + np.arange(7, dtype=np.float32)[:, None] / 100
    x[3, 0] = 100.0
    agg = getattr(A, rule)(eval_fn=eval_fn, num_reject=1)
    out, _, info = _run(agg, x, AggregationContext(params=jnp.zeros(3)))
    assert not bool(info["accepted"][3]) and int(info["num_unscorable"]) == 0
    assert float(info["impact"][3]) == np.inf
    np.testing.assert_allclose(out, np.delete(x, 3, 0).astype(np.float64).mean(0), rtol=1e-6)

def test_lfr_rejects_huge_rows_whose_loss_stays_finite():
    """Two equal rows at 1e30: the logistic loss stays finite, so nothing is
    screened; the loss impacts alone reject them (leaving one out divides the
    attack by ~2), as in the float64 reference."""
    eval_fn, eval_np, w_true = _linear_task()
    rng = np.random.default_rng(21)
    x = (w_true + 0.3 * rng.standard_normal((8, 5))).astype(np.float32)
    x[[0, 5]] = np.float32(1e30) * np.sign(rng.standard_normal(5))
    out, _, info = _run(A.lfr(eval_fn=eval_fn, num_reject=2), x,
                        AggregationContext(params=jnp.zeros(5)))
    assert int(info["num_unscorable"]) == 0
    _, impact, kept = ref.loo_rejection(x, np.zeros(5), eval_np, 2, 1)
    assert kept == [1, 2, 3, 4, 6, 7]
    np.testing.assert_allclose(info["impact"], impact, rtol=1e-4)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(info["accepted"])), [1, 2, 3, 4, 6, 7])
    np.testing.assert_allclose(out, np.delete(x, [0, 5], 0).astype(np.float64).mean(0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("magnitude", [1e3, 1e12, 1e30, 3e38])
def test_leave_one_out_means_exact_under_one_dominant_row(magnitude):
    """The mean without a row that dwarfs the others is the others' mean, to float32 accuracy.

    Catches: the closed form ``(S - w_i x_i) / (W - w_i)`` used unguarded
    (``DOMINANCE = inf``): it cancels every digit of the other rows (at 1e30
    the honest mean came out as ~1e23 noise).
    """
    from fljax.aggregators import _rejection

    rng = np.random.default_rng(22)
    x = rng.standard_normal((6, 40)).astype(np.float32)
    x[3] = np.float32(magnitude) * np.sign(rng.standard_normal(40))
    w = np.arange(1.0, 7.0, dtype=np.float32)
    valid = np.ones(6, bool)
    got = np.asarray(jax.jit(_rejection.mean_and_leave_one_out)(
        jnp.asarray(x), jnp.asarray(w), jnp.asarray(valid), jnp.max(jnp.abs(jnp.asarray(x)), 1)))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(got[0], w64 @ x64 / w64.sum(), rtol=1e-5, atol=1e-6 * magnitude)
    for i in range(6):
        keep = np.delete(np.arange(6), i)
        want = w64[keep] @ x64[keep] / w64[keep].sum()
        scale = np.max(np.abs(x64[keep]))  # float32 can do no better than eps * this
        np.testing.assert_allclose(got[1 + i], want, rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f"without row {i}")


@pytest.mark.parametrize("rule", ["err", "lfr"])
def test_err_lfr_break_ties_with_the_key(rule):
    """Identical rows tie on every impact: which ones are rejected follows the key.

    Catches: a stable argsort by impact (rows 4 and 5 were rejected for every
    key, the README said ties follow the key).
    """
    eval_fn, _, _ = _linear_task()
    agg = getattr(A, rule)(eval_fn=eval_fn, num_reject=2)
    ctx = AggregationContext(params=jnp.zeros(5))
    x = np.ones((6, 5), np.float32)
    rejected = set()
    for seed in range(8):
        _, _, info = _run(agg, x, ctx, key=jax.random.PRNGKey(seed))
        rejected.add(tuple(np.flatnonzero(~np.asarray(info["accepted"]))))
    assert len(rejected) > 3, rejected


def test_err_validates():
    eval_fn, _, _ = _linear_task()
    with pytest.raises(ValueError, match="err"):
        A.err(eval_fn=eval_fn, num_reject=-1)
    with pytest.raises(ValueError, match="lfr"):
        A.lfr(eval_fn=eval_fn, num_reject=1, base="median")
    agg = A.err(eval_fn=eval_fn, num_reject=4)
    with pytest.raises(ValueError, match="num_reject=4"):
        agg.aggregate(jnp.ones((4, 5)), agg.init(5), KEY, AggregationContext(params=jnp.zeros(5)))
    with pytest.raises(ValueError, match="context.params"):
        A.err(eval_fn=eval_fn, num_reject=1).aggregate(jnp.ones((4, 5)), (), KEY)


# ---------------------------------------------------------------- robust LR

def test_robust_lr_threshold_edges_weights_and_exact_agreement():
    """``threshold = 0`` (nothing flips) and ``threshold = n`` (only unanimous
    coordinates keep their sign) are accepted; a coordinate whose agreement
    equals the threshold is not flipped (nor counted in
    ``flipped_fraction``); client weights weight the mean.

    Catches: ``threshold >= 0`` tightened (``> 0``, ``>= 1``), ``threshold <=
    n`` tightened to ``<``, ``agreement <= threshold`` in the info, the
    weights dropped.
    """
    x = np.array([[1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32)
    agree = np.abs(np.sign(x).sum(0))  # 3, 1, 1
    out, _, info = _run(A.robust_lr(threshold=0), x)
    np.testing.assert_allclose(np.asarray(out), x.mean(0), rtol=1e-6)
    assert float(info["flipped_fraction"]) == 0.0
    out, _, info = _run(A.robust_lr(threshold=3), x)
    np.testing.assert_allclose(np.asarray(out), x.mean(0) * np.where(agree >= 3, 1, -1), rtol=1e-6)
    assert float(info["flipped_fraction"]) == pytest.approx(2 / 3)
    _, _, info = _run(A.robust_lr(threshold=1), x)  # agreement exactly 1 on two coordinates
    assert float(info["flipped_fraction"]) == 0.0
    w = np.array([1.0, 2.0, 3.0], np.float32)
    out, _, _ = _run(A.robust_lr(threshold=0), x, AggregationContext(weights=jnp.asarray(w)))
    np.testing.assert_allclose(np.asarray(out), w @ x / w.sum(), rtol=1e-6)


def test_robust_lr_flips_low_agreement_coordinates():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((9, 12))
    x[:, :4] = np.abs(x[:, :4])  # unanimous coordinates keep their sign
    out, _, info = _run(A.robust_lr(threshold=4), x)
    np.testing.assert_allclose(out, ref.robust_lr(x, 4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:4], x[:, :4].mean(0), rtol=1e-5)
    agree = np.abs(np.sign(x).sum(0))
    assert float(info["flipped_fraction"]) == pytest.approx(np.mean(agree < 4))
    xn = _with_nonfinite(x)
    out, _, info = _run(A.robust_lr(threshold=3, server_lr=0.5), xn)
    np.testing.assert_allclose(out, ref.robust_lr(np.delete(xn, [0, 2], 0), 3, 0.5), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="robust_lr: threshold=10 exceeds n=9"):
        _run(A.robust_lr(threshold=10), x)
    with pytest.raises(ValueError, match="robust_lr"):
        A.robust_lr(threshold=-1)


# ---------------------------------------------------------------- clipping / weak DP

def test_norm_clipping_matches_reference_and_screens():
    rng = np.random.default_rng(14)
    x = 3 * rng.standard_normal((6, 4))
    x[1] *= 1e30  # huge but finite: clipped, not overflowing
    out, _, info = _run(A.norm_clipping(2.0), x)
    np.testing.assert_allclose(out, ref.norm_clipping(x, 2.0), rtol=1e-5, atol=1e-6)
    xn = _with_nonfinite(x)
    out, _, info = _run(A.norm_clipping(2.0), xn)
    np.testing.assert_allclose(out, ref.norm_clipping(np.delete(xn, [0, 2], 0), 2.0), rtol=1e-5)
    assert int(info["num_nonfinite"]) == 2
    with pytest.raises(ValueError, match="norm_clipping"):
        A.norm_clipping(0.0)


def test_norm_clipping_one_finite_row_and_its_info_dense_and_streamed():
    """One finite row among non-finite ones is the result, clipped (divided
    by the one finite row, not by 2); ``norms`` are the rows' norms (0 for
    non-finite rows), ``clipped`` flags finite rows strictly above the bound
    (a row exactly on it is not clipped), on the matrix and streamed.

    Catches: ``max(m, 1)`` -> ``max(m, 2)`` (dense or streamed), non-finite
    rows flagged as clipped (``finite | ...``), ``>=`` for ``>``, norms
    reported as ``scale / base`` or as 1 for non-finite rows.
    """
    x = np.array([[3.0, 4.0], [np.nan, 1.0], [np.inf, 0.0]], np.float32)
    rule = A.norm_clipping(1.0)
    out, _, info = _run(rule, x)
    np.testing.assert_allclose(np.asarray(out), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(info["norms"]), [5.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(info["clipped"]), [True, False, False])
    assert int(info["num_nonfinite"]) == 2
    st = rule.stream
    acc, row_info = st.add(st.zero(2, jnp.float32), jnp.asarray(x), jnp.ones(3), jnp.ones(3, bool))
    out_s, _, info_s = st.finish(acc, row_info, None, KEY)
    np.testing.assert_allclose(np.asarray(out_s), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(info_s["clipped"]), [True, False, False])
    np.testing.assert_allclose(np.asarray(info_s["norms"]), [5.0, 0.0, 0.0], rtol=1e-6)
    edge = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)  # norms exactly 1 (the bound) and 0.5
    for clipped in (_run(rule, edge)[2]["clipped"],
                    st.add(st.zero(2, jnp.float32), jnp.asarray(edge), jnp.ones(2),
                           jnp.ones(2, bool))[1]["clipped"]):
        np.testing.assert_array_equal(np.asarray(clipped), [False, False])


@pytest.mark.parametrize("placement,n", [("sum", 5), ("average", 5), ("sum", 10)])
def test_weak_dp_noise_placement_variance(placement, n):
    rng = np.random.default_rng(15)
    d, sigma = 20000, 0.5
    x = rng.standard_normal((n, d)) * 0.01
    out, _, info = _run(A.weak_dp(max_norm=100.0, sigma=sigma, placement=placement), x)
    noise = np.asarray(out, np.float64) - x.mean(0)
    expected_std = sigma / n if placement == "sum" else sigma
    # std of a 20000-sample Gaussian: relative error ~ 1/sqrt(2d) = 0.5 %.
    assert np.std(noise) == pytest.approx(expected_std, rel=0.03)
    assert abs(np.mean(noise)) < 4 * expected_std / np.sqrt(d)
    assert float(info["noise_std"]) == pytest.approx(expected_std)


@pytest.mark.parametrize("placement", ["sum", "average"])
def test_weak_dp_one_finite_row_info_and_both_forms(placement):
    """Without noise, weak DP is the clipped mean in either placement: one
    finite row among non-finite ones is the result (divided by 1), two rows
    are averaged; ``info`` reports the rows' norms (0 for non-finite rows),
    ``clipped`` strictly above the bound, the noise std reaching the result
    (``sigma / m`` for 'sum', ``sigma`` for 'average'); the streamed form
    gives the same, noise included (drawn once from the same key);
    ``max_norm = 0`` is refused.

    Catches: ``max(m, 2)``, ``total * m`` for ``total / m``, non-finite rows
    flagged as clipped, ``>=`` for ``>``, renamed info keys, the streamed
    ``finish`` reading the wrong accumulator or miscounting the rows.
    """
    x = np.array([[3.0, 4.0], [np.nan, 1.0], [np.inf, 0.0]], np.float32)
    quiet = A.weak_dp(1.0, 0.0, placement=placement)
    out, _, info = _run(quiet, x)
    np.testing.assert_allclose(np.asarray(out), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(info["norms"]), [5.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(info["clipped"]), [True, False, False])
    assert int(info["num_nonfinite"]) == 2 and float(info["noise_std"]) == 0.0
    two = np.array([[3.0, 4.0], [0.0, 0.5]], np.float32)
    np.testing.assert_allclose(np.asarray(_run(quiet, two)[0]), [0.3, 0.65], rtol=1e-6)
    edge = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)  # a norm exactly on the bound
    np.testing.assert_array_equal(np.asarray(_run(quiet, edge)[2]["clipped"]), [False, False])
    rule = A.weak_dp(1.0, 0.3, placement=placement)
    rows = np.concatenate([two, x[1:]])  # two finite rows, two non-finite
    out, _, info = _run(rule, rows)
    st = rule.stream
    acc, row_info = st.add(st.zero(2, jnp.float32), jnp.asarray(rows), jnp.ones(4),
                           jnp.ones(4, bool))
    out_s, _, info_s = st.finish(acc, row_info, None, KEY)
    np.testing.assert_allclose(np.asarray(out_s), np.asarray(out), rtol=1e-6)
    want_std = 0.3 / 2 if placement == "sum" else 0.3
    for i in (info, info_s):
        np.testing.assert_allclose(float(i["noise_std"]), want_std, rtol=1e-6)
        assert int(i["num_nonfinite"]) == 2
        np.testing.assert_allclose(np.asarray(i["norms"]), [5.0, 0.5, 0.0, 0.0], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(i["clipped"]), [True, False, False, False])
    with pytest.raises(ValueError, match="max_norm"):
        A.weak_dp(0.0, 0.1)


def test_weak_dp_no_noise_is_norm_clipping_and_validates():
    rng = np.random.default_rng(16)
    x = _with_nonfinite(rng.standard_normal((5, 3)))
    out, _, _ = _run(A.weak_dp(max_norm=1.0, sigma=0.0), x)
    np.testing.assert_allclose(out, ref.norm_clipping(np.delete(x, [0, 2], 0), 1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="weak_dp"):
        A.weak_dp(1.0, 0.1, placement="model")


# ---------------------------------------------------------------- centered clipping

def test_centered_clipping_state_carries_over():
    rng = np.random.default_rng(17)
    rounds = [rng.standard_normal((5, 4)) + 3.0 for _ in range(3)]
    agg = A.centered_clipping(tau=1.0, iters=2)
    state = agg.init(4)
    expected = ref.centered_clipping_rounds(rounds, 1.0, 2)
    for x, e in zip(rounds, expected):
        out, state, _ = _run(agg, x, state=state)
        np.testing.assert_allclose(out, e, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.center, out)
    # A fresh state gives a different (smaller) first step.
    fresh, _, _ = _run(agg, rounds[2])
    assert not np.allclose(fresh, expected[2])


def test_centered_clipping_steps_flags_and_one_finite_row():
    """The default is one clipping step; ``clipped`` are the flags of the
    LAST of several steps (here they change at every step) and only of
    finite rows; a row exactly at distance ``tau`` is not clipped; one
    finite row moves the centre by its own clipped difference; ``tau = 0``
    is refused.

    Catches: another default ``iters``, the first or middle step's flags
    (``was_clipped[-2]``, ``[+1]``), NaN rows flagged (``finite | ...``),
    ``>=`` for ``>``, the distance as ``scale / base``, ``max(m, 2)``,
    ``tau >= 0`` accepted.
    """
    x = np.array([[10.0, 0.0], [1.05, 0.0], [0.0, 0.8], [np.nan, 0.0]], np.float32)
    for iters in (1, 2, 3):
        want, flags = ref.centered_clipping_steps(x, 1.0, iters)
        rule = A.centered_clipping(1.0) if iters == 1 else A.centered_clipping(1.0, iters)
        out, _, info = _run(rule, x)
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5)
        assert flags[-1][1] > 1e-2  # no distance near tau: the flags are robust
        np.testing.assert_array_equal(np.asarray(info["clipped"]), flags[-1][0])
    assert [f.tolist() for f, _ in ref.centered_clipping_steps(x, 1.0, 3)[1]] == [
        [True, True, False, False], [True, False, False, False], [True, False, True, False]]
    edge = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)  # distances 1 (= tau) and 0.5
    np.testing.assert_array_equal(np.asarray(_run(A.centered_clipping(1.0), edge)[2]["clipped"]),
                                  [False, False])
    one = np.array([[3.0, 4.0], [np.inf, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(_run(A.centered_clipping(1.0), one)[0]), [0.6, 0.8],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="tau"):
        A.centered_clipping(0.0)


def test_centered_clipping_nonfinite_and_validates():
    x = _with_nonfinite(np.ones((4, 3)))
    out, _, info = _run(A.centered_clipping(tau=10.0), x)
    np.testing.assert_allclose(out, np.ones(3), rtol=1e-6)
    assert int(info["num_nonfinite"]) == 2
    with pytest.raises(ValueError, match="centered_clipping"):
        A.centered_clipping(1.0, iters=0)


# ---------------------------------------------------------------- compose

def test_compose_applies_per_client_transforms_first():
    rng = np.random.default_rng(18)
    x = rng.standard_normal((6, 5)) * 4
    agg = A.compose(T.clip_by_norm(1.0), aggregator=A.mean())
    out, _, _ = _run(agg, x)
    np.testing.assert_allclose(out, ref.norm_clipping(x, 1.0), rtol=1e-5, atol=1e-6)
    # Noise uses one key per client, split from the aggregate key.
    noisy = A.compose(T.gaussian_noise(1.0), aggregator=A.mean(weighted=False))
    out1, _, _ = _run(noisy, x)
    out2, _, _ = _run(noisy, x)
    k_t, _ = jax.random.split(KEY)
    keys = jax.random.split(k_t, 6)
    # chain() splits each client's key once more, per transform.
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.split(k, 1)[0], (5,)))(keys)
    manual = x + np.asarray(noise)
    np.testing.assert_allclose(out1, out2)
    np.testing.assert_allclose(out1, manual.mean(0), rtol=1e-5, atol=1e-6)
    # No transforms: exactly the aggregator (was only checked `is not None`).
    bare = A.compose(aggregator=A.trimmed_mean(1))
    np.testing.assert_array_equal(_run(bare, x)[0], _run(A.trimmed_mean(1), x)[0])


def test_every_model_rule_is_registered():
    for name in ("fltrust", "flame", "foolsgold", "err", "lfr", "robust_lr", "norm_clipping",
                 "weak_dp", "centered_clipping"):
        assert name in A.RULES
    assert "compose" not in A.RULES


def test_thresholds_and_noise_levels_are_values():
    """Sweeping a threshold / noise level is one vmapped program (no Python checks on it)."""
    x = jnp.asarray(np.random.default_rng(19).standard_normal((6, 4)), jnp.float32)
    builds = {
        "robust_lr": lambda v: A.robust_lr(threshold=v),
        "norm_clipping": lambda v: A.norm_clipping(max_norm=v),
        "weak_dp": lambda v: A.weak_dp(max_norm=1.0, sigma=v),
        "centered_clipping": lambda v: A.centered_clipping(tau=v),
        "flame": lambda v: A.flame(noise_lambda=v, cluster_on="updates"),
    }
    values = jnp.array([0.5, 1.0, 2.0])
    for name, build in builds.items():
        def run(v):
            agg = build(v)
            return agg.aggregate(x, agg.init(4), KEY)[0]
        out = jax.jit(jax.vmap(run))(values)
        assert out.shape == (3, 4) and bool(jnp.all(jnp.isfinite(out))), name
        np.testing.assert_allclose(out[1], run(1.0), rtol=1e-5, atol=1e-6, err_msg=name)
