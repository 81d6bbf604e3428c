"""Scale: streamed rules equal the dense ones, the memory budget is honoured
and estimated within 2x, runs and sweeps resume exactly from orbax
checkpoints, bad budgets / devices / coordinators fail first with one line.

Each test's docstring names the deliberate bug (mutation) it is there to catch.
The sharded rounds are checked in ``sharded_test.py`` (a subprocess with 8
fake CPU devices).
"""

import json
import os
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fljax import aggregators, config, execution, memory, plan as plan_lib, results, simulate, sweep
from fljax.aggregators.base import AggregationContext
from tests.simulate_test import (assert_same_round_report, assert_trees_equal, small_cfg,
                                 unmeasured)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stream(agg, x, w, key, chunk, mask=None):
    """The streamed rule over ``x`` in chunks (and masked padding rows), jitted."""
    n, d = x.shape
    mask = np.ones(n, bool) if mask is None else mask
    real = np.flatnonzero(mask)

    @jax.jit
    def run(x, w, key):
        s = agg.stream
        acc = s.zero(d, x.dtype)
        infos = []
        for i in range(0, n, chunk):
            acc, info = s.add(acc, x[i:i + chunk], w[i:i + chunk], jnp.asarray(mask[i:i + chunk]))
            infos.append(info)
        row_info = {k: jnp.concatenate([i[k] for i in infos])[real] for k in infos[0]}
        return s.finish(acc, row_info, agg.init(d), key, AggregationContext(weights=w[real]))

    return run(x, w, key)


@pytest.mark.parametrize("rule", [
    aggregators.mean(), aggregators.norm_clipping(0.7),
    aggregators.weak_dp(0.7, 0.05, placement="average"),
], ids=["mean", "norm_clipping", "weak_dp"])
def test_streamed_rules_equal_their_dense_form(rule):
    """Chunks of 3 (a partial last one), a huge row, NaN rows (for the
    screening rules) and padding rows holding NaN: the streamed rule equals
    ``aggregate`` on the whole matrix, info included.

    Catches: weights normalised per chunk instead of once, the count of
    finite rows taken per chunk, padding rows counted or read as numbers
    (NaN in a padding row, a finite padding row kept: ``mask | finite``), the
    noise drawn per chunk or from another key; mean's stream not screening
    NaN rows or miscounting them (``num_nonfinite - bad``).
    """
    rng = np.random.default_rng(0)
    n, d = 11, 37
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[4] *= 1e4
    screening = rule.stream is not None and "norms" in rule.stream.add(
        rule.stream.zero(d, jnp.float32), jnp.asarray(x[:1]), jnp.ones(1), jnp.ones(1, bool))[1]
    counts = "num_nonfinite" in rule.aggregate(jnp.asarray(x), rule.init(d), jax.random.PRNGKey(0),
                                               None)[2]
    if screening or counts:  # mean screens (and counts) NaN rows too
        x[7, 3] = np.nan
    w = jnp.asarray(rng.integers(1, 9, n).astype(np.float32))
    key = jax.random.PRNGKey(3)
    want, _, want_info = jax.jit(lambda x, w, key: rule.aggregate(
        x, rule.init(d), key, AggregationContext(weights=w)))(jnp.asarray(x), w, key)
    got, _, got_info = _stream(rule, jnp.asarray(x), w, key, chunk=3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=1e-6)
    for k in want_info:
        np.testing.assert_allclose(np.asarray(got_info[k]), np.asarray(want_info[k]), rtol=2e-5)
    # Padding rows (mask False) change nothing: NaN ones, and finite ones (the
    # round pads with repeats of real clients).
    xp = np.concatenate([x, np.full((2, d), np.nan, np.float32), x[:2]])
    wp = jnp.concatenate([w, jnp.ones(4)])
    mask = np.arange(n + 4) < n
    padded, _, padded_info = _stream(rule, jnp.asarray(xp), wp, key, chunk=4, mask=mask)
    np.testing.assert_allclose(np.asarray(padded), np.asarray(want), rtol=2e-5, atol=1e-6)
    for k in want_info:
        np.testing.assert_allclose(np.asarray(padded_info[k]), np.asarray(want_info[k]),
                                   rtol=2e-5)


