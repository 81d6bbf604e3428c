"""The host driver (``simulate.run`` / ``run_cells``): what a run writes
(metrics.jsonl's per-round values, summary.json, params.msgpack), its
figures (throughput, elapsed time), its schedule and its output folder.
Split from ``simulate_test.py`` so that the two files run on different
workers."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import config, plan as plan_lib, simulate
from tests.simulate_test import assert_trees_equal, small_cfg, unmeasured


def as_earlier_version(folder, state, elapsed: float) -> None:
    """Turns a run folder into an earlier version's: its orbax checkpoints
    replaced by ``checkpoint.msgpack`` holding ``state`` and ``elapsed``."""
    import shutil

    from flax import serialization

    shutil.rmtree(folder / "checkpoints")
    blob = {"state": serialization.to_state_dict(jax.device_get(state)), "elapsed": elapsed}
    (folder / "checkpoint.msgpack").write_bytes(serialization.msgpack_serialize(blob))


def test_resume_reads_an_earlier_versions_msgpack_checkpoint(tmp_path):
    """A run folder of an earlier version (``checkpoint.msgpack`` beside
    metrics.jsonl, no orbax folder) resumes to the uninterrupted run's
    parameters and history, and its elapsed time carries on. Catches: the
    legacy file not looked for, its template or its elapsed time."""
    cfg = small_cfg("rounds=4", "eval_every=2")
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    part = config.resolve(simulate.DEFAULTS, cfg, ["rounds=2"])
    half = simulate.run(part, str(tmp_path / "r"), progress=False, log=None)
    as_earlier_version(tmp_path / "r", half.state, elapsed=1e4)
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert_trees_equal(full.state.params, resumed.state.params)
    assert unmeasured(full.history) == unmeasured(resumed.history)
    assert resumed.history[-1]["elapsed"] >= 1e4


def test_throughput_leaves_out_the_first_round(monkeypatch):
    """``client_updates_per_s`` over rounds 1 and 2 of three (round 0
    compiles): with a clock reading (1, 2, 4, 8, ...) / 32 the loop's readings
    are 1 (round 0's start), 2 and 4 (round 1), 8 and 16 (round 2), in 1/32 s:
    10/32 s for 2 x 4 updates, 25.6 a second. Catches: round 0 counted
    (``r >= start``: 21/32 s, 12 updates), the time or the count overwritten or
    subtracted, the end reading plus the start, updates divided by the
    clients, under a second of training reported as no figure."""
    import types

    clock = iter(2.0 ** i / 32 for i in range(100))
    plan = plan_lib.prepare(small_cfg("clients_per_round=4"))
    comp = simulate.compiled(plan.spec)
    monkeypatch.setattr(simulate, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    _, stats = simulate.run_cells(comp, plan.hparams, plan.data, [0], 3, 3,
                                  on_eval=lambda *a: None)
    assert stats["client_updates_per_s"] == pytest.approx(0.8 * 32)
    assert set(stats) == {"client_updates_per_s", "diverged", "peak_memory_bytes", "round_peaks"}


def test_the_evaluation_and_checkpoint_schedule_ends_on_the_last_round():
    """Three rounds, evaluating and checkpointing every 2: evaluations after
    rounds 0, 2 and 3 (the last, which 2 does not divide), checkpoints after
    2 and 3. Catches: the last round not recognised (``r - 1 == rounds``),
    the final checkpoint only when the run also stops (``last and stop``)."""
    plan = plan_lib.prepare(small_cfg("clients_per_round=4"))
    comp = simulate.compiled(plan.spec)
    evals, ckpts = [], []
    simulate.run_cells(comp, plan.hparams, plan.data, [0], 3, 2,
                       on_eval=lambda s, r, recs: evals.append(r), checkpoint_every=2,
                       on_checkpoint=lambda s, r, carry: ckpts.append(r))
    assert evals == [0, 2, 3] and ckpts == [2, 3]


def test_round_means_skip_nan_per_cell():
    """The per-round scalars are averaged per cell over the rounds since the
    last evaluation, a NaN left out of its own cell only. Catches: a NaN in
    one cell dropping the later cells' values (``break``)."""
    acc = simulate._Accumulator(3)
    acc.add({"x": [np.nan, 1.0, 2.0]})
    acc.add({"x": [4.0, 3.0, np.nan]})
    assert [acc.means(c, ["x"])["x"] for c in range(3)] == [4.0, 2.0, 2.0]
    acc.reset()
    assert acc.means(0, ["x"]) == {"x": None}


def test_round_scalars_keep_scalars_and_per_cell_values():
    """What a round writes to metrics.jsonl: the training loss; with an attack
    also whether it acted, the diagnostics and the attack's scalar info as
    ``attack_<k>`` (per-cell vectors in a batched round, where the loss is a
    vector too; per-client vectors are left out); without an attack, the
    loss only (the default is attacked). Catches: the attack's keys renamed
    or dropped, another rank kept or left out, ``attacked`` ignored or its
    default."""
    def info(loss, attack_info):
        return simulate.RoundInfo(
            client_ids=jnp.arange(4), train_loss=loss, update_norms=jnp.ones(4),
            malicious=jnp.zeros(4, bool), attack_active=jnp.asarray(True), agg_info={},
            attack_info=attack_info, diagnostics={"benign_norm": jnp.asarray(2.0)})

    one = simulate._round_scalars(info(jnp.asarray(0.5), {"lam": jnp.asarray(3.0),
                                                          "per_client": jnp.ones(4)}))
    assert set(one) == {"train_loss", "attack_active", "benign_norm", "attack_lam"}
    assert float(one["attack_active"]) == 1.0 and float(one["attack_lam"]) == 3.0
    cells = simulate._round_scalars(info(jnp.ones(3), {"lam": jnp.arange(3.0),
                                                       "per_client": jnp.ones((3, 4))}))
    assert set(cells) == {"train_loss", "attack_active", "benign_norm", "attack_lam"}
    np.testing.assert_array_equal(np.asarray(cells["attack_lam"]), [0.0, 1.0, 2.0])
    clean = simulate._round_scalars(info(jnp.asarray(0.5), {"lam": jnp.asarray(3.0)}), False)
    assert set(clean) == {"train_loss"}


def test_a_run_without_resume_refuses_a_used_folder_and_changes_nothing(tmp_path, monkeypatch):
    """A second run into a folder that holds a run, without ``resume``, fails
    before any work with a message that says what to do, and leaves the
    first run's metrics and checkpoints as they were (it used to truncate
    metrics.jsonl, then fail inside orbax: step already exists). A fresh
    folder gets its config.json, a history from round 0 and, with a clock
    that never moves, elapsed times of 0.

    Catches: config.json renamed, a fresh run's elapsed time not starting at
    0 or not the clock's difference (the clock reads 5 s). (``resume or
    out_dir`` is equivalent since: without ``resume`` the folder is new or
    refused.)"""
    import types

    simulate.run(small_cfg("rounds=2"), str(tmp_path / "a"), progress=False, log=None)
    before = (tmp_path / "a" / "metrics.jsonl").read_text()
    other = small_cfg("rounds=1", "client.learning_rate=0.3")
    with pytest.raises(config.ConfigError, match=r"already holds a run \(checkpoints, "
                       r"metrics.jsonl\); pass --resume .* nothing was changed"):
        simulate.run(other, str(tmp_path / "a"), progress=False, log=None)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == before
    monkeypatch.setattr(simulate, "time", types.SimpleNamespace(perf_counter=lambda: 5.0))
    res = simulate.run(other, str(tmp_path / "b"), progress=False, log=None)
    assert [h["round"] for h in res.history] == [0, 1]
    assert [h["elapsed"] for h in res.history] == [0.0, 0.0]
    assert json.loads((tmp_path / "b" / "config.json").read_text()) == json.loads(json.dumps(other))


def test_summary_json_and_params(tmp_path, monkeypatch):
    """summary.json holds the final evaluation (``final_<name>``, without its
    round, time, divergence and memory), the run's facts (strategy, chunk,
    parameters, local steps, devices, processes, device kind, memory figures)
    and the wall time (0 with a clock that never moves, also with ``resume``
    into a folder that holds no run yet); params.msgpack holds the final
    parameters. Catches: a field renamed or dropped, the wrong record taken
    as final, the parameters' file renamed, a resume without a checkpoint
    starting its clock above 0 (``_resume``'s ``(None, None, 1.0)``)."""
    import types

    from flax import serialization

    monkeypatch.setattr(simulate, "time", types.SimpleNamespace(perf_counter=lambda: 5.0))
    cfg = small_cfg("rounds=2")
    res = simulate.run(cfg, str(tmp_path), progress=False, log=None, resume=True)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == json.loads(json.dumps(res.summary))
    last = res.history[-1]
    finals = {f"final_{k}": v for k, v in last.items()
              if k not in ("round", "elapsed", "diverged", "peak_memory_gb")}
    plan = plan_lib.prepare(cfg)
    dim = sum(np.size(p) for p in jax.tree_util.tree_leaves(res.state.params))
    want = {"final_round": 2, **finals, "diverged": False, "diverged_round": None,
            "wall_time_s": 0.0, "client_updates_per_s": None, "strategy": plan.spec.strategy,
            "client_chunk": plan.spec.chunk, "aggregation": plan.spec.aggregation,
            "devices": 1, "processes": 1, "device": jax.devices()[0].device_kind,
            "num_params": dim, "local_steps": plan.spec.steps}
    assert {k: saved.get(k, "missing") for k in want} == json.loads(json.dumps(want))
    assert set(saved) == set(want) | {"peak_memory_gb", "memory_estimate_gb", "memory_budget_gb"}
    assert saved["memory_estimate_gb"] > 0
    params = serialization.from_bytes(res.state.params, (tmp_path / "params.msgpack").read_bytes())
    assert_trees_equal(params, res.state.params)


@pytest.mark.parametrize("legacy", [False, True], ids=["orbax", "msgpack"])
def test_a_resumed_run_keeps_the_round_it_diverged_at(tmp_path, legacy):
    """A run that turned non-finite at round 1 and went on
    (``stop_on_divergence=False``), checkpointed at round 2 and resumed to
    round 3, reports ``diverged_round`` 1 in its summary, as the run does
    uninterrupted, from either kind of checkpoint. Catches: the round taken
    from the resumed part alone (3: an earlier version's msgpack checkpoint
    carries no divergence record)."""
    cfg = small_cfg("rounds=3", "eval_every=1", "attack.name='gaussian'",
                    "attack.num_malicious=40", "attack.kwargs={'mean': 3e38, 'stddev': 0.0}",
                    "execution.stop_on_divergence=False")
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    assert full.summary["diverged_round"] == 1 and full.summary["final_round"] == 3
    half = simulate.run(config.resolve(simulate.DEFAULTS, cfg, ["rounds=2"]),
                        str(tmp_path / "r"), progress=False, log=None)
    if legacy:
        as_earlier_version(tmp_path / "r", half.state, elapsed=0.0)
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert resumed.summary["final_round"] == 3
    assert resumed.summary["diverged"] is True and resumed.summary["diverged_round"] == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["diverged_round"] == 1


def donated_args(comp, plan, cells: int = 0) -> list:
    """For each of ``comp.step``'s five arguments (hparams, state, data, round
    keys, update buffer), the set of its arrays' donation flags, from the
    lowered program (no compilation); ``cells``: a batched program's width."""
    def stack(tree):
        return jax.tree_util.tree_map(lambda x: jnp.stack([jnp.asarray(x)] * cells), tree) \
            if cells else tree

    hparams = stack(plan.hparams)
    k_init, k_rounds = (stack(k) for k in simulate.run_keys(0))
    state = jax.eval_shape(comp.init, hparams, plan.data, k_init)
    args, _ = comp.step.lower(hparams, state, plan.data, k_rounds,
                              comp.new_buffer(cells)).args_info
    return [sorted({a.donated for a in jax.tree_util.tree_leaves(x)}) for x in args]


DONATED = [[False], [True], [False], [False], [True]]  # the state and the buffer only


def test_a_round_donates_its_state_and_buffer_only():
    """A single run's and a batched program's step donate the state and the
    update buffer (reused every round) and nothing else. Catches: the data
    donated instead of the state (``donate_argnums=(2, 4)``): no output has
    the data's shape, so JAX only warns and keeps it, and the state, no
    longer donated, is held twice every round: the same numbers (every other
    test passes), more memory."""
    plan = plan_lib.prepare(small_cfg("execution.strategy='map'", "execution.aggregation='dense'",
                                      "aggregator={'name': 'coordinate_median'}"))
    assert donated_args(simulate.compiled(plan.spec), plan) == DONATED
    assert donated_args(simulate.compiled(plan.spec, True), plan, cells=3) == DONATED
