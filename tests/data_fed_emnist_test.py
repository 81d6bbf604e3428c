"""Federated EMNIST by writer on tiny files the tests write in TFF's layout
(``examples/<writer>/{pixels,label}``): the natural partition, the download
with its checksum (from a ``file://`` URL: nothing leaves the machine), the
cache, and corrupt or missing files."""

import hashlib
import os
import sys
import tarfile

import numpy as np
import pytest

h5py = pytest.importorskip(
    "h5py", reason="the fed-emnist extra is not installed (pip install -e '.[fed-emnist]')")

from fljax import data  # noqa: E402
from fljax.data import DataError, fed_emnist  # noqa: E402

# Writer ids in TFF's style, deliberately not in sorted order; examples each.
WRITERS = {"f0007_22": 4, "f0001_03": 2, "f0140_19": 5, "f0033_40": 1}
PREFIX = "fed_emnist_digitsonly"


def _writer_data(writer: str, n: int, offset: int):
    """Pixels k/255 on a background of 1.0 (TFF's convention); the label
    spells the writer, so a test can tell whose example it sees."""
    rng = np.random.default_rng(int(writer[1:5]) + offset)
    px = np.ones((n, 28, 28), np.float32)
    px[:, 5:20, 5:20] = rng.integers(0, 255, (n, 15, 15)) / np.float32(255.0)
    label = np.full(n, int(writer[1:5]) % 10, np.int32)
    return px, label


def _write_h5(path: str, offset: int = 0, label_shape_n1: str = "f0033_40"):
    with h5py.File(path, "w") as f:
        for w, n in WRITERS.items():
            px, label = _writer_data(w, n + offset, offset)
            g = f.create_group(f"examples/{w}")
            g["pixels"] = px
            # One writer's labels shaped [n, 1], as some exports have them.
            g["label"] = label[:, None] if w == label_shape_n1 else label


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default"))
    return str(tmp_path / "data")


def _place_h5(data_dir, prefix=PREFIX):
    folder = os.path.join(data_dir, "fed_emnist")
    os.makedirs(folder, exist_ok=True)
    _write_h5(os.path.join(folder, f"{prefix}_train.h5"))
    _write_h5(os.path.join(folder, f"{prefix}_test.h5"), offset=1)
    return folder


def _archive(tmp_path):
    """The two .h5 files in a tar.bz2 (inside a sub-folder, as some copies
    are), and its SHA-256."""
    src = tmp_path / "src" / PREFIX
    src.mkdir(parents=True)
    _write_h5(str(src / f"{PREFIX}_train.h5"))
    _write_h5(str(src / f"{PREFIX}_test.h5"), offset=1)
    path = str(tmp_path / "src" / f"{PREFIX}.tar.bz2")
    with tarfile.open(path, "w:bz2") as tar:
        tar.add(str(src), arcname=PREFIX)
    return path, hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_natural_partition_is_one_client_per_writer(data_dir):
    """Bug: examples of one writer split over clients, or mixed with another
    writer's; labels stored [n, 1] misread; pixels not inverted to 0 = background."""
    _place_h5(data_dir)
    fd = data.build("fed_emnist_digits", len(WRITERS), "natural",
                    dataset_kwargs={"data_dir": data_dir})
    assert fd.num_classes == 10 and fd.input_shape == (28, 28, 1)
    assert sorted(fd.counts) == sorted(WRITERS.values())
    expect = {w: _writer_data(w, n, 0) for w, n in WRITERS.items()}
    seen = set()
    for c in range(fd.num_clients):
        xc, yc = fd.client(c)
        (w,) = [w for w, (_, lab) in expect.items() if len(lab) == len(yc) and lab[0] == yc[0]]
        np.testing.assert_allclose(xc[..., 0], 1.0 - expect[w][0], atol=1e-6)
        seen.add(w)
    assert seen == set(WRITERS)
    assert fd.x[:, 0, 0, 0].max() == 0.0  # the background is 0 after inversion
    assert len(fd.y_test) == sum(WRITERS.values()) + len(WRITERS)  # every writer's test
    raw = data.build("fed_emnist_digits", 2, "iid",
                     dataset_kwargs={"data_dir": data_dir, "invert": False})
    assert raw.x[:, 0, 0, 0].min() == 1.0  # TFF's own convention kept


def test_num_clients_samples_whole_writers(data_dir):
    """Bug: sampling fewer clients than writers splits writers or draws the
    same writers for every seed."""
    _place_h5(data_dir)
    draws = set()
    for seed in range(6):
        fd = data.build("fed_emnist_digits", 2, "natural", seed=seed,
                        dataset_kwargs={"data_dir": data_dir})
        assert fd.num_clients == 2
        for c in range(2):
            _, yc = fd.client(c)
            assert len(set(yc.tolist())) == 1 and len(yc) in WRITERS.values()
        draws.add(tuple(sorted(fd.counts.tolist())))
    assert len(draws) > 1
    with pytest.raises(ValueError, match="only 4 distinct ids"):
        data.build("fed_emnist_digits", 5, "natural", dataset_kwargs={"data_dir": data_dir})


