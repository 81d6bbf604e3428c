"""fljax: a JAX-accelerated, vectorised federated-learning security simulator."""

__version__ = "0.1.0"
