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


def test_the_writability_probe_has_a_name_of_its_own(tmp_path):
    """The processes of one run check the same output folder at once; a probe
    file of one fixed name was removed by one process under another, which
    then stopped with "not writable" (and the other timed out waiting for
    it). With that name taken (here by a folder) the check still passes, and
    it leaves nothing behind; a read-only folder still fails clearly."""
    import os

    from fljax import config, results

    (tmp_path / ".write_test").mkdir()
    assert results.prepare_out_dir(str(tmp_path)) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".write_test"]
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(config.ConfigError, match="not writable"):
            results.prepare_out_dir(str(tmp_path / "ro"))


import pytest

BAD_RUN = [
    (["--set", "execution.client_chunk=-2"], "execution.client_chunk"),
    (["--set", "client.steps=-3"], "client.steps"),
    (["--set", "aggregator.name=fltrust", "--set", "server_data.root_size=0"],
     "server_data.root_size"),
    (["--set", "aggregator={'name': 'lfr', 'kwargs': {'num_reject': 1}}",
      "--set", "server_data.validation_size=0"], "server_data.validation_size"),
    (["--set", "attack.num_malicious=5"], "attack.num_malicious"),
    (["--set", "attack.name=gaussian", "--set", "attack.num_malicious=5",
      "--set", "attack.kwargs={'stddev': -1}"], "stddev"),
    # Server data is carved only for the rules that use it (FLTrust's root set).
    (["--set", "aggregator.name=fltrust", "--set", "server_data.root_size=100000"],
     "server_data.root_size"),
    (["--set", "execution.memory_gb=0.001"], "execution.memory_gb = 0.001 is too small"),
    (["--set", "execution.devices=64"], "execution.devices"),
    (["--coordinator", "127.0.0.1:9", "--num-processes", "2", "--process-id", "1",
      "--coordinator-timeout", "1"], "could not reach the coordinator at 127.0.0.1:9"),
    (["--set", "server_data.root_size=-1"], "server_data.root_size"),
    (["--set", "client.learning_rate=-0.1"], "client.learning_rate"),
    (["--set", "aggregator={'name': 'trimmed_mean', 'kwargs': {'num_trim': 2.5}}"], "num_trim"),
    (["--set", "rounds=-1"], "rounds"),
    (["--set", "aggregator.nme=krum"], "aggregator.nme"),
]


@pytest.mark.parametrize("extra,field", BAD_RUN, ids=[b[1] + str(i) for i, b in enumerate(BAD_RUN)])
def test_cli_bad_input_is_one_line_before_any_round(tmp_path, capsys, extra, field):
    """Every bad value: exit code 2, one line on stderr naming the field and
    showing the value, no traceback, no round run (no metrics written).

    Catches: a value accepted silently, or failing inside a round."""
    out = tmp_path / "run"
    rc = cli.main(["run", "configs/quickstart.py", "--out", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fljax: error:"), err
    assert field in err and "Traceback" not in err
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text()


def test_cli_sweep_bad_grid_key_and_debug_traceback(tmp_path, capsys):
    rc = cli.main(["sweep", "configs/quickstart.py", "--grid", "client.lr=0.1,0.2",
                   "--out", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "client.lr" in err and len(err.splitlines()) == 1
    with pytest.raises(Exception):
        cli.main(["sweep", "configs/quickstart.py", "--grid", "client.lr=0.1", "--debug",
                  "--out", str(tmp_path / "s2"), "--no-progress"])


def test_cli_sweep_writes_results(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli.main(["sweep", "configs/quickstart.py", "--set", "rounds=2", "--set", "eval_every=2",
                   "--set", "data.num_clients=20", "--grid", "seed=0,1", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    text = (out / "results.csv").read_text().splitlines()
    assert text[0].startswith("cell,seed,aggregator,attack,rounds,main_accuracy,main_loss")
    assert len(text) == 3
    assert "2 cells" in capsys.readouterr().out


def test_cli_version_and_list(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert "fljax" in capsys.readouterr().out
    assert cli.main(["list", "aggregator"]) == 0
    listing = capsys.readouterr().out
    assert "krum" in listing and "trimmed_mean" in listing
    assert cli.main(["list", "nonsense"]) == 2


def test_every_listed_name_has_a_description():
    """``fljax list`` gives one line for every name of every kind.

    Catches: a name a config accepts that ``fljax list`` prints with an empty
    description (the TFDS data sets had none: they have no loader function of
    their own to take a docstring from).
    """
    from fljax import registry

    for kind in registry.kinds():
        rows = registry.summary(kind)
        assert [name for name, _ in rows] == sorted(registry.names(kind)), kind
        assert all(len(doc) > 10 for _, doc in rows), (kind, [n for n, d in rows if len(d) <= 10])
