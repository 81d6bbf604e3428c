"""``fljax.leak``: config schema and the files a run writes."""

import csv
import json
import os

import pytest

from fljax import config, leak


def _cfg(**over):
    base = {
        "data": {"num_victims": 2, "batch_size": 1},
        "model": {"name": "mlp", "kwargs": {"hidden": [8], "activation": "sigmoid"}},
        "runs": [
            {"name": "dlm+", "attack": {"name": "dlm_plus", "kwargs": {"num_steps": 10}}},
            {"attack": {"name": "idlg", "kwargs": {"num_steps": 5, "optimizer": "adam"}},
             "defences": [{"name": "prune", "kwargs": {"percent": 10.0}}]},
        ],
        "grid": {"max_images": 2},
    }
    base.update(over)
    return config.resolve(leak.DEFAULTS, base)


@pytest.mark.slow
def test_run_writes_summary_metrics_and_grids(tmp_path):
    out = str(tmp_path / "leak")
    summary = leak.run(_cfg(), out, progress=False)
    with open(os.path.join(out, "summary.json")) as f:
        on_disk = json.load(f)
    assert [r["name"] for r in on_disk["runs"]] == [r["name"] for r in summary["runs"]]
    for r in on_disk["runs"]:
        for key in ("name", "psnr", "ssim", "mse", "label_accuracy", "psnr_grey", "psnr_mean"):
            assert key in r
    assert on_disk["runs"][1]["name"].startswith("idlg/mlp/delta/lr0.1x1/prune(percent=10.0)")
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 2 runs x 2 victims
    assert os.path.exists(os.path.join(out, "grid.png"))
    assert len([p for p in os.listdir(out) if p.startswith("grid_")]) == 2


def test_config_errors_name_the_field():
    with pytest.raises(config.ConfigError, match="runs\\[0\\].attack.name"):
        leak.expand_runs(_cfg(runs=[{"attack": {"name": "nope"}}]))
    with pytest.raises(config.ConfigError, match="runs\\[0\\].victim.lrr"):
        leak.expand_runs(_cfg(runs=[{"victim": {"lrr": 1.0}}]))
    with pytest.raises(config.ConfigError, match="defences\\[0\\].name"):
        leak.expand_runs(_cfg(runs=[{"defences": [{"name": "nope"}]}]))
    with pytest.raises(config.ConfigError, match="data.num_victim"):
        config.resolve(leak.DEFAULTS, {"data": {"num_victim": 3}})


def test_set_overrides_apply_to_every_run():
    cfg = config.resolve(leak.DEFAULTS, {"runs": [{}, {"victim": {"lr": 0.5}}]},
                         ["victim.local_steps=3", "attack.kwargs.num_steps=5"])
    runs = leak.expand_runs(cfg)
    assert [r["victim"]["local_steps"] for r in runs] == [3, 3]
    assert [r["victim"]["lr"] for r in runs] == [0.1, 0.5]
    assert runs[0]["attack"]["kwargs"] == {"num_steps": 5}


