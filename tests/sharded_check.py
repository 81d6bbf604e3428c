"""Runs configs on 1 and on 8 devices and prints one JSON line per case
(run by ``tests/sharded_test.py`` with 8 fake CPU devices; not a test module).
A line's ``devices`` are how many devices hold each run's state.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded_check.py CASE ...
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fljax import config, simulate, sweep  # noqa: E402

BASE = {
    "rounds": 2, "eval_every": 2, "clients_per_round": 10,
    "data": {"name": "digits", "num_clients": 40, "partition": "dirichlet",
             "partition_kwargs": {"alpha": 1.0}},
    "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
    "client": {"learning_rate": 0.1, "batch_size": 32, "epochs": 1},
}
LABEL_FLIP = ["attack.name='label_flip'", "attack.num_malicious=10"]
CASES = {
    "stream_mean_attack": LABEL_FLIP + [
        "server_transforms=[{'name': 'clip_by_norm', 'kwargs': {'max_norm': 0.5}}]"],
    # Client transforms make the updates flat rows; chunks of 2 per device.
    "median_columns": LABEL_FLIP + [
        "aggregator={'name': 'coordinate_median'}", "execution.client_chunk=2",
        "client_transforms=[{'name': 'clip_by_norm', 'kwargs': {'max_norm': 0.5}}]"],
    "multi_krum_columns": LABEL_FLIP + [
        "aggregator={'name': 'multi_krum', 'kwargs': {'num_byzantine': 2}}",
        "clients_per_round=16"],
    # A bound the updates exceed (their norms are ~0.1-0.3): the clipping binds.
    "clip_columns": LABEL_FLIP + [
        "aggregator={'name': 'norm_clipping', 'kwargs': {'max_norm': 0.02}}",
        "execution.aggregation='dense'"],
    # A server transform: the rows must be gathered whole (no column blocks).
    "clip_server_tf": LABEL_FLIP + [
        "aggregator={'name': 'norm_clipping', 'kwargs': {'max_norm': 0.02}}",
        "execution.aggregation='dense'",
        "server_transforms=[{'name': 'gaussian_noise', 'kwargs': {'stddev': 0.001}}]"],
    "median_vmap": LABEL_FLIP + ["aggregator={'name': 'coordinate_median'}",
                                 "execution.strategy='vmap'"],
    "trimmed_fallback": ["aggregator={'name': 'trimmed_mean', 'kwargs': {'num_trim': 2}}",
                         "attack.name='sign_flip'", "attack.num_malicious=10"],
    "weak_dp_chunks": ["aggregator={'name': 'weak_dp', 'kwargs': {'max_norm': 0.5, "
                       "'sigma': 0.01}}", "execution.client_chunk=3"],
}
METRICS = ("final_main_accuracy", "final_main_loss", "final_train_loss",
           "final_cosine_to_honest", "final_norm_ratio_to_honest", "final_malicious_kept")


def placed(tree) -> int:
    """On how many devices a state's first array lives (a run over a mesh
    keeps its parameters replicated on every device of it)."""
    return len(jax.tree_util.tree_leaves(tree)[0].sharding.device_set)


def max_diff(a, b) -> float:
    """The largest absolute difference between two lists of host arrays."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - y))) for x, y in zip(a, b))


def run_case(name: str) -> dict:
    if name == "sweep_cells":
        return sweep_case()
    if name == "resume":
        return resume_case()
    if name == "donation":
        return donation_case()
    if name == "two_devices":
        return two_devices_case()
    if name == "column_rules":
        return column_rules_case()
    outs = []
    for d in (1, 8):
        cfg = config.resolve(simulate.DEFAULTS, BASE, CASES[name] + [f"execution.devices={d}"])
        res = simulate.run(cfg, progress=False, log=None)
        params = jax.tree_util.tree_leaves(simulate.to_host(res.state.params))
        outs.append((res.summary, params, placed(res.state.params)))
    (s1, p1, d1), (s8, p8, d8) = outs
    return {"case": name, "devices": [d1, d8],
            "aggregation": s8["aggregation"],
            "max_param_diff": max_diff(p1, p8),
            "metrics": {k: (s1.get(k), s8.get(k)) for k in METRICS if k in s1}}


COLUMN_RULES = [("mean", {}), ("coordinate_median", {}), ("trimmed_mean", {"num_trim": 2}),
                ("norm_clipping", {"max_norm": 1.0}), ("krum", {"num_byzantine": 2}),
                ("multi_krum", {"num_byzantine": 2})]


def column_rules_case() -> dict:
    """Every rule built with ``columns=True`` on 8 column blocks of a matrix
    whose row 3 is NaN in one column of the last block only and whose row 5
    is 1e3 times larger, against the same rule on whole rows. Its
    ``max_param_diff`` is the largest difference of the aggregates."""
    from jax.sharding import Mesh, PartitionSpec as P

    from fljax import aggregators
    from fljax.aggregators.base import AggregationContext

    rng = np.random.default_rng(0)
    n, d = 12, 8 * 5
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[3, d - 3] = np.nan
    x[5] *= 1e3
    w = rng.uniform(1.0, 3.0, size=n).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()[:8]), ("c",))
    key = jax.random.key(0)
    metrics, worst = {}, 0.0
    for name, kwargs in COLUMN_RULES:
        agg = aggregators.get_aggregator(name, **kwargs)
        assert agg.columns, name
        state = agg.init(d)
        whole = np.asarray(agg.aggregate(
            jax.numpy.asarray(x), state, key, AggregationContext(weights=w))[0])

        def block(xb, agg=agg, state=state):
            return agg.aggregate(xb, state, key, AggregationContext(weights=w, axis="c"))[0]

        cols = np.asarray(jax.jit(jax.shard_map(block, mesh=mesh, in_specs=P(None, "c"),
                                                out_specs=P("c"), check_vma=False))(x))
        assert np.all(np.isfinite(whole)), (name, whole)
        diff = float(np.max(np.abs(cols - whole) / np.maximum(1.0, np.abs(whole))))
        worst = max(worst, diff if np.isfinite(diff) else np.inf)
        metrics[name] = (0.0, diff)
    return {"case": "column_rules", "devices": [1, 8], "aggregation": "dense",
            "max_param_diff": worst, "metrics": metrics}


