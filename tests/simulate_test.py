"""The simulator: strategies agree, the vectorised round equals a Python loop,
seeds are deterministic, and configs fail early with clear errors."""

import re

import jax
import numpy as np
import pytest

from fljax import config, simulate


def small_cfg(**over):
    base = {
        "rounds": 2,
        "eval_every": 1,
        "clients_per_round": 4,
        "data": {"name": "digits", "num_clients": 40, "partition": "dirichlet",
                 "partition_kwargs": {"alpha": 1.0}},
        "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "client": {"learning_rate": 0.1, "batch_size": 32, "epochs": 1},
    }
    cfg = config.resolve(simulate.DEFAULTS, base)
    for k, v in over.items():
        cfg = config.resolve(simulate.DEFAULTS, cfg, [f"{k}={v!r}"])
    return cfg


def run_rounds(cfg, rounds):
    exp = simulate.build(cfg)
    key = jax.random.PRNGKey(cfg["seed"])
    k_init, k_rounds = jax.random.split(key)
    state = exp.init_state(k_init)
    for _ in range(rounds):
        state, info = exp.round_fn(state, k_rounds)
    return state, info


def assert_trees_close(a, b, atol=1e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


def test_vectorised_round_matches_python_loop_reference():
    cfg = small_cfg()
    state, _ = run_rounds(cfg, 2)
    ref = simulate.simulate_reference(cfg, 2)
    assert_trees_close(state.params, ref)


def test_reference_with_uneven_clients_and_server_lr():
    # Dirichlet clients have different sizes: masked steps must be no-ops.
    cfg = small_cfg(**{"client.batch_size": 16, "server.learning_rate": 0.5,
                       "client.epochs": 2})
    state, _ = run_rounds(cfg, 2)
    assert_trees_close(state.params, simulate.simulate_reference(cfg, 2))


@pytest.mark.parametrize("strategy,chunk", [("vmap", 0), ("map", 3), ("map", 1), ("map", 0),
                                            ("chunked", 3), ("chunked", 1), ("sequential", 0)])
@pytest.mark.parametrize("transformed", [False, True], ids=["tree", "flat"])
def test_every_strategy_gives_the_same_params(strategy, chunk, transformed):
    # K = 4 clients: chunks of 3 leave a remainder; two rounds reuse the update
    # buffer, so stale rows would show. A client transform makes the update a
    # flat vector rather than a pytree (the other write path).
    extra = {"client_transforms": [{"name": "clip_by_norm", "kwargs": {"max_norm": 0.05}}]} \
        if transformed else {}
    base, base_info = run_rounds(small_cfg(**{"execution.strategy": "vmap"}, **extra), 2)
    other, info = run_rounds(small_cfg(**{"execution.strategy": strategy,
                                          "execution.client_chunk": chunk}, **extra), 2)
    assert_trees_close(base.params, other.params)
    np.testing.assert_allclose(np.asarray(info.update_norms), np.asarray(base_info.update_norms),
                               rtol=1e-4)
    if transformed:
        norms = np.asarray(info.update_norms)
        assert np.all(norms <= 0.05 + 1e-6) and norms.max() > 0.049  # the clip binds


def test_same_seed_is_bit_identical_and_other_seed_differs():
    cfg = small_cfg(rounds=3)
    a = simulate.run(cfg, progress=False, log=None).history
    b = simulate.run(cfg, progress=False, log=None).history
    strip = lambda h: [{k: v for k, v in r.items() if k != "elapsed"} for r in h]
    assert strip(a) == strip(b)
    c = simulate.run(small_cfg(rounds=3, seed=1), progress=False, log=None).history
    assert strip(a) != strip(c)


def test_attack_mask_changes_only_malicious_rows_and_mean_is_poisoned():
    cfg = small_cfg(**{"attack.name": "sign_flip", "attack.num_malicious": 40,
                       "attack.kwargs": {"scale": 1.0}})
    clean, _ = run_rounds(small_cfg(), 1)
    flipped, _ = run_rounds(cfg, 1)
    init = simulate.build(cfg).init_state(jax.random.split(jax.random.PRNGKey(0))[0])
    # With every client malicious and mean aggregation, the step is exactly reversed.
    for p0, a, b in zip(*(jax.tree_util.tree_leaves(t.params) for t in (init, clean, flipped))):
        np.testing.assert_allclose(np.asarray(b - p0), -np.asarray(a - p0), atol=1e-6)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = small_cfg(rounds=4, eval_every=2)
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    part = config.resolve(simulate.DEFAULTS, cfg, ["rounds=2"])
    simulate.run(part, str(tmp_path / "r"), progress=False, log=None)
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert_trees_close(full.state.params, resumed.state.params, atol=0)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [__import__("json").loads(l)["round"] for l in lines] == [0, 2, 4]


@pytest.mark.parametrize("override,needle", [
    ({"model.name": "resnet"}, "model.name"),
    ({"data.partition": "zipf"}, "data.partition"),
    ({"aggregator.name": "nope"}, "aggregator.name"),
    ({"clients_per_round": 50}, "clients_per_round"),
    ({"data.num_clients": 5000}, "examples"),
    ({"client.optimizer": "lion2"}, "client.optimizer"),
    ({"aggregator.name": "krum", "aggregator.kwargs": {"num_byzantine": 1}}, "n > 2"),
    ({"aggregator.name": "bulyan", "aggregator.kwargs": {"num_byzantine": 1}}, "bulyan"),
    ({"aggregator.name": "trimmed_mean", "aggregator.kwargs": {"num_trim": 1, "kernel": "nope"}},
     "must be 'module:function'"),
    ({"aggregator.name": "trimmed_mean",
      "aggregator.kwargs": {"num_trim": 1, "kernel": "kernels.order_stats:nope"}}, "nope"),
])
def test_bad_configs_fail_before_training(override, needle):
    with pytest.raises(config.ConfigError, match=re.escape(needle)):
        simulate.build(small_cfg(**override))


def test_injected_kernel_by_name_matches_the_jnp_path():
    from kernels import order_stats

    ok, why = order_stats.available()
    if not ok:
        pytest.skip(why)
    plain = {"aggregator.name": "trimmed_mean", "aggregator.kwargs": {"num_trim": 1}}
    fast = {"aggregator.name": "trimmed_mean",
            "aggregator.kwargs": {"num_trim": 1, "kernel": "kernels.order_stats:rank_weighted_sum"}}
    a, _ = run_rounds(small_cfg(**plain), 2)
    b, _ = run_rounds(small_cfg(**fast), 2)
    assert_trees_close(a.params, b.params, atol=1e-5)


def test_unknown_field_is_rejected():
    with pytest.raises(config.ConfigError, match="unknown config field 'client.lr'"):
        config.resolve(simulate.DEFAULTS, {"client": {"lr": 0.1}})
    with pytest.raises(config.ConfigError, match="must be an integer"):
        config.resolve(simulate.DEFAULTS, {}, ["rounds=ten"])


def test_quickstart_reaches_accuracy_in_a_shrunken_run():
    cfg = config.resolve(simulate.DEFAULTS, config.load_file("configs/quickstart.py"),
                         ["rounds=40", "eval_every=40"])
    res = simulate.run(cfg, progress=False, log=None)
    assert res.summary["final_main_accuracy"] >= 0.85
