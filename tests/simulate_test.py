"""The round: equal to an independent Python-loop reference, the same under
every backend, exact on resume, traced once for any hyperparameters, and
attacks touch exactly the rows they control.

Each test's docstring names the deliberate bug (mutation) it is there to catch.
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import config, plan as plan_lib, simulate
from fljax.attacks.attacker import Schedule
from tests import simulate_reference


# Measurements of the machine, not of the experiment: they differ between
# identical runs.
MEASURED = ("elapsed", "peak_memory_gb")


def unmeasured(history):
    """A history without its measured fields (times, memory peaks)."""
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in history]


def small_cfg(*assignments, **base_over):
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
    return config.resolve(simulate.DEFAULTS, cfg, list(assignments))


def run_rounds(cfg, rounds, plan=None):
    plan = plan or plan_lib.prepare(cfg)
    comp = simulate.compiled(plan.spec)
    k_init, k_rounds = simulate.run_keys(cfg["seed"])
    state = comp.init(plan.hparams, plan.data, k_init)
    buf = comp.round.new_buffer()
    info = None
    for _ in range(rounds):
        state, info, buf = comp.step(plan.hparams, state, plan.data, k_rounds, buf)
    return state, info, plan


def assert_trees_close(a, b, atol=1e-5, rtol=1e-4):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


def assert_same_round_report(a, a_info, b, b_info):
    """Two rounds' parameters, row norms and honest diagnostics agree (the
    dense and the streamed form of one round)."""
    assert_trees_close(a.params, b.params, atol=1e-6)
    np.testing.assert_allclose(np.asarray(b_info.update_norms), np.asarray(a_info.update_norms),
                               rtol=1e-5)
    for k in ("cosine_to_honest", "norm_ratio_to_honest", "malicious_rows"):
        np.testing.assert_allclose(float(b_info.diagnostics[k]), float(a_info.diagnostics[k]),
                                   rtol=1e-5)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("assignments", [
    (),
    ("client.batch_size=16", "server.learning_rate=0.5", "client.epochs=2"),
    ("client.steps=3", "client.batch_size=8"),
    ("server.optimizer='adam'", "server.learning_rate=0.01"),
    ("server.optimizer='yogi'", "server.learning_rate=0.01"),
], ids=["fedavg", "uneven-padded", "fixed-steps", "fedadam", "fedyogi"])
def test_round_matches_independent_reference(assignments):
    """The round equals a plain loop written from the definitions.

    Catches: the loss divided by the batch size instead of the number of real
    examples (uneven-padded: Dirichlet clients of different sizes, two epochs
    of batch 16 leave padded batches); a masked step that still moves the
    parameters; fixed-step mode masking or cycling wrongly; the server
    optimizer applied to the aggregate with the wrong sign or Adam / Yogi
    state mishandled; the example-count weights dropped from the mean.
    """
    cfg = small_cfg(*assignments)
    state, _, plan = run_rounds(cfg, 2)
    ref = simulate_reference.fedavg(cfg, plan.federated, simulate.compiled(plan.spec).round.model,
                                    2)
    assert_trees_close(state.params, ref, atol=2e-6, rtol=1e-4)


def test_reference_sees_padding():
    """The uneven case really has padded batches and uneven clients (else the
    test above could not see the loss-normalisation bug)."""
    cfg = small_cfg("client.batch_size=16", "client.epochs=2")
    plan = plan_lib.prepare(cfg)
    assert not plan.spec.full_batches
    assert len(set(plan.federated.counts.tolist())) > 5


@pytest.mark.parametrize("aggregation,transformed,hidden", [
    ("dense", False, [16]), ("dense", True, [16]), ("stream", False, []), ("stream", True, [16]),
], ids=["dense-tree", "dense-flat", "stream-tree-two-tensors", "stream-flat"])
def test_every_backend_gives_the_same_params(aggregation, transformed, hidden):
    """``vmap``, ``map`` one at a time, in chunks of 3 (K = 5 leaves a
    remainder of 2) and all at once give the same parameters over two
    rounds, with the update matrix (dense: the buffer ``map`` writes into,
    reused across rounds) and streamed (chunks consumed as they are trained).

    Catches: stale rows in the reused update buffer, a wrong row offset for
    the remainder chunk or a parameter tensor (``leaf_offsets`` starting at
    1, ``write_rows`` at column 1), the flat (client-transformed) write path
    differing from the pytree one, a chunk of two trained as one client
    (``_block``'s single-client shortcut taken at ``c == 2``), the rows of a
    model with exactly two tensors (``hidden=[]``) not concatenated.
    """
    extra = [f"execution.aggregation='{aggregation}'", f"model.kwargs={{'hidden': {hidden}}}",
             "clients_per_round=5"]
    if transformed:
        extra.append("client_transforms=[{'name': 'clip_by_norm', 'kwargs': {'max_norm': 0.05}}]")
    base, base_info, plan = run_rounds(small_cfg("execution.strategy='vmap'", *extra), 2)
    assert plan.spec.aggregation == aggregation
    assert simulate.compiled(plan.spec).round.new_buffer() is None  # vmap keeps no buffer
    for chunk in (1, 3, 0):
        other, info, oplan = run_rounds(small_cfg("execution.strategy='map'",
                                                  f"execution.client_chunk={chunk}", *extra), 2)
        buf = simulate.compiled(oplan.spec).round.new_buffer()  # only a dense map keeps one
        dim = plan.memory.inputs["dim"]
        assert (buf is None) if aggregation == "stream" else buf.shape == (5, dim)
        assert_trees_close(base.params, other.params)
        np.testing.assert_allclose(np.asarray(info.update_norms),
                                   np.asarray(base_info.update_norms), rtol=1e-4)
    if transformed:
        norms = np.asarray(base_info.update_norms)
        assert np.all(norms <= 0.05 + 1e-6) and norms.max() > 0.049  # the clip binds


def test_same_seed_is_bit_identical_and_other_seed_differs():
    """Catches: any host-side randomness or a key not derived from the seed; the
    evaluation's metrics under other names in the history."""
    cfg = small_cfg("rounds=3")
    a = simulate.run(cfg, progress=False, log=None).history
    # The evaluation's names in the history (catches one renamed):
    assert all(r["main_error_rate"] == pytest.approx(1 - r["main_accuracy"]) and "main_loss" in r
               for r in a if "main_accuracy" in r)
    b = simulate.run(cfg, progress=False, log=None).history
    assert unmeasured(a) == unmeasured(b)
    c = simulate.run(small_cfg("rounds=3", "seed=1"), progress=False, log=None).history
    assert unmeasured(a) != unmeasured(c)


def test_attack_changes_exactly_the_sampled_malicious_rows():
    """Half the population is malicious and 8 of 40 clients are sampled, so a
    round mixes benign and malicious rows; sign flipping with scale 3 must
    triple the norm of exactly the rows of sampled malicious clients.

    Catches: indexing the malicious mask with ``[:K]`` instead of the sampled
    ids; an attack leaking into benign rows.
    """
    clean = small_cfg("clients_per_round=8")
    cfg = small_cfg("clients_per_round=8", "attack.name='sign_flip'", "attack.num_malicious=20",
                    "attack.kwargs={'scale': 3.0}")
    _, info0, _ = run_rounds(clean, 1)
    _, info, plan = run_rounds(cfg, 1)
    ids = np.asarray(info.client_ids)
    np.testing.assert_array_equal(ids, np.asarray(info0.client_ids))
    want = ids < 20
    assert 0 < want.sum() < 8, ids
    np.testing.assert_array_equal(np.asarray(info.malicious), want)
    ratio = np.asarray(info.update_norms) / np.asarray(info0.update_norms)
    np.testing.assert_allclose(ratio, np.where(want, 3.0, 1.0), rtol=1e-5)


def test_label_flip_inside_the_simulator_trains_on_flipped_labels():
    """Every client malicious with ``label_flip``: the round equals a clean
    round on data whose labels are ``9 - y``.

    Catches: the poison not applied, applied to the wrong clients, or with the
    poisoned labels not used by training.
    """
    cfg = small_cfg("attack.name='label_flip'", "attack.num_malicious=40")
    flipped, _, _ = run_rounds(cfg, 1)
    clean_plan = plan_lib.prepare(small_cfg())
    data = clean_plan.data._replace(y=9 - clean_plan.data.y)
    want, _, _ = run_rounds(small_cfg(), 1, plan=clean_plan._replace(data=data))
    assert_trees_close(flipped.params, want, atol=1e-6)


@pytest.mark.parametrize("aggregation", ["stream", "dense"])
def test_server_transforms_reach_the_rule(aggregation):
    """Catches: server transforms skipped or applied after aggregation (on
    the update matrix, or chunk by chunk when the rule streams)."""
    cfg = small_cfg("server_transforms=[{'name': 'clip_by_norm', 'kwargs': {'max_norm': 0.01}}]",
                    f"execution.aggregation='{aggregation}'")
    _, info, plan = run_rounds(cfg, 1)
    assert plan.spec.aggregation == aggregation
    norms = np.asarray(info.update_norms)
    np.testing.assert_allclose(norms, 0.01, rtol=1e-4)


@pytest.mark.parametrize("assignments", [
    ("server.optimizer='adam'", "server.learning_rate=0.01",
     "aggregator={'name': 'centered_clipping', 'kwargs': {'tau': 1.0, 'iters': 2}}"),
    ("aggregator={'name': 'foolsgold'}", "attack.name='sign_flip'", "attack.num_malicious=4",
     "server.optimizer='momentum'"),
], ids=["adam+centered_clipping", "foolsgold+momentum+attack"])
def test_resume_is_exact(tmp_path, monkeypatch, assignments):
    """Resuming after an interruption gives bit-identical parameters, states
    and metrics to an uninterrupted run, with stateful server optimizers and
    stateful rules.

    Catches: a resume that restores only the parameters and the round (Adam's
    moments, the momentum, centred clipping's centre or FoolsGold's history
    lost), a tolerance that hides it (exact equality here).
    """
    cfg = small_cfg("rounds=4", "eval_every=2", *assignments)
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    part = config.resolve(simulate.DEFAULTS, cfg, ["rounds=2"])
    simulate.run(part, str(tmp_path / "r"), progress=False, log=None)
    restore = simulate.ckpt_lib.restore  # the checkpoint says 10,000 s more ran before

    def older(*args, **kwargs):
        state, meta = restore(*args, **kwargs)
        return state, {**meta, "elapsed": meta["elapsed"] + 1e4}

    monkeypatch.setattr(simulate.ckpt_lib, "restore", older)
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert_trees_equal(full.state, resumed.state)
    assert unmeasured(full.history) == unmeasured(resumed.history)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["round"] for l in lines] == [0, 2, 4]
    # The elapsed time carries on from the checkpoint (catches it read as 0).
    assert resumed.history[-1]["elapsed"] >= 1e4


