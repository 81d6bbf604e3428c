"""TFDS loaders: every named set on ``tfds.testing.mock_data`` with every
partitioner, the array cache, a real prepared array-record set read without
TensorFlow, and the one-line errors. Nothing downloads: the mocked sets never
touch the network, and the prepared set is written by a builder defined here.
"""

import io
import json
import os
import sys

import numpy as np
import pytest

tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason="the tfds extra is not installed (pip install -e '.[tfds]')")

from fljax import data  # noqa: E402
from fljax.data import DataError  # noqa: E402
from fljax.data import tfds as tfds_loader  # noqa: E402

SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "emnist_digits": (28, 28, 1),
          "emnist_balanced": (28, 28, 1), "emnist_byclass": (28, 28, 1),
          "cifar10": (32, 32, 3), "cifar100": (32, 32, 3)}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "emnist_digits": 10, "emnist_balanced": 47,
           "emnist_byclass": 62, "cifar10": 10, "cifar100": 100}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh data folder; TFDS's default points there too, so no test can
    read or write the user's ``~/tensorflow_datasets``."""
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    return str(tmp_path)


def test_named_sets_cover_the_loader_table():
    """Bug: a name in tfds.NAMES that data.build does not accept, or a named
    set without a test below."""
    assert set(tfds_loader.NAMES) == set(SHAPES)
    assert set(tfds_loader.NAMES) <= set(data.DATASETS)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_named_set_with_every_partitioner(name, data_dir):
    """Bug: a loader that returns the wrong shape, dtype, range or number of
    classes, or a partitioner that fails on a real set's labels. The first
    build converts under mock_data; the others read the cache."""
    with tfds.testing.mock_data(num_examples=120):
        fd = data.build(name, 6, "iid", dataset_kwargs={"data_dir": data_dir})
    assert fd.input_shape == SHAPES[name] and fd.num_classes == CLASSES[name]
    assert fd.x.dtype == np.float32 and 0.0 <= fd.x.min() and fd.x.max() <= 1.0
    assert fd.x.max() > 0.5  # scaled from uint8 once, not twice
    assert fd.x_test.shape == (120,) + SHAPES[name]
    assert fd.y.max() < CLASSES[name] and fd.counts.sum() == 120
    for part, kw in [("dirichlet", {"alpha": 0.5}), ("shards", {"classes_per_client": 2}),
                     ("fang", {"bias": 0.5, "num_groups": 3})]:
        fd = data.build(name, 6, part, partition_kwargs=kw, dataset_kwargs={"data_dir": data_dir})
        assert fd.num_clients == 6 and fd.counts.sum() == 120 and fd.counts.min() >= 1
    with pytest.raises(ValueError, match="client-id column"):
        data.build(name, 6, "natural", dataset_kwargs={"data_dir": data_dir})


def test_second_run_reads_the_cache_without_tfds(data_dir, monkeypatch):
    """Bug: the cache is not written, not found (wrong key), or TFDS is still
    imported on a cached run."""
    with tfds.testing.mock_data(num_examples=40):
        first = data.build("mnist", 4, "iid", dataset_kwargs={"data_dir": data_dir})
    assert os.path.isfile(os.path.join(data_dir, "fljax_cache", "mnist", "3.0.1", "train.npz"))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # any import now fails
    again = data.build("mnist", 4, "iid", dataset_kwargs={"data_dir": data_dir})
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    with pytest.raises(DataError, match=r"'fashion_mnist' .*pip install 'fljax\[tfds\]'"):
        data.build("fashion_mnist", 4, "iid", dataset_kwargs={"data_dir": data_dir})


def test_cache_is_keyed_by_split_and_version(data_dir, monkeypatch):
    """Bug: two splits share a cache file, or a pinned version reads another
    version's arrays."""
    with tfds.testing.mock_data(num_examples=40):
        data.build("mnist", 2, "iid", dataset_kwargs={"data_dir": data_dir})
        sub = data.build("mnist", 2, "iid", dataset_kwargs={
            "data_dir": data_dir, "train_split": "train[:10]", "test_split": "test[:10%]"})
    assert sub.counts.sum() == 40  # the mock ignores slices; its own file nonetheless
    files = os.listdir(os.path.join(data_dir, "fljax_cache", "mnist", "3.0.1"))
    assert len(files) == 4 and "train.npz" in files
    # A newer version in the cache is preferred unless a version is pinned.
    fake = {"x": np.zeros((3, 28, 28, 1), np.uint8), "y": np.zeros(3, np.int32),
            "num_classes": np.int32(10)}
    for split in ("train", "test"):
        data.cache.write(data.cache.path(data_dir, "mnist", "3.10.0", f"{split}.npz"), fake)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    assert data.build("mnist", 1, "iid", dataset_kwargs={"data_dir": data_dir}).counts[0] == 3
    pinned = data.build("mnist", 1, "iid", dataset_kwargs={"data_dir": data_dir,
                                                           "version": "3.0.1"})
    assert pinned.counts[0] == 40


