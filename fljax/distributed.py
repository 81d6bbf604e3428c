"""Several processes (hosts) in one run, through JAX's own ``jax.distributed``.

Every process runs the same command; :func:`initialize` connects them before
anything touches a device, after which ``jax.devices()`` lists the devices of
every process and a run's mesh spans them all (``execution.devices = 0``).
Arrays are global (each process holds its shards), only process 0 writes
results, and every process takes part in checkpoints (orbax writes each
process's shards; the output folder must be on a file system all hosts
share).

The coordinator address, the number of processes and this process's index
come from the command line (``--coordinator HOST:PORT --num-processes N
--process-id I``) or from the environment variables JAX itself reads
(``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``);
the command line wins. Process 0 hosts the coordinator at that address. A
coordinator that cannot be reached within ``timeout_s`` seconds is one
:class:`~fljax.config.ConfigError` line, not a hang.

One node with 8 GPUs needs none of this (one process sees all 8):
``fljax run CONFIG --set execution.devices=0``. Two nodes::

  node0$ fljax run CONFIG --coordinator node0:1234 --num-processes 2 --process-id 0
  node1$ fljax run CONFIG --coordinator node0:1234 --num-processes 2 --process-id 1

On CPU, processes exchange data through gloo (set here).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

from fljax.config import ConfigError

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def settings(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
             process_id: Optional[int] = None) -> Optional[tuple[str, int, int]]:
    """``(coordinator, num_processes, process_id)`` from the arguments or the
    environment, checked; None when neither names a coordinator."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS") or None
    n = num_processes if num_processes is not None else env.get("JAX_NUM_PROCESSES")
    i = process_id if process_id is not None else env.get("JAX_PROCESS_ID")
    if coordinator is None:
        if n is not None and int(n) > 1:
            raise ConfigError(f"{int(n)} processes but no coordinator: pass --coordinator "
                              "HOST:PORT (or set JAX_COORDINATOR_ADDRESS)")
        return None
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator {coordinator!r} must be HOST:PORT (e.g. "
                          "node0:1234 or 127.0.0.1:1234)")
    try:
        n = int(n) if n is not None else None
        i = int(i) if i is not None else None
    except ValueError:
        raise ConfigError(f"--num-processes {n!r} and --process-id {i!r} must be integers") \
            from None
    if n is None or i is None:
        raise ConfigError(f"--coordinator {coordinator} needs --num-processes and --process-id "
                          "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--process-id {i} must be between 0 and --num-processes - 1 = {n - 1}")
    return coordinator, n, i


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, timeout_s: int = 60) -> bool:
    """Connects this process to the others (see the module docstring).

    Returns:
      True if a multi-process run was set up, False for a single process
      (no coordinator given).

    Raises:
      ConfigError: bad settings, or the coordinator was not reached within
        ``timeout_s`` seconds.
    """
    found = settings(coordinator, num_processes, process_id)
    if found is None:
        return False
    coordinator, n, i = found
    # JAX aborts the whole process (a fatal C++ check, not an exception) when
    # the coordinator cannot be reached: probe it first, with a clear error.
    probe(coordinator, i, n, timeout_s)
    import jax

    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # an older or newer JAX without the option
            pass
    try:
        jax.distributed.initialize(coordinator, num_processes=n, process_id=i,
                                   initialization_timeout=max(1, int(round(timeout_s))))
    except Exception as e:  # noqa: BLE001  (JAX raises several kinds)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"process {i} of {n} could not join the coordinator at {coordinator} "
                          f"within {timeout_s} s ({first[:200]}); check the address and that "
                          "process 0 is running (--coordinator-timeout sets the wait)") from None
    return True


def probe(coordinator: str, process_id: int, num_processes: int, timeout_s: float) -> None:
    """Raises a :class:`ConfigError` unless the coordinator can be hosted
    (process 0: its address is one of this host's and the port is free) or
    reached (the others: a TCP connection within ``timeout_s`` seconds)."""
    host, _, port = coordinator.rpartition(":")
    host, port = host.strip("[]"), int(port)
    where = f"process {process_id} of {num_processes}"
    if process_id == 0:
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((socket.gethostbyname(host) if family == socket.AF_INET else host, port))
        except OSError as e:
            raise ConfigError(f"{where} cannot host the coordinator at {coordinator}: "
                              f"{e.strerror or e}; pass an address of this host and a free port "
                              "as --coordinator") from None
        return
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout_s)):
                return
        except OSError as e:
            last = e
            time.sleep(0.2)
    raise ConfigError(f"{where} could not reach the coordinator at {coordinator} within "
                      f"{timeout_s:g} s ({getattr(last, 'strerror', None) or last}); check the "
                      "address and that process 0 is running (--coordinator-timeout sets the wait)")
