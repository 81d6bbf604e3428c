"""Federated data: containers, partitioners, and data sets.

:func:`build` turns the ``data`` section of a config into a
:class:`FederatedData`.
"""

from __future__ import annotations

import numpy as np

from fljax.data import cache, fed_emnist, partition, tfds
from fljax.data.cache import DataError
from fljax.data.datasets import breast_cancer, digits, random_images, synthetic_fedprox
from fljax.data.federated import (
    FederatedData,
    client_batch_indices,
    from_partition,
    num_local_steps,
)

#: Federated EMNIST by writer (``data.name``) -> ``only_digits``.
FED_EMNIST = {"fed_emnist_digits": True, "fed_emnist": False}

# Data sets selectable by name (``data.name``). Offline: the first five. The
# TFDS names need the ``tfds`` extra, federated EMNIST the ``fed-emnist`` one;
# ``tfds`` loads any TFDS image set by ``dataset_kwargs.tfds_name``.
DATASETS = (("digits", "breast_cancer", "synthetic", "random_emnist", "random_cifar")
            + tuple(tfds.NAMES) + tuple(FED_EMNIST) + ("tfds",))
PARTITIONS = tuple(partition.PARTITIONERS) + ("natural",)

# One line per data set that has no loader function of its own (``fljax list``).
DESCRIPTIONS = {
    "synthetic": "FedProx's Synthetic(alpha, beta): 60 features, 10 classes, a softmax model "
                 "and an input law per client",
    "random_emnist": "Random 28x28x1 images, examples_per_client per client (benchmarks)",
    "random_cifar": "Random 32x32x3 images, examples_per_client per client (benchmarks)",
    "mnist": "MNIST through TFDS (the tfds extra): 60,000 + 10,000 28x28 grey digits, "
             "10 classes",
    "fashion_mnist": "Fashion-MNIST through TFDS: 60,000 + 10,000 28x28 grey images, "
                     "10 classes",
    "emnist_digits": "EMNIST digits through TFDS: 240,000 + 40,000 28x28 images, 10 classes",
    "emnist_balanced": "EMNIST balanced through TFDS: 112,800 + 18,800 28x28 images, "
                       "47 classes",
    "emnist_byclass": "EMNIST byclass through TFDS: 697,932 + 116,323 28x28 images, "
                      "62 classes",
    "cifar10": "CIFAR-10 through TFDS: 50,000 + 10,000 32x32 colour images, 10 classes",
    "cifar100": "CIFAR-100 through TFDS: 50,000 + 10,000 32x32 colour images, 100 classes",
    "fed_emnist_digits": "Federated EMNIST by writer, digits (TFF's HDF5; the fed-emnist "
                         "extra): 3,383 writers, 10 classes",
    "fed_emnist": "Federated EMNIST by writer (TFF's HDF5; the fed-emnist extra): 3,400 "
                  "writers, 62 classes",
    "tfds": "Any other TFDS image classification set: dataset_kwargs.tfds_name",
}

# The dataset_kwargs each real-data loader takes (checked before loading).
_TFDS_KWARGS = ("data_dir", "train_split", "test_split", "version", "download", "cache",
                "image_key", "label_key", "id_key")
_FED_EMNIST_KWARGS = ("data_dir", "download", "cache", "invert", "url", "sha256")

__all__ = [
    "FederatedData", "build", "client_batch_indices", "from_partition", "num_local_steps",
    "partition", "digits", "breast_cancer", "random_images", "synthetic_fedprox",
    "DATASETS", "DESCRIPTIONS", "PARTITIONS", "FED_EMNIST", "DataError", "cache", "fed_emnist",
    "tfds",
]


