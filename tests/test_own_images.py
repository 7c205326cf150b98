"""Your own images: folders (flat or class subfolders) and arrays, grayscale, sizes, and the
command line end to end (pretrain, evaluate, extract) on a small folder of PNGs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_infobal import cli, datasets


def write_pngs(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        with open(os.path.join(folder, f"{i:03d}.png"), "wb") as f:
            f.write(tf.io.encode_png(image).numpy())


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
    np.save(tmp_path / "two.npy", np.zeros((2, 8, 8, 2), "uint8"))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*got \(2, 8, 8, 2\)"):
        datasets.load_images(str(tmp_path / "two.npy"))
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
    small = {"backbone": {"filters": [8, 16], "conv_filters": 8, "fc_units": 16,
                          "output_dim": 8},
             "task": {"critic_units": 8}, "epochs": 2, "batch_size": 8}
    config = tmp_path / "small.json"
    config.write_text(json.dumps(small))
    out = str(tmp_path / "run")
    assert cli.main(["pretrain", "--recipe", "dim", "--config", str(config), "--data",
                     str(tmp_path / "mine"), "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "grayscale images tiled to RGB" in printed
    assert "\x1b[" not in printed  # plain lines when not a terminal
    backbone = InfoBalBackbone.from_preset(os.path.join(out, "preset"))
    assert backbone.image_shape == (40, 40, 3)
    log = open(os.path.join(out, "log.csv")).read().splitlines()
    assert len(log) == 3 and "mi_R_V1" in log[0]  # header + 2 epochs
    task = InfoBal.from_preset(os.path.join(out, "preset"))  # continue pretraining
    assert task.infomin_weight == 0.0 and task.critic_units == 8

    for c, seed in (("a", 1), ("b", 2)):
        write_pngs(str(tmp_path / "labelled" / c), rng_images(10, 40, 40, 1, seed=seed))
    table = str(tmp_path / "table.json")
    assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                     str(tmp_path / "labelled"), "--layers", "fc", "--knn", "5",
                     "--out", table]) == 0
    scores = json.load(open(table))
    # 4 of the 20 images score the probe: accuracies are multiples of 1/4.
    for row in scores.values():
        assert row["fc"] * 4 == pytest.approx(round(row["fc"] * 4))
    assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                     str(tmp_path / "mine")]) == 2
    assert "has no labels" in capsys.readouterr().err
    feats = str(tmp_path / "f.npy")
    assert cli.main(["extract", "--model", os.path.join(out, "preset"), "--images",
                     str(tmp_path / "mine"), "--layer", "R", "--out", feats]) == 0
    assert np.load(feats).shape == (48, 8)