def test_resume_refuses_another_config(tmp_path):
    """Catches: silently continuing a checkpoint under another config."""
    cfg = small_cfg("rounds=2")
    simulate.run(cfg, str(tmp_path), progress=False, log=None)
    other = config.resolve(simulate.DEFAULTS, cfg, ["client.learning_rate=0.3", "rounds=4"])
    with pytest.raises(config.ConfigError, match=re.escape("'client.learning_rate' differs")):
        simulate.run(other, str(tmp_path), progress=False, log=None, resume=True)


def test_new_hyperparameters_and_masks_do_not_retrace():
    """Two configs that differ only in values (learning rates, a clipping
    bound, an attack scale, the number of malicious clients, the schedule)
    share one spec and one trace.

    Catches: a value baked into the program as a Python constant.
    """
    a = small_cfg("aggregator={'name': 'norm_clipping', 'kwargs': {'max_norm': 1.0}}",
                  "attack.name='sign_flip'", "attack.num_malicious=4")
    b = config.resolve(simulate.DEFAULTS, a, [
        "aggregator.kwargs.max_norm=0.3", "attack.kwargs={'scale': 5.0}",
        "attack.num_malicious=12", "client.learning_rate=0.05", "server.learning_rate=0.7",
        "attack.schedule.every=2", "seed=3"])
    pa, pb = plan_lib.prepare(a), plan_lib.prepare(b)
    assert pa.spec == pb.spec
    rnd = simulate.compiled(pa.spec).round
    traces = []

    def counted(*args):
        traces.append(1)
        return rnd.step(*args)

    step = jax.jit(counted)
    outs = []
    for p, seed in ((pa, 0), (pb, 3)):
        k_init, k_rounds = simulate.run_keys(seed)
        state = rnd.init(p.hparams, p.data, k_init)
        outs.append(step(p.hparams, state, p.data, k_rounds, rnd.new_buffer())[0].params)
    assert len(traces) == 1
    assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(outs[0])[0]),
                           np.asarray(jax.tree_util.tree_leaves(outs[1])[0]))