class _Source:
    """A random-access source of given examples, as ``tfds.data_source`` returns."""

    def __init__(self, info, examples):
        self.dataset_info, self._examples = info, examples

    def __len__(self):
        return len(self._examples)

    def __getitem__(self, i):
        return self._examples[i]


def test_emnist_is_made_upright(data_dir):
    """Bug: EMNIST left transposed as TFDS stores it (a trigger or a plot
    would then be mirrored across the diagonal), or another set transposed."""
    stored = np.zeros((28, 28, 1), np.uint8)
    stored[:, 0] = 255  # ink in the first *column* of the stored image
    examples = [{"image": stored, "label": 3}] * 4

    def as_data_source(builder, split, decoders=None, deserialize_method=None):
        return _Source(builder.info, examples)

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        em = data.build("emnist_digits", 2, "iid", dataset_kwargs={"data_dir": data_dir})
        mn = data.build("mnist", 2, "iid", dataset_kwargs={"data_dir": data_dir})
    assert np.all(em.x[:, 0, :, 0] == 1.0) and em.x[:, 1:].sum() == 0  # first row
    assert np.all(mn.x[:, :, 0, 0] == 1.0) and mn.x[:, :, 1:].sum() == 0  # untouched


# A real prepared data set, without mocks: a builder defined here writes
# array-record files (images given as PNG bytes, so preparing needs no
# TensorFlow either), and the loader reads them through tfds.data_source.
N_TRAIN, N_TEST, WRITERS = 30, 8, 5


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (28, 28, 1), dtype=np.uint8)


class FljaxTestWriters(tfds.core.GeneratorBasedBuilder):
    """30 + 8 random 28x28 images, labels i % 10, writer i % 5."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
            "writer": tfds.features.Scalar(dtype=np.int64)}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, N_TRAIN),
                "test": self._generate_examples(1000, N_TEST)}

    def _generate_examples(self, start, n):
        for i in range(start, start + n):
            yield i, {"image": _png(_image(i)), "label": i % 10, "writer": (i * 7) % WRITERS}


class FljaxTestOffline(FljaxTestWriters):
    """A set whose download fails, as it does without a network."""

    def _split_generators(self, dl_manager):
        import requests

        raise requests.exceptions.ConnectionError("Failed to resolve 'example.invalid'")


def _prepare(data_dir):
    builder = FljaxTestWriters(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder


def _kw(data_dir, **kw):
    return dict({"tfds_name": "fljax_test_writers", "data_dir": data_dir}, **kw)


def test_prepared_set_reads_without_tensorflow(data_dir):
    """Bug: the array-record path decodes wrongly (pixels, labels, order), the
    id column is lost, or reading pulls in TensorFlow."""
    _prepare(data_dir)
    fd = data.build("tfds", WRITERS, "natural", dataset_kwargs=_kw(data_dir, id_key="writer"))
    assert "tensorflow" not in sys.modules
    assert fd.num_clients == WRITERS and fd.counts.sum() == N_TRAIN
    expect = {i % 10: set() for i in range(N_TRAIN)}
    for i in range(N_TRAIN):
        expect[i % 10].add(_image(i).tobytes())
    got = np.rint(fd.x * 255).astype(np.uint8)
    for xi, yi in zip(got, fd.y):
        assert xi.tobytes() in expect[int(yi)]  # every image with its own label
    for c in range(fd.num_clients):  # one writer per client: i*7 % 5 fixes i % 5
        _, yc = fd.client(c)
        assert len({int(v) % 5 for v in yc}) == 1
    assert sorted(fd.y_test) == sorted(i % 10 for i in range(1000, 1000 + N_TEST))


def test_missing_split_is_one_line_naming_the_set(data_dir):
    """Bug: a wrong split surfaces as TFDS's multi-line trace instead of
    naming the data set, the split and the field to change."""
    _prepare(data_dir)
    with pytest.raises(DataError) as e:
        data.build("tfds", 2, "iid", dataset_kwargs=_kw(data_dir, test_split="validation"))
    msg = str(e.value)
    assert "'fljax_test_writers'" in msg and "'validation'" in msg and "test_split" in msg
    assert "\n" not in msg


def test_unknown_names_configs_and_versions(data_dir):
    """Bug: a typo gives TFDS's list of 1,000 names instead of a suggestion."""
    with pytest.raises(DataError, match=r"unknown TFDS data set 'mnistt' \(did you mean 'mnist'"):
        data.build("tfds", 2, dataset_kwargs={"tfds_name": "mnistt", "data_dir": data_dir})
    with pytest.raises(DataError, match="'emnist' has no config 'digitz'.*digits"):
        data.build("tfds", 2, dataset_kwargs={"tfds_name": "emnist/digitz", "data_dir": data_dir})
    with pytest.raises(DataError, match="'mnist' has no version '9.9.9'"):
        data.build("mnist", 2, dataset_kwargs={"version": "9.9.9", "data_dir": data_dir})
    with pytest.raises(DataError, match="takes no dataset_kwargs tfds_name"):
        data.build("mnist", 2, dataset_kwargs={"tfds_name": "cifar10"})


