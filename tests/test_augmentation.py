"""The augmentation pipeline: Keras preprocessing layers only, checked against numpy."""

import numpy as np
import pytest

import keras

from keras_infobal import datasets
from keras_infobal.augmentation import augmentation_pipeline


def run(pipeline, x):
    return keras.ops.convert_to_numpy(pipeline(x.astype("float32"), training=True))


def test_pipeline_is_keras_layers_and_round_trips_its_config():
    aug = augmentation_pipeline(color_jitter=0.5, grayscale=0.2, seed=1)
    assert isinstance(aug, keras.layers.Pipeline)
    for layer in aug.layers:
        assert type(layer) is getattr(keras.layers, type(layer).__name__)  # public Keras
    again = keras.layers.Pipeline.from_config(aug.get_config())
    assert [type(la) for la in again.layers] == [type(la) for la in aug.layers]
    assert [la.get_config() for la in again.layers] == [la.get_config() for la in aug.layers]


def test_translation_is_a_shift_with_mirrored_borders():
    # Every output is the input shifted by at most 4 pixels (0.125 of 32), borders filled
    # by mirroring the edge pixels: numpy's "symmetric" pad, then a crop.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    out = run(augmentation_pipeline(flip=False, seed=2), x)
    shifts = set()
    for a, b in zip(x, out):
        padded = np.pad(a, ((4, 4), (4, 4), (0, 0)), mode="symmetric").astype(np.float32)
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if np.array_equal(padded[dy:dy + 32, dx:dx + 32], b)]
        assert hits, "output is not a mirrored shift of its input"
        shifts.add(hits[0])
    assert len(shifts) > 4  # one shift per image, not one per batch