def _two_rounds_aot(cfg):
    """Two rounds through the step compiled ahead of time (the executable
    whose memory analysis is returned): ``(state, info, plan, stats)``."""
    plan = plan_lib.prepare(cfg)
    comp = simulate.compiled(plan.spec)
    k_init, k_rounds = simulate.run_keys(cfg["seed"])
    state = comp.init(plan.hparams, plan.data, k_init)
    buf = comp.round.new_buffer()
    exe = comp.step.lower(plan.hparams, state, plan.data, k_rounds, buf).compile()
    for _ in range(2):
        state, info, buf = exe(plan.hparams, state, plan.data, k_rounds, buf)
    return state, info, plan, exe.memory_analysis()


@pytest.mark.slow
def test_a_streamed_round_equals_a_dense_round_and_never_holds_the_matrix():
    """Norm clipping over two rounds with ``execution.aggregation`` stream and
    dense, a data attack and a server transform: the same parameters, row
    norms and diagnostics; XLA's memory analysis of the streamed step has no
    ``[K, d]`` buffer (the dense step's has).

    Catches: a streamed round that builds the update matrix anyway (e.g. the
    rows stacked by the scan), row norms or honest sums taken before the
    server transforms, the wrong rows marked malicious.
    """
    extra = ["aggregator={'name': 'norm_clipping', 'kwargs': {'max_norm': 0.3}}",
             "clients_per_round=12", "attack.name='label_flip'", "attack.num_malicious=15",
             "server_transforms=[{'name': 'clip_by_norm', 'kwargs': {'max_norm': 0.5}}]"]
    dense, dinfo, dplan, dmem = _two_rounds_aot(small_cfg("execution.aggregation='dense'",
                                                          *extra))
    streamed, sinfo, splan, smem = _two_rounds_aot(small_cfg("execution.aggregation='stream'",
                                                             *extra))
    assert (dplan.spec.aggregation, splan.spec.aggregation) == ("dense", "stream")
    assert_same_round_report(dense, dinfo, streamed, sinfo)
    assert int(sinfo.diagnostics["malicious_rows"]) > 0
    matrix = 12 * splan.memory.inputs["dim"] * 4
    data = memory.nbytes(splan.data)
    step = lambda m: m.temp_size_in_bytes + m.argument_size_in_bytes - data  # noqa: E731
    assert step(dmem) >= matrix and step(smem) < matrix / 2


def test_the_budget_picks_the_chunk_and_bad_budgets_fail_with_the_figure():
    """``auto`` keeps one client at a time on CPU; an explicit chunk or
    ``vmap`` that does not fit, a budget below one client, a rule needing
    all K rows beyond the budget and a streaming demand the rule cannot
    meet each fail in ``prepare`` with one line naming the field and the
    figure.

    Catches: a budget that is never checked, the estimate ignoring the
    dense matrix, a streamed mode silently falling back to dense.
    """
    plan = plan_lib.prepare(small_cfg())
    assert (plan.spec.strategy, plan.spec.chunk, plan.spec.aggregation) == ("map", 1, "stream")
    assert [execution.default_strategy(b) for b in ("cpu", "gpu", "tpu", None)] == [
        "map", "vmap", "vmap", "map"]  # None: this machine's backend (CPU)
    total_gb = plan.memory.total / memory.GB
    with pytest.raises(config.ConfigError, match=r"execution.memory_gb = [0-9.]+ is too small "
                                                 r"for one client: .* needs [0-9.]+ [MG]B per "
                                                 r"device \(data [0-9.]+ MB"):
        plan_lib.prepare(small_cfg(f"execution.memory_gb={total_gb / 4}"))
    big = ["clients_per_round=40", "model.kwargs={'hidden': [512]}"]
    med = plan_lib.prepare(small_cfg(*big, "aggregator={'name': 'coordinate_median'}"))
    rows = (med.memory.parts["updates"] + med.memory.parts["rule"]) / memory.GB
    assert med.memory.parts["updates"] == 40 * med.memory.inputs["dim"] * 4
    with pytest.raises(config.ConfigError, match="'coordinate_median' needs all 40 updates"):
        plan_lib.prepare(small_cfg(*big, "aggregator={'name': 'coordinate_median'}",
                                   f"execution.memory_gb={med.memory.total / memory.GB - rows / 2}"))
    with pytest.raises(config.ConfigError, match="execution.strategy = 'vmap' needs"):
        plan_lib.prepare(small_cfg(*big, "execution.strategy='vmap'",
                                   f"execution.memory_gb={med.memory.total / memory.GB}"))
    with pytest.raises(config.ConfigError, match="execution.aggregation.*no streaming form"):
        plan_lib.prepare(small_cfg("aggregator={'name': 'coordinate_median'}",
                                   "execution.aggregation='stream'"))
    with pytest.raises(config.ConfigError, match="execution.aggregation.*rewrites rows"):
        plan_lib.prepare(small_cfg("attack.name='sign_flip'", "attack.num_malicious=3",
                                   "execution.aggregation='stream'"))


