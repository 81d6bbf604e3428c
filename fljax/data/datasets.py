"""Data sets: embedded (offline), synthetic, and benchmark tensors.

Each loader returns ``(x_train, y_train, x_test, y_test, num_classes)`` as
NumPy arrays, except :func:`synthetic_fedprox`, whose data comes already split
by client. Images are ``float32[N, H, W, C]`` in ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np


def _split(x, y, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def digits(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's handwritten digits: 1,797 8x8 grey images, 10 classes,
    scaled to ``[0, 1]`` and shaped ``[N, 8, 8, 1]``. Ships with scikit-learn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int32)
    return (*_split(x, y, test_fraction, seed), 10)


def breast_cancer(test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's Wisconsin breast cancer set: 569 x 30 features, 2 classes
    (one of the data sets of Fang et al. 2020). Features are standardised with
    the training split's mean and standard deviation."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = d.data.astype(np.float32)
    y = d.target.astype(np.int32)
    xtr, ytr, xte, yte = _split(x, y, test_fraction, seed)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    return (xtr - mu) / sd, ytr, (xte - mu) / sd, yte, 2


def random_images(num_examples: int, shape=(28, 28, 1), num_classes: int = 10,
                  num_test: int = 256, seed: int = 0):
    """Random images of a given shape and random labels, for throughput
    benchmarks only (EMNIST: ``(28, 28, 1)``; CIFAR: ``(32, 32, 3)``)."""
    rng = np.random.default_rng(seed)
    x = rng.random((num_examples + num_test,) + tuple(shape), dtype=np.float32)
    y = rng.integers(0, num_classes, num_examples + num_test).astype(np.int32)
    return x[:num_examples], y[:num_examples], x[num_examples:], y[num_examples:], num_classes


def synthetic_fedprox(num_clients: int, alpha: float = 1.0, beta: float = 1.0,
                      dim: int = 60, num_classes: int = 10, iid: bool = False,
                      min_size: int = 50, seed: int = 0, test_fraction: float = 0.2):
    """FedProx's ``Synthetic(alpha, beta)``: each client ``k`` has its own softmax
    model ``W_k ~ N(u_k, 1)``, ``u_k ~ N(0, alpha)``, and its own input
    distribution ``x ~ N(v_k, Sigma)``, ``v_k[j] ~ N(B_k, 1)``, ``B_k ~ N(0, beta)``,
    ``Sigma = diag(j^-1.2)``; labels are ``argmax(softmax(W_k x + b_k))``. Client
    sizes follow a log-normal law plus ``min_size`` (capped at ``100 * min_size``). ``iid=True`` gives the
    paper's Synthetic-IID (one shared model and input law).

    Returns:
      ``(x, y, parts, x_test, y_test, num_classes)``: ``parts`` are per-client
      index arrays into ``x``; the test split is the union of a
      ``test_fraction`` of each client's examples.

    References:
      Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
    """
    rng = np.random.default_rng(seed)
    # FedProx: lognormal(4, 2) sizes plus a floor of 50; capped here so that one
    # giant client does not dominate the static number of local steps.
    sizes = np.minimum(rng.lognormal(4, 2, num_clients).astype(int) + min_size, 100 * min_size)
    sigma = np.array([(j + 1) ** -1.2 for j in range(dim)])
    w_glob = rng.normal(0, 1, (dim, num_classes))
    b_glob = rng.normal(0, 1, num_classes)
    xs, ys, tr_parts, te_x, te_y = [], [], [], [], []
    start = 0
    for k in range(num_clients):
        if iid:
            w, b, v = w_glob, b_glob, np.zeros(dim)
        else:
            u = rng.normal(0, np.sqrt(alpha))
            w = rng.normal(u, 1, (dim, num_classes))
            b = rng.normal(u, 1, num_classes)
            bk = rng.normal(0, np.sqrt(beta))
            v = rng.normal(bk, 1, dim)
        x = rng.normal(v, np.sqrt(sigma), (sizes[k], dim)).astype(np.float32)
        y = np.argmax(x @ w + b, axis=1).astype(np.int32)
        n_te = max(1, int(test_fraction * sizes[k]))
        te_x.append(x[:n_te]); te_y.append(y[:n_te])
        xs.append(x[n_te:]); ys.append(y[n_te:])
        tr_parts.append(np.arange(start, start + sizes[k] - n_te))
        start += sizes[k] - n_te
    return (np.concatenate(xs), np.concatenate(ys), tr_parts, np.concatenate(te_x),
            np.concatenate(te_y), num_classes)
