"""Names and value arguments: every factory a config can name accepts its value
arguments (annotated ``float``) as traced scalars, as the sweep needs.

Catches: a value argument checked with a Python ``if`` (it fails under a
sweep's trace, as signguard's block fraction and the invariant aggregator's
trim fraction did before they were marked static); a static argument
annotated as a value.
"""

import inspect

import jax
import jax.numpy as jnp
import pytest

from fljax import attacks, registry, transforms
from fljax import aggregators as A
from fljax.aggregators.base import AggregationContext

N, D = 12, 6
CTX = AggregationContext(weights=jnp.ones(N), params=jnp.zeros(D), client_ids=jnp.arange(N))
_EVAL = lambda p: (jnp.sum(p), jnp.sum(p))  # noqa: E731
REQUIRED = {
    "err": dict(eval_fn=_EVAL, num_reject=1), "lfr": dict(eval_fn=_EVAL, num_reject=1),
    "fltrust": dict(server_update_fn=lambda p, k: p), "foolsgold": dict(num_clients=N),
    "krum": dict(num_byzantine=1), "multi_krum": dict(num_byzantine=1),
    "bulyan": dict(num_byzantine=2), "trimmed_mean": dict(num_trim=1),
    "mda": dict(num_byzantine=1), "monna": dict(num_byzantine=1),
    "meamed": dict(num_byzantine=1), "caf": dict(num_byzantine=1), "smea": dict(num_byzantine=1),
    "dnc": dict(num_byzantine=1), "centered_clipping": dict(tau=1.0),
    "norm_clipping": dict(max_norm=1.0), "weak_dp": dict(max_norm=1.0, sigma=0.1),
    "crfl": dict(clip=1.0, sigma=0.1), "scaling": dict(factor=2.0), "robust_lr": dict(threshold=2.0),
    "fang_krum": dict(num_byzantine=1), "clip_by_norm": dict(max_norm=1.0),
    "gaussian_noise": dict(stddev=0.1), "laplace_noise": dict(scale=0.1),
    "row_noise": dict(scale=0.1), "prune": dict(percent=10.0),
}


def _values(factory, name, v):
    sig = inspect.signature(factory).parameters
    kw = dict(REQUIRED.get(name, {}))
    for p in registry.value_params(factory):
        default = sig[p].default
        val = kw.get(p, default if isinstance(default, (int, float))
                     and not isinstance(default, bool) else 0.5)
        kw[p] = v * 0 + val  # traced
    return kw


def _entries():
    for name in A.RULES:
        if registry.value_params(getattr(A, name)):
            yield "aggregator", name
    for name, f in transforms.TRANSFORMS.items():
        if registry.value_params(f):
            yield "transform", name
    for name, f in attacks.UPDATE_ATTACKS.items():
        if registry.value_params(f):
            yield "attack", name


@pytest.mark.parametrize("kind,name", list(_entries()), ids=lambda x: str(x))
def test_value_arguments_may_be_traced(kind, name):
    x = jnp.ones((N, D)) * jnp.arange(N, dtype=jnp.float32)[:, None]
    key = jax.random.PRNGKey(0)
    if kind == "aggregator":
        f = getattr(A, name)

        def run(v):
            rule = f(**_values(f, name, v))
            return rule.aggregate(x, rule.init(D), key, CTX)[0]
    elif kind == "transform":
        f = transforms.TRANSFORMS[name]

        def run(v):
            return f(**_values(f, name, v))(x[1], key)
    else:
        f = attacks.UPDATE_ATTACKS[name]

        def run(v):
            return f(**_values(f, name, v))(x, jnp.arange(N) < 3, key)
    jax.eval_shape(run, jax.ShapeDtypeStruct((), jnp.float32))


def test_every_kind_lists_its_names_and_errors_name_the_field():
    for kind in registry.kinds():
        assert registry.names(kind) or kind in ("pre_aggregator",), kind
    with pytest.raises(Exception, match="aggregator.name"):
        registry.get("aggregator", "nope", "aggregator.name")
    assert "max_norm" in registry.value_params(A.norm_clipping)
    assert "num_trim" not in registry.value_params(A.trimmed_mean)
    assert "beta" not in registry.value_params(A.invariant)  # StaticFloat
