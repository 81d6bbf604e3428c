"""Models as pure functions: ``init(key) -> params``, ``apply(params, x) -> logits``.

Every factory returns a :class:`Model`. ``apply(params, x, key=None)`` takes a
batch ``x: float[B, ...]`` and returns ``float[B, num_classes]``; models with
dropout apply it only when a ``key`` is given (training).

Select a model by name in a config with :func:`get_model`.
"""

from fljax.models.core import (
    Model,
    cnn,
    emnist_cnn,
    emnist_dense,
    get_model,
    lenet5,
    logistic,
    mlp,
    MODELS,
)

__all__ = [
    "Model",
    "cnn",
    "emnist_cnn",
    "emnist_dense",
    "get_model",
    "lenet5",
    "logistic",
    "mlp",
    "MODELS",
]
