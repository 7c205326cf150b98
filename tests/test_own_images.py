"""Your own images: folders (flat or class subfolders) and arrays, grayscale, sizes, and the
command line end to end (pretrain, evaluate, extract) on a small folder of PNGs."""

import json
import os

import numpy as np
import pytest

from keras_infobal import cli, datasets

# After keras_infobal: on the PyTorch backend it must load triton before TensorFlow does
# (docs/backends.md, "Import order").
import tensorflow as tf  # noqa: E402, I001


def write_pngs(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        with open(os.path.join(folder, f"{i:03d}.png"), "wb") as f:
            f.write(tf.io.encode_png(image).numpy())


def pretrain_small(tmp_path, data, epochs):
    """`keras-infobal pretrain` of a tiny `dim` model on `data`; returns the run folder."""
    small = {"backbone": {"filters": [8, 16], "conv_filters": 8, "fc_units": 16,
                          "output_dim": 8},
             "task": {"critic_units": 8}, "epochs": epochs, "batch_size": 8}
    config = tmp_path / "small.json"
    config.write_text(json.dumps(small))
    out = str(tmp_path / "run")
    assert cli.main(["pretrain", "--recipe", "dim", "--config", str(config), "--data",
                     str(data), "--out", out]) == 0
    return out


def test_a_refused_run_leaves_nothing_in_its_folder(tmp_path, capsys):
    write_pngs(str(tmp_path / "imgs"), rng_images(8, 32, 32, 3))
    out = tmp_path / "run"
    # A bad objective value: refused when the model is built, after the data loaded.
    assert cli.main(["pretrain", "--recipe", "dim", "--data", str(tmp_path / "imgs"),
                     "--out", str(out), "--set", "task.critic=nope", "--set",
                     "batch_size=8"]) == 2
    assert "`critic` must be one of" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["pretrain", "--recipe", "dim", "--data", str(tmp_path / "imgs"),
                     "--out", str(out)]) == 2  # no full batch of 64
    assert not out.exists()
    assert cli.main(["pretrain", "--recipe", "dim", "--data", str(tmp_path / "missing"),
                     "--out", str(out)]) == 2
    assert not out.exists()


def rng_images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c)).astype("uint8")


def test_a_flat_folder_of_grayscale_pngs_is_tiled_to_rgb(tmp_path, capsys):
    gray = rng_images(5, 40, 24, 1)
    write_pngs(str(tmp_path / "flat"), gray)
    images, labels, classes = datasets.load_images(str(tmp_path / "flat"))
    assert images.shape == (5, 40, 24, 3) and images.dtype == np.uint8
    assert labels is None and classes is None
    np.testing.assert_array_equal(images, np.repeat(gray, 3, axis=-1))  # lossless PNG
    assert "grayscale images tiled to RGB" in capsys.readouterr().out


def test_class_subfolders_give_labels_and_mixed_channels_become_rgb(tmp_path):
    write_pngs(str(tmp_path / "d" / "cats"), rng_images(3, 16, 16, 3))
    write_pngs(str(tmp_path / "d" / "dogs"), rng_images(2, 16, 16, 1, seed=1))
    images, labels, classes = datasets.load_images(str(tmp_path / "d"))
    assert images.shape == (5, 16, 16, 3)
    assert classes == ["cats", "dogs"] and labels.tolist() == [0, 0, 0, 1, 1]


def test_arrays_grayscale_floats_and_labels(tmp_path):
    gray = rng_images(4, 12, 12, 1)[..., 0]  # (N, H, W)
    np.save(tmp_path / "g.npy", gray)
    images, labels, _ = datasets.load_images(str(tmp_path / "g.npy"))
    np.testing.assert_array_equal(images, np.repeat(gray[..., None], 3, axis=-1))
    assert labels is None
    np.savez(tmp_path / "l.npz", x=gray.astype("float32"), y=np.array([1, 0, 1, 2]))
    images, labels, _ = datasets.load_images(str(tmp_path / "l.npz"))
    assert images.dtype == np.uint8 and labels.tolist() == [1, 0, 1, 2]
    np.testing.assert_array_equal(images[..., 0], gray)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_channel_counts_are_treated_alike_for_arrays_and_folders(tmp_path, channels):
    raw = rng_images(3, 8, 8, channels, seed=channels)
    # By hand: grey (C = 1, 2) tiled from the first channel, alpha (the last of 2 and 4)
    # dropped.
    want = np.repeat(raw[..., :1], 3, axis=-1) if channels < 3 else raw[..., :3]
    np.save(tmp_path / "a.npy", raw)
    write_pngs(str(tmp_path / "pngs"), raw)
    for source in (tmp_path / "a.npy", tmp_path / "pngs"):
        images, _, _ = datasets.load_images(str(source))
        np.testing.assert_array_equal(images, want)


def test_channels_first_or_odd_channel_counts_are_refused_with_the_fix(tmp_path):
    np.save(tmp_path / "first.npy", rng_images(2, 3, 8, 8))  # (N, C, H, W)
    with pytest.raises(ValueError, match=r"channels last.*np.moveaxis"):
        datasets.load_images(str(tmp_path / "first.npy"))


