import json
import subprocess
import sys

from fljax import cli


def test_cli_writes_its_files(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["run", "configs/quickstart.py", "--set", "rounds=3", "--set", "eval_every=1",
                   "--set", "data.num_clients=20", "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ["config.json", "metrics.jsonl", "summary.json", "accuracy.png",
                 "params.msgpack"]:
        assert (out / name).exists(), name
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["round"] for l in lines] == [0, 1, 2, 3]
    assert {"round", "main_accuracy", "main_loss", "elapsed"} <= set(lines[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_round"] == 3 and 0 <= summary["final_main_accuracy"] <= 1
    assert json.loads((out / "config.json").read_text())["data"]["num_clients"] == 20
    assert "final accuracy" in capsys.readouterr().out


def test_cli_rejects_bad_set_with_one_clear_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fljax.cli", "run", "configs/quickstart.py",
                        "--set", "aggregator.nme=krum", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == ("fljax: error: unknown config field 'aggregator.nme'; "
                                "known fields here: kwargs, name")


def test_cli_rejects_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(["run", "configs/quickstart.py", "--out", str(blocker / "sub")])
    assert rc == 2
