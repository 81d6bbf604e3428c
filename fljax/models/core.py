"""Flax models behind a pure ``init`` / ``apply`` boundary.

Layers are named explicitly (``dense_0``, ``conv_1``, ...) so that attacks and
defences can address parameter paths, and the convolutions can run either as
XLA convolutions or as patch-extraction + matmul ("im2col"). The two give the
same function (tested); im2col is much faster on XLA:CPU, especially when many
clients are batched with ``vmap`` (XLA turns a vmapped convolution into a
grouped convolution, which its CPU backend runs slowly).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fljax.types import Params, PRNGKey


class Model(NamedTuple):
    """A model as pure functions.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, x, key=None) -> logits``; dropout (if any) is
        active only when ``key`` is given.
      input_shape: shape of one example (no batch axis).
      num_classes: number of output logits.
      name: the factory's name.
      features: ``features(params, x) -> (float[B, F], float[B, num_classes])``:
        the penultimate layer's activations (what the last dense layer reads)
        and the logits, from one forward pass without dropout. Attacks that
        put their own head on the global model's features use it (M2M's
        discriminator).
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., jax.Array]
    input_shape: tuple[int, ...]
    num_classes: int
    name: str
    features: Optional[Callable] = None


def _im2col_conv(x, kernel, bias):
    """VALID, stride-1 convolution as shifted slices + one matmul.

    x: float[B, H, W, C]; kernel: float[kh, kw, C, O] (flax HWIO layout).
    """
    kh, kw, c, o = kernel.shape
    h_out = x.shape[1] - kh + 1
    w_out = x.shape[2] - kw + 1
    patches = jnp.concatenate(
        [x[:, i:i + h_out, j:j + w_out, :] for i in range(kh) for j in range(kw)],
        axis=-1)  # float[B, h_out, w_out, kh*kw*C], (i, j, c) order = HWIO reshape
    y = patches.reshape(-1, kh * kw * c) @ kernel.reshape(kh * kw * c, o)
    return y.reshape(x.shape[0], h_out, w_out, o) + bias


class Conv(nn.Module):
    """VALID stride-1 2-D convolution with a flax ``nn.Conv``-compatible layout."""

    features: int
    kernel_size: tuple[int, int]
    impl: str = "im2col"  # "im2col" or "xla"

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "im2col":
            return _im2col_conv(x, kernel, bias)
        if self.impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, kernel, (1, 1), "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return y + bias
        raise ValueError(f"Conv: impl must be 'im2col' or 'xla', got {self.impl!r}")


def _max_pool(x, window: int):
    b, h, w, c = x.shape
    h2, w2 = h // window, w // window
    x = x[:, :h2 * window, :w2 * window, :]
    return x.reshape(b, h2, window, w2, window, c).max(axis=(2, 4))


def _avg_pool(x, window: int):
    b, h, w, c = x.shape
    h2, w2 = h // window, w // window
    x = x[:, :h2 * window, :w2 * window, :]
    return x.reshape(b, h2, window, w2, window, c).mean(axis=(2, 4))


class _MLP(nn.Module):
    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, dropout_key=None, features: bool = False):
        del dropout_key
        act = getattr(jax.nn, self.activation)
        x = x.reshape(x.shape[0], -1)
        for i, h in enumerate(self.hidden):
            x = act(nn.Dense(h, name=f"dense_{i}")(x))
        logits = nn.Dense(self.num_classes, name=f"dense_{len(self.hidden)}")(x)
        return (x, logits) if features else logits


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class _EmnistCNN(nn.Module):
    num_classes: int
    conv_impl: str = "im2col"
    dropout: bool = True

    @nn.compact
    def __call__(self, x, dropout_key=None, features: bool = False):
        x = jax.nn.relu(Conv(32, (3, 3), self.conv_impl, name="conv_0")(x))
        x = jax.nn.relu(Conv(64, (3, 3), self.conv_impl, name="conv_1")(x))
        x = _max_pool(x, 2)
        k1, k2 = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        if self.dropout:
            x = _dropout(x, 0.25, k1)
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(nn.Dense(128, name="dense_0")(x))
        if self.dropout:
            x = _dropout(x, 0.5, k2)
        logits = nn.Dense(self.num_classes, name="dense_1")(x)
        return (x, logits) if features else logits