def test_bad_sources_say_what_was_expected(tmp_path):
    write_pngs(str(tmp_path / "sizes"), rng_images(1, 16, 16, 3))
    with open(tmp_path / "sizes" / "big.png", "wb") as f:
        f.write(tf.io.encode_png(rng_images(1, 20, 20, 3)[0]).numpy())
    with pytest.raises(ValueError, match=r"different sizes.*resize=\(height, width\)"):
        datasets.load_images(str(tmp_path / "sizes"))
    images, _, _ = datasets.load_images(str(tmp_path / "sizes"), resize=(8, 8))
    assert images.shape == (2, 8, 8, 3)
    np.save(tmp_path / "unit.npy", np.random.default_rng(0).random((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\].*multiply by 255"):
        datasets.load_images(str(tmp_path / "unit.npy"))
    np.save(tmp_path / "five.npy", np.zeros((2, 8, 8, 5), "uint8"))
    with pytest.raises(ValueError, match=r"C = 1 .*got \(2, 8, 8, 5\)"):
        datasets.load_images(str(tmp_path / "five.npy"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No .jpg/.png images"):
        datasets.load_images(str(tmp_path / "empty"))
    np.savez(tmp_path / "bad.npz", y=np.zeros(3))
    with pytest.raises(ValueError, match=r"no `images` \(or `x`\) array"):
        datasets.load_images(str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match="does not exist"):
        datasets.load_images(str(tmp_path / "nothing"))


def test_pretrain_evaluate_and_extract_from_a_folder_of_pngs(tmp_path, monkeypatch, capsys):
    """The documented workflow on images nobody labelled for pretraining, at their own size
    (40x40, grayscale): pretrain writes a preset; evaluate scores it on a labelled folder."""
    from keras_infobal import InfoBal, InfoBalBackbone

    monkeypatch.setenv("KERAS_INFOBAL_CACHE", str(tmp_path / "cache"))
    write_pngs(str(tmp_path / "mine"), rng_images(48, 40, 40, 1))
    out = pretrain_small(tmp_path, tmp_path / "mine", epochs=2)
    printed = capsys.readouterr().out
    assert "grayscale images tiled to RGB" in printed
    assert "\x1b[" not in printed  # plain lines when not a terminal
    backbone = InfoBalBackbone.from_preset(os.path.join(out, "preset"))
    assert backbone.image_shape == (40, 40, 3)
    log = open(os.path.join(out, "log.csv")).read().splitlines()
    assert len(log) == 3 and "mi_R_V1" in log[0]  # header + 2 epochs
    assert "probe_" not in log[0]  # unlabeled: no probe, no columns of NaN
    assert "No artists with labels" not in capsys.readouterr().err  # the figure's legend
    shipped = open(os.path.join(out, "preset", "training_log.csv")).read().splitlines()
    assert shipped == log  # the log travels with the preset, under its checksums
    meta = json.load(open(os.path.join(out, "preset", "metadata.json")))
    assert "training_log.csv" in meta["files"]
    task = InfoBal.from_preset(os.path.join(out, "preset"))  # continue pretraining
    assert task.infomin_weight == 0.0 and task.objectives[0].critic_units == 8

    for c, seed in (("a", 1), ("b", 2)):
        write_pngs(str(tmp_path / "labelled" / c), rng_images(10, 40, 40, 1, seed=seed))
    table = str(tmp_path / "table.json")
    assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                     str(tmp_path / "labelled"), "--layers", "fc", "--knn", "5",
                     "--out", table]) == 0
    printed = capsys.readouterr().out
    assert "extracting fc features of 16 probe-training images" in printed
    assert "\x1b[" not in printed
    scores = json.load(open(table))
    # 4 of the 20 images score the probe: accuracies are multiples of 1/4.
    for row in scores.values():
        assert row["fc"] * 4 == pytest.approx(round(row["fc"] * 4))
    # A separate test set, and the random-init baseline of the same architecture.
    for c, seed in (("a", 3), ("b", 4)):
        write_pngs(str(tmp_path / "held" / c), rng_images(3, 40, 40, 1, seed=seed))
    tables = {}
    for extra in ([], ["--random-init"]):
        path = str(tmp_path / f"t{len(extra)}.json")
        assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                         str(tmp_path / "labelled"), "--test-data", str(tmp_path / "held"),
                         "--layers", "fc", "--knn", "5", "--out", path] + extra) == 0
        tables[len(extra)] = json.load(open(path))
    assert "extracting fc features of 6 test images" in capsys.readouterr().out
    for row in tables[0].values():  # 6 test images: multiples of 1/6
        assert row["fc"] * 6 == pytest.approx(round(row["fc"] * 6))
    trained = cli._load_model(os.path.join(out, "preset"))
    fresh = cli._load_model(os.path.join(out, "preset"), random_init=True)
    assert fresh.get_config() == trained.get_config()
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(),
                                                        trained.get_weights()))
    assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                     str(tmp_path / "mine")]) == 2
    assert "has no labels" in capsys.readouterr().err
    feats = str(tmp_path / "f.npy")
    assert cli.main(["extract", "--model", os.path.join(out, "preset"), "--images",
                     str(tmp_path / "mine"), "--layer", "R", "--out", feats]) == 0
    assert np.load(feats).shape == (48, 8)
    served_dir = str(tmp_path / "served")
    assert cli.main(["export", "--model", os.path.join(out, "preset"), "--out",
                     served_dir]) == 0
    served = tf.saved_model.load(served_dir)
    x = datasets.load_images(str(tmp_path / "mine"))[0][:5]
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(),
                               backbone.predict(x, verbose=0), atol=1e-5)
    assert cli.main(["export", "--model", os.path.join(out, "preset"), "--out",
                     str(tmp_path / "m.pt2"), "--format", "torch"]) == 2
    assert "KERAS_BACKEND=torch" in capsys.readouterr().err


