"""The one place where fljax imports the optional ``kernels`` package.

The order-statistic rules (``coordinate_median``, ``trimmed_mean``,
``invariant`` and Bulyan's coordinate-wise phase) take a ``kernel`` argument:

* ``"auto"`` (their default): the compiled CPU kernel of
  ``kernels/order_stats.py`` where it can be built and the computation runs
  on the CPU (measured 2x-11x faster than the jnp paths there, see
  ``benchmarks/aggregators.py``); the jnp path everywhere else. On a GPU or
  TPU no kernel is the default: the Pallas kernels in ``kernels/`` are not
  measured on one yet.
* ``None``: always the jnp path.
* a function: that kernel (an injected kernel, e.g. a Pallas one, with the
  signature of the ``kernels.order_stats`` function it replaces).

``"auto"`` is resolved when a rule is first traced, not when it is built:
building an aggregator never compiles anything. The first resolution imports
``kernels.order_stats`` and builds it (the kernel prints one line while it
compiles; the shared library is cached on disk). If that fails -- no C++
compiler, no ``kernels`` package -- one line on stderr says why and the rules
use their jnp paths; the answer is cached for the process. The results are
those of the jnp path up to float rounding in the order of a sum (the medians
are bit-identical), and ``info`` is identical.

``"auto"`` looks at ``jax.default_backend()``. A program that still ends up
compiled for another platform (arrays placed on a GPU while the CPU is the
default) stays correct: the CPU kernel itself lowers to a ``jnp.sort`` there.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Optional, TypeVar, Union

import jax
import jax.numpy as jnp

from fljax.aggregators.base import require

AUTO = "auto"

# What a rule's ``kernel`` argument may be.
KernelArg = Union[str, Callable[..., jax.Array], None]

# The kernels this module can resolve, by the name of their function in
# ``kernels.order_stats``: rank_weighted_sum(updates, valid, weights, *,
# with_signs=False) and closest_to_median_mean(updates, valid, beta).
KINDS = ("rank_weighted_sum", "closest_to_median_mean")

T = TypeVar("T")


def check(kernel: KernelArg, rule: str) -> None:
    """Validates a factory's ``kernel`` argument (``"auto"``, None or a function)."""
    require(kernel is None or kernel == AUTO or callable(kernel), rule,
            f"kernel must be 'auto', None or a function, got {kernel!r} (a config names a "
            "kernel as 'module:function', which the simulator imports)")


def resolve(kernel: KernelArg, kind: str) -> Optional[Callable[..., jax.Array]]:
    """The kernel function to call, or None for the jnp path.

    Args:
      kernel: a rule's ``kernel`` argument.
      kind: one of :data:`KINDS`, what ``"auto"`` resolves to.
    """
    if kernel is None or callable(kernel):
        return kernel
    if kernel != AUTO:
        raise ValueError(f"kernel must be 'auto', None or a function, got {kernel!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown kernel kind {kind!r}, expected one of {KINDS}")
    if jax.default_backend() != "cpu":
        return None  # no accelerator kernel is measured to win yet
    module = _cpu_kernels()
    return None if module is None else getattr(module, kind)


def dispatch(kernel: KernelArg, kind: str, with_kernel: Callable[[Callable], T],
             without: Callable[[], T], updates: jax.Array) -> T:
    """``with_kernel(fn)`` with the resolved kernel, else ``without()`` (the jnp path).

    ``"auto"`` also takes the jnp path for updates that are not float32 (the
    CPU kernel's only dtype); an injected kernel gets whatever it is given.
    """
    if kernel == AUTO and updates.dtype != jnp.float32:
        return without()
    fn = resolve(kernel, kind)
    return without() if fn is None else with_kernel(fn)


@functools.lru_cache(maxsize=None)
def _cpu_kernels():
    """``kernels.order_stats`` if it imports and builds here, else None (said once)."""
    try:
        from kernels import order_stats
    except ImportError as e:
        _say(f"the 'kernels' package is not importable ({e})")
        return None
    ok, why = order_stats.available()
    if not ok:
        _say(why.strip().splitlines()[0] if why.strip() else "it cannot be built here")
        return None
    return order_stats


def _say(why: str) -> None:
    print(f"fljax: CPU order-statistics kernel unavailable, the median / trimmed-mean / "
          f"invariant / Bulyan rules use their jnp paths: {why}", file=sys.stderr, flush=True)


def reset() -> None:
    """Forgets the cached ``"auto"`` resolution (for tests)."""
    _cpu_kernels.cache_clear()
