"""TensorFlow Datasets loaders: MNIST, Fashion-MNIST, EMNIST, CIFAR-10/100, any TFDS image set.

``pip install 'fljax[tfds]'`` installs tensorflow-datasets without TensorFlow.
That reads a data set TFDS has already *prepared* (downloaded and converted)
in the array-record format, through ``tfds.data_source``. *Preparing* one
needs TensorFlow, because TFDS encodes the images with it:
``pip install 'fljax[tfds-prepare]'`` on a machine with a network, once. After
the first run the arrays come from fljax's own ``.npz`` cache
(:mod:`fljax.data.cache`), and neither TFDS nor TensorFlow is imported again.

Each split is loaded in this order:

1. the array cache ``<data folder>/fljax_cache/<name>/<version>/<split>.npz``;
2. the prepared data set in the data folder (``tfds.data_source(...,
   download=False)``), converted to arrays and written to the cache;
3. if it is not prepared, ``download=True`` and TensorFlow is installed: TFDS
   downloads and prepares it (array-record), then step 2.

Anything else is a :class:`~fljax.data.cache.DataError`, one line naming the
data set and what to do: tensorflow-datasets not installed, an unknown TFDS
name or version, a split that does not exist, a data set not prepared in the
data folder with ``download=False`` or without TensorFlow, a failed download
(no network), a data set prepared in the tfrecord format without TensorFlow.

The data folder is ``data_dir`` if given, else TFDS's default
(``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``); TFDS's other environment
variables apply as usual.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from fljax.data import cache as cache_lib
from fljax.data.cache import DataError

log = logging.getLogger("fljax.data")

#: fljax data set name -> TFDS name (``data.name``). Any other TFDS image
#: classification set loads as ``data.name = 'tfds'`` with
#: ``dataset_kwargs={'tfds_name': ...}``.
NAMES: Mapping[str, str] = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "emnist_digits": "emnist/digits",
    "emnist_balanced": "emnist/balanced",
    "emnist_byclass": "emnist/byclass",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}

_DEFAULT_KEYS = {"image_key": "image", "label_key": "label", "id_key": None}
_PREPARE = "pip install 'fljax[tfds-prepare]'"


def load(tfds_name: str = "mnist", data_dir: str | None = None, train_split: str = "train",
         test_split: str = "test", version: str | None = None, download: bool = True,
         cache: bool = True, image_key: str = "image", label_key: str = "label",
         id_key: str | None = None):
    """Loads a TFDS image classification set as NumPy arrays.

    Args:
      tfds_name: a TFDS name, with its config if any (``'emnist/digits'``) and
        optionally a version (``'mnist:3.0.1'``).
      data_dir: the data folder (see the module docstring).
      train_split, test_split: TFDS split expressions (``'train[:10%]'``).
      version: the TFDS version; default: the one already cached, else TFDS's
        current one. Train and test always come from the same version.
      download: let TFDS download and prepare the set if it is not prepared
        (needs TensorFlow and a network).
      cache: read and write the ``.npz`` array cache (never for a ``gs://``
        data folder).
      image_key, label_key: the features holding the image and the class label
        (``label_key='coarse_label'`` gives CIFAR-100's 20 super-classes).
      id_key: a feature that identifies the client (e.g. a writer id), for
        ``partition='natural'``.

    Returns:
      ``(x, y, x_test, y_test, num_classes, ids)``: images ``float32[N, H, W,
      C]`` (``uint8`` images scaled to ``[0, 1]``; EMNIST transposed to the
      upright orientation), labels ``int32[N]``, and ``ids`` ``int32[N]`` (the
      ``id_key`` values numbered ``0 ..``) or ``None``.

    Raises:
      DataError: one line naming the data set and what to do.
    """
    name, version = _parse_name(tfds_name, version)
    root = cache_lib.data_root(data_dir)
    if "://" in root:  # a bucket (gs://...): TFDS reads it; the cache is local files only
        log.info("no array cache for %s in %s (not a local folder)", name, root)
        cache = False
    keys = {"image_key": image_key, "label_key": label_key}
    train, version = _split_arrays(name, version, train_split, root, data_dir, download, cache,
                                   dict(keys, id_key=id_key))
    test, _ = _split_arrays(name, version, test_split, root, data_dir, download, cache,
                            dict(keys, id_key=None))
    num_classes = int(train["num_classes"])
    if int(test["num_classes"]) != num_classes or train["x"].shape[1:] != test["x"].shape[1:]:
        raise DataError(f"data set {tfds_name!r}: splits {train_split!r} and {test_split!r} "
                        "differ in image shape or classes; choose splits of one data set")
    return (_scale(train["x"]), train["y"].astype(np.int32), _scale(test["x"]),
            test["y"].astype(np.int32), num_classes, train.get("ids"))


def _scale(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32)


def _parse_name(tfds_name: str, version: str | None) -> tuple[str, str | None]:
    if not isinstance(tfds_name, str) or not tfds_name.strip(":/ "):
        raise DataError(f"data set 'tfds' needs a TFDS name (data.dataset_kwargs.tfds_name), "
                        f"got {tfds_name!r}")
    name, _, pinned = tfds_name.partition(":")
    if pinned and version and pinned != str(version):
        raise DataError(f"data set {tfds_name!r}: version {version!r} contradicts the name's "
                        f"{pinned!r}; give one")
    return name, (str(version) if version else pinned or None)


def _split_arrays(name: str, version: str | None, split: str, root: str, data_dir, download: bool,
                  use_cache: bool, keys: dict) -> tuple[dict[str, np.ndarray], str]:
    """One split as cache-ready arrays (``x`` in its stored dtype, ``y``,
    ``num_classes``, maybe ``ids``) and the version they come from."""
    fname = cache_lib.file_name(split, **{k: v for k, v in keys.items()
                                          if v != _DEFAULT_KEYS[k]})
    if use_cache:
        ver = version or cache_lib.find_version(root, name, fname)
        if ver is not None:
            arrays = cache_lib.read(cache_lib.path(root, name, ver, fname))
            if arrays is not None:
                return arrays, ver
    tfds = _import_tfds(name)
    examples, info = _open(tfds, name, version, split, data_dir, download)
    ver = str(info.version)
    file = cache_lib.path(root, name, ver, fname)
    log.info("converting %s %s to arrays (once%s)", name, split,
             f"; cached in {file}" if use_cache else "")
    arrays = _to_arrays(examples, info, name, split, **keys)
    if use_cache:
        cache_lib.write(file, arrays)
    return arrays, ver


def _import_tfds(name: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(f"data set {name!r} loads through tensorflow-datasets, which is not "
                        "installed: pip install 'fljax[tfds]'") from None
    return tfds


def _has_tensorflow() -> bool:
    """Whether TensorFlow is importable (preparing a TFDS set needs it)."""
    return importlib.util.find_spec("tensorflow") is not None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().strip("\"'")
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _data_source(tfds, full: str, split: str, data_dir, download: bool):
    # An explicit file format: with a data_dir, TFDS would otherwise prepare
    # tfrecord files, which its random-access data source cannot read.
    return tfds.data_source(full, split=split, data_dir=data_dir, download=download,
                            builder_kwargs={"file_format": "array_record"})


def _open(tfds, name: str, version: str | None, split: str, data_dir, download: bool):
    """The examples of one split (a random-access sequence of dicts, or one
    dict of stacked arrays when TensorFlow read tfrecord files) and the data
    set's ``DatasetInfo``."""
    full = f"{name}:{version}" if version else name
    where = cache_lib.data_root(data_dir)
    try:
        src = _data_source(tfds, full, split, data_dir, download=False)
        return src, src.dataset_info
    except Exception as e:  # classified below; anything else is re-raised as one line
        error = e
    problem = _diagnose(tfds, error)
    if problem == "unknown":
        raise DataError(_unknown_message(tfds, name, version, error)) from None
    if problem == "split":
        raise DataError(f"data set {name!r} has no split {split!r} ({_first_line(error)}); set "
                        "data.dataset_kwargs.train_split / test_split") from None
    if problem == "tfrecord":
        if _has_tensorflow():
            return _load_with_tensorflow(tfds, full, split, data_dir)
        raise DataError(f"data set {name!r} is prepared in {where} as tfrecord files, which only "
                        f"TensorFlow reads: {_PREPARE}, or prepare it again (array-record) in an "
                        "empty data folder (data.dataset_kwargs.data_dir)") from None
    if problem != "unprepared":
        raise DataError(f"data set {name!r}: TFDS could not open split {split!r} in {where} "
                        f"({_first_line(error)})") from None
    copy = (f"or copy its prepared folder {name}/ (or fljax_cache/) into {where} from a machine "
            "that has it")
    if not download:
        raise DataError(f"data set {name!r} is not prepared in {where} and download=False: "
                        f"prepare it once where there is a network ({_PREPARE}), {copy}")
    if not _has_tensorflow():
        raise DataError(f"data set {name!r} is not prepared in {where}, and preparing it "
                        f"(downloading it once) needs TensorFlow: {_PREPARE}, {copy}")
    try:
        src = _data_source(tfds, full, split, data_dir, download=True)
    except Exception as e:  # no network, a failed checksum, a full disk ...
        raise DataError(f"could not download or prepare data set {name!r} in {where} "
                        f"({_first_line(e)}); without a network here, prepare it where there is "
                        f"one and copy its folder {name}/ (or fljax_cache/) into {where}") from None
    return src, src.dataset_info


def _diagnose(tfds, e: Exception) -> str | None:
    """Which of the expected failures of ``tfds.data_source`` ``e`` is."""
    msg = str(e)
    if isinstance(e, tfds.core.DatasetNotFoundError):
        return "unknown"
    if "BuilderConfig" in msg or "cannot be loaded at version" in msg:
        return "unknown"  # a ValueError or an AssertionError, depending on the case
    if isinstance(e, ValueError) and ("Unknown split" in msg or "Error parsing split" in msg):
        return "split"
    if "TFRECORD" in msg.upper() and ("FILE FORMAT" in msg.upper()
                                      or isinstance(e, NotImplementedError)):
        return "tfrecord"  # prepared by tfds.load (tfrecord files); the wording varies
    if (isinstance(e, KeyError) and "splits" in msg) or "could not find data" in msg:
        return "unprepared"
    return None


def _unknown_message(tfds, name: str, version: str | None, error: Exception) -> str:
    base, _, config = name.partition("/")
    try:
        cls = tfds.builder_cls(base)
    except Exception:  # the data set itself is unknown
        cls = None
    if cls is not None:  # it exists: the config or the version does not
        configs = [c.name for c in getattr(cls, "BUILDER_CONFIGS", ())]
        if config and config not in configs:
            return (f"TFDS data set {base!r} has no config {config!r} (configs: "
                    f"{', '.join(configs) or 'none'})")
        versions = [str(cls.VERSION)] + [str(v) for v in getattr(cls, "SUPPORTED_VERSIONS", ())]
        return (f"TFDS data set {name!r} has no version {version!r} (this tensorflow-datasets "
                f"has: {', '.join(versions)}); set data.dataset_kwargs.version")
    try:
        known = list(tfds.list_builders(with_community_datasets=False))
    except Exception:  # a suggestion is a courtesy, never a second failure
        known = []
    close = difflib.get_close_matches(base, sorted(set(known) | set(NAMES)), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return (f"unknown TFDS data set {name!r}{hint}; fljax names: {', '.join(NAMES)}; any TFDS "
            "image set: data.name='tfds' with dataset_kwargs.tfds_name (catalogue: "
            "https://www.tensorflow.org/datasets/catalog/overview)")


def _load_with_tensorflow(tfds, full: str, split: str, data_dir):
    """A split prepared as tfrecord files, read whole through TensorFlow."""
    builder = tfds.builder(full, data_dir=data_dir)
    batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return batch, builder.info


def _to_arrays(examples: Sequence[Mapping[str, Any]] | Mapping[str, np.ndarray], info, name: str,
               split: str, image_key: str, label_key: str, id_key: str | None
               ) -> dict[str, np.ndarray]:
    """Stacks a split's examples: ``x`` (the stored dtype, e.g. ``uint8``),
    ``y`` (``int32``), ``num_classes`` and, with ``id_key``, ``ids``."""
    features = info.features
    for field, key in (("image_key", image_key), ("label_key", label_key), ("id_key", id_key)):
        if key is not None and key not in features:
            raise DataError(f"data set {name!r} has no feature {key!r} (it has "
                            f"{', '.join(sorted(features.keys()))}); set "
                            f"data.dataset_kwargs.{field}")
    num_classes = getattr(features[label_key], "num_classes", None)
    if not num_classes:
        raise DataError(f"data set {name!r}: feature {label_key!r} is not a class label; set "
                        "data.dataset_kwargs.label_key")
    if isinstance(examples, Mapping):  # one batch of every example (TensorFlow path)
        x = np.asarray(examples[image_key])
        y = np.asarray(examples[label_key])
        raw_ids = np.asarray(examples[id_key]) if id_key else None
    else:
        n = len(examples)
        if n == 0:
            raise DataError(f"data set {name!r}: split {split!r} is empty")
        first = np.asarray(examples[0][image_key])
        x = np.empty((n,) + first.shape, first.dtype)
        y = np.empty(n, np.int64)
        raw = []
        try:
            for i in range(n):
                ex = examples[i]
                x[i] = ex[image_key]
                y[i] = ex[label_key]
                if id_key:
                    raw.append(ex[id_key])
        except ValueError as e:
            raise DataError(f"data set {name!r}: the images of split {split!r} differ in shape "
                            f"({_first_line(e)}); fljax needs one image shape") from None
        raw_ids = np.asarray(raw) if id_key else None
    if x.ndim == 3:  # [N, H, W] -> [N, H, W, 1]
        x = x[..., None]
    if name.split("/")[0] == "emnist":
        # TFDS stores EMNIST transposed; make it upright, as MNIST.
        x = np.ascontiguousarray(np.swapaxes(x, 1, 2))
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"data set {name!r}: labels of {split!r} outside [0, {num_classes})")
    out = {"x": x, "y": y.astype(np.int32), "num_classes": np.int32(num_classes)}
    if raw_ids is not None:
        out["ids"] = np.unique(raw_ids, return_inverse=True)[1].reshape(-1).astype(np.int32)
    return out
