"""Checkpoints with orbax-checkpoint: sharded arrays, several hosts, exact resume.

A checkpoint is one orbax step (the number of rounds done) in a folder
(``OUT/checkpoints`` for a run, ``OUT/checkpoints/<program>`` for a sweep's
program) holding two items:

* ``state``: the :class:`~fljax.round.SimState` (a sweep's: stacked over its
  cells) as it lies on the devices: every process writes its own shards, and
  a restore puts them back with the same shardings;
* ``meta`` (JSON): the config (a resume under another config is refused,
  naming the first differing field), and what the host loop needs to carry
  on exactly: the per-round scalars summed since the last evaluation, the
  divergence record, the elapsed time (:func:`fljax.simulate.run_cells`).

Saves are synchronous (the round's state is donated to the next round, so
it must be written before that round starts); the last two steps are kept.
Orbax writes a step into a temporary folder and renames it when complete,
so a run killed while saving resumes from the step before.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax

from fljax.config import ConfigError

KEEP = 2


def _ocp():
    import orbax.checkpoint as ocp  # imported lazily: it is slow to import

    return ocp


def manager(directory: str):
    """An orbax ``CheckpointManager`` over ``directory`` (created on demand)."""
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mgr, step: int, state, meta: dict) -> None:
    """Saves ``state`` (any pytree of arrays) and ``meta`` (JSON) as ``step``."""
    from fljax import results as results_lib

    ocp = _ocp()
    meta = json.loads(results_lib.dumps(meta))  # valid JSON: NaN / inf as null
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)), force=True)
    mgr.wait_until_finished()


def latest(directory: str) -> Optional[int]:
    """The last complete step in ``directory`` (None if there is none)."""
    if not os.path.isdir(directory):
        return None
    mgr = manager(directory)
    try:
        return mgr.latest_step()
    finally:
        mgr.close()


def read_meta(directory: str, step: Optional[int] = None) -> Optional[dict]:
    """The ``meta`` item of a step (the latest by default), without the state."""
    step = latest(directory) if step is None else step
    if step is None:
        return None
    ocp = _ocp()
    mgr = manager(directory)
    try:
        return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
    finally:
        mgr.close()


def check_config(saved: Optional[dict], cfg: dict, where: str) -> None:
    """Refuses a checkpoint written under another config (``rounds`` may
    differ), naming the first differing field."""
    from fljax import plan as plan_lib
    from fljax import results as results_lib

    if saved is None:
        return
    mine = json.loads(results_lib.dumps(cfg))
    diff = plan_lib.first_difference({k: v for k, v in saved.items() if k != "rounds"},
                                     {k: v for k, v in mine.items() if k != "rounds"})
    if diff is not None:
        raise ConfigError(f"cannot resume from {where}: config field '{diff}' differs from the "
                          "checkpoint's; use the same config (only 'rounds' may change) or "
                          "another --out")


def restore(directory: str, template, step: Optional[int] = None) -> tuple[Any, dict]:
    """``(state, meta)`` of a step (the latest by default).

    Args:
      template: a pytree of ``jax.ShapeDtypeStruct`` with the shardings the
        state should come back with (``jax.eval_shape`` of ``init``, placed).
    """
    ocp = _ocp()
    step = latest(directory) if step is None else step
    mgr = manager(directory)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                                        meta=ocp.args.JsonRestore()))
    finally:
        mgr.close()
    return out.state, dict(out.meta)


def abstract(tree, sharding) -> Any:
    """``tree`` (arrays or shape structs) as shape structs carrying ``sharding``."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


# ----------------------------------------------------------------------------
# The msgpack checkpoints of earlier versions (read only)


def load_msgpack(path: str, template, cfg: dict):
    """``(state, elapsed)`` from an earlier version's ``checkpoint.msgpack``."""
    from flax import serialization

    with open(path, "rb") as f:
        blob = serialization.msgpack_restore(f.read())
    saved = blob.get("config")
    if saved is not None:
        check_config(json.loads(saved), cfg, path)
    state = serialization.from_state_dict(template, blob["state"])
    return state, float(blob["elapsed"])
