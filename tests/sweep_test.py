"""``fljax sweep``: a vmapped group equals single runs, results are written
as they finish and resumed, foreign results are refused, bad grids fail
before any cell runs.

Each test's docstring names the deliberate bug (mutation) it is there to catch.
"""

import csv
import json

import numpy as np
import pytest

from fljax import config, simulate, sweep

BASE = {
    "rounds": 3,
    "eval_every": 3,
    "clients_per_round": 5,
    "data": {"name": "digits", "num_clients": 20, "partition": "iid"},
    "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
    "client": {"learning_rate": 0.1, "batch_size": 16, "epochs": 1},
    "aggregator": {"name": "trimmed_mean", "kwargs": {"num_trim": 1}},
    "attack": {"name": "sign_flip", "num_malicious": 4, "kwargs": {"scale": 2.0}},
}


def base():
    return config.resolve(simulate.DEFAULTS, BASE)


def rows(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_vmapped_group_equals_single_runs(tmp_path):
    """Three seeds x two attack scales run as ONE program (one group); every
    cell equals the same config run alone with ``fljax run --set``.

    Catches: cells sharing keys or hyperparameters inside the vmapped
    program, a cell's values written to another cell's row.
    """
    grid = {"seed": [0, 1, 2], "attack.kwargs.scale": [1.0, 4.0]}
    summary = sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    assert summary["groups"] == 1 and summary["ran"] == 6
    got = rows(tmp_path)
    assert [r["cell"] for r in got] == [str(i) for i in range(6)]
    for r in got[::2] + got[1::4]:
        cfg = config.resolve(simulate.DEFAULTS, base(),
                             [f"seed={r['seed']}", f"attack.kwargs.scale={r['attack.kwargs.scale']}"])
        alone = simulate.run(cfg, progress=False, log=None).summary
        np.testing.assert_allclose(float(r["main_accuracy"]), alone["final_main_accuracy"],
                                   atol=2e-3)
        np.testing.assert_allclose(float(r["main_loss"]), alone["final_main_loss"], rtol=1e-4)
    lines = (tmp_path / "cells" / "0004" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["round"] for l in lines] == [0, 3]
    md = (tmp_path / "results.md").read_text()
    assert "±" in md and "| 1.0 |" in md
    assert (tmp_path / "heatmap_main_accuracy.png").exists()


def test_different_specs_form_groups_and_rerun_skips_finished_cells(tmp_path):
    """Two rules are two groups; re-running the same sweep runs nothing, and a
    sweep whose last rows were lost reruns only those cells.

    Catches: finished cells re-run (or appended twice) on resume.
    """
    grid = {"aggregator": [{"name": "mean"}, {"name": "trimmed_mean", "kwargs": {"num_trim": 1}}],
            "seed": [0, 1]}
    first = sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    assert first["groups"] == 2 and first["ran"] == 4
    again = sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    assert again["ran"] == 0 and len(rows(tmp_path)) == 4
    text = (tmp_path / "results.csv").read_text().splitlines()
    (tmp_path / "results.csv").write_text("\n".join(text[:-2]) + "\n")  # "interrupted"
    third = sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    assert third["ran"] == 2
    assert sorted(int(r["cell"]) for r in rows(tmp_path)) == [0, 1, 2, 3]
    assert {r["aggregator"] for r in rows(tmp_path)} == {
        '{"name": "mean"}', '{"kwargs": {"num_trim": 1}, "name": "trimmed_mean"}'}


def test_a_folder_of_another_sweep_is_refused(tmp_path):
    """Catches: appending rows of one sweep to another sweep's results."""
    sweep.run(simulate.DEFAULTS, base(), {"seed": [0]}, str(tmp_path), progress=False, log=None)
    before = (tmp_path / "results.csv").read_text()
    with pytest.raises(config.ConfigError, match="another sweep"):
        sweep.run(simulate.DEFAULTS, base(), {"seed": [0, 1]}, str(tmp_path), progress=False,
                  log=None)
    other = config.resolve(simulate.DEFAULTS, base(), ["client.learning_rate=0.2"])
    with pytest.raises(config.ConfigError, match="client.learning_rate"):
        sweep.run(simulate.DEFAULTS, other, {"seed": [0]}, str(tmp_path), progress=False,
                  log=None)
    assert (tmp_path / "results.csv").read_text() == before


@pytest.mark.parametrize("grid,needle", [
    ({"client.lr": [0.1]}, "client.lr"),
    ({"seed": []}, "empty"),
    ({"rounds": ["ten"]}, "rounds"),
    ({"seed": [0], "aggregator.kwargs.num_trim": [1, 3]}, "num_trim"),
])
def test_bad_grids_fail_before_any_cell_runs(tmp_path, grid, needle):
    """Catches: a bad cell found only after earlier cells ran (num_trim=3 with
    5 clients per round fails the trimming bound in its second cell)."""
    with pytest.raises(config.ConfigError, match=needle):
        sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    assert not (tmp_path / "results.csv").exists()


def test_a_cell_that_turns_nan_is_recorded_and_the_sweep_goes_on(tmp_path):
    """Catches: one diverging cell aborting the grid or writing invalid JSON."""
    b = config.resolve(simulate.DEFAULTS, base(), ["aggregator={'name': 'mean'}",
                                                   "attack.name='gaussian'",
                                                   "attack.kwargs={'stddev': 0.0}"])
    sweep.run(simulate.DEFAULTS, b, {"attack.kwargs.mean": [0.0, 3e38]}, str(tmp_path),
              progress=False, log=None)
    got = rows(tmp_path)
    assert [r["diverged"] for r in got] == ["False", "True"]
    assert got[1]["main_loss"] == "" and float(got[0]["main_accuracy"]) > 0
    for line in (tmp_path / "cells" / "0001" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_parse_grid():
    assert sweep.parse_grid("seed=0,1,2") == ("seed", [0, 1, 2])
    assert sweep.parse_grid("aggregator.name=krum,mean") == ("aggregator.name", ["krum", "mean"])
    assert sweep.parse_grid('aggregator={"name": "krum"},{"name": "mean"}') == (
        "aggregator", [{"name": "krum"}, {"name": "mean"}])
    with pytest.raises(config.ConfigError):
        sweep.parse_grid("seed")


def test_a_list_of_grids_joins_their_cells(tmp_path):
    """``get_sweep()`` may return several grids (e.g. every rule x every
    attack, plus ERR only against some attacks); their cells are joined, and a
    key of one grid shows the other cells' own value.

    Catches: only the first grid run; a missing key written as empty."""
    grid = [{"seed": [0, 1]},
            {"aggregator.kwargs.num_trim": [2], "seed": [0]}]
    sweep.run(simulate.DEFAULTS, base(), grid, str(tmp_path), progress=False, log=None)
    got = rows(tmp_path)
    assert [(r["seed"], r["aggregator.kwargs.num_trim"]) for r in got] == [
        ("0", "1"), ("1", "1"), ("0", "2")]
    assert sweep.set_axis(grid, "seed", [5]) == [{"seed": [5]},
                                                  {"aggregator.kwargs.num_trim": [2], "seed": [5]}]


def test_short_label_names_nested_components_and_rounds_floats():
    err = {"name": "err", "kwargs": {"num_reject": 20,
                                     "base": {"name": "trimmed_mean", "kwargs": {"num_trim": 20}}}}
    assert (sweep.short_label(json.dumps(err), 60)
            == "err(base=trimmed_mean(num_trim=20),num_reject=20)")
    assert sweep.short_label(json.dumps({"name": "gaussian", "kwargs": {"stddev": 200 ** 0.5}})) \
        == "gaussian(stddev=14.14)"
    assert sweep.short_label(json.dumps({"name": "none", "kwargs": {}})) == "none"
    assert sweep.short_label("plain text that is long", 10) == "plain text"


def test_short_label_names_nested_rules():
    """Catches: ERR around the trimmed mean and around Krum under one label
    (the nested base printed as a dict repr and cut off)."""
    err = json.dumps({"name": "err", "kwargs": {"num_reject": 20, "base": {
        "name": "krum", "kwargs": {"num_byzantine": 20}}}})
    assert sweep.short_label(err, 60) == "err(base=krum(num_byzantine=20),num_reject=20)"
    assert sweep.short_label(err, 16) == "err(base=krum(n…"
    assert sweep.short_label(json.dumps({"name": "mean"})) == "mean"
    assert sweep.short_label("0.5") == "0.5"


def test_pivot_is_mean_and_spread_over_the_other_keys(tmp_path):
    """Catches: a pivot cell mixing rows of another rule or attack, or
    dropping the seeds' spread."""
    with open(tmp_path / "results.csv", "w") as f:
        f.write("cell,aggregator,attack,seed,main_error_rate\n"
                '0,"{""name"": ""mean""}",none,0,0.1\n'
                '1,"{""name"": ""mean""}",none,1,0.3\n'
                '2,"{""name"": ""mean""}",ipm,0,0.5\n'
                '3,"{""name"": ""krum"", ""kwargs"": {""num_byzantine"": 2}}",none,0,0.2\n')
    assert sweep.pivot(str(tmp_path), "aggregator", "attack", "main_error_rate", digits=2) == (
        "| aggregator | none | ipm |\n|---|---|---|\n"
        "| mean | 0.20 ± 0.14 | 0.50 |\n"
        "| krum(num_byzantine=2) | 0.20 | – |\n")


def test_history_and_late_averages(tmp_path):
    """Catches: the late average taking evaluations of the first half, counting
    a NaN, touching the grid keys, or reading another cell's history."""
    (tmp_path / "results.csv").write_text(
        "cell,attack.num_malicious,aggregator,seed,rounds,main_accuracy,backdoor_accuracy,seconds\n"
        "0,2,mean,0,10,0.9,0.8,1.5\n"
        "1,2,mean,1,10,0.7,0.1,1.5\n")
    for cell, hist in [(0, [(2, 0.5, 0.0), (4, 0.6, 0.1), (6, 0.8, 0.6), (8, 0.85, None),
                            (10, 0.9, 0.8)]),
                       (1, [(5, 0.2, 0.9), (10, 0.7, 0.1)])]:
        d = tmp_path / "cells" / f"{cell:04d}"
        d.mkdir(parents=True)
        d.joinpath("metrics.jsonl").write_text("".join(
            json.dumps({"round": r, "main_accuracy": a, "backdoor_accuracy": b}) + "\n"
            for r, a, b in hist))
    assert [h["round"] for h in sweep.history(str(tmp_path), "1")] == [5, 10]
    assert sweep.read_results(str(tmp_path))[0]["backdoor_accuracy"] == "0.8"  # the last value
    late = sweep.read_results(str(tmp_path), average_after=0.5)
    assert float(late[0]["main_accuracy"]) == pytest.approx((0.8 + 0.85 + 0.9) / 3)
    assert float(late[0]["backdoor_accuracy"]) == pytest.approx((0.6 + 0.8) / 2)  # null skipped
    assert float(late[1]["backdoor_accuracy"]) == pytest.approx(0.1)  # round 5 is not after 5
    assert late[0]["attack.num_malicious"] == "2" and late[0]["seconds"] == "1.5"
    table = sweep.pivot(str(tmp_path), "aggregator", "attack.num_malicious",
                        "backdoor_accuracy", digits=2, average_after=0.5)
    assert table == "| aggregator | 2 |\n|---|---|\n| mean | 0.40 ± 0.42 |\n"
    with pytest.raises(ValueError):
        sweep.read_results(str(tmp_path), average_after=1.0)


def test_table_filters_with_where(tmp_path):
    """Catches: ``where`` ignored (a pivot mixing the no-attacker cells into the
    attacked ones) or compared against the value's Python text."""
    (tmp_path / "results.csv").write_text(
        "cell,attack,attack.num_malicious,aggregator,seed,backdoor_accuracy\n"
        '0,"{""name"": ""pixel""}",0,mean,0,0.0\n'
        '1,"{""name"": ""pixel""}",10,mean,0,0.6\n'
        '2,"{""name"": ""pixel""}",10,mean,1,0.8\n'
        '3,"{""name"": ""pixel""}",10,median,0,0.1\n')
    t = sweep.table(str(tmp_path), "aggregator", "attack", "backdoor_accuracy",
                    where={"attack.num_malicious": 10})
    assert t.row_values == ["mean", "median"] and t.count.tolist() == [[2], [1]]
    np.testing.assert_allclose(t.mean, [[0.7], [0.1]])
    assert np.isnan(t.std[1, 0]) and t.std[0, 0] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert sweep.pivot(str(tmp_path), "aggregator", "attack.num_malicious", "backdoor_accuracy",
                       digits=1) == ("| aggregator | 0 | 10 |\n|---|---|---|\n"
                                     "| mean | 0.0 | 0.7 ± 0.1 |\n| median | – | 0.1 |\n")
    with pytest.raises(KeyError):
        sweep.table(str(tmp_path), "aggregator", "attack", "backdoor_accuracy", where={"x": 1})
