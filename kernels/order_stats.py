"""Order statistics over the client axis on the CPU: a compiled XLA FFI kernel.

``rank_weighted_sum(updates, valid, weights)`` returns, for every coordinate
``j``, ``sum_r weights[r] * (r-th smallest of the valid x[:, j])``, and
optionally the sum of the valid rows' signs. A median, a trimmed mean and the
invariant aggregator are rank-weighted sums, so one kernel serves
``coordinate_median``, ``trimmed_mean`` and ``invariant``;
``closest_to_median_mean(updates, valid, beta)`` is Bulyan's coordinate-wise
step on the same sorting network. Injected by hand::

    from fljax import aggregators as agg
    from kernels import order_stats
    rule = agg.trimmed_mean(40, kernel=order_stats.rank_weighted_sum)

The kernel (``order_stats.cc``) copies a super-block of columns of the valid
rows into a buffer and runs a bitonic sorting network over the rows on every
group of 16 columns, register-blocked (each step holds 16 rows in vector
registers through 4 layers of comparators), pruned to the ranks that carry
weight (a median keeps the middle one or two, a trimmed mean only separates
the extremes from the middle), with the columns split over the available CPUs.
XLA:CPU's own sort or a network written in jnp is several times slower: it
spends most of its time in the reshapes and copies around each network stage
(see ``benchmarks/aggregators.py`` for the measured figures).

It is compiled on first use with the system C++ compiler (``$CXX``, else
``c++``/``g++``/``clang++``) against the XLA FFI headers that ship with
jaxlib, with ``-O3 -march=native``, printing one line while it does, and
cached under ``$FLJAX_KERNEL_CACHE`` (default ``~/.cache/fljax/kernels``),
keyed by the source, the flags, the jaxlib version and the CPU.
:func:`available` says whether it can be built here and, if not, why.

``coordinate_median``, ``trimmed_mean``, ``invariant`` and ``bulyan`` use it
by default on the CPU (``kernel="auto"``, resolved in
``fljax/aggregators/_kernels.py``, the one module of fljax that imports this
one); ``kernel=None`` gives their jnp paths. :func:`rank_weighted_sum_reference`
and :func:`closest_to_median_mean_reference` are the plain jnp definitions the
tests compare the kernel against.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("order_stats.cc")
TARGET = "fljax_rank_weighted_sum"
TARGET_CLOSEST = "fljax_closest_to_median_mean"
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread")
ARCH_FLAGS = ("-march=native",)


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built on this machine (no compiler, or it failed)."""


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_fingerprint() -> str:
    """The CPU's feature flags (``-march=native`` code must not move machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir() -> Path:
    root = os.environ.get("FLJAX_KERNEL_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fljax" / "kernels"


def _compile(cxx: str, flags: tuple, out: Path) -> str | None:
    """Compiles to ``out`` atomically; returns the compiler's error text or None."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *flags, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        return f"$ {' '.join(cmd)}\n{proc.stderr.strip()}"
    os.replace(tmp, out)
    return None


@functools.lru_cache(maxsize=None)
def build() -> Path:
    """Compiles the kernel if it is not cached; returns the shared library's path.

    Raises:
      KernelUnavailable: no C++ compiler, or compilation failed (the message
        holds the command and the compiler's output).
    """
    return _build(_compiler())


def _build(cxx: str | None) -> Path:
    if cxx is None:
        raise KernelUnavailable(
            "kernels.order_stats needs a C++17 compiler (set $CXX or install g++ / clang++); "
            "without it the aggregators use their jnp paths")
    import jaxlib

    def cached(flags):
        key = hashlib.sha256("\0".join(
            [SOURCE.read_text(), cxx, *flags, jaxlib.__version__, platform.machine(),
             _cpu_fingerprint()]).encode()).hexdigest()[:16]
        return cache_dir() / f"order_stats-{key}.so"

    attempts = (FLAGS + ARCH_FLAGS, FLAGS)  # -march=native is not known everywhere
    for flags in attempts:  # a library built before, preferably with the arch flags
        if cached(flags).exists():
            return cached(flags)
    # The one line a first use prints (a few seconds of compiling).
    print(f"kernels.order_stats: compiling the CPU kernel with {cxx} (once; cached in "
          f"{cache_dir()})", file=sys.stderr, flush=True)
    errors = []
    for flags in attempts:
        err = _compile(cxx, flags, cached(flags))
        if err is None:
            return cached(flags)
        errors.append(err)
    raise KernelUnavailable("kernels.order_stats failed to compile:\n" + "\n\n".join(errors))


