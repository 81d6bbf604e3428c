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