def test_unprepared_set_errors_say_what_to_do(data_dir, monkeypatch):
    """Bug: a data folder without the prepared set starts a download that
    cannot succeed (no TensorFlow, download=False), or a failed download
    surfaces as a stack of retries instead of one line."""
    with pytest.raises(DataError, match=r"not prepared in .* download=False.*copy"):
        data.build("tfds", 2, dataset_kwargs=_kw(data_dir, download=False))
    monkeypatch.setattr(tfds_loader, "_has_tensorflow", lambda: False)
    with pytest.raises(DataError, match=r"needs TensorFlow: pip install 'fljax\[tfds-prepare\]'"):
        data.build("tfds", 2, dataset_kwargs=_kw(data_dir))
    monkeypatch.setattr(tfds_loader, "_has_tensorflow", lambda: True)
    with pytest.raises(DataError, match="could not download .*'fljax_test_offline'.*network"):
        data.build("tfds", 2, dataset_kwargs=_kw(data_dir, tfds_name="fljax_test_offline"))


def test_download_prepares_array_record(data_dir, monkeypatch):
    """Bug: with a data_dir, TFDS prepares tfrecord files by default, which
    its data source cannot read: the loader must ask for array-record."""
    monkeypatch.setattr(tfds_loader, "_has_tensorflow", lambda: True)  # what preparing needs
    fd = data.build("tfds", 3, "iid", dataset_kwargs=_kw(data_dir))
    assert fd.counts.sum() == N_TRAIN
    assert os.path.isdir(os.path.join(data_dir, "fljax_test_writers", "1.0.0"))


def test_tfrecord_folder_without_tensorflow(data_dir, monkeypatch):
    """Bug: a set prepared by ``tfds.load`` (tfrecord) fails with TFDS's
    'random access not supported' instead of saying TensorFlow reads it."""
    builder = _prepare(data_dir)
    info = os.path.join(builder.data_dir, "dataset_info.json")
    meta = json.load(open(info))
    meta["fileFormat"] = "tfrecord"
    json.dump(meta, open(info, "w"))
    monkeypatch.setattr(tfds_loader, "_has_tensorflow", lambda: False)
    for version in (None, "1.0.0"):  # TFDS words the two cases differently
        with pytest.raises(DataError, match=r"prepared in .* as tfrecord files, which only Tens"):
            data.build("tfds", 2, dataset_kwargs=_kw(data_dir, version=version))


def test_one_round_on_a_mocked_set_and_bad_split_fails_before_training(data_dir):
    """Bug: a TFDS set does not reach the simulator (shapes, dtypes), or a bad
    split is only found after training started."""
    from fljax import config, simulate

    cfg = {"rounds": 1, "eval_every": 1, "clients_per_round": 2,
           "data": {"name": "fashion_mnist", "num_clients": 4, "partition": "dirichlet",
                    "dataset_kwargs": {"data_dir": data_dir}},
           "model": {"name": "mlp", "kwargs": {"hidden": [8]}},
           "client": {"batch_size": 8, "epochs": 1}}
    with tfds.testing.mock_data(num_examples=32):
        res = simulate.run(config.resolve(simulate.DEFAULTS, cfg), progress=False, log=None)
    assert 0.0 <= res.history[-1]["main_accuracy"] <= 1.0
    _prepare(data_dir)
    cfg["data"] = {"name": "tfds", "num_clients": 4,
                   "dataset_kwargs": _kw(data_dir, train_split="valid")}
    with pytest.raises(config.ConfigError, match="^data: data set 'fljax_test_writers' has no"):
        simulate.prepare(config.resolve(simulate.DEFAULTS, cfg))


def test_bucket_data_dir_writes_no_local_cache(tmp_path, monkeypatch):
    """Bug: a gs:// data folder makes the cache write a local 'gs:' folder."""
    monkeypatch.chdir(tmp_path)
    with tfds.testing.mock_data(num_examples=10):
        fd = data.build("mnist", 2, "iid", dataset_kwargs={"data_dir": "gs://bucket/tfds"})
    assert fd.counts.sum() == 10 and os.listdir(tmp_path) == []
