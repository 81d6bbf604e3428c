"""What the benchmark scripts share: timing, and one compiled fljax round to call."""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax


def best_of(fn: Callable, repeats: int, warmup: bool = False) -> float:
    """The smallest wall time in seconds of ``repeats`` calls of ``fn``, each
    blocked on its result (one untimed call first when ``warmup``: compiling)."""
    if warmup:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times)


class Runner(NamedTuple):
    one_round: Callable[[], None]  # one round of the simulator, blocked on
    evaluate: Callable[[], None]  # one evaluation of the current model, blocked on
    plan: object  # simulate.prepare's plan (its spec says what was compiled)


def fljax_runner(cfg: dict) -> Runner:
    """A resolved simulator config as a round to call over and over (the same
    round key each time: the work per round is what is timed, not its values)."""
    from fljax import simulate

    plan = simulate.prepare(cfg)
    comp = simulate.compiled(plan.spec)
    k_init, k_rounds = simulate.run_keys(0)
    box = [comp.init(plan.hparams, plan.data, k_init), comp.round.new_buffer()]

    def one_round():
        box[0], _, box[1] = comp.step(plan.hparams, box[0], plan.data, k_rounds, box[1])
        jax.block_until_ready(box[0].params)

    def evaluate():
        jax.block_until_ready(comp.evaluate(plan.hparams, box[0], plan.data))

    return Runner(one_round, evaluate, plan)