def test_more_devices_than_exist_fail_first():
    """Catches: a device count silently capped (a run on fewer devices than asked)."""
    n = len(jax.devices())
    with pytest.raises(config.ConfigError, match=f"execution.devices.*only {n} cpu device"):
        plan_lib.prepare(small_cfg(f"execution.devices={n + 7}"))


def test_cells_per_program_fit_the_budget():
    """A budget that holds a few cells' dense matrices splits a sweep's group
    into programs of that many cells.

    Catches: the cell count ignoring the budget (the old fixed estimate), or
    a count whose estimate does not fit.
    """
    base = ["clients_per_round=20", "model.kwargs={'hidden': [256]}",
            "aggregator={'name': 'coordinate_median'}"]
    plan = plan_lib.prepare(small_cfg(*base))
    inputs = plan.memory.inputs
    one = memory.estimate(**{**inputs, "cells": 1}).total
    four = memory.estimate(**{**inputs, "cells": 4}).total
    budget = int(four + (four - one) / 6)  # room for 4 cells, not 5
    tight = plan._replace(memory=plan.memory._replace(inputs={**inputs, "budget": budget}))
    assert sweep.cells_per_program(tight, 0, 100) == 4
    assert sweep.cells_per_program(tight, 0, 3) == 3
    assert sweep.cells_per_program(tight, 7, 100) == 7