def test_schedule():
    """Catches: an off-by-one in the window, ``every`` not anchored at ``start``,
    ``stop = 0`` read as no end (``stop <= 0``, ``stop < 1``: only negative
    means none)."""
    key = jax.random.PRNGKey(0)
    act = lambda s: [bool(s.active(r, key)) for r in range(8)]  # noqa: E731
    assert act(Schedule()) == [True] * 8
    assert act(Schedule(start=0, stop=0)) == [False] * 8
    assert act(Schedule(start=2, stop=5)) == [False, False, True, True, True, False, False, False]
    assert act(Schedule(start=1, every=3)) == [False, True, False, False, True, False, False, True]
    assert act(Schedule(start=3, stop=4)) == [False] * 3 + [True] + [False] * 4
    keys = jax.random.split(key, 2000)
    rate = np.mean([bool(Schedule(probability=0.3).active(0, k)) for k in keys[:400]])
    assert 0.2 < rate < 0.4


def test_schedule_in_the_round():
    """Attackers act every second round only; in the others malicious clients are honest."""
    cfg = small_cfg("rounds=4", "attack.name='sign_flip'", "attack.num_malicious=40",
                    "attack.schedule.every=2")
    plan = plan_lib.prepare(cfg)
    comp = simulate.compiled(plan.spec)
    k_init, k_rounds = simulate.run_keys(0)
    state = comp.init(plan.hparams, plan.data, k_init)
    buf = comp.round.new_buffer()
    active = []
    for _ in range(4):
        state, info, buf = comp.step(plan.hparams, state, plan.data, k_rounds, buf)
        active.append((bool(info.attack_active), int(np.sum(np.asarray(info.malicious)))))
    assert active == [(True, 4), (False, 0), (True, 4), (False, 0)]


