"""Federated EMNIST by writer: TensorFlow Federated's published HDF5 files.

The data set of Sun et al. (2019) and of TFF's EMNIST tutorials: LEAF's
pre-processing of EMNIST, one client per writer. Two archives, each holding a
``*_train.h5`` and a ``*_test.h5``:

================================  =======  =======  ==========================
archive                           writers  classes  examples (train / test)
================================  =======  =======  ==========================
``fed_emnist_digitsonly.tar.bz2``   3,383       10  341,873 / 40,832
``fed_emnist.tar.bz2``              3,400       62  671,585 / 77,483
================================  =======  =======  ==========================

Each writer contributes examples to both files. An ``.h5`` file has one group
``examples`` with one sub-group per writer id (``examples/f0000_14``), holding
``pixels`` (``float32[n, 28, 28]`` in ``[0, 1]``, **1.0 is the background**)
and ``label`` (``int32``, ``n`` entries; 0-9 digits, 10-35 upper case, 36-61
lower case).

Files live in ``<data folder>/fed_emnist/`` (the data folder is ``data_dir``,
else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``); without a
``data_dir``, the two ``.h5`` files in TFF's own download folder
(``~/.keras/datasets``) are found too. On the
first use the archive is downloaded there when the network allows, its SHA-256
checked (TFF's published checksums), and the two ``.h5`` files extracted next
to it; the arrays are then cached as ``.npz`` (:mod:`fljax.data.cache`), so
later runs need neither the files nor h5py. Offline, the error names the file
and the folder to put it in. Reading the ``.h5`` files needs h5py:
``pip install 'fljax[fed-emnist]'``.

References:
  Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018.
  Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
  Learning?", 2019 (TFF ``load_data(only_digits=True)``: these files).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import urllib.request
from typing import NamedTuple

import numpy as np

from fljax.data import cache as cache_lib
from fljax.data.cache import DataError

log = logging.getLogger("fljax.data")

URL = "https://storage.googleapis.com/tff-datasets-public/"
FOLDER = "fed_emnist"


class Archive(NamedTuple):
    """One published archive: its file prefix, SHA-256 and number of classes."""

    prefix: str
    sha256: str
    num_classes: int

    @property
    def file(self) -> str:
        return self.prefix + ".tar.bz2"

    def h5(self, split: str) -> str:
        return f"{self.prefix}_{split}.h5"


#: ``only_digits`` -> archive. Checksums as published with TFF's
#: ``tff.simulation.datasets.emnist.load_data`` (HDF5 era).
ARCHIVES = {
    True: Archive("fed_emnist_digitsonly",
                  "55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b", 10),
    False: Archive("fed_emnist",
                   "fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0", 62),
}


def load(only_digits: bool = True, data_dir: str | None = None, download: bool = True,
         cache: bool = True, invert: bool = True, url: str | None = None,
         sha256: str | None = None):
    """Loads federated EMNIST with each example's writer.

    Args:
      only_digits: the 10-class digits-only archive (3,383 writers), else the
        62-class one (3,400 writers).
      data_dir: the data folder; files go to ``<data_dir>/fed_emnist/``.
      download: fetch the archive when no file is found.
      cache: read and write the ``.npz`` array cache.
      invert: ``1 - pixels``, so that 0 is the background and 1 the ink, as in
        MNIST and every other image set of fljax (TFF's files have it the other
        way round; ``invert=False`` keeps theirs).
      url: where the archive is fetched from (a mirror; ``file://`` works);
        default TFF's bucket.
      sha256: the archive's expected checksum; default TFF's.

    Returns:
      ``(x, y, x_test, y_test, num_classes, ids)``: ``float32[N, 28, 28, 1]``
      images, ``int32`` labels, and ``ids`` ``int32[N]``, the writer of each
      training example numbered ``0 ..`` in the sorted order of the writer ids
      (``partition='natural'`` makes one client per writer). The test split is
      every writer's test examples.

    Raises:
      DataError: one line naming the data set and what to do (a missing file
        and where to put it, a corrupt file, h5py not installed).
    """
    archive = ARCHIVES[bool(only_digits)]
    expected = (sha256 or archive.sha256).lower()
    root = cache_lib.data_root(data_dir)
    folder = os.path.join(root, FOLDER)
    version = expected[:12]  # the data's version is the archive it came from
    files = {s: cache_lib.path(root, archive.prefix, version, f"{s}.npz")
             for s in ("train", "test")}
    arrays = {s: cache_lib.read(f) if cache else None for s, f in files.items()}
    missing = [s for s, a in arrays.items() if a is None]
    if missing:
        h5 = _h5_files(archive, folder, download, url or URL + archive.file, expected,
                       keras_cache=not data_dir)
        for s in missing:
            log.info("converting %s to arrays (once%s)", h5[s],
                     f"; cached in {files[s]}" if cache else "")
            arrays[s] = read_h5(h5[s], archive.num_classes)
            if cache:
                cache_lib.write(files[s], arrays[s])
    tr, te = arrays["train"], arrays["test"]
    return (_pixels(tr["x"], invert), tr["y"].astype(np.int32), _pixels(te["x"], invert),
            te["y"].astype(np.int32), archive.num_classes, tr["ids"].astype(np.int32))


def _pixels(stored: np.ndarray, invert: bool) -> np.ndarray:
    """``float32[N, 28, 28, 1]`` from the cached form (``uint8`` levels when the
    file's values are exactly ``k / 255``, else its ``float32``)."""
    if stored.dtype == np.uint8:
        x = (255 - stored if invert else stored).astype(np.float32) / np.float32(255.0)
    else:
        x = (1.0 - stored if invert else stored).astype(np.float32)
    return x[..., None]


def _h5_files(archive: Archive, folder: str, download: bool, url: str, sha256: str,
              keras_cache: bool = False) -> dict[str, str]:
    """Paths of the train and test ``.h5`` files, extracting (and first
    downloading) the archive when they are not there yet. ``keras_cache`` also
    looks in TFF's download folder ``~/.keras/datasets``."""
    places = [folder]
    if keras_cache:
        places.append(os.path.join(os.path.expanduser("~"), ".keras", "datasets"))
    for place in places:
        found = {s: os.path.join(place, archive.h5(s)) for s in ("train", "test")}
        if all(os.path.isfile(p) for p in found.values()):
            return found
    path = os.path.join(folder, archive.file)
    name = archive.prefix
    if not os.path.isfile(path):
        if not download:
            raise DataError(f"federated EMNIST ({name}): {archive.file} is not in {folder} and "
                            f"download=False: download it from {url} (sha256 {sha256}) and put it "
                            f"there, or its two files {archive.h5('train')} and "
                            f"{archive.h5('test')}")
        _download(url, path, sha256, archive)
    else:
        actual = _sha256(path)
        if actual != sha256:
            raise DataError(f"federated EMNIST ({name}): {path} is corrupt or incomplete (sha256 "
                            f"{actual}, expected {sha256}); delete it and run again to download it"
                            f", or put a good copy from {url} there")
    return _extract(path, archive, folder)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, path: str, sha256: str, archive: Archive) -> None:
    """Fetches ``url`` to ``path`` through a temporary file, checking the
    SHA-256 on the way; nothing is left at ``path`` unless it matches."""
    folder = os.path.dirname(path)
    log.info("downloading %s to %s", url, path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    except OSError as e:
        raise DataError(f"federated EMNIST ({archive.prefix}): cannot write to {folder} ({e}); "
                        "set data.dataset_kwargs.data_dir to a writable folder") from None
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
        except OSError as e:  # URLError, timeouts, refused connections, a full disk
            raise DataError(f"federated EMNIST ({archive.prefix}): could not download {url} "
                            f"({type(e).__name__}: {e}); without a network, fetch "
                            f"{archive.file} elsewhere (sha256 {sha256}) and put it in "
                            f"{folder}") from None
        if h.hexdigest() != sha256:
            raise DataError(f"federated EMNIST ({archive.prefix}): the download of {url} is "
                            f"corrupt (sha256 {h.hexdigest()}, expected {sha256}); run again, or "
                            f"put a good copy of {archive.file} in {folder}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _extract(path: str, archive: Archive, folder: str) -> dict[str, str]:
    """Writes the archive's two ``.h5`` members (wherever they sit in it) into
    ``folder``; nothing else in the archive is extracted."""
    wanted = {archive.h5(s): s for s in ("train", "test")}
    out = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in wanted and wanted[base] not in out:
                    dest = os.path.join(folder, base)
                    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
                    try:
                        with os.fdopen(fd, "wb") as f, tar.extractfile(member) as src:
                            for block in iter(lambda: src.read(1 << 20), b""):
                                f.write(block)
                        os.replace(tmp, dest)
                    finally:
                        if os.path.exists(tmp):
                            os.remove(tmp)
                    out[wanted[base]] = dest
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"federated EMNIST ({archive.prefix}): cannot extract {path} "
                        f"({type(e).__name__}: {e}); delete it and run again") from None
    missing = [b for b, s in wanted.items() if s not in out]
    if missing:
        raise DataError(f"federated EMNIST ({archive.prefix}): {path} does not hold "
                        f"{', '.join(missing)}; is it the right archive?")
    return out


def read_h5(path: str, num_classes: int) -> dict[str, np.ndarray]:
    """One TFF federated-EMNIST ``.h5`` file as cache-ready arrays.

    Returns:
      ``{'x': uint8 or float32 [N, 28, 28] (as stored: 1.0 = background),
      'y': int32[N], 'ids': int32[N] (writer numbers, sorted writer ids)}``.

    Raises:
      DataError: h5py missing, or the file is not an HDF5 file of this layout.
    """
    try:
        import h5py
    except ImportError:
        raise DataError("federated EMNIST: reading its .h5 files needs h5py: "
                        "pip install 'fljax[fed-emnist]'") from None
    bad = f"federated EMNIST: {path} is corrupt or not a TFF federated-EMNIST file"
    fix = "delete it and run again to extract or download it anew"
    xs, ys, ids = [], [], []
    try:
        with h5py.File(path, "r") as f:
            if "examples" not in f or not len(f["examples"]):
                raise DataError(f"{bad} (no writers under 'examples'); {fix}")
            group = f["examples"]
            for i, writer in enumerate(sorted(group.keys())):
                w = group[writer]
                if "pixels" not in w or "label" not in w:
                    raise DataError(f"{bad} (writer {writer!r} lacks pixels or label); {fix}")
                px = np.asarray(w["pixels"][()], np.float32)
                lab = np.asarray(w["label"][()]).reshape(-1)
                if px.ndim != 3 or px.shape[1:] != (28, 28) or len(lab) != len(px):
                    raise DataError(f"{bad} (writer {writer!r}: pixels {px.shape}, "
                                    f"{len(lab)} labels); {fix}")
                xs.append(px)
                ys.append(lab)
                ids.append(np.full(len(px), i, np.int32))
    except DataError:
        raise
    except Exception as e:  # h5py raises OSError for a non-HDF5 file, KeyError, ...
        raise DataError(f"{bad} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                        f"; {fix}") from None
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise DataError(f"{bad} (pixels outside [0, 1]); {fix}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{bad} (labels outside [0, {num_classes})); {fix}")
    levels = np.rint(x * 255.0).astype(np.uint8)
    exact = np.array_equal(levels.astype(np.float32) / np.float32(255.0), x)
    return {"x": levels if exact else x, "y": y.astype(np.int32), "ids": np.concatenate(ids)}
