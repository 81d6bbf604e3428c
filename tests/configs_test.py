"""Every config in configs/ builds: resolved against its command's schema and
prepared (all checks, the data, the rule traced on the round's shapes).

Catches: a config broken by a change elsewhere (a renamed field, a rule
argument, a bound) that no other test builds.
"""

import glob
import os

import pytest

from fljax import config, leak, plan as plan_lib, simulate
from fljax import sweep

# Data sets every machine has; a config on another one (e.g. federated EMNIST) is skipped,
# with the reason, when its files are missing.
OFFLINE = ("digits", "breast_cancer", "synthetic", "random_emnist", "random_cifar")
CONFIGS = sorted(p for p in glob.glob("configs/*.py") if not os.path.basename(p).startswith("_"))


def _is_leak(cfg: dict) -> bool:
    return "runs" in cfg


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds(path):
    raw = config.load_file(path)
    if _is_leak(raw):
        cfg = config.resolve(leak.DEFAULTS, raw)
        assert leak.expand_runs(cfg)
        return
    cfg = config.resolve(simulate.DEFAULTS, raw)
    try:
        plan_lib.prepare(cfg)
    except config.ConfigError as e:
        if cfg["data"]["name"] not in OFFLINE and str(e).startswith(
                ("data:", "config field 'data.name'")):
            pytest.skip(f"its data is not on this machine: {e}")
        raise
    grid = sweep.load_sweep(path)
    if grid:  # every cell of its grid resolves and prepares
        sweep.group_cells(sweep.expand(simulate.DEFAULTS, cfg, grid))
