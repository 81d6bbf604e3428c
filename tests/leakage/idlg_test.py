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