def test_cli_leak(tmp_path, capsys):
    from fljax import cli

    cfg = tmp_path / "tiny.py"
    cfg.write_text(
        "def get_config():\n"
        "    return {'data': {'num_victims': 2},\n"
        "            'model': {'kwargs': {'hidden': [8], 'activation': 'sigmoid'}},\n"
        "            'attack': {'name': 'dlm_plus', 'kwargs': {'num_steps': 10}}}\n")
    out = tmp_path / "out"
    rc = cli.main(["leak", str(cfg), "--set", "victim.lr=0.3", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    assert "PSNR" in capsys.readouterr().out
    assert (out / "summary.json").exists() and (out / "metrics.csv").exists()
    assert cli.main(["leak", str(cfg), "--set", "victim.lrr=0.3", "--out", str(out)]) == 2


def _two_runs(**second):
    """A valid first run and a second one with ``second`` merged in."""
    run2 = {"attack": {"name": "idlg", "kwargs": {"num_steps": 5, "optimizer": "adam"}}}
    for key, value in second.items():
        run2[key] = value
    return [{"name": "ok", "attack": {"name": "dlm_plus", "kwargs": {"num_steps": 10}}}, run2]


@pytest.mark.parametrize("over, pattern", [
    # A bad attack keyword in the second run (found after the first run had run).
    ({"runs": _two_runs(attack={"name": "idlg", "kwargs": {"num_stepz": 5}})},
     r"'runs\[1\]\.attack\.kwargs' = \{'num_stepz': 5\}.*'idlg'.*num_stepz"),
    ({"runs": _two_runs(attack={"name": "dlm", "kwargs": {"num_steps": 0}})},
     r"'runs\[1\]\.attack\.kwargs' = \{'num_steps': 0\}.*num_steps=0 must be an int >= 1"),
    ({"runs": _two_runs(attack={"name": "dlm", "kwargs": {"optimizer": "sgd"}})},
     r"runs\[1\]\.attack\.kwargs.*optimizer='sgd' must be 'adam' or 'lbfgs'"),
    # An unknown model name, or bad model keywords, in `runs`.
    ({"runs": _two_runs(model={"name": "resnet"})},
     r"'runs\[1\]\.model\.name' = 'resnet' is not known; allowed values: .*mlp"),
    ({"runs": _two_runs(model={"kwargs": {"hiddenn": [4]}})},
     r"'runs\[1\]\.model\.kwargs' = \{.*'hiddenn': \[4\]\}.*model 'mlp'.*'hiddenn'"),
    ({"runs": _two_runs(model={"init": "zeros"})}, r"'runs\[1\]\.model\.init' = 'zeros'"),
    ({"runs": _two_runs(model={"init_scale": -0.5})}, r"'runs\[1\]\.model\.init_scale' = -0.5"),
    # Victims and defences.
    ({"runs": _two_runs(victim={"lr": 0.0})}, r"'runs\[1\]\.victim\.lr' = 0\.0.*> 0"),
    ({"victim": {"local_steps": 0}}, r"'victim\.local_steps' = 0.*>= 1"),
    ({"runs": _two_runs(defences=[{"name": "prune", "kwargs": {"percent": 150.0}}])},
     r"'runs\[1\]\.defences\[0\]\.kwargs' = \{'percent': 150\.0\}.*\[0, 100\]"),
    ({"runs": _two_runs(defences=[{"name": "quantize", "kwargs": {"bitz": 4}}])},
     r"runs\[1\]\.defences\[0\]\.kwargs.*'quantize'.*bitz"),
    # Data (num_victims=0 crashed after every attack had run) and the grid.
    ({"data": {"num_victims": 0}}, r"'data\.num_victims' = 0.*an integer >= 1"),
    ({"data": {"batch_size": -1}}, r"'data\.batch_size' = -1"),
    ({"data": {"num_victims": 1000, "batch_size": 2}},
     r"'data\.num_victims' = 1000, 'data\.batch_size' = 2.*need 2000 examples.*<= 1797"),
    ({"data": {"offset": -3}}, r"'data\.offset' = -3"),
    ({"grid": {"max_images": 0}}, r"'grid\.max_images' = 0"),
])
def test_every_field_is_checked_before_any_attack(tmp_path, monkeypatch, over, pattern):
    """Each bad field: one ConfigError line naming it and its value, no attack run,
    no output folder.

    Catches: checks left to ``attack_one_run`` (the old code raised a TypeError
    from the second run's attack after the first run's files were written,
    and crashed on ``num_victims=0`` after all attacks).
    """
    calls = []
    monkeypatch.setattr(leak, "attack_one_run", lambda *a, **k: calls.append(a))
    out = tmp_path / "out"
    with pytest.raises(config.ConfigError, match=pattern) as e:
        leak.run(_cfg(**over), str(out), progress=False)
    assert "\n" not in str(e.value)
    assert calls == [] and not out.exists()


def test_out_pointing_at_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(leak, "attack_one_run", lambda *a, **k: calls.append(a))
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    for out, pattern in ((a_file, r"--out '.*results\.txt' is a file"),
                         (a_file / "sub", r"--out '.*sub' lies under the file")):
        with pytest.raises(config.ConfigError, match=pattern):
            leak.run(_cfg(), str(out), progress=False)
    assert calls == [] and a_file.read_text() == "keep me"


def test_validate_accepts_the_shipped_defaults_and_names_top_level_fields():
    runs = leak.validate(config.resolve(leak.DEFAULTS, {}))
    assert len(runs) == 1 and runs[0]["attack"]["name"] == "dlm_plus"
    # A bad value set at the top level (inherited by every run) is named there.
    with pytest.raises(config.ConfigError, match=r"config field 'model\.name' = 'nope'"):
        leak.validate(config.resolve(leak.DEFAULTS, {"model": {"name": "nope"},
                                                     "runs": [{}, {}]}))
