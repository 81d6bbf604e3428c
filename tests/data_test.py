import os
import sys

import jax
import numpy as np
import pytest

from fljax import data
from fljax.data import partition


LABELS = np.random.default_rng(0).integers(0, 10, 2000)


def assert_exact_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n
    assert min(len(p) for p in parts) >= 1


@pytest.mark.parametrize("name,kw", [("iid", {}), ("dirichlet", {"alpha": 0.3}),
                                     ("shards", {"classes_per_client": 2}),
                                     ("fang", {"bias": 0.5})])
def test_partitioners_keep_every_example_once(name, kw):
    parts = partition.PARTITIONERS[name](LABELS, 50, seed=1, **kw)
    assert len(parts) == 50
    assert_exact_cover(parts, len(LABELS))


def classes_per_client(parts):
    return np.mean([len(np.unique(LABELS[p])) for p in parts])


def test_skew_ordering():
    iid = classes_per_client(partition.iid(LABELS, 50))
    d01 = classes_per_client(partition.dirichlet(LABELS, 50, alpha=0.1))
    d10 = classes_per_client(partition.dirichlet(LABELS, 50, alpha=10.0))
    shards = classes_per_client(partition.shards(LABELS, 50, classes_per_client=2))
    assert d01 < 6 < 9 < d10 and iid > 9
    assert shards <= 3.0


def test_fang_bias_puts_labels_in_their_group():
    parts = partition.fang(LABELS, 100, bias=0.8, seed=0)
    groups = np.array_split(np.arange(100), 10)
    home = np.mean([np.mean(LABELS[np.concatenate([parts[c] for c in groups[g]])] == g)
                    for g in range(10)])
    assert 0.75 < home < 0.85  # q = 0.8 of a group's examples carry its label
    iid_like = partition.fang(LABELS, 100, bias=0.1, seed=0)
    home2 = np.mean([np.mean(LABELS[np.concatenate([iid_like[c] for c in groups[g]])] == g)
                     for g in range(10)])
    assert 0.05 < home2 < 0.15


def test_natural_partition_by_id():
    ids = np.repeat(np.arange(7), 3)
    parts = partition.natural(ids)
    assert len(parts) == 7 and all(len(p) == 3 for p in parts)


def test_too_many_clients_is_a_clear_error():
    with pytest.raises(ValueError, match="examples but 3000 clients"):
        partition.iid(LABELS, 3000)


def test_federated_data_layout_and_batches():
    fd = data.build("digits", 30, "dirichlet", partition_kwargs={"alpha": 0.5})
    assert fd.counts.sum() == len(fd.x) and fd.offsets[0] == 0
    assert np.all(fd.offsets[1:] == np.cumsum(fd.counts)[:-1])
    c = int(np.argmin(fd.counts))
    steps = data.num_local_steps(fd.max_client_size, 8, 2)
    idx, mask = data.client_batch_indices(jax.random.PRNGKey(0), fd.offsets[c], fd.counts[c],
                                          max_count=fd.max_client_size, steps=steps,
                                          batch_size=8, epochs=2)
    idx, mask = np.asarray(idx), np.asarray(mask)
    assert mask.sum() == 2 * fd.counts[c]
    used = idx[mask]
    lo, hi = fd.offsets[c], fd.offsets[c] + fd.counts[c]
    assert used.min() >= lo and used.max() < hi
    # each epoch is a permutation of the client's examples
    assert sorted(used[:fd.counts[c]]) == list(range(lo, hi))


def test_synthetic_and_random_sets():
    fd = data.build("synthetic", 20)
    assert fd.num_clients == 20 and fd.x.shape[1] == 60
    fd = data.build("random_emnist", 5, dataset_kwargs={"examples_per_client": 7})
    assert fd.x.shape == (35, 28, 28, 1) and set(fd.counts) == {7}
    fd = data.build("breast_cancer", 10, "iid")
    assert fd.x.shape[1] == 30 and fd.num_classes == 2


# The array cache (fljax/data/cache.py): plain functions of paths and arrays.


def test_cache_round_trip_is_exact_and_atomic(tmp_path):
    """Bug: the cache changes dtypes or values, or leaves temporary files."""
    from fljax.data import cache

    arrays = {"x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1),
              "y": np.array([3, 1], np.int32), "num_classes": np.int32(10)}
    f = cache.path(str(tmp_path), "emnist/digits", "3.1.0", cache.file_name("train"))
    assert f == str(tmp_path / "fljax_cache" / "emnist" / "digits" / "3.1.0" / "train.npz")
    assert cache.write(f, arrays)
    back = cache.read(f)
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == np.asarray(arrays[k]).dtype
        np.testing.assert_array_equal(back[k], arrays[k])
    assert os.listdir(os.path.dirname(f)) == ["train.npz"]


def test_cache_keys_and_versions(tmp_path):
    """Bug: two split expressions share a file, or the newest cached version
    is chosen by string order (3.10 < 3.9)."""
    from fljax.data import cache

    names = {cache.file_name(s) for s in ("train", "train[:10]", "train[:10%]", "train[10:]")}
    assert len(names) == 4 and "train.npz" in names
    assert cache.file_name("train", label_key="coarse_label") != "train.npz"
    assert cache.file_name("train", id_key=None) == "train.npz"
    root = str(tmp_path)
    assert cache.find_version(root, "mnist", "train.npz") is None
    for v in ("3.9.0", "3.10.0"):
        cache.write(cache.path(root, "mnist", v, "train.npz"), {"y": np.zeros(1)})
    cache.write(cache.path(root, "mnist", "4.0.0", "test.npz"), {"y": np.zeros(1)})
    assert cache.find_version(root, "mnist", "train.npz") == "3.10.0"


def test_cache_ignores_corrupt_files_and_unwritable_folders(tmp_path, caplog):
    """Bug: a truncated cache file (a killed run, a full disk) or a read-only
    data folder crashes the run instead of converting again."""
    from fljax.data import cache

    f = str(tmp_path / "train.npz")
    cache.write(f, {"y": np.arange(1000)})
    with open(f, "r+b") as fh:
        fh.truncate(100)
    assert cache.read(f) is None and "unreadable cache file" in caplog.text
    np.savez(f, y=np.arange(3))  # no format tag: written by something else
    assert cache.read(f) is None
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert not cache.write(str(blocker / "sub" / "train.npz"), {"y": np.arange(3)})


def test_cache_default_folder_follows_tfds(monkeypatch):
    """Bug: the cache ignores TFDS_DATA_DIR or data_dir."""
    from fljax.data import cache

    monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere/tfds")
    assert cache.data_root(None) == "/somewhere/tfds"
    assert cache.data_root("~/d") == os.path.expanduser("~/d")
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert cache.data_root(None) == os.path.expanduser("~/tensorflow_datasets")


def test_tfds_sets_without_the_extra_say_which_to_install(tmp_path, monkeypatch):
    """Bug: a missing tensorflow-datasets surfaces as a bare ImportError deep
    in a run instead of one line naming the set and the extra."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DataError, match=r"'cifar10' loads through tensorflow-datasets.*"
                                             r"pip install 'fljax\[tfds\]'"):
        data.build("cifar10", 2, dataset_kwargs={"data_dir": str(tmp_path)})