def test_evaluation_with_a_partial_last_batch():
    """The test set (360 digits) does not divide into batches of 100: the
    padded evaluation equals a direct computation.

    Catches: padding counted as examples, or the last batch dropped.
    """
    cfg = small_cfg("execution.eval_batch=100")
    plan = plan_lib.prepare(cfg)
    fed = plan.federated
    assert len(fed.y_test) % 100 != 0
    comp = simulate.compiled(plan.spec)
    state = comp.init(plan.hparams, plan.data, simulate.run_keys(0)[0])
    got = jax.device_get(comp.evaluate(plan.hparams, state, plan.data))
    logits = np.asarray(comp.round.model.apply(state.params, fed.x_test), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    loss = -logp[np.arange(len(fed.y_test)), fed.y_test].mean()
    acc = (logits.argmax(1) == fed.y_test).mean()
    assert abs(float(got["accuracy"]) - acc) < 1e-6
    assert abs(float(got["loss"]) - loss) < 1e-5


def _root_epoch(rnd, fed, root, flat, steps, bsz=32, lr=0.1):
    """FLTrust's root update written out: one epoch over the root set, ``steps
    = ceil(root_size / bsz)`` plain SGD steps on a permutation of ``steps *
    bsz`` slots wrapped onto the root examples (key ``PRNGKey(1)``)."""
    _, unravel = jax.flatten_util.ravel_pytree(rnd.model.init(jax.random.PRNGKey(0)))
    perm = np.asarray(jax.random.permutation(jax.random.split(jax.random.PRNGKey(1))[0],
                                             steps * bsz)) % len(root)
    xr, yr = np.asarray(fed.x[root])[perm], np.asarray(fed.y[root])[perm]

    def batch_loss(f, xb, yb):
        lg = rnd.model.apply(unravel(f), xb)
        return -jnp.mean(jax.nn.log_softmax(lg)[jnp.arange(len(yb)), yb])

    f = flat
    for s in range(steps):
        f = f - lr * jax.grad(batch_loss)(f, xr[bsz * s:bsz * (s + 1)], yr[bsz * s:bsz * (s + 1)])
    return np.asarray(f - flat)


def test_server_resources_use_their_own_examples():
    """The validation function ERR / LFR get evaluates exactly the server's
    validation examples; FLTrust's root update trains on exactly the root
    examples and lowers their loss.

    Catches: the wrong index set, the test set used instead, a root update
    that is not a descent step, or not one epoch (the step count
    ``ceil(root_size / batch_size)`` miscounted, with 70 and with 20 root
    examples).
    """
    cfg = small_cfg("aggregator={'name': 'err', 'kwargs': {'num_reject': 1}}",
                    "server_data.validation_size=50", "server_data.root_size=70")
    plan = plan_lib.prepare(cfg)
    assert plan.hparams["root_idx"].shape == (0,)  # ERR uses no root set: none is carved
    rnd = simulate.compiled(plan.spec).round
    state = rnd.init(plan.hparams, plan.data, simulate.run_keys(0)[0])
    flat, unravel = jax.flatten_util.ravel_pytree(state.params)
    res = rnd.resources(plan.hparams, plan.data)
    fed = plan.federated
    val = np.asarray(plan.hparams["val_idx"])
    err, loss = res["eval_fn"](flat)
    logits = np.asarray(rnd.model.apply(state.params, fed.x[val]))
    assert abs(float(err) - (1 - (logits.argmax(1) == fed.y[val]).mean())) < 1e-6
    plan = plan_lib.prepare(config.resolve(simulate.DEFAULTS, cfg, ["aggregator={'name': 'fltrust'}"]))
    rnd = simulate.compiled(plan.spec).round
    res = rnd.resources(plan.hparams, plan.data)
    root = np.asarray(plan.hparams["root_idx"])
    assert len(root) == 70 and plan.hparams["val_idx"].shape == (0,)
    g0 = res["server_update_fn"](flat, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(g0), _root_epoch(rnd, fed, root, flat, 3), atol=2e-6)
    small = plan_lib.prepare(config.resolve(simulate.DEFAULTS, cfg, [
        "aggregator={'name': 'fltrust'}", "server_data.root_size=20"]))
    rnd20 = simulate.compiled(small.spec).round
    update20 = rnd20.resources(small.hparams, small.data)["server_update_fn"]
    g20 = update20(flat, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(g20), _root_epoch(
        rnd20, small.federated, np.asarray(small.hparams["root_idx"]), flat, 1), atol=2e-6)

    def root_loss(f):
        lg = rnd.model.apply(unravel(f), fed.x[root])
        return float(-np.mean(jax.nn.log_softmax(lg)[np.arange(len(root)), fed.y[root]]))

    assert root_loss(flat + g0) < root_loss(flat) - 1e-3
    # Changing a non-root training example leaves the root update unchanged.
    other = np.setdiff1d(np.arange(len(fed.y)), root)[0]
    data2 = plan.data._replace(x=plan.data.x.at[other].set(0.5))
    g1 = rnd.resources(plan.hparams, data2)["server_update_fn"](flat, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.asarray(g0), np.asarray(g1))
    data3 = plan.data._replace(x=plan.data.x.at[root[0]].set(0.5))
    g2 = rnd.resources(plan.hparams, data3)["server_update_fn"](flat, jax.random.PRNGKey(1))
    assert not np.array_equal(np.asarray(g0), np.asarray(g2))


def test_a_run_that_turns_non_finite_says_so_and_stops(tmp_path):
    """A finite but huge Gaussian attack (mean 3e38) against the plain mean:
    the model turns non-finite, the run stops early, ``summary.json`` says
    ``diverged`` with the round, and every JSON file is valid JSON.

    Catches: NaN written as a bare ``NaN`` token; divergence unreported.
    """
    cfg = small_cfg("rounds=6", "eval_every=1", "attack.name='gaussian'",
                    "attack.num_malicious=40", "attack.kwargs={'mean': 3e38, 'stddev': 0.0}")
    lines = []
    res = simulate.run(cfg, str(tmp_path), progress=False, log=lines.append)
    assert res.summary["diverged"] and res.summary["diverged_round"] == 1
    assert res.summary["final_round"] == 1
    assert any("non-finite" in line for line in lines)

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    summary = strict((tmp_path / "summary.json").read_text())
    assert summary["diverged"] is True and summary["final_main_loss"] is None
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        strict(line)


@pytest.mark.parametrize("override,needle", [
    ({"model.name": "'resnet'"}, "model.name"),
    ({"data.partition": "'zipf'"}, "data.partition"),
    ({"aggregator.name": "'nope'"}, "aggregator.name"),
    ({"clients_per_round": 50}, "clients_per_round"),
    ({"data.num_clients": 5000}, "examples"),
    ({"client.optimizer": "'lion2'"}, "client.optimizer"),
    ({"aggregator": "{'name': 'krum', 'kwargs': {'num_byzantine': 1}}"}, "n > 2"),
    ({"aggregator": "{'name': 'bulyan', 'kwargs': {'num_byzantine': 1}}"}, "bulyan"),
    ({"aggregator": "{'name': 'trimmed_mean', 'kwargs': {'num_trim': 1, 'kernel': 'nope:'}}"},
     "nope"),
    ({"aggregator": "{'name': 'trimmed_mean', 'kwargs': {'num_trim': 2.5}}"}, "num_trim"),
    ({"aggregator": "{'name': 'trimmed_mean', 'kwargs': {'num_trm': 2}}"}, "its arguments"),
    ({"execution.client_chunk": -2}, "execution.client_chunk"),
    ({"client.steps": -3}, "client.steps"),
    ({"client.epochs": 0}, "client.steps"),
    ({"client.learning_rate": -0.1}, "client.learning_rate"),
    ({"rounds": -1}, "'rounds' = -1"),
    ({"aggregator.name": "'fltrust'", "server_data.root_size": 0}, "server_data.root_size"),
    ({"aggregator": "{'name': 'err', 'kwargs': {'num_reject': 1}}",
      "server_data.validation_size": 0}, "server_data.validation_size"),
    ({"aggregator.name": "'fltrust'", "server_data.root_size": 5000}, "exceeds"),
    ({"server_data.root_size": -4}, "server_data.root_size"),
    ({"attack.num_malicious": 5}, "attack.name is 'none'"),
    ({"attack.name": "'gaussian'", "attack.num_malicious": 2, "attack.kwargs": "{'stddev': -1.0}"},
     "stddev"),
    ({"attack.name": "'gaussian'", "attack.num_malicious": 2, "attack.kwargs": "{'sigma': 1.0}"},
     "attack.kwargs.sigma"),
    ({"attack.schedule.probability": 0.0}, "attack.schedule.probability"),
    ({"clients_per_round": 10, "aggregator": "{'name': 'krum', 'kwargs': {'num_byzantine': 2}}",
      "attack": "{'name': 'fang_krum', 'num_malicious': 4, 'kwargs': {'num_byzantine': 4}}"},
     "attack with clients_per_round = 10: fang_krum"),
    ({"attack": "{'name': 'fang_trimmed_mean', 'num_malicious': 4, 'kwargs': {'b': 1.0}}"}, "b="),
    ({"attack": "{'name': 'alie', 'num_malicious': 4, 'kwargs': {'z': -1.0}}"}, "z"),
    ({"attack": "{'name': 'ipm', 'num_malicious': 4, 'kwargs': {'epsilon': -0.1}}"}, "epsilon"),
])
def test_bad_configs_fail_before_training(override, needle):
    """Catches: a bad value accepted silently or failing only inside a round."""
    with pytest.raises(config.ConfigError, match=re.escape(needle)):
        plan_lib.prepare(small_cfg(*[f"{k}={v}" for k, v in override.items()]))


def test_unknown_field_is_rejected():
    with pytest.raises(config.ConfigError, match="unknown config field 'client.lr'"):
        config.resolve(simulate.DEFAULTS, {"client": {"lr": 0.1}})
    with pytest.raises(config.ConfigError, match="must be an integer"):
        config.resolve(simulate.DEFAULTS, {}, ["rounds=ten"])


def test_a_dict_literal_always_replaces():
    """``--set 'aggregator.kwargs={...}'`` replaces the old kwargs whether the
    literal has one key or two; dotted keys still set one leaf.

    Catches: the one-key literal merged into the old kwargs (the bug that
    broke three documented commands).
    """
    cfg = config.resolve(simulate.DEFAULTS, {"aggregator": {
        "name": "krum", "kwargs": {"num_byzantine": 4}}})
    one = config.resolve(simulate.DEFAULTS, cfg, [
        "aggregator.name=trimmed_mean", 'aggregator.kwargs={"num_trim": 4}'])
    assert one["aggregator"]["kwargs"] == {"num_trim": 4}
    two = config.resolve(simulate.DEFAULTS, cfg, ['aggregator.kwargs={"a": 1, "b": 2}'])
    assert two["aggregator"]["kwargs"] == {"a": 1, "b": 2}
    leaf = config.resolve(simulate.DEFAULTS, cfg, ["aggregator.kwargs.extra=2"])
    assert leaf["aggregator"]["kwargs"] == {"num_byzantine": 4, "extra": 2}
    sch = config.resolve(simulate.DEFAULTS, cfg, ['attack.schedule={"every": 3}'])
    assert sch["attack"]["schedule"] == {"start": 0, "stop": -1, "every": 3, "probability": 1.0}
    # A value that was an int may become a float in a free-form dict.
    f = config.resolve(simulate.DEFAULTS, {"aggregator": {"name": "norm_clipping",
                                                          "kwargs": {"max_norm": 3}}},
                       ["aggregator.kwargs.max_norm=2.5"])
    assert f["aggregator"]["kwargs"]["max_norm"] == 2.5


def test_injected_kernel_by_name_matches_the_jnp_path():
    from kernels import order_stats

    ok, why = order_stats.available()
    if not ok:
        pytest.skip(why)
    a, _, _ = run_rounds(small_cfg("aggregator={'name': 'trimmed_mean', 'kwargs': "
                                   "{'num_trim': 1, 'kernel': None}}"), 2)
    b, _, _ = run_rounds(small_cfg("aggregator={'name': 'trimmed_mean', 'kwargs': {'num_trim': 1, "
                                   "'kernel': 'kernels.order_stats:rank_weighted_sum'}}"), 2)
    assert_trees_close(a.params, b.params, atol=1e-5)


def test_quickstart_reaches_accuracy_in_a_shrunken_run():
    cfg = config.resolve(simulate.DEFAULTS, config.load_file("configs/quickstart.py"),
                         ["rounds=40", "eval_every=40"])
    res = simulate.run(cfg, progress=False, log=None)
    assert res.summary["final_main_accuracy"] >= 0.85


def test_pre_aggregation_from_the_config():
    """``pre_aggregation`` stages run in front of the rule: NNM then the mean
    equals the rule built by hand with ``compose``; impossible settings fail
    before training.

    Catches: the config list ignored, or applied after the rule."""
    from fljax import aggregators

    cfg = small_cfg("pre_aggregation=[{'name': 'nnm', 'kwargs': {'num_byzantine': 1}}]",
                    "aggregator={'name': 'mean', 'kwargs': {'weighted': False}}")
    plan = plan_lib.prepare(cfg)
    rnd = simulate.compiled(plan.spec).round
    agg = rnd.components(plan.hparams, plan.data).aggregator
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 7))
    want = aggregators.compose(aggregators.nnm(1), aggregator=aggregators.mean(weighted=False))
    got = agg.aggregate(x, agg.init(7), jax.random.PRNGKey(1))[0]
    np.testing.assert_allclose(np.asarray(got),
                               np.asarray(want.aggregate(x, want.init(7), jax.random.PRNGKey(1))[0]),
                               rtol=1e-6)
    plain = np.asarray(aggregators.mean(weighted=False).aggregate(x, None, None)[0])
    assert not np.allclose(np.asarray(got), plain)
    run_rounds(cfg, 1)
    with pytest.raises(config.ConfigError, match="pre_aggregation"):
        plan_lib.prepare(small_cfg("pre_aggregation=[{'name': 'nope'}]"))
    with pytest.raises(config.ConfigError):
        plan_lib.prepare(small_cfg("pre_aggregation=[{'name': 'nnm', 'kwargs': {'num_byzantine': 4}}]"))


