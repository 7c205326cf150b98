"""Augmentation as a Keras preprocessing pipeline, the same on every backend.

`augmentation_pipeline(...)` is a `keras.layers.Pipeline` of Keras' own image layers (no
hand-written image code): random translation with reflection (DIM's pad-and-crop), a
horizontal flip, optional random resized crops, SimCLR-style colour jitter and random
grayscale. It runs

- in `tf.data` on the CPU, whatever the backend (`make_dataset` maps it over batches; Keras
  preprocessing layers switch to TensorFlow ops inside `tf.data`), or
- inside a model, on the accelerator, as any layer: `pipeline(images, training=True)`.

```python
from keras_infobal.augmentation import augmentation_pipeline
aug = augmentation_pipeline(color_jitter=0.5, grayscale=0.2, seed=0)
ds = tf.data.Dataset.from_tensor_slices(images).batch(64).map(aug)
```

Images stay in [0, 255]: uint8 in; uint8 out from the spatial layers, float out once colour
is jittered (`make_dataset` rounds back to uint8).
"""

import keras


def check_options(color_jitter=0.0, grayscale=0.0, translate=0.125, crop=0.0):
    """Raises a ValueError naming the bad option and what it takes."""
    if not (isinstance(color_jitter, (int, float)) and color_jitter >= 0):
        raise ValueError(f"`color_jitter` is a strength >= 0 (SimCLR's s, 0 = off); got "
                         f"{color_jitter!r}.")
    if not (isinstance(grayscale, (int, float)) and 0 <= grayscale <= 1):
        raise ValueError(f"`grayscale` is a probability in [0, 1]; got {grayscale!r}.")
    if not (isinstance(translate, (int, float)) and 0 <= translate < 1):
        raise ValueError(f"`translate` is a fraction of the image size in [0, 1) (0.125 = 4 "
                         f"pixels of a 32x32 image); got {translate!r}.")
    if not (isinstance(crop, (int, float)) and 0 <= crop < 1):
        raise ValueError(f"`crop` is the most a crop may shrink each side, as a fraction in "
                         f"[0, 1) (0.5: crops down to a quarter of the area, scaled back "
                         f"up; 0 = off); got {crop!r}.")


def _saturation_range(low, high):
    # RandomSaturation samples f and multiplies saturation by f / (1 - f): the f that give
    # the multipliers [low, high].
    return tuple(max(m, 0.0) / (1.0 + max(m, 0.0)) for m in (low, high))


def augmentation_pipeline(color_jitter=0.0, grayscale=0.0, translate=0.125, flip=True,
                          crop=0.0, seed=None, name="augmentation"):
    """The augmentation of pretraining as a `keras.layers.Pipeline`.

    Args:
        color_jitter: SimCLR's colour distortion strength s (0 = off): brightness shifted by
            up to 0.4 s of the value range, contrast and saturation scaled by a factor in
            [1 - 0.8 s, 1 + 0.8 s], per image.
        grayscale: probability of turning an image grey.
        translate: the largest shift, as a fraction of the image's height and width, with
            reflection at the borders (0.125: DIM's 4-pixel pad-and-crop of 32x32 images).
        flip: random horizontal flips.
        crop: random resized crops (SimCLR's and AMDIM's strongest augmentation), as the most
            each side may shrink: a crop of (1 - c) to 1 of the height and width, same
            aspect, around the translated centre, scaled back to the image size
            (bilinear). 0 = off; 0.5 crops down to a quarter of the area.
        seed: an int for reproducible draws (each layer gets its own seed from it).
    """
    check_options(color_jitter, grayscale, translate, crop)
    seeds = iter(range(8) if seed is None else range(seed * 8, seed * 8 + 8))

    def next_seed():
        s = next(seeds)
        return None if seed is None else s

    layers = []
    # The spatial layers move whole pixels (nearest, mirrored borders): in uint8 they are
    # exact and cost about 20% less CPU than in float32 (benchmarks/pipeline.py).
    if translate:
        layers.append(keras.layers.RandomTranslation(
            translate, translate, fill_mode="reflect", interpolation="nearest",
            seed=next_seed(), dtype="uint8", name="translate"))
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next_seed(), dtype="uint8",
                                              name="flip"))
    if crop:
        # Keras' zoom with a negative factor zooms in: a central crop of (1 + f) of each
        # side, resized back. After the translation, so the crop's centre moves too. Last of
        # the spatial layers: it interpolates, so it works in float32.
        layers.append(keras.layers.RandomZoom(
            (-float(crop), 0.0), None, fill_mode="reflect", interpolation="bilinear",
            seed=next_seed(), name="crop"))
    if color_jitter:
        s = float(color_jitter)
        # In [0, 1]: RandomSaturation clips the HSV saturation to `value_range`, which is
        # only right for (0, 1); at (0, 255) saturations above 1 give negative pixels.
        layers.append(keras.layers.Rescaling(1 / 255, name="to_unit"))
        layers.append(keras.layers.RandomColorJitter(
            value_range=(0, 1), brightness_factor=min(0.4 * s, 1.0),
            contrast_factor=min(0.8 * s, 1.0),
            saturation_factor=_saturation_range(1 - 0.8 * s, 1 + 0.8 * s),
            seed=next_seed(), name="color_jitter"))
        layers.append(keras.layers.Rescaling(255.0, name="to_255"))
    if grayscale:
        layers.append(keras.layers.RandomGrayscale(float(grayscale), seed=next_seed(),
                                                   name="grayscale"))
    return keras.layers.Pipeline(layers, name=name)
