"""TensorFlow Datasets loader (optional: ``pip install 'fljax[tfds]'``).

Reads a prepared TFDS data set into NumPy arrays. Preparing (downloading) a
data set needs a network and, for most sets, TensorFlow; reading one that is
already prepared in ``data_dir`` does not.
"""

from __future__ import annotations

import numpy as np


def load(tfds_name: str = "mnist", data_dir: str | None = None, train_split: str = "train",
         test_split: str = "test", id_key: str | None = None, download: bool = True):
    """Loads ``tfds_name`` as ``(x, y, x_test, y_test, num_classes, ids)``.

    Images are scaled to ``[0, 1]`` float32. ``id_key`` names a feature that
    identifies the client (e.g. a writer id) for ``partition='natural'``.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError("data set 'tfds' needs tensorflow-datasets: "
                         "pip install 'fljax[tfds]'") from e

    def arrays(split):
        ds = tfds.load(tfds_name, split=split, batch_size=-1, data_dir=data_dir,
                       download=download)
        ds = tfds.as_numpy(ds)
        x = np.asarray(ds["image"])
        y = np.asarray(ds["label"]).astype(np.int32)
        ids = np.asarray(ds[id_key]) if id_key else None
        return x, y, ids

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    num_classes = int(builder.info.features["label"].num_classes)
    x, y, ids = arrays(train_split)
    xt, yt, _ = arrays(test_split)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return (x.astype(np.float32) / scale, y, xt.astype(np.float32) / scale, yt, num_classes,
            ids)
