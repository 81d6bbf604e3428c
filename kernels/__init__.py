"""Hand-written kernels, each beside its plain jnp reference.

``fljax`` imports this package in exactly one place,
``fljax/aggregators/_kernels.py``: the order-statistic rules take
``kernel="auto"`` by default, which uses a kernel from here where it can be
built and is measured faster on the backend, and the jnp path everywhere else
(``kernel=None`` forces the jnp path; a function injects any kernel).

- :mod:`kernels.order_stats`: rank-weighted sums over the client axis on the
  CPU (median, trimmed mean, the invariant aggregator) and Bulyan's
  closest-to-the-median mean, an XLA FFI kernel compiled on first use; the
  default of those rules on the CPU.
"""
