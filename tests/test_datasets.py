import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from keras_infobal import datasets


def make_folder(root, n_per_class=3, classes=("cat", "dog"), splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            d = os.path.join(root, split, c)
            os.makedirs(d)
            for i in range(n_per_class):
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                data = tf.io.encode_png(img).numpy()
                with open(os.path.join(d, f"{i:04d}.png"), "wb") as f:
                    f.write(data)
    return root


def test_local_folder_loads_and_caches(tmp_path):
    root = make_folder(str(tmp_path / "data"))
    cache = str(tmp_path / "cache")
    x, y, classes = datasets.load_local(root, "train", cache_dir=cache)
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.uint8
    assert classes == ["cat", "dog"]
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert any(f.endswith(".npz") for f in os.listdir(cache))
    x2, y2, _ = datasets.load_local(root, "train", cache_dir=cache)  # from the cache
    np.testing.assert_array_equal(x, x2)
    # PNG is lossless: the decoded pixels are the written ones.
    first = tf.io.decode_png(tf.io.read_file(os.path.join(root, "train", "cat", "0000.png")))
    np.testing.assert_array_equal(x[0], first.numpy())


def test_tar_gz_with_a_top_folder(tmp_path):
    root = make_folder(str(tmp_path / "src" / "cifar"))
    archive = str(tmp_path / "tiny.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar")
    x, y, classes = datasets.load_cifar10("test", source=archive,
                                          cache_dir=str(tmp_path / "cache"))
    assert x.shape == (6, 32, 32, 3) and classes == ["cat", "dog"]


def test_env_var_picks_the_source(tmp_path, monkeypatch):
    root = make_folder(str(tmp_path / "data"))
    monkeypatch.setenv(datasets.ENV_VAR, root)
    monkeypatch.setenv(datasets.CACHE_ENV_VAR, str(tmp_path / "cache"))
    ds = datasets.cifar10_dataset("train", batch_size=4, with_labels=True)
    xb, yb = next(iter(ds))
    assert xb.shape == (4, 32, 32, 3) and xb.dtype == tf.uint8 and yb.shape == (4,)
    x1, x2 = next(iter(datasets.cifar10_dataset("train", batch_size=4, pairs=True,
                                                color_jitter=0.5, grayscale=0.2)))
    assert x1.shape == x2.shape == (4, 32, 32, 3) and x1.dtype == tf.uint8


def test_no_source_names_both_ways(tmp_path):
    with pytest.raises(ValueError) as err:
        datasets.load_cifar10("train", source=str(tmp_path / "missing"))
    msg = str(err.value)
    assert datasets.ENV_VAR in msg and "tfds" in msg and "source=PATH" in msg
    with pytest.raises(ValueError, match="split"):
        datasets.load_cifar10("validation", source=str(tmp_path))
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    with pytest.raises(ValueError, match="not a tar archive"):
        datasets.load_cifar10("train", source=str(bogus))


def test_make_dataset_drops_remainder_for_training():
    x = np.zeros((10, 32, 32, 3), np.uint8)
    ds = datasets.make_dataset(x, batch_size=4, shuffle=True, augment_images=True,
                               drop_remainder=True)
    assert [b.shape[0] for b in ds] == [4, 4]
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        datasets.make_dataset(np.zeros((10, 32, 32), np.uint8))


@pytest.mark.data
def test_real_cifar10_copy_loads():
    from helpers import CIFAR_TAR

    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent: the real CIFAR-10 copy lives in ../shared/data")
    x, y, classes = datasets.load_cifar10("test", source=CIFAR_TAR)
    assert x.shape == (10000, 32, 32, 3)
    assert np.bincount(y).tolist() == [1000] * 10
    assert classes == list(datasets.CIFAR10_CLASSES)


def test_pairs_are_two_augmentations_of_the_same_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
    for a, b in datasets.make_dataset(x, batch_size=8, pairs=True, seed=3):
        a, b = a.numpy(), b.numpy()
        assert a.shape == b.shape == (8, 8, 8, 3) and a.dtype == np.uint8
        assert not np.array_equal(a, b)  # independent crops and flips
    # Flat images survive crop and flip: both halves of a pair come from the same image,
    # also after shuffling.
    flat = np.repeat(np.arange(16, dtype=np.uint8)[:, None, None, None] * 10, 8 * 8 * 3)
    flat = flat.reshape(16, 8, 8, 3)
    seen = []
    for a, b in datasets.make_dataset(flat, batch_size=4, pairs=True, shuffle=True, seed=1):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        seen += list(a.numpy()[:, 0, 0, 0])
    assert sorted(seen) == list(range(0, 160, 10))
    with pytest.raises(ValueError, match="takes no labels"):
        datasets.make_dataset(x, np.zeros(16), pairs=True)
    with pytest.raises(ValueError, match="augment_images=True"):
        datasets.make_dataset(x, color_jitter=0.5)


def test_offline_tfds_fails_fast_with_the_clear_message(tmp_path, monkeypatch):
    """No prepared tfds copy and no network: the error comes at once, no download retries."""
    import tensorflow_datasets as tfds

    from keras_infobal import datasets

    host = datasets._download_host(tfds.builder("cifar10", data_dir=str(tmp_path)))
    assert host and "." in host  # read from tfds' own CIFAR-10 builder
    calls = []
    monkeypatch.setattr(datasets, "_reachable", lambda h, **kw: calls.append(h) or False)

    def no_download(self, *a, **kw):
        raise AssertionError("download_and_prepare must not run offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(ValueError, match="looks offline.*local folder or .tar.gz"):
        datasets.load_tfds("test", data_dir=str(tmp_path))
    assert calls == [host]


def test_reachable_is_false_for_a_closed_local_port():
    import socket

    from keras_infobal.datasets import _reachable

    with socket.socket() as s:  # a port nothing listens on: bind, then close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _reachable("127.0.0.1", port=port, timeout=1.0) is False
    assert _reachable(None) is True  # unknown host: tfds decides