def test_a_tfds_name_is_a_source_too(tmp_path, monkeypatch, capsys):
    """`tfds:NAME[:SPLIT]`, read from a prepared copy (this machine is offline: the
    dataset is a small builder defined and prepared here)."""
    import tensorflow_datasets as tfds

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    made = {"train": rng_images(24, 16, 16, 1, seed=3), "test": rng_images(4, 16, 16, 1, seed=4)}

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(16, 16, 1)),
                "label": tfds.features.ClassLabel(names=["odd", "even"])}))

        def _split_generators(self, dl_manager):
            return {k: self._generate_examples(k) for k in made}

        def _generate_examples(self, split):
            for i, image in enumerate(made[split]):
                yield i, {"image": image, "label": i % 2}

    TinyShapes(data_dir=str(tmp_path / "tfds")).download_and_prepare()
    images, labels, classes = datasets.load_images("tfds:tiny_shapes:test")
    order = np.argsort([im.tobytes() for im in images])  # tfds shuffles the records
    want = np.repeat(made["test"], 3, axis=-1)
    np.testing.assert_array_equal(images[order], want[np.argsort([w.tobytes() for w in want])])
    assert classes == ["odd", "even"] and sorted(labels.tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"no split `valid`.*\['test', 'train'\]"):
        datasets.load_images("tfds:tiny_shapes:valid")
    with pytest.raises(ValueError, match="tfds has no dataset `no_such_set`"):
        datasets.load_images("tfds:no_such_set")
    with pytest.raises(ValueError, match=r"no prepared `mnist`.*cannot be reached"):
        datasets.load_images("tfds:mnist")  # offline here, and not prepared
    out = pretrain_small(tmp_path, "tfds:tiny_shapes", epochs=1)
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["data"] == "tfds:tiny_shapes"


@pytest.mark.backend
def test_python_api_on_a_folder_of_pngs_on_every_backend(tmp_path):
    """The same workflow in Python on the running backend: load a folder, augment with the
    Keras pipeline (in tf.data, and inside a model on backend tensors), pretrain, extract,
    save and reload a preset, export a uint8 serving artifact."""
    import keras

    from keras_infobal import InfoBal, InfoBalBackbone
    from keras_infobal.augmentation import augmentation_pipeline

    write_pngs(str(tmp_path / "mine"), rng_images(32, 24, 24, 1, seed=5))
    images, _, _ = datasets.load_images(str(tmp_path / "mine"))
    aug = augmentation_pipeline(color_jitter=0.5, grayscale=0.2, seed=0)
    on_device = keras.ops.convert_to_numpy(
        aug(keras.ops.convert_to_tensor(images[:4].astype("float32")), training=True))
    assert on_device.shape == (4, 24, 24, 3) and 0 <= on_device.min() <= on_device.max() <= 255
    backbone = InfoBalBackbone(num_views=2, filters=(8, 16), conv_filters=8, fc_units=16,
                               output_dim=8)
    model = InfoBal(backbone, critic="infonce", infomin_weight=0.5, critic_units=8,
                    augmented_pairs=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    ds = datasets.make_dataset(images, batch_size=8, shuffle=True, pairs=True,
                               color_jitter=0.5, grayscale=0.2, drop_remainder=True, seed=0)
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and backbone.image_shape == (24, 24, 3)
    feats = model.extract_features(images, layers=("R",))["R"]
    backbone.save_to_preset(str(tmp_path / "preset"))
    again = InfoBalBackbone.from_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(again.extract_features(images, layers=("R",))["R"], feats,
                               atol=1e-5)
    x = images[:3]
    if keras.backend.backend() == "torch":
        import torch

        backbone.export(str(tmp_path / "m.pt2"), format="torch")
        program = torch.export.load(str(tmp_path / "m.pt2")).module()
        got = program(torch.from_numpy(x)).detach().cpu().numpy()
    else:
        backbone.export(str(tmp_path / "served"))
        served = tf.saved_model.load(str(tmp_path / "served"))  # kept: it owns the variables
        got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, backbone.predict(x, verbose=0), atol=1e-5)