def _rule_kwargs(name):
    from tests.registry_test import REQUIRED

    return {k: v for k, v in REQUIRED.get(name, {}).items()
            if k not in ("eval_fn", "server_update_fn", "num_clients")}


@pytest.mark.parametrize("name", __import__("fljax.aggregators").aggregators.RULES)
def test_every_rule_traces_inside_the_round(name):
    """Every rule, with an attack, traces through the whole round (the step and
    its diagnostics), not only on its own.

    Catches: a rule whose ``info`` the round cannot read (SignGuard's
    ``selected`` is a mask where Multi-Krum's holds indices)."""
    cfg = small_cfg("clients_per_round=12", "attack.name='sign_flip'", "attack.num_malicious=8",
                    f"aggregator={{'name': {name!r}, 'kwargs': {_rule_kwargs(name)!r}}}")
    plan = plan_lib.prepare(cfg)
    rnd = simulate.compiled(plan.spec).round
    k_init, k_rounds = simulate.run_keys(0)
    state = jax.eval_shape(rnd.init, plan.hparams, plan.data, k_init)
    buf = rnd.new_buffer()
    buf = None if buf is None else jax.ShapeDtypeStruct(buf.shape, buf.dtype)
    _, info, _ = jax.eval_shape(rnd.step, plan.hparams, state, plan.data, k_rounds, buf)
    assert info.update_norms.shape == (12,)