class _LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998), sized to the input: conv 6 -> pool -> conv 16
    -> pool -> 120 -> 84 -> classes. Inputs smaller than 28x28 are zero padded
    to 32x32 as in the paper's MNIST setup. ``activation`` is "relu", or
    "sigmoid" as in the DLG / DLM leakage papers (twice differentiable)."""

    num_classes: int
    activation: str = "relu"
    conv_impl: str = "im2col"

    @nn.compact
    def __call__(self, x, dropout_key=None, features: bool = False):
        del dropout_key
        act = getattr(jax.nn, self.activation)
        h, w = x.shape[1], x.shape[2]
        ph, pw = max(0, 32 - h), max(0, 32 - w)
        x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
        x = _avg_pool(act(Conv(6, (5, 5), self.conv_impl, name="conv_0")(x)), 2)
        x = _avg_pool(act(Conv(16, (5, 5), self.conv_impl, name="conv_1")(x)), 2)
        x = x.reshape(x.shape[0], -1)
        x = act(nn.Dense(120, name="dense_0")(x))
        x = act(nn.Dense(84, name="dense_1")(x))
        logits = nn.Dense(self.num_classes, name="dense_2")(x)
        return (x, logits) if features else logits


def _wrap(module: nn.Module, input_shape, num_classes, name) -> Model:
    input_shape = tuple(int(s) for s in input_shape)

    def init(key):
        return module.init(key, jnp.zeros((1,) + input_shape, jnp.float32))["params"]

    def apply(params, x, key: Optional[PRNGKey] = None):
        return module.apply({"params": params}, x, key)

    def features(params, x):
        return module.apply({"params": params}, x, None, True)

    return Model(init, apply, input_shape, int(num_classes), name, features)


def logistic(input_shape, num_classes) -> Model:
    """Multinomial logistic regression (one dense layer)."""
    return _wrap(_MLP((), num_classes), input_shape, num_classes, "logistic")


def mlp(input_shape, num_classes, hidden: Sequence[int] = (64,),
        activation: str = "relu") -> Model:
    """Fully connected net with the given hidden widths."""
    return _wrap(_MLP(tuple(hidden), num_classes, activation), input_shape,
                 num_classes, "mlp")


def emnist_dense(input_shape=(28, 28, 1), num_classes=10, hidden_units: int = 200) -> Model:
    """FedJAX's EMNIST dense model: flatten -> 200 -> 200 -> classes (ReLU).

    References:
      FedJAX ``fedjax/models/emnist.py::create_dense_model``.
    """
    return _wrap(_MLP((hidden_units, hidden_units), num_classes), input_shape,
                 num_classes, "emnist_dense")


def emnist_cnn(input_shape=(28, 28, 1), num_classes=10, conv_impl: str = "im2col",
               dropout: bool = True) -> Model:
    """FedJAX's EMNIST CNN: conv3x3/32, conv3x3/64 (VALID, ReLU), max-pool 2,
    dropout 0.25, dense 128, dropout 0.5, dense classes.

    References:
      Reddi et al., "Adaptive Federated Optimization", ICLR 2021;
      FedJAX ``fedjax/models/emnist.py::create_conv_model``.
    """
    return _wrap(_EmnistCNN(num_classes, conv_impl, dropout), input_shape, num_classes,
                 "emnist_cnn")


cnn = emnist_cnn


def lenet5(input_shape=(28, 28, 1), num_classes=10, activation: str = "relu",
           conv_impl: str = "im2col") -> Model:
    """LeNet-5 (LeCun et al., 1998); ``activation='sigmoid'`` for leakage work."""
    return _wrap(_LeNet5(num_classes, activation, conv_impl), input_shape, num_classes,
                 "lenet5")


MODELS = {
    "logistic": logistic,
    "mlp": mlp,
    "emnist_dense": emnist_dense,
    "emnist_cnn": emnist_cnn,
    "cnn": emnist_cnn,
    "lenet5": lenet5,
}


def get_model(name: str, input_shape, num_classes, **kwargs) -> Model:
    """Builds a model by name; raises a ``ValueError`` listing the known names."""
    if name not in MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](input_shape, num_classes, **kwargs)
