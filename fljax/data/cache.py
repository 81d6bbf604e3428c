"""What the real-data loaders share: the array cache and :class:`DataError`.

A real data set (TFDS, federated EMNIST) is converted to the simulator's
arrays on its first use and kept as one ``.npz`` file per split under the data
folder::

    <data folder>/fljax_cache/<data set>/<version>/<split>.npz

so a second run reads it in about a second, without TensorFlow Datasets or
h5py. The data folder is ``data.dataset_kwargs.data_dir`` when given, else
TFDS's own default: the ``TFDS_DATA_DIR`` environment variable, else
``~/tensorflow_datasets``. Deleting ``fljax_cache`` (or a file in it) is
always safe: the next run converts again.

Every function here is a plain function of paths and arrays; reading a missing
or unreadable file returns ``None`` (the loader then converts again), and a
failed write only logs a warning (the run goes on without a cache).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile

import numpy as np

log = logging.getLogger("fljax.data")

class DataError(ValueError):
    """A data set cannot be loaded. The message is one line that names the data
    set and says what to do (install an extra, prepare it, put a file in a
    folder); it is raised while the experiment is built, before any round."""


#: Version of the file layout; a file written with another one is ignored.
FORMAT = 1
FOLDER = "fljax_cache"


def default_data_dir() -> str:
    """TFDS's default data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                           "tensorflow_datasets")


def data_root(data_dir: str | os.PathLike | None) -> str:
    """The data folder: ``data_dir`` (``~`` expanded) if given, else :func:`default_data_dir`."""
    return os.path.expanduser(os.fspath(data_dir)) if data_dir else default_data_dir()


def file_name(split: str, **variant: str | None) -> str:
    """A file name for ``split``: the split itself when it is a plain name
    (``train.npz``), else a readable slug plus a short hash, so that
    ``train[:10%]`` and ``train[:10]`` never share a file. ``variant`` names the
    choices that change the arrays (e.g. ``label_key='coarse_label'``); ``None``
    values are left out."""
    extra = ",".join(f"{k}={v}" for k, v in sorted(variant.items()) if v is not None)
    key = split + (f"|{extra}" if extra else "")
    slug = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_") or "split"
    if slug != key:
        slug += "-" + hashlib.sha1(key.encode()).hexdigest()[:8]
    return slug + ".npz"


def path(root: str, dataset: str, version: str, name: str) -> str:
    """``<root>/fljax_cache/<dataset>/<version>/<name>``; ``dataset`` may hold
    a ``/`` (``emnist/digits``), which becomes a sub-folder."""
    return os.path.join(root, FOLDER, *dataset.split("/"), str(version), name)


def _version_key(v: str):
    parts = re.split(r"[.\-]", v)
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def find_version(root: str, dataset: str, name: str) -> str | None:
    """The highest version of ``dataset`` that has a cached ``name``, or ``None``."""
    folder = os.path.join(root, FOLDER, *dataset.split("/"))
    try:
        versions = [v for v in os.listdir(folder) if os.path.isfile(os.path.join(folder, v, name))]
    except OSError:
        return None
    return max(versions, key=_version_key) if versions else None


def read(file: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or ``None`` if it is missing, unreadable or
    of another :data:`FORMAT` (a warning says so for the last two)."""
    if not os.path.isfile(file):
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a truncated or foreign file: convert again
        log.warning("ignoring unreadable cache file %s (%s: %s)", file, type(e).__name__, e)
        return None
    if int(arrays.pop("_format", -1)) != FORMAT:
        log.warning("ignoring cache file %s of another format", file)
        return None
    return arrays


def write(file: str, arrays: dict[str, np.ndarray]) -> bool:
    """Writes ``arrays`` to ``file`` atomically (a temporary file, then a
    rename), so a killed run never leaves half a cache. Returns ``False`` (and
    logs a warning) when the folder is not writable."""
    try:
        os.makedirs(os.path.dirname(file), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(file), suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, _format=np.int32(FORMAT), **arrays)
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except OSError as e:
        log.warning("could not write the array cache %s (%s); the next run converts again",
                    file, e)
        return False
    return True