def test_err_scores_the_models_the_server_really_makes():
    """Under server Adam (lr 0.01) LFR's candidate with every row is scored
    exactly at the parameters the server then adopts (num_reject = 0): its
    validation loss, a metric fine enough to tell the two models apart (the
    error rate of ERR, the same code path, was equal at both).

    Catches: candidates scored as ``params + aggregate`` (ERR / LFR's old
    ``server_lr`` default, or the server step not read from the context:
    ``step = None``), which the server never makes under Adam."""
    cfg = small_cfg("server.optimizer='adam'", "server.learning_rate=0.01",
                    "aggregator={'name': 'lfr', 'kwargs': {'num_reject': 0}}")
    state, info, plan = run_rounds(cfg, 1)
    rnd = simulate.compiled(plan.spec).round
    flat = jax.flatten_util.ravel_pytree(state.params)[0]
    _, loss = rnd.resources(plan.hparams, plan.data)["eval_fn"](flat)
    assert float(info.agg_info["metric_full"]) == pytest.approx(float(loss), rel=1e-5)


def _probe_attack(model):
    """A test attacker that records what the round hands it: the first sampled
    client's own examples (``begin_round``), the aggregate and new parameters
    (``end_round``), and the model's accuracy through the round's ``predict``
    (``metrics``). Its state counts the rounds."""
    from fljax.attacks.attacker import Attacker

    def init(ai):
        logits = model.apply(ai.params, jnp.zeros((1,) + ai.input_shape))  # uses the model
        return {"rounds": jnp.zeros((), jnp.int32), "cid": jnp.zeros((), jnp.int32),
                "count": jnp.zeros((), jnp.int32), "ysum": jnp.zeros((), jnp.int32),
                "xsum": jnp.zeros(()), "step": jnp.zeros((ai.dim,)),
                "classes": jnp.asarray(logits.shape[-1], jnp.int32)}

    def begin_round(state, view, key):
        cid = view.client_ids[0]
        x, y, valid = view.examples(cid)
        return {**state, "rounds": state["rounds"] + 1, "cid": cid,
                "count": jnp.sum(valid).astype(jnp.int32),
                "ysum": jnp.sum(jnp.where(valid, y, 0)).astype(jnp.int32),
                "xsum": jnp.sum(jnp.where(valid.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0))}

    def end_round(state, view):
        new = jax.flatten_util.ravel_pytree(view.new_params)[0]
        old = jax.flatten_util.ravel_pytree(view.params)[0]
        return {**state, "step": new - old - view.aggregate}

    def metrics(params, state, test, predict):
        hits = (predict(params, test.x) == test.y) & test.mask
        return {"probe_accuracy": jnp.sum(hits) / jnp.sum(test.mask),
                "probe_rounds": state["rounds"]}

    return Attacker(init=init, begin_round=begin_round, end_round=end_round, metrics=metrics)


