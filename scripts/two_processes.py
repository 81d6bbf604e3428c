"""Two processes on this machine (CPU, a localhost coordinator) run one config
and end with the metrics of a one-process run.

Run (about a minute on a loaded 2-core machine; ``tests/scale_test.py``
runs it as a slow test):
  python scripts/two_processes.py

It starts ``fljax run configs/quickstart.py`` (shortened) twice with
``--coordinator 127.0.0.1:PORT --num-processes 2 --process-id 0|1``, each
process with 2 CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``),
so the run's mesh has 4 devices over 2 processes (``execution.devices=0``),
then the same config in one process with 4 CPU devices, and compares
``summary.json``. The same command on several hosts (each its own
``--process-id``, the coordinator on process 0's host) is the multi-host run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ["rounds=6", "eval_every=3", "execution.devices=0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(out: str, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "fljax.cli", "run", os.path.join(ROOT, "configs", "quickstart.py"),
           "--out", out, "--no-progress"]
    for s in SETTINGS:
        cmd += ["--set", s]
    return cmd + list(extra)


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="fljax-2proc-")
    port = _free_port()
    two = os.path.join(tmp, "two")
    procs = [subprocess.Popen(
        _command(two, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", str(i), "--coordinator-timeout", "120"),
        env=_env(2), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    logs = [p.communicate(timeout=800)[0] for p in procs]
    for i, (p, log) in enumerate(zip(procs, logs)):
        print(f"--- process {i} (exit {p.returncode})\n" + "\n".join(
            line for line in log.splitlines() if not line.startswith("WARNING"))[-1500:])
        if p.returncode != 0:
            return 1
    one = os.path.join(tmp, "one")
    single = subprocess.run(_command(one), env=_env(4), cwd=ROOT, capture_output=True, text=True,
                            timeout=800)
    print(f"--- one process (exit {single.returncode})\n{single.stdout[-800:]}")
    if single.returncode != 0:
        print(single.stderr[-2000:])
        return 1
    a = json.load(open(os.path.join(two, "summary.json")))
    b = json.load(open(os.path.join(one, "summary.json")))
    print(f"2 processes: {a['processes']} processes, {a['devices']} devices; "
          f"1 process: {b['processes']} process, {b['devices']} devices")
    keys = [k for k in a if k.startswith("final_")]
    diff = {k: (a[k], b[k]) for k in keys
            if not (isinstance(a[k], float) and abs(a[k] - b[k]) <= 1e-5 * max(1, abs(b[k])))
            and a[k] != b[k]}
    if diff or a["processes"] != 2 or a["devices"] != 4:
        print(f"DIFFERENT: {diff}")
        return 1
    print(f"the same final metrics ({', '.join(f'{k} {a[k]}' for k in keys)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
