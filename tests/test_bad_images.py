"""Image files that cannot be decoded are named (every one) or skipped on request, in the API
and the CLI; a grey file in an RGB folder is tiled with a note."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_infobal import cli, datasets


def _write_jpegs(folder, n, rng, gray=()):
    os.makedirs(folder, exist_ok=True)
    written = []
    for i in range(n):
        channels = 1 if i in gray else 3
        img = rng.integers(0, 256, (32, 32, channels), dtype=np.uint8)
        path = os.path.join(folder, f"{i:03d}.png")
        with open(path, "wb") as f:
            f.write(tf.io.encode_png(img).numpy())
        written.append(img)
    return written


def _truncate(path, keep=40):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:keep])


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = str(tmp_path / "imgs")
    written = {c: _write_jpegs(os.path.join(root, c), 6, rng) for c in ("a", "b")}
    _truncate(os.path.join(root, "a", "002.png"))
    with open(os.path.join(root, "b", "004.png"), "wb") as f:
        f.write(b"not an image at all")
    return root, written


def test_every_bad_file_is_named_in_one_error(folder):
    root, _ = folder
    with pytest.raises(ValueError) as err:
        datasets.load_images(root)
    text = str(err.value)
    assert "2 of 12 image files cannot be decoded" in text
    assert os.path.join(root, "a", "002.png") in text
    assert os.path.join(root, "b", "004.png") in text
    assert "skip_bad_images=True" in text


def test_skip_bad_images_drops_the_files_and_their_labels(folder, capsys):
    root, written = folder
    x, y, classes = datasets.load_images(root, skip_bad_images=True)
    assert "skipped 2 of 12 image files" in capsys.readouterr().out
    assert classes == ["a", "b"] and y.tolist() == [0] * 5 + [1] * 5
    expected = [im for i, im in enumerate(written["a"]) if i != 2]
    expected += [im for i, im in enumerate(written["b"]) if i != 4]
    np.testing.assert_array_equal(x, np.stack(expected))  # PNG is lossless


def test_the_cli_names_the_file_instead_of_a_traceback(folder, tmp_path, capsys):
    root, _ = folder
    out = str(tmp_path / "f.npy")
    assert cli.main(["extract", "--model", "dim", "--images", root, "--out", out]) == 2
    err = capsys.readouterr().err
    assert os.path.join(root, "a", "002.png") in err and "Traceback" not in err
    # The usage line is the subcommand's, not the top-level one.
    assert err.startswith("usage: keras-infobal extract [-h] --model MODEL")
    assert cli.main(["extract", "--model", "dim", "--images", root, "--out", out,
                     "--skip-bad-images"]) == 0
    assert np.load(out).shape[0] == 10


def test_a_corrupt_file_in_a_cifar_folder_is_named(tmp_path):
    from test_datasets import make_folder

    root = make_folder(str(tmp_path / "cifar"))
    bad = os.path.join(root, "train", "dog", "0001.png")
    _truncate(bad)
    with pytest.raises(ValueError, match="1 of 6 image files cannot be decoded") as err:
        datasets.load_local(root, "train", cache_dir=str(tmp_path / "cache"))
    assert bad in str(err.value)


def test_a_grey_file_in_an_rgb_folder_is_tiled_with_a_note(tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = str(tmp_path / "mixed")
    written = _write_jpegs(root, 4, rng, gray=(2,))
    x, _, _ = datasets.load_images(root)
    note = capsys.readouterr().out
    assert "1 of 4 images were not RGB" in note and "002.png" in note
    np.testing.assert_array_equal(x[2], np.repeat(written[2], 3, axis=-1))
    np.testing.assert_array_equal(x[1], written[1])