def test_an_attackers_state_and_views_through_the_round(monkeypatch):
    """An attacker's state goes init -> begin_round -> end_round -> the next
    round; ``begin_round`` sees a client's own examples, exactly; ``end_round``
    the aggregate and the new parameters (plain SGD at server rate 1: new =
    old + aggregate); ``metrics`` the round's ``predict`` (its accuracy equals
    the evaluation's); a factory with a ``model`` parameter gets the model.

    Catches: the state dropped at init or between the hooks, a client's
    examples read one past its count or from the wrong offset, ``end_round``
    not called or given other arrays, ``predict`` missing, the model not
    passed.
    """
    from fljax import attacks

    monkeypatch.setitem(attacks.ATTACKS, "probe", _probe_attack)
    cfg = small_cfg("attack.name='probe'", "attack.num_malicious=2")
    state, info, plan = run_rounds(cfg, 2)
    st = state.attack_state
    assert int(st["rounds"]) == 2 and int(st["classes"]) == 10
    cid = int(st["cid"])
    assert cid == int(info.client_ids[0])
    off, cnt = int(plan.data.offsets[cid]), int(plan.data.counts[cid])
    assert int(st["count"]) == cnt
    assert int(st["ysum"]) == int(np.sum(np.asarray(plan.data.y[off:off + cnt])))
    np.testing.assert_allclose(float(st["xsum"]),
                               float(np.sum(np.asarray(plan.data.x[off:off + cnt]))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(st["step"]), 0.0, atol=1e-6)
    rnd = simulate.compiled(plan.spec).round
    out = rnd.evaluate(plan.hparams, state, plan.data)
    assert int(out["probe_rounds"]) == 2
    np.testing.assert_allclose(float(out["probe_accuracy"]), float(out["accuracy"]), atol=1e-6)
    assert set(out) >= {"accuracy", "loss", "error_rate"}
    np.testing.assert_allclose(float(out["error_rate"]), 1 - float(out["accuracy"]), atol=1e-6)


def test_make_optimizer_momentum_and_static_kwargs():
    """``momentum`` is SGD with momentum 0.9 unless given; static keyword
    arguments reach optax; bad ones fail naming the field.

    Catches: another default momentum, the static kwargs dropped, the
    ``momentum`` alias not mapped to ``sgd``.
    """
    from fljax.round import make_optimizer

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}

    def two_steps(opt):
        s = opt.init(params)
        u1, s = opt.update(grads, s, params)
        u2, _ = opt.update(grads, s, params)
        return np.asarray(u2["w"])

    want = two_steps(__import__("optax").sgd(0.1, momentum=0.9))
    np.testing.assert_allclose(two_steps(make_optimizer("momentum", {"learning_rate": 0.1})),
                               want, rtol=1e-6)
    nesterov = two_steps(__import__("optax").sgd(0.1, momentum=0.5, nesterov=True))
    got = make_optimizer("momentum", {"learning_rate": 0.1, "momentum": 0.5}, {"nesterov": True})
    np.testing.assert_allclose(two_steps(got), nesterov, rtol=1e-6)
    with pytest.raises(config.ConfigError, match=r"server\.optimizer_kwargs: bad arguments"):
        make_optimizer("adam", {"learning_rate": 0.1}, {"nope": 1}, "server")