def test_download_checks_the_checksum_then_the_cache_serves(tmp_path, data_dir, monkeypatch):
    """Bug: the archive is not verified, not extracted (members in a
    sub-folder), or the second run still needs the files and h5py."""
    path, digest = _archive(tmp_path)
    kw = {"data_dir": data_dir, "url": "file://" + path, "sha256": digest}
    first = data.build("fed_emnist_digits", 4, "natural", dataset_kwargs=kw)
    folder = os.path.join(data_dir, "fed_emnist")
    assert sorted(os.listdir(folder)) == sorted(
        [f"{PREFIX}.tar.bz2", f"{PREFIX}_train.h5", f"{PREFIX}_test.h5"])
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    monkeypatch.setitem(sys.modules, "h5py", None)
    again = data.build("fed_emnist_digits", 4, "natural",
                       dataset_kwargs=dict(kw, download=False))
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.counts, again.counts)
    cached = os.path.join(data_dir, "fljax_cache", PREFIX, digest[:12], "train.npz")
    assert np.load(cached)["x"].dtype == np.uint8  # k/255 pixels stored exactly as levels


def test_corrupt_download_is_rejected_and_removed(tmp_path, data_dir):
    """Bug: a download with the wrong checksum is kept (and read) or leaves a
    partial file behind."""
    path, digest = _archive(tmp_path)
    bad = "0" * 64
    with pytest.raises(DataError, match=f"download of .* is corrupt .*expected {bad}"):
        data.build("fed_emnist_digits", 2, "natural",
                   dataset_kwargs={"data_dir": data_dir, "url": "file://" + path, "sha256": bad})
    assert os.listdir(os.path.join(data_dir, "fed_emnist")) == []


def test_corrupt_files_in_the_folder(tmp_path, data_dir):
    """Bug: a truncated archive or a damaged .h5 file crashes with h5py's or
    tarfile's trace, or is read as data, instead of one line naming the file."""
    folder = os.path.join(data_dir, "fed_emnist")
    os.makedirs(folder)
    with open(os.path.join(folder, f"{PREFIX}.tar.bz2"), "wb") as f:
        f.write(b"BZh91AY&SY not really")
    with pytest.raises(DataError, match=rf"{PREFIX}.tar.bz2 is corrupt or incomplete .*delete"):
        data.build("fed_emnist_digits", 2, "natural", dataset_kwargs={"data_dir": data_dir})
    os.remove(os.path.join(folder, f"{PREFIX}.tar.bz2"))
    _place_h5(data_dir)
    with open(os.path.join(folder, f"{PREFIX}_train.h5"), "r+b") as f:
        f.truncate(600)
    with pytest.raises(DataError, match=rf"{PREFIX}_train.h5 is corrupt or not a TFF"):
        data.build("fed_emnist_digits", 2, "natural", dataset_kwargs={"data_dir": data_dir})
    with h5py.File(os.path.join(folder, f"{PREFIX}_train.h5"), "w") as f:
        f["examples/f0001_03/pixels"] = np.zeros((3, 28, 28), np.float32)
        f["examples/f0001_03/label"] = np.zeros(2, np.int32)  # 3 images, 2 labels
    with pytest.raises(DataError, match=r"writer 'f0001_03': pixels \(3, 28, 28\), 2 labels"):
        data.build("fed_emnist_digits", 1, "natural", dataset_kwargs={"data_dir": data_dir})


def test_offline_errors_name_the_file_and_the_folder(tmp_path, data_dir):
    """Bug: without a network the user is not told which file to fetch and
    where to put it."""
    folder = os.path.join(data_dir, "fed_emnist")
    with pytest.raises(DataError, match=rf"{PREFIX}.tar.bz2 is not in {folder} and "
                                        r"download=False.*sha256 55333deb"):
        data.build("fed_emnist_digits", 2, "natural",
                   dataset_kwargs={"data_dir": data_dir, "download": False})
    gone = "file://" + str(tmp_path / "nowhere" / f"{PREFIX}.tar.bz2")
    with pytest.raises(DataError, match=rf"could not download .*put it in {folder}"):
        data.build("fed_emnist_digits", 2, "natural",
                   dataset_kwargs={"data_dir": data_dir, "url": gone})


def test_full_set_and_missing_h5py(data_dir, monkeypatch):
    """Bug: the 62-class archive reads the digits files or caps labels at 10;
    a missing h5py is a bare ImportError."""
    folder = _place_h5(data_dir, prefix="fed_emnist")
    with h5py.File(os.path.join(folder, "fed_emnist_train.h5"), "a") as f:
        f["examples/f0500_01/pixels"] = np.ones((2, 28, 28), np.float32)
        f["examples/f0500_01/label"] = np.array([61, 36], np.int32)
    fd = data.build("fed_emnist", len(WRITERS) + 1, "natural",
                    dataset_kwargs={"data_dir": data_dir})
    assert fd.num_classes == 62 and fd.y.max() == 61
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match=r"needs h5py: pip install 'fljax\[fed-emnist\]'"):
        data.build("fed_emnist", 2, dataset_kwargs={"data_dir": data_dir, "cache": False})
    with pytest.raises(DataError, match="takes no dataset_kwargs only_digits"):
        data.build("fed_emnist", 2, dataset_kwargs={"only_digits": True})


def test_published_checksums_are_tffs():
    """Bug: a mistyped checksum would reject every real download."""
    assert fed_emnist.ARCHIVES[True].sha256.startswith("55333deb8546")
    assert fed_emnist.ARCHIVES[False].sha256.startswith("fe1ed5a502ce")
    assert all(len(a.sha256) == 64 for a in fed_emnist.ARCHIVES.values())