@functools.lru_cache(maxsize=None)
def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.FljaxRankWeightedSum),
                                platform="cpu")
    jax.ffi.register_ffi_target(TARGET_CLOSEST, jax.ffi.pycapsule(lib.FljaxClosestToMedianMean),
                                platform="cpu")
    lib.fljax_order_network.restype = ctypes.c_int64
    lib.fljax_order_network.argtypes = [ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32,
                                        ctypes.c_void_p, ctypes.c_void_p]
    return lib


def available() -> tuple[bool, str]:
    """``(True, '')`` if the kernel builds and loads here, else ``(False, why)``."""
    try:
        _library()
    except KernelUnavailable as e:
        return False, str(e)
    except Exception as e:  # e.g. a jax without jax.ffi, a library that does not load
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def network(m: int, weights=None, prune: bool = True) -> tuple[np.ndarray, int]:
    """The comparator network the kernel runs for ``m`` valid rows, for the tests.

    Args:
      m: number of valid rows.
      weights: ``float32[m]`` rank weights (None: all distinct, i.e. a full sort).
      prune: drop the comparators that cannot change ``sum_r weights[r] * sorted[r]``.

    Returns:
      ``(pairs, padded)``: ``int32[c, 2]`` comparators (minimum to column 0) in
      execution order over ``padded`` rows; rows ``m..padded-1`` hold +inf.
    """
    lib = _library()
    w = np.arange(1, m + 1, dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (m,):
        raise ValueError(f"network: weights must have shape ({m},), got {w.shape}")
    w = np.ascontiguousarray(w)
    padded = ctypes.c_int32()
    count = lib.fljax_order_network(m, w.ctypes.data, int(prune), ctypes.byref(padded), None)
    pairs = np.zeros((max(count, 1), 2), np.int32)
    lib.fljax_order_network(m, w.ctypes.data, int(prune), None, pairs.ctypes.data)
    return pairs[:count], padded.value


def rank_weighted_sum(
    updates: jax.Array,
    valid: jax.Array,
    weights: jax.Array,
    *,
    with_signs: bool = False,
    num_threads: int = 0,
):
    """``out[j] = sum_r weights[r] * sort(updates[valid, j])[r]``, on the CPU.

    Args:
      updates: ``float32[n, d]``; rows with ``valid[i]`` false are never read
        (they may hold NaN / inf).
      valid: ``bool[n]``; ``m`` = number of valid rows.
      weights: ``float32[n]``: weight of rank ``r`` (ascending, ``r < m``);
        ranks ``>= m`` are ignored. Each product is formed before the sum, so
        weights below one keep the sum of huge finite values finite.
      with_signs: also return ``sum_i sign(updates[i, j])`` over valid rows.
      num_threads: CPU threads; 0 = one per CPU the process may run on.

    Returns:
      ``float32[d]``, or the pair ``(float32[d], float32[d] sign sums)``.
      Zero where ``m = 0``. On a platform other than the CPU (a GPU, a TPU) the
      call lowers to :func:`rank_weighted_sum_reference` (a ``jnp.sort``) instead.

    Raises:
      TypeError: ``updates`` is not float32 or not 2-D.
      KernelUnavailable: the kernel cannot be built here (see :func:`available`).
    """
    if updates.ndim != 2 or updates.dtype != jnp.float32:
        raise TypeError(
            f"rank_weighted_sum: updates must be float32[n, d], got {updates.dtype}{list(updates.shape)}")
    n, d = updates.shape
    if valid.shape != (n,) or weights.shape != (n,):
        raise TypeError(f"rank_weighted_sum: valid and weights must have shape ({n},), "
                        f"got {valid.shape} and {weights.shape}")
    _library()
    out_type = jax.ShapeDtypeStruct((d,), jnp.float32)
    call = jax.ffi.ffi_call(TARGET, (out_type, out_type), vmap_method="sequential")

    def on_cpu(x, v, w):
        return call(x, v, w, with_signs=np.int64(bool(with_signs)),
                    num_threads=np.int64(num_threads))

    def elsewhere(x, v, w):  # the kernel is CPU-only: a full sort on other platforms
        return rank_weighted_sum_reference(x, v, w, with_signs=True)

    out, signs = jax.lax.platform_dependent(
        updates, valid.astype(jnp.bool_), weights.astype(jnp.float32),
        cpu=on_cpu, default=elsewhere)
    return (out, signs) if with_signs else out


def rank_weighted_sum_reference(updates, valid, weights, *, with_signs=False, num_threads=0):
    """The definition in plain jnp (a full sort; slow, for tests)."""
    del num_threads
    n = updates.shape[0]
    m = jnp.sum(valid.astype(jnp.int32))
    s = jnp.sort(jnp.where(valid[:, None], updates, jnp.inf), axis=0)  # invalid rows last
    use = (jnp.arange(n) < m) & (weights != 0)
    out = jnp.sum(jnp.where(use[:, None], weights[:, None] * s, 0.0), axis=0)
    if not with_signs:
        return out
    return out, jnp.sum(jnp.where(valid[:, None], jnp.sign(updates), 0.0), axis=0)


def closest_to_median_mean(updates: jax.Array, valid: jax.Array, beta: int, *,
                           num_threads: int = 0) -> jax.Array:
    """Per column: the mean of the ``beta`` valid values closest to the valid median, on the CPU.

    Bulyan's coordinate-wise step (El Mhamdi et al., ICML 2018), with the tie
    rule of ``fljax.aggregators.bulyan``: with ``r`` the ``b``-th smallest
    distance to the median (``b = clip(min(beta, m), 1)``), values strictly
    closer than ``r`` count fully and the values at distance exactly ``r``
    share the remaining slots (their mean fills them). The median is the mean
    of the two middle values for an even count.

    Args:
      updates: ``float32[n, d]``; rows with ``valid[i]`` false are never read.
      valid: ``bool[n]``; ``m`` = number of valid rows.
      beta: static count of values averaged (>= 1).
      num_threads: CPU threads; 0 = one per CPU the process may run on.

    Returns:
      ``float32[d]``, zero where ``m = 0``. On a platform other than the CPU
      the call lowers to :func:`closest_to_median_mean_reference` instead.

    Raises:
      TypeError: ``updates`` is not float32[n, d] or ``valid`` not ``[n]``.
      ValueError: ``beta < 1``.
      KernelUnavailable: the kernel cannot be built here.
    """
    if updates.ndim != 2 or updates.dtype != jnp.float32:
        raise TypeError("closest_to_median_mean: updates must be float32[n, d], "
                        f"got {updates.dtype}{list(updates.shape)}")
    n, d = updates.shape
    if valid.shape != (n,):
        raise TypeError(f"closest_to_median_mean: valid must have shape ({n},), got {valid.shape}")
    if int(beta) < 1:
        raise ValueError(f"closest_to_median_mean: beta must be >= 1, got {beta}")
    _library()
    call = jax.ffi.ffi_call(TARGET_CLOSEST, jax.ShapeDtypeStruct((d,), jnp.float32),
                            vmap_method="sequential")

    def on_cpu(x, v):
        return call(x, v, beta=np.int64(beta), num_threads=np.int64(num_threads))

    def elsewhere(x, v):
        return closest_to_median_mean_reference(x, v, beta)

    return jax.lax.platform_dependent(updates, valid.astype(jnp.bool_), cpu=on_cpu,
                                      default=elsewhere)


def closest_to_median_mean_reference(updates, valid, beta, *, num_threads=0):
    """The definition in plain jnp (full sorts; slow, for tests)."""
    del num_threads
    m = jnp.sum(valid.astype(jnp.int32))
    s = jnp.sort(jnp.where(valid[:, None], updates, jnp.inf), axis=0)
    lo = jnp.maximum(m - 1, 0) // 2
    hi = jnp.maximum(m, 1) // 2
    med = 0.5 * jnp.take(s, lo, axis=0) + 0.5 * jnp.take(s, hi, axis=0)  # float[d]
    dist = jnp.where(valid[:, None], jnp.abs(updates - med[None, :]), jnp.inf)
    b = jnp.clip(jnp.minimum(beta, m), 1, None)
    bf = b.astype(jnp.float32)
    r = jnp.take(jnp.sort(dist, axis=0), b - 1, axis=0)  # the b-th smallest distance
    closer, tied = dist < r[None, :], dist == r[None, :]
    n_closer = jnp.sum(closer.astype(jnp.float32), axis=0)
    n_tied = jnp.sum(tied.astype(jnp.float32), axis=0)
    s_closer = jnp.sum(jnp.where(closer, updates / bf, 0.0), axis=0)
    s_tied = jnp.sum(jnp.where(tied, updates / jnp.maximum(n_tied, 1.0), 0.0), axis=0)
    out = s_closer + s_tied * ((bf - n_closer) / bf)
    return jnp.where(m > 0, out, 0.0)