def test_chunk_norms_are_the_overflow_safe_norms():
    """A streamed chunk's one-pass row norms fall back to the overflow-safe
    form when a row's sum of squares overflows or is tiny.

    Catches: the one-pass form kept for an overflowing chunk (inf for a
    finite row), a wrong norm for tiny rows, NaN rows not reported as inf.
    """
    from fljax.round import _chunk_norms, _norms

    x = jnp.array([[3e20, 4e20], [3.0, 4.0]])  # sum of squares overflows float32
    np.testing.assert_allclose(np.asarray(_chunk_norms(x)), [5e20, 5.0], rtol=1e-6)
    tiny = jnp.array([[3e-25, 4e-25], [3.0, 4.0]])  # sum of squares underflows
    np.testing.assert_allclose(np.asarray(_chunk_norms(tiny)), [5e-25, 5.0], rtol=1e-6)
    bad = jnp.array([[jnp.nan, 1.0], [3.0, 4.0]])
    np.testing.assert_array_equal(np.asarray(_chunk_norms(bad)), np.asarray(_norms(bad)))
    assert np.isinf(np.asarray(_chunk_norms(bad))[0])


def test_diagnostics_name_clients_unless_buckets_merged_them():
    """``malicious_kept`` reads the rule's selection as client rows, except
    after ``bucketing``, whose selections name buckets (then NaN); other
    pre-aggregation stages (NNM) keep rows one per client.

    Catches: the bucketing test inverted or dropped (a bucket index read as
    a client's), every pre-aggregation stage treated as merging.
    """
    attack = ["attack.name='sign_flip'", "attack.num_malicious=20", "clients_per_round=12",
              "aggregator={'name': 'multi_krum', 'kwargs': {'num_byzantine': 1}}"]
    _, info, _ = run_rounds(small_cfg(*attack, "pre_aggregation=[{'name': 'bucketing', "
                                                "'kwargs': {'bucket_size': 2}}]"), 1)
    assert np.isnan(float(info.diagnostics["malicious_kept"]))
    _, info, _ = run_rounds(small_cfg(*attack, "pre_aggregation=[{'name': 'nnm', "
                                                "'kwargs': {'num_byzantine': 1}}]"), 1)
    assert int(info.malicious.sum()) > 0
    assert 0.0 <= float(info.diagnostics["malicious_kept"]) <= 1.0


def test_per_tensor_transforms_get_the_models_shapes():
    """Client and server transforms built by the round prune per parameter
    tensor (they get the model's tensor shapes), not over the whole update.

    Catches: the shapes not passed (``prune`` then works on the whole flat
    update at once).
    """
    from fljax import transforms

    tf = "[{'name': 'prune', 'kwargs': {'percent': 50}}]"
    plan = plan_lib.prepare(small_cfg(f"client_transforms={tf}", f"server_transforms={tf}"))
    rnd = simulate.compiled(plan.spec).round
    comp = rnd.components(plan.hparams, plan.data)
    shapes = transforms.tensor_shapes(rnd.model.init(jax.random.PRNGKey(0)))
    x = jax.random.normal(jax.random.PRNGKey(3), (rnd.dim,)) * jnp.repeat(
        jnp.asarray([10.0 ** i for i in range(len(shapes))]),
        jnp.asarray([int(np.prod(s)) for s in shapes]), total_repeat_length=rnd.dim)
    want = transforms.prune(50, shapes=shapes)(x, None)
    for tf_fn in (comp.client_tf, comp.server_tf):
        np.testing.assert_array_equal(np.asarray(tf_fn(x, jax.random.PRNGKey(0))), np.asarray(want))
    assert not np.array_equal(np.asarray(want), np.asarray(transforms.prune(50)(x, None)))


@pytest.mark.parametrize("population, one_honest", [
    (["attack.num_malicious=15"], False),
    (["data.num_clients=6", "attack.num_malicious=5"], True),
], ids=["some-honest", "one-honest"])
def test_a_streamed_round_reports_what_the_dense_round_reports(population, one_honest):
    """One round under a data attack with a random server transform (Gaussian
    noise per row), streamed and dense: the same parameters, row norms and
    diagnostics (the honest rows' mean, the malicious count); also with
    exactly one honest row among the six sampled.

    Catches: a row's server-transform key taken from another row when
    streaming (``tf_keys[min(rows, k - 2)]``), the streamed honest sum
    including the malicious rows (``mal_pad`` not negated), subtracted, or
    not divided by the honest count (``maximum(honest_rows, 2.0)``: only
    wrong with one honest row).
    """
    extra = ["aggregator={'name': 'norm_clipping', 'kwargs': {'max_norm': 0.3}}",
             "clients_per_round=6", "attack.name='label_flip'", *population,
             "server_transforms=[{'name': 'gaussian_noise', 'kwargs': {'stddev': 0.01}}]"]
    dense, dinfo, dplan = run_rounds(small_cfg("execution.aggregation='dense'", *extra), 1)
    streamed, sinfo, splan = run_rounds(small_cfg("execution.aggregation='stream'", *extra), 1)
    assert (dplan.spec.aggregation, splan.spec.aggregation) == ("dense", "stream")
    honest = 6 - int(dinfo.malicious.sum())
    assert honest == 1 if one_honest else 0 < honest < 6
    assert_same_round_report(dense, dinfo, streamed, sinfo)
