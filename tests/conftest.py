"""Test configuration: CPU only, small shapes, nothing downloads."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for both xdist workers (and later runs): a program
# that takes over a second to compile is compiled once. The mutation runner sets its own.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"fljax-tests-jax-cache-{os.getuid()}"))
# The tests' shapes are small, so their time is nearly all compilation. LLVM at -O0
# compiles XLA:CPU's code faster (the default run's test time 1,069 s -> 935 s, see
# docs/testing.md); the HLO passes are the same, and XLA:CPU keeps IEEE semantics at any
# level (no fast math), so only the machine code's speed changes. A level set by the
# caller is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

# The heaviest files first (per-file CPU from ``pytest --durations``, 2026-12-01). With
# ``--dist loadfile`` each worker takes whole files in collection order, so a heavy file
# collected last (``simulate_test.py`` comes late alphabetically) keeps one worker busy
# alone at the end while the other idles. Within a file the order is unchanged.
_HEAVY_FIRST = (
    "tests/simulate_test.py",
    "tests/simulate_driver_test.py",
    "tests/aggregators/round2_edges_test.py",
    "tests/attacks/backdoor_test.py",
    "tests/sweep_test.py",
    "tests/aggregators/leave_one_out_test.py",
    "tests/attacks/m2m_test.py",
    "tests/scale_test.py",
    "tests/attacks/adaptive_test.py",
    "tests/sharded_test.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(_HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