def _check_kwargs(name: str, given: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise DataError(f"data set {name!r} takes no dataset_kwargs {', '.join(unknown)} "
                        f"(it takes {', '.join(allowed)})")


def build(name: str, num_clients: int, partition_name: str = "iid", seed: int = 0,
          partition_kwargs: dict | None = None, dataset_kwargs: dict | None = None
          ) -> FederatedData:
    """Loads a data set by name and partitions it among ``num_clients`` clients.

    Args:
      name: one of :data:`DATASETS`. ``synthetic`` is FedProx's generator and is
        naturally partitioned (one client per generated client);
        ``random_emnist`` / ``random_cifar`` give ``examples_per_client`` random
        examples to every client (benchmarks). ``mnist``, ``fashion_mnist``,
        ``emnist_digits``, ``emnist_balanced``, ``emnist_byclass``, ``cifar10``
        and ``cifar100`` load through TensorFlow Datasets (the ``tfds`` extra;
        :mod:`fljax.data.tfds`), and ``tfds`` loads any TFDS image set
        (``dataset_kwargs={'tfds_name': 'kmnist'}``). ``fed_emnist_digits`` and
        ``fed_emnist`` are federated EMNIST by writer (:mod:`fljax.data.fed_emnist`;
        ``partition='natural'``: one client per writer, ``num_clients`` writers
        drawn with ``seed``). These convert once and then read an ``.npz`` cache.
      num_clients: number of clients.
      partition_name: one of :data:`PARTITIONS`.
      seed: seed of the split and the partition.
      partition_kwargs: extra arguments of the partitioner (``alpha``,
        ``classes_per_client``, ``bias``).
      dataset_kwargs: extra arguments of the loader (for the real data sets:
        ``data_dir``, ``download``, ``cache``, and see their loaders).

    Raises:
      ValueError: an unknown name or partition, or impossible partition
        arguments; :class:`DataError` (a ``ValueError``) when a real data set
        cannot be loaded, one line naming it and what to do.
    """
    pk = dict(partition_kwargs or {})
    dk = dict(dataset_kwargs or {})
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    if partition_name not in PARTITIONS:
        raise ValueError(f"unknown partition {partition_name!r}; choose one of "
                         f"{sorted(PARTITIONS)}")
    if name == "synthetic":
        x, y, parts, xt, yt, c = synthetic_fedprox(num_clients, seed=seed, **dk)
        return from_partition(x, y, parts, xt, yt, c, name=f"synthetic({num_clients})")
    if name in ("random_emnist", "random_cifar"):
        per = int(dk.pop("examples_per_client", 64))
        shape = (28, 28, 1) if name == "random_emnist" else (32, 32, 3)
        x, y, xt, yt, c = random_images(per * num_clients, shape, seed=seed, **dk)
        parts = [np.arange(i * per, (i + 1) * per) for i in range(num_clients)]
        return from_partition(x, y, parts, xt, yt, c, name=name)
    if name in tfds.NAMES:
        _check_kwargs(name, dk, _TFDS_KWARGS)
        x, y, xt, yt, c, ids = tfds.load(tfds.NAMES[name], **dk)
    elif name == "tfds":
        _check_kwargs(name, dk, ("tfds_name",) + _TFDS_KWARGS)
        x, y, xt, yt, c, ids = tfds.load(**dk)
    elif name in FED_EMNIST:
        _check_kwargs(name, dk, _FED_EMNIST_KWARGS)
        x, y, xt, yt, c, ids = fed_emnist.load(only_digits=FED_EMNIST[name], **dk)
    else:
        loader = {"digits": digits, "breast_cancer": breast_cancer}[name]
        x, y, xt, yt, c = loader(seed=seed, **dk)
        ids = None
    if partition_name == "natural":
        if ids is None:
            raise ValueError(f"partition 'natural' needs a client-id column, which {name!r} "
                             "does not have; use iid, dirichlet, shards or fang")
        parts = partition.natural(ids, num_clients, seed=seed)
    else:
        parts = partition.PARTITIONERS[partition_name](y, num_clients, seed=seed, **pk)
    return from_partition(x, y, parts, xt, yt, c, name=f"{name}/{partition_name}")