def test_flip_only_mirrors():
    x = np.random.default_rng(1).integers(0, 256, (32, 8, 8, 3)).astype(np.uint8)
    out = run(augmentation_pipeline(translate=0, seed=3), x)
    flipped = [np.array_equal(b, a[:, ::-1]) for a, b in zip(x, out)]
    kept = [np.array_equal(b, a) for a, b in zip(x, out)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 < sum(flipped) < 28


def test_crop_is_a_centred_zoom_that_keeps_the_aspect():
    # Bilinear resizing keeps a linear image linear: a crop of a fraction f of each side,
    # scaled back up around the centre, multiplies both slopes by f and keeps the mean.
    # So each output's fitted slopes give its f, which must lie in [1 - crop, 1], be the
    # same along both axes (aspect kept) and differ from image to image.
    yy, xx = np.mgrid[0:32, 0:32]
    ramp = (2 * yy + 3 * xx + 10).astype(np.float32)
    x = np.repeat(ramp[None, :, :, None], 3, axis=-1).repeat(32, axis=0)
    out = run(augmentation_pipeline(translate=0, flip=False, crop=0.4, seed=3), x)
    design = np.stack([yy.ravel(), xx.ravel(), np.ones(yy.size)], axis=1)
    fractions = []
    for image in out:
        coef, *_ = np.linalg.lstsq(design, image[..., 0].ravel(), rcond=None)
        np.testing.assert_allclose(design @ coef, image[..., 0].ravel(), atol=1e-3)
        np.testing.assert_allclose(coef[0] / 2, coef[1] / 3, rtol=1e-5)
        np.testing.assert_allclose(image.mean(), ramp.mean(), rtol=1e-5)
        fractions.append(coef[1] / 3)
    assert min(fractions) >= 0.6 - 1e-5 and max(fractions) <= 1 + 1e-5
    # Uniform draws over [0.6, 1]: 32 of them all above 0.7 has odds 0.75 ** 32 < 1e-4.
    assert min(fractions) < 0.7 and max(fractions) > 0.9
    with pytest.raises(ValueError, match="`crop` is the most a crop may shrink"):
        augmentation_pipeline(crop=1.0)


def test_colour_jitter_per_image_and_in_range():
    # A flat grey image stays flat and grey under contrast and saturation; brightness
    # shifts it by at most 0.4 s of 255 (s = 0.5: 51), clipped to [0, 255].
    flat = np.full((64, 4, 4, 3), 128, np.uint8)
    out = run(augmentation_pipeline(color_jitter=0.5, translate=0, flip=False, seed=4), flat)
    per_image = out.reshape(64, -1)
    assert np.ptp(per_image, axis=1).max() < 1e-3  # flat and grey
    assert np.all(np.abs(per_image[:, 0] - 128) <= 51 + 1e-3)
    assert len(np.unique(np.round(per_image[:, 0], 3))) > 32  # one draw per image
    # Saturated colours at the strongest jitter stay inside [0, 255] (Keras clips the HSV
    # saturation to `value_range`, right only at (0, 1)).
    x = np.random.default_rng(5).integers(0, 256, (64, 8, 8, 3)).astype(np.uint8)
    strong = run(augmentation_pipeline(color_jitter=1.2, translate=0, flip=False, seed=5), x)
    assert strong.min() >= 0 and strong.max() <= 255


def test_grayscale_is_luma():
    x = np.random.default_rng(6).integers(0, 256, (8, 4, 4, 3)).astype(np.uint8)
    out = run(augmentation_pipeline(grayscale=1.0, translate=0, flip=False, seed=6), x)
    luma = x.astype(np.float64) @ np.array([0.2989, 0.587, 0.114])
    for c in range(3):
        np.testing.assert_allclose(out[..., c], luma, atol=0.6)


def test_bad_options_name_what_they_take():
    with pytest.raises(ValueError, match="probability"):
        augmentation_pipeline(grayscale=2.0)
    with pytest.raises(ValueError, match="strength >= 0"):
        augmentation_pipeline(color_jitter=-1)
    with pytest.raises(ValueError, match="fraction of the image size"):
        datasets.make_dataset(np.zeros((4, 8, 8, 3), np.uint8), augment_images=True,
                              translate=4)


def test_pretraining_takes_the_crop_and_refuses_bad_values_before_loading_data():
    from keras_infobal.pretraining import resolve

    run = resolve(recipe="dim_pairs", augmentation={"crop": 0.4})
    assert run["augmentation"] == {"color_jitter": 0.5, "grayscale": 0.2, "crop": 0.4}
    with pytest.raises(ValueError, match="`crop` is the most"):
        resolve(recipe="dim_pairs", augmentation={"crop": 2}, data="/nonexistent")
    with pytest.raises(ValueError, match="Unknown augmentation options \\['zoom'\\]"):
        resolve(recipe="dim_pairs", augmentation={"zoom": 0.4})


@pytest.mark.backend
def test_make_dataset_pairs_on_every_backend_and_seeded_repeats():
    x = np.random.default_rng(7).integers(0, 256, (64, 16, 16, 3)).astype(np.uint8)

    def epoch(seed):
        ds = datasets.make_dataset(x, batch_size=16, shuffle=True, pairs=True, seed=seed,
                                   color_jitter=0.5, grayscale=0.2, drop_remainder=True)
        batches = [(a.numpy(), b.numpy()) for a, b in ds]
        assert all(a.dtype == np.uint8 and a.shape == (16, 16, 16, 3) for a, _ in batches)
        return np.stack([np.stack(p) for p in batches])

    first, again, other = epoch(0), epoch(0), epoch(1)
    np.testing.assert_array_equal(first, again)  # a seed repeats, batch for batch
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[:, 0], first[:, 1])  # the two halves differ


def test_custom_augmentation_layer_is_used():
    x = np.full((8, 8, 8, 3), 10, np.uint8)
    own = keras.layers.Pipeline([keras.layers.Rescaling(2.0)])
    (batch,) = list(datasets.make_dataset(x, batch_size=8, augment_images=True,
                                          augmentation=own))
    assert np.all(batch.numpy() == 20)
    with pytest.raises(ValueError, match="augment_images=True"):
        datasets.make_dataset(x, augmentation=own)