def two_devices_case() -> dict:
    """Two rounds of a column-sharded coordinate median under a data attack on
    1 and on 2 devices (the smallest sharded mesh), called through the
    compiled round so that its ``RoundInfo`` is compared too: the parameters,
    the row norms the rule received (``update_norms``, reduced over the
    column blocks) and the honest diagnostics. Its ``max_param_diff`` covers
    the parameters and the row norms (relative)."""
    from tests.simulate_test import run_rounds

    outs = []
    for d in (1, 2):
        cfg = config.resolve(simulate.DEFAULTS, BASE, LABEL_FLIP + [
            "aggregator={'name': 'coordinate_median'}", f"execution.devices={d}"])
        state, info, plan = run_rounds(cfg, 2)
        leaves = jax.tree_util.tree_leaves(simulate.to_host(state.params))
        outs.append((placed(state.params), leaves, np.asarray(info.update_norms),
                     simulate.to_host(info.diagnostics), plan.spec))
    (d1, p1, n1, g1, _), (d2, p2, n2, g2, s2) = outs
    diff = max_diff(p1, p2)
    diff = max(diff, float(np.max(np.abs(n1 - n2) / np.maximum(1.0, np.abs(n1)))))
    keys = ("cosine_to_honest", "norm_ratio_to_honest", "malicious_rows", "num_nonfinite")
    return {"case": "two_devices", "devices": [d1, d2],
            "aggregation": s2.aggregation, "max_param_diff": diff,
            "metrics": {k: (float(g1[k]), float(g2[k])) for k in keys if k in g1}}


def resume_case() -> dict:
    """Three rounds on 1 device, and on 8 devices two rounds, a checkpoint and
    a resumed third (the state restored onto the mesh), with a stateful server
    optimizer and rule."""
    extra = LABEL_FLIP + ["rounds=3", "eval_every=1", "server.optimizer='adam'",
                          "server.learning_rate=0.01",
                          "aggregator={'name': 'centered_clipping', 'kwargs': {'tau': 1.0}}"]
    one = simulate.run(config.resolve(simulate.DEFAULTS, BASE, extra + ["execution.devices=1"]),
                       progress=False, log=None)
    cfg = config.resolve(simulate.DEFAULTS, BASE, extra + ["execution.devices=8"])
    out = tempfile.mkdtemp()
    simulate.run(config.resolve(simulate.DEFAULTS, cfg, ["rounds=2"]), out, progress=False,
                 log=None)
    res = simulate.run(cfg, out, progress=False, log=None, resume=True)
    leaves = [jax.tree_util.tree_leaves(simulate.to_host(r.state)) for r in (one, res)]
    return {"case": "resume", "devices": [placed(one.state), placed(res.state)],
            "aggregation": res.summary["aggregation"],
            "max_param_diff": max_diff(*leaves),
            "metrics": {k: (one.summary.get(k), res.summary.get(k)) for k in METRICS
                        if k in one.summary}}


def donation_case() -> dict:
    """Which arguments a run's and a sweep's step donate over 8 devices."""
    from fljax import plan as plan_lib
    from tests.simulate_driver_test import donated_args

    cfg = config.resolve(simulate.DEFAULTS, BASE, [
        "execution.devices=8", "execution.aggregation='dense'",
        "aggregator={'name': 'coordinate_median'}"])
    plan = plan_lib.prepare(cfg)
    return {"case": "donation",
            "donated": [donated_args(simulate.compiled(plan.spec), plan),
                        donated_args(simulate.compiled(plan.spec, True), plan, cells=8)]}


def sweep_case() -> dict:
    """Three seeds as one vmapped program, on 1 device and split over 8."""
    rows = []
    for d in (1, 8):
        base = config.resolve(simulate.DEFAULTS, BASE, LABEL_FLIP + [
            "aggregator={'name': 'coordinate_median'}", f"execution.devices={d}"])
        out = tempfile.mkdtemp()
        sweep.run(simulate.DEFAULTS, base, {"seed": [0, 1, 2]}, out, progress=False, log=None)
        rows.append(sorted(sweep.read_results(out), key=lambda r: int(r["cell"])))
    metrics = {}
    for r1, r8 in zip(*rows):
        for k in ("main_accuracy", "main_loss", "train_loss"):
            metrics[f"cell{r1['cell']}_{k}"] = (float(r1[k]), float(r8[k]))
    return {"case": "sweep_cells", "devices": [1, 8], "aggregation": "dense",
            "max_param_diff": 0.0, "metrics": metrics}


if __name__ == "__main__":
    assert len(jax.devices()) >= 8, "needs XLA_FLAGS=--xla_force_host_platform_device_count=8"
    for case in sys.argv[1:]:
        print(json.dumps(run_case(case)), flush=True)