_MEMORY_SCRIPT = r"""
import json, os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp
jnp.zeros(1).block_until_ready()  # the runtime is up: what follows is the run's
from fljax import config, memory, plan as plan_lib, simulate
cfg = config.resolve(simulate.DEFAULTS, {
    "rounds": 2, "eval_every": 2, "clients_per_round": 400,
    "data": {"name": "random_emnist", "num_clients": 400, "partition": "iid",
             "dataset_kwargs": {"examples_per_client": 8}},
    "model": {"name": "emnist_dense"},
    "client": {"batch_size": 8, "epochs": 1},
    "aggregator": {"name": sys.argv[2]},
    "server_data": {"root_size": 0, "validation_size": 0}})
simulate.compiled.cache_clear()
base = memory.rss()
plan = plan_lib.prepare(cfg)
comp = simulate.compiled(plan.spec)
k_init, k_rounds = simulate.run_keys(0)
state = comp.init(plan.hparams, plan.data, k_init)
buf = comp.round.new_buffer()
state, _, buf = comp.step(plan.hparams, state, plan.data, k_rounds, buf)  # compiles
jax.block_until_ready(state)
tracker = memory.PeakTracker()
tracker.reset()
state, _, buf = comp.step(plan.hparams, state, plan.data, k_rounds, buf)
jax.block_until_ready(state)
print(json.dumps({"estimate": plan.memory.total, "used": tracker.read() - base,
                  "parts": plan.memory.parts, "resettable": tracker.resettable}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["coordinate_median", "mean"])
def test_the_memory_estimate_is_within_2x_of_the_measured_peak(rule):
    """A fresh process (400 clients of the EMNIST dense model: the dense
    ``[K, d]`` matrix is 320 MB, the streamed round holds the data and the
    state): the plan's estimate is within 2x of the peak resident memory of a
    round (after the one that compiles) beyond what the process held before
    it prepared the run.

    Catches: an estimate that forgets the update matrix, the data's host
    copy or the rule's workspace, or counts a matrix the streamed round
    never builds.
    """
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, ROOT, rule],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["resettable"]:
        pytest.skip("no /proc/self/clear_refs: the per-round peak cannot be measured here")
    ratio = got["estimate"] / got["used"]
    assert 0.5 <= ratio <= 2.0, got


# ----------------------------------------------------------------------------
# Checkpoints


def _interrupt_at(monkeypatch, round_):
    """Makes the run stop (KeyboardInterrupt) when it writes its metrics of ``round_``."""
    real = results.append_jsonl

    def append(path, obj):
        if obj.get("round") == round_:
            raise KeyboardInterrupt
        real(path, obj)

    monkeypatch.setattr(results, "append_jsonl", append)
    return lambda: monkeypatch.setattr(results, "append_jsonl", real)


def test_an_interrupted_run_resumes_from_orbax_exactly(tmp_path, monkeypatch):
    """Checkpoints every 3 rounds, evaluations every 2, interrupted at the
    evaluation of round 4: the resumed run (from round 3) ends with the same
    state and the same metrics as an uninterrupted one. Its peak memory is
    reported; a resume under another config is refused, one with more
    rounds continues.

    Catches: the per-round scalars summed since the last evaluation lost at
    the checkpoint (round 4's train loss would average one round), metrics
    lines past the checkpoint kept, the wrong step restored, the peak never
    measured or written as invalid JSON, another config's state continued.
    """
    cfg = small_cfg("rounds=6", "eval_every=2", "execution.checkpoint_every=3",
                    "server.optimizer='adam'", "server.learning_rate=0.01")
    full = simulate.run(cfg, str(tmp_path / "full"), progress=False, log=None)
    restore = _interrupt_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None)
    restore()
    assert sorted(os.listdir(tmp_path / "r" / "checkpoints")) == ["3"]
    resumed = simulate.run(cfg, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert_trees_equal(full.state, resumed.state)
    assert unmeasured(full.history) == unmeasured(resumed.history)
    lines = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [l["round"] for l in lines] == [0, 2, 4, 6]
    assert full.summary["final_train_loss"] == resumed.summary["final_train_loss"]
    # Peak memory per evaluation and in the summary (valid JSON, no NaN).
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["peak_memory_gb"] > 0.05 and summary["memory_estimate_gb"] > 0
    assert (summary["aggregation"], summary["devices"]) == ("stream", 1)
    assert lines[0]["peak_memory_gb"] is None  # nothing ran before round 0
    assert all(l["peak_memory_gb"] > 0.05 for l in lines[1:])
    # Another config is refused, naming the field; more rounds continue.
    other = config.resolve(simulate.DEFAULTS, cfg, ["client.learning_rate=0.3", "rounds=8"])
    with pytest.raises(config.ConfigError, match=re.escape("'client.learning_rate' differs")):
        simulate.run(other, str(tmp_path / "r"), progress=False, log=None, resume=True)
    more = config.resolve(simulate.DEFAULTS, cfg, ["rounds=7"])
    res = simulate.run(more, str(tmp_path / "r"), progress=False, log=None, resume=True)
    assert res.summary["final_round"] == 7


@pytest.mark.parametrize("batched", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["one-cell-programs", "vmapped-programs"])
def test_an_interrupted_sweep_resumes_its_program_from_the_checkpoint(tmp_path, monkeypatch,
                                                                       batched):
    """A sweep interrupted in its first program (one cell per program, or 3
    vmapped seeds per program) resumes that program from its checkpoint (not
    from round 0), then runs the rest; its results equal an uninterrupted
    sweep's and no checkpoint is left.

    Catches: unfinished programs restarted from round 0 (what a rerun did
    before), a resumed program's cells mixed up, a checkpoint left behind.
    """
    if batched:
        grid = {"aggregator": [{"name": "mean"},
                               {"name": "trimmed_mean", "kwargs": {"num_trim": 1}}],
                "seed": [0, 1, 2]}
        per_program, programs = 3, 2
    else:
        grid = {"seed": [0, 1]}
        per_program, programs = 1, 2
    base = config.resolve(simulate.DEFAULTS, small_cfg(), [
        "rounds=4", "eval_every=2", "execution.checkpoint_every=1",
        f"execution.cells_per_program={per_program}",
        "attack.name='sign_flip'", "attack.num_malicious=8"])
    full = sweep.run(simulate.DEFAULTS, base, grid, str(tmp_path / "full"), progress=False,
                     log=None)
    steps = []
    real_run_cells = simulate.run_cells

    def counting(comp, *args, **kwargs):
        real_step = comp.step

        def step(*a):
            steps.append(1)
            return real_step(*a)

        return real_run_cells(comp._replace(step=step), *args, **kwargs)

    monkeypatch.setattr(simulate, "run_cells", counting)
    restore = _interrupt_at(monkeypatch, 4)  # each program's last evaluation
    out = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        sweep.run(simulate.DEFAULTS, base, grid, str(out), progress=False, log=None)
    restore()
    assert len(steps) == 4  # the first program ran its 4 rounds, then stopped
    assert len(os.listdir(out / "checkpoints")) == 1
    steps.clear()
    summary = sweep.run(simulate.DEFAULTS, base, grid, str(out), progress=False, log=None)
    assert summary["ran"] == per_program * programs
    assert len(steps) == 1 + 4 * (programs - 1)  # round 4 of the first, then the others
    assert not os.listdir(out / "checkpoints")
    key = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert sorted(map(str, map(key, sweep.read_results(str(out))))) == \
        sorted(map(str, map(key, sweep.read_results(str(tmp_path / "full")))))
    assert full["cells"] == per_program * programs


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_metrics(tmp_path):
    """``fljax run`` killed with SIGKILL once a checkpoint is on disk (maybe
    while it writes the next), then ``--resume``: the same final metrics as
    an uninterrupted run.

    Catches: a half-written checkpoint taken as the latest, a resume that
    needs a clean shutdown.
    """
    import signal

    args = ["--set", "rounds=30", "--set", "eval_every=10", "--set",
            "execution.checkpoint_every=2", "--no-progress"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "fljax.cli", "run", os.path.join(ROOT, "configs",
                                                                   "quickstart.py")]
    full = subprocess.run(cmd + ["--out", str(tmp_path / "full")] + args, env=env, cwd=ROOT,
                          capture_output=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)] + args, env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p) for p in os.listdir(killed / "checkpoints") if p.isdigit()] \
            if (killed / "checkpoints").is_dir() else []  # orbax writes '<n>.orbax-...-tmp' first
        if any(s >= 6 for s in steps):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume"] + args, env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from round" in resumed.stdout + resumed.stderr
    a = json.loads((tmp_path / "full" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k.startswith("final_")} == \
        {k: v for k, v in b.items() if k.startswith("final_")}


# ----------------------------------------------------------------------------
# Several processes


def test_an_unreachable_coordinator_is_one_line_within_the_timeout():
    """Catches: JAX's abort (a fatal C++ check that kills the process) or a
    hang when process 1 cannot reach process 0; a malformed address."""
    from fljax import distributed

    t = time.monotonic()
    with pytest.raises(config.ConfigError, match="could not reach the coordinator at "
                                                 "127.0.0.1:9 within 1 s"):
        distributed.initialize("127.0.0.1:9", 2, 1, timeout_s=1)
    assert time.monotonic() - t < 10
    with pytest.raises(config.ConfigError, match="cannot host the coordinator"):
        distributed.probe("10.255.255.1:12399", 0, 2, 1)
    with pytest.raises(config.ConfigError, match="HOST:PORT"):
        distributed.settings("node0", 2, 0)
    with pytest.raises(config.ConfigError, match="--process-id 2 must be between 0 and"):
        distributed.settings("node0:1234", 2, 2)
    assert distributed.settings(None, None, None) is None


@pytest.mark.slow
def test_two_processes_equal_one():
    """``scripts/two_processes.py``: a run over 2 processes (CPU, a localhost
    coordinator, 2 devices each) ends with the metrics of a 1-process run.

    Catches: processes that train the same clients, arrays that are not
    global (each process aggregating only its own), files written twice.
    """
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "two_processes.py")],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "the same final metrics" in out.stdout
