"""Hand-written kernels, each beside its plain jnp reference.

``fljax`` never imports this package: a kernel is injected into the factory
that can use it (see DESIGN.md), and the jnp path stays the default.

- :mod:`kernels.order_stats`: rank-weighted sums over the client axis on the
  CPU (median, trimmed mean, the invariant aggregator), an XLA FFI kernel
  compiled on first use.
"""
