"""Rounds over 8 (fake CPU) devices equal rounds on one device.

The device count must be set before JAX starts, so each test runs
``tests/sharded_check.py`` in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; it runs each case on
1 and on 8 devices and prints the largest parameter difference and both
runs' metrics.

Each test's docstring names the deliberate bug (mutation) it is there to catch.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.simulate_driver_test import DONATED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check(*cases: str) -> dict:
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, XLA_FLAGS=flags.strip())
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_check.py"),
                          *cases], capture_output=True, text=True, timeout=1200, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return {r["case"]: r for r in map(json.loads, out.stdout.strip().splitlines())}


def _assert_same(r: dict, devices: int = 8) -> None:
    assert r["devices"] == [1, devices], r
    assert r["max_param_diff"] < 1e-6, r
    for k, (a, b) in r["metrics"].items():
        assert (a is None) == (b is None), (k, r)
        if a is not None:
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (k, r)


def test_sharded_rounds_equal_one_device():
    """A streamed mean under a data attack with server transforms (10
    clients on 8 devices: 6 padding rows), and a coordinate-wise median on
    column blocks (its diagnostics and row norms reduced over the devices;
    client-transformed, i.e. flat, rows in chunks of 2 per device), on 8
    devices give one device's parameters and metrics.

    Catches: padding rows counted in the mean or the median, the psum of the
    streamed sums missing or doubled, clients dealt out to devices in
    another order than the keys', row statistics (finiteness, norms) taken
    over one column block only, column blocks gathered in the wrong order,
    a flat chunk not padded to the column blocks' width (``flat_rows``), a
    device's chunks gathered along the wrong axis (``gather_rows``: only
    visible with chunks of more than one client). On 2 devices, the
    smallest mesh (``two_devices``), with the row norms the rule received:
    a round sharded only from 3 devices on (``shards > 2``: the unsharded
    round's buffer does not fit the 2-device layout), the dense column
    path's row norms (``RoundInfo.update_norms``) taken over one block or
    dropped. In every case the state lives on the mesh's devices (catches a
    run over devices compiled for one: ``if d == 1`` as ``d != 1`` gives
    the same numbers on one device).
    """
    got = _check("stream_mean_attack", "median_columns", "column_rules", "two_devices")
    for name, r in got.items():
        _assert_same(r, 2 if name == "two_devices" else 8)
    assert got["stream_mean_attack"]["aggregation"] == "stream"
    assert got["median_columns"]["aggregation"] == "dense"


@pytest.mark.slow
def test_more_sharded_paths_equal_one_device():
    """Krum's partial Gram matrices (one psum), norm clipping on column
    blocks and (with a server transform) on whole rows, vmap chunks per
    device, the whole-matrix fallback (an attack that crafts rows), a
    streamed rule in chunks of 3, and a sweep whose cell axis is split over
    the 8 devices (3 cells: padded to 8), and a run over 8 devices resumed
    from its checkpoint (Adam's moments and centred clipping's centre
    restored onto the mesh).

    Catches: a Gram matrix summed over one block, norms of one block used
    for clipping, a crafted matrix gathered with its padding, cells mixed up
    when the cell axis is padded and split, a server transform skipped
    because the rule works on column blocks (``clip_server_tf``), the
    restored state laid out for a sweep's cell axis (``Compiled.sharding``'s
    default ``cells=True``), the data donated instead of the state over
    devices (see ``test_a_round_donates_its_state_and_buffer_only``).
    """
    got = _check("multi_krum_columns", "clip_columns", "clip_server_tf", "median_vmap",
                 "trimmed_fallback", "weak_dp_chunks", "sweep_cells", "resume", "donation")
    assert got.pop("donation")["donated"] == [DONATED, DONATED]
    for r in got.values():
        _assert_same(r)
