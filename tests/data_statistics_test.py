"""What the natural partition and FedProx's Synthetic(alpha, beta) are, checked by value.

The shape checks in ``data_test.py`` pass for wrong implementations (an
``array_split`` natural partition, a generator without its covariance); these
check the defining properties, with tolerances derived from the sample sizes.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fljax.data import datasets, partition


def test_natural_partition_groups_non_contiguous_ids_exactly():
    """Interleaved ids: client u holds exactly the examples whose id is u, in order.

    Catches: an ``array_split`` of the examples (right only for contiguous,
    equal-sized groups), ids taken in order of appearance instead of sorted,
    and a client subset that keeps other ids' examples.
    """
    rng = np.random.default_rng(0)
    ids = rng.choice([3, 17, 5, 42, 8], size=101)  # shuffled, unequal groups, gaps in the ids
    parts = partition.natural(ids)
    assert [int(ids[p[0]]) for p in parts] == [3, 5, 8, 17, 42]
    for p, u in zip(parts, [3, 5, 8, 17, 42]):
        np.testing.assert_array_equal(p, np.flatnonzero(ids == u))
    chosen = partition.natural(ids, num_clients=2, seed=1)
    for p in chosen:
        assert len(set(ids[p].tolist())) == 1
        np.testing.assert_array_equal(p, np.flatnonzero(ids == ids[p[0]]))
    assert len({int(ids[p[0]]) for p in chosen}) == 2
    with pytest.raises(ValueError, match="natural: 6 clients asked for but only 5"):
        partition.natural(ids, num_clients=6)


def test_synthetic_iid_inputs_have_the_fedprox_covariance():
    """Synthetic-IID: x ~ N(0, diag(j^-1.2)), j = 1..60, for every client.

    Per-coordinate mean within 5 standard errors (sqrt(var / N)), sample
    variance within 5 standard errors (var * sqrt(2 / N)).

    Catches: the identity covariance, exponent -1.2 applied to j from 0,
    the standard deviation set to j^-1.2 instead of the variance.
    """
    x, y, parts, xt, yt, c = datasets.synthetic_fedprox(40, iid=True, seed=1)
    allx = np.concatenate([x, xt]).astype(np.float64)
    n = len(allx)
    var = np.arange(1, 61, dtype=np.float64) ** -1.2
    z_mean = np.abs(allx.mean(0)) / np.sqrt(var / n)
    z_var = np.abs(allx.var(0) - var) / (var * np.sqrt(2 / n))
    assert z_mean.max() < 5 and z_var.max() < 5, (z_mean.max(), z_var.max())
    assert c == 10 and set(np.unique(y).tolist()) <= set(range(10))


@pytest.mark.parametrize("beta", [0.0, 4.0])
def test_synthetic_client_means_follow_v_k_and_b_k(beta):
    """Non-IID: client k's inputs have mean v_k, v_k[j] ~ N(B_k, 1), B_k ~ N(0, beta).

    So within a client the coordinate means scatter with variance ~1 around
    their average, and across clients that average has variance beta + 1/60
    (a chi-square tolerance over the clients).

    Catches: v_k = 0 (IID inputs), B_k ignored or shared by every client, and
    beta used as a standard deviation.
    """
    k = 120
    x, _, parts, _, _, _ = datasets.synthetic_fedprox(k, alpha=0.0, beta=beta, seed=2)
    means = np.array([x[p].astype(np.float64).mean(0) for p in parts])  # [k, 60] ~ v_k
    within = means.var(1, ddof=1)  # ~ 1 + sampling noise
    assert abs(np.mean(within) - 1.0) < 5 * np.sqrt(2 / (59 * k)) + 0.05, np.mean(within)
    b = means.mean(1)  # ~ B_k + N(0, 1/60)
    expected = beta + 1 / 60
    tol = 5 * expected * np.sqrt(2 / (k - 1)) + 0.01  # sampling noise of the means
    assert abs(np.var(b, ddof=1) - expected) < tol, (np.var(b, ddof=1), expected)


def test_synthetic_labels_are_a_linear_argmax_per_client():
    """y = argmax(W_k x + b_k): each client's labels are linearly separable.

    In 3 dimensions (so that separability means something): a nearly
    unregularised logistic regression fits every client's labels (> 98 %; the
    first 300 examples of each, to keep it fast) but not all clients at once
    (their rules differ: ~78 %).

    Catches: labels from another client's model or a shared one, from a
    non-linear rule, or shuffled relative to x.
    """
    x, y, parts, _, _, _ = datasets.synthetic_fedprox(6, alpha=1.0, beta=1.0, seed=3,
                                                      min_size=100, dim=3)
    parts = [p[:300] for p in parts]
    fit = lambda rows, labels: LogisticRegression(C=1e4, max_iter=3000).fit(  # noqa: E731
        x[rows], labels).score(x[rows], labels)
    for p in parts:
        if len(np.unique(y[p])) > 1:
            assert fit(p, y[p]) > 0.98
    pooled = np.concatenate(parts)
    assert fit(pooled, y[pooled]) < 0.9


def test_synthetic_sizes_follow_the_lognormal_law_with_its_floor_and_cap():
    """Sizes are lognormal(4, 2) + min_size, capped at 100 * min_size, split
    train / test by test_fraction."""
    x, _, parts, xt, _, _ = datasets.synthetic_fedprox(300, seed=4, min_size=50)
    rng = np.random.default_rng(4)
    sizes = np.minimum(rng.lognormal(4, 2, 300).astype(int) + 50, 5000)
    n_te = np.maximum(1, (0.2 * sizes).astype(int))
    np.testing.assert_array_equal([len(p) for p in parts], sizes - n_te)
    assert len(xt) == n_te.sum() and len(x) == (sizes - n_te).sum()
