"""iDLG's label rule on gradients and weight differences of random models."""

import jax
import jax.numpy as jnp
import pytest

from fljax.attacks.leakage import infer_labels, observe
from fljax.models import lenet5, mlp


@pytest.mark.parametrize("make", [
    lambda: mlp((8, 8, 1), 10, hidden=(16,), activation="sigmoid"),
    lambda: mlp((8, 8, 1), 10, hidden=(16, 16), activation="relu"),
    pytest.param(lambda: lenet5((8, 8, 1), 10, activation="sigmoid"), marks=pytest.mark.slow),
])
def test_label_rule_recovers_the_label_of_a_one_example_update(make):
    model = make()

    @jax.jit
    def labels(params, x, y):
        g = observe.observe(model, params, x, y, kind="gradient")
        dw = observe.observe(model, params, x, y, kind="delta", lr=0.05, local_steps=3)
        neg = jax.tree_util.tree_map(jnp.negative, dw)  # W_T - W0: sign -1
        return jnp.concatenate([infer_labels(g, 10), infer_labels(dw, 10),  # W0 - W_T: +1
                                infer_labels(neg, 10, sign=-1.0)])

    for seed in range(2):
        params = model.init(jax.random.PRNGKey(seed))
        x = jax.random.uniform(jax.random.PRNGKey(100 + seed), (1, 8, 8, 1))
        for label in (0, 4, 9):
            assert labels(params, x, jnp.array([label])).tolist() == [label] * 3


def test_output_layer_and_several_labels_by_hand():
    """The output layer is the widest-index 2-D kernel of width C (``dense_10``
    after ``dense_2``: numbers, not strings; a name without digits ranks
    below ``dense_0``; a name's last part only); a BatchNorm-like dict without
    a kernel, a 4-D kernel and a kernel of another width are passed over.
    Several labels are the most negative column sums, most negative first.

    Catches: the index from another part of the name or from the whole name,
    no-digit names ranked above 0, ``or`` for ``and`` (a dict without a
    kernel), ``num_labels == 2`` / ``!= 1`` (the one-label and several-label
    paths swapped), ``sign / column``."""
    from fljax.attacks.leakage.base import last_layer_name

    z = lambda *s: jnp.zeros(s)  # noqa: E731
    params = {"dense_2": {"kernel": z(4, 10)}, "dense_10": {"kernel": z(8, 10)},
              "dense_0": {"kernel": z(3, 10)}, "head": {"kernel": z(5, 10)},
              "block_30_out": {"kernel": z(6, 10)}, "norm_99": {"scale": z(10), "bias": z(10)},
              "conv_50": {"kernel": z(3, 3, 1, 10)}, "dense_40": {"kernel": z(4, 7)}}
    assert last_layer_name(params, 10) == "dense_10"
    assert last_layer_name({"head": {"kernel": z(5, 10)}, "dense_0": {"kernel": z(4, 10)}},
                           10) == "dense_0"
    sums = jnp.array([3.0, -5.0, 1.0, -2.0, 4.0])
    kernel = jnp.stack([sums / 2, sums / 2])  # float[2, 5]: column sums are `sums`
    observed = {"dense_0": {"kernel": kernel}}
    assert infer_labels(observed, 5).tolist() == [1]
    assert infer_labels(observed, 5, num_labels=2).tolist() == [1, 3]
    assert infer_labels(observed, 5, num_labels=3, sign=-1.0).tolist() == [4, 0, 2]
    with pytest.raises(ValueError, match="no output Dense layer"):
        last_layer_name({"dense_40": {"kernel": z(4, 7)}}, 10)
