"""Input pipelines: CIFAR-10 (tfds, or a local folder / `.tar.gz`) and your own images
(`load_images`: a folder, flat or with class subfolders, or an `.npy` / `.npz` array).

Example:

```python
from keras_infobal import datasets
train = datasets.cifar10_dataset("train", batch_size=64, augment=True,
                                 source="../shared/data/cifar10-jpeg.tar.gz")
model.fit(train, epochs=10)
```

The source is chosen by the `source` argument, else the environment variable
`KERAS_INFOBAL_CIFAR10`, else tfds. A local source is a folder or a `.tar.gz` laid out as
`<split>/<class>/<name>.jpg|png`; it is extracted once into a cache folder and decoded once
into a uint8 `.npz` there, so later epochs read arrays instead of decoding JPEGs.
"""

import hashlib
import os
import tarfile

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

ENV_VAR = "KERAS_INFOBAL_CIFAR10"
CACHE_ENV_VAR = "KERAS_INFOBAL_CACHE"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def default_cache_dir():
    """The cache folder: `$KERAS_INFOBAL_CACHE`, else `~/.keras/keras_infobal`."""
    return os.environ.get(
        CACHE_ENV_VAR, os.path.join(os.path.expanduser("~"), ".keras", "keras_infobal")
    )


def _no_source_error(detail=""):
    return ValueError(
        "No CIFAR-10 source is available"
        + (f" ({detail})" if detail else "")
        + ". Provide one of: (1) a local folder or .tar.gz laid out as "
        "`train|test/<class>/NNNN.jpg`, passed as `source=PATH` or through the environment "
        f"variable {ENV_VAR}=PATH; or (2) the tfds dataset, prepared with "
        "`tfds.builder('cifar10').download_and_prepare()` while online, then `source='tfds'`."
    )


def _extract_archive(path, cache_dir):
    """Extracts a `.tar.gz` once into the cache; returns the folder holding the splits."""
    with open(path, "rb") as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    target = os.path.join(cache_dir, "extracted-" + digest.hexdigest()[:16])
    done = os.path.join(target, ".complete")
    if not os.path.exists(done):
        os.makedirs(target, exist_ok=True)
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(target, filter="data")
        with open(done, "w") as f:
            f.write(path)
    return _find_split_root(target)


def _find_split_root(folder):
    # Archives often wrap the splits in one top-level folder; accept either layout.
    for root, dirs, _ in os.walk(folder):
        if "train" in dirs or "test" in dirs:
            return root
    raise _no_source_error(f"no `train` or `test` folder found under {folder}")


def _list_split(split_dir):
    classes = sorted(
        d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d))
    )
    if not classes:
        raise ValueError(
            f"`{split_dir}` holds no class folders; expected `<split>/<class>/<image>`."
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        for fname in sorted(os.listdir(class_dir)):
            if fname.lower().endswith(_IMAGE_EXTENSIONS):
                files.append(os.path.join(class_dir, fname))
                labels.append(label)
    return files, np.asarray(labels, dtype="int64"), classes


def _decode_files(files):
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return image

    ds = tf.data.Dataset.from_tensor_slices(files).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    )
    try:
        images = [image.numpy() for image in ds]
    except tf.errors.OpError:
        # The parallel map does not say which file failed: find every one, one by one.
        bad = [(path, reason) for path in files
               for image, reason in [_decode_one(path)] if image is None]
        if not bad:
            raise
        raise _unreadable(bad, len(files), "a fresh copy of the archive") from None
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(
            f"Images in the folder have different shapes {sorted(shapes)[:4]}; "
            "resize them to one size (e.g. 32x32) first."
        )
    return np.stack(images).astype("uint8")


def _image_files(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(_IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def _unreadable(bad, total, what="skip_bad_images=True (`--skip-bad-images` on the "
                "command line) to leave them out"):
    shown = "\n".join(f"  {path}: {reason}" for path, reason in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return ValueError(
        f"{len(bad)} of {total} image files cannot be decoded (truncated or not an image):\n"
        f"{shown}{more}\nRemove or replace them, or pass {what}.")


def _decode_one(path):
    """(the decoded uint8 image, None) or (None, why it cannot be decoded)."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy(), None
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.UnknownError) as e:
        return None, (e.message.splitlines() or ["unreadable"])[0].strip()


def _decode_any(files, resize=None, skip_bad=False):
    """Decodes image files (any channel count) to uint8 (N, H, W, C) at one size; returns
    (images, the indices of `files` kept). A file that cannot be decoded is refused with
    its path (every such file, in one error), or left out with a note when `skip_bad`."""
    import tensorflow as tf

    images, kept, bad = [], [], []
    for i, path in enumerate(files):
        image, reason = _decode_one(path)
        if image is None:
            bad.append((path, reason))
            continue
        if resize is not None:
            image = tf.cast(tf.round(tf.image.resize(image, resize)), tf.uint8).numpy()
        images.append(image)
        kept.append(i)
    if bad and not skip_bad:
        raise _unreadable(bad, len(files))
    if bad:
        print(f"note: skipped {len(bad)} of {len(files)} image files that cannot be decoded "
              f"(first: {bad[0][0]})", flush=True)
    if not images:
        raise ValueError(f"None of the {len(files)} image files could be decoded.")
    shapes = sorted({im.shape[:2] for im in images})
    if len(shapes) != 1:
        raise ValueError(
            f"The images have different sizes {shapes[:4]}: pass resize=(height, width) "
            "(`--resize H W` on the command line) to bring them to one size."
        )
    channels = [im.shape[-1] for im in images]
    if len(set(channels)) != 1:
        # Mixed grayscale / RGB / RGBA files: bring each to RGB first, with the note
        # `_to_rgb` gives a whole array, naming how many files and the first one.
        converted = [kept[i] for i, c in enumerate(channels) if c != 3]
        print(f"note: {len(converted)} of {len(images)} images were not RGB (grayscale tiled,"
              f" alpha dropped), first: {files[converted[0]]}", flush=True)
        images = [_to_rgb(im[None], note=False)[0] for im in images]
    return np.stack(images).astype("uint8"), np.asarray(kept, dtype="int64")


def _to_rgb(images, note=True):
    """(N, H, W) or (N, H, W, C) with C in 1-4 -> (N, H, W, 3), the same for arrays and image
    files: grayscale (C = 1) is tiled, grayscale + alpha (C = 2) and RGBA (C = 4) lose their
    alpha, with a one-line note."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            "Expected images of shape (N, H, W) or (N, H, W, C) with C = 1 (grayscale), 2 "
            "(grayscale + alpha), 3 (RGB) or 4 (RGBA), channels last; got "
            f"{images.shape}. Move the channels last (`np.moveaxis(images, 1, -1)`) or "
            "convert the images to RGB."
        )
    c = images.shape[-1]
    if c == 3:
        return images
    if note:
        what = {1: "grayscale images tiled", 2: "grayscale + alpha images: alpha dropped, "
                "grey tiled", 4: "RGBA images: alpha dropped"}[c]
        print(f"note: {what} to RGB ({images.shape[1]}x{images.shape[2]}x{c} -> x3)",
              flush=True)
    if c in (1, 2):
        return np.repeat(images[..., :1], 3, axis=-1)
    return images[..., :3]


UNIT_RANGE_MESSAGE = (
    "{source} holds floats in [0, 1]; keras_infobal takes images in [0, 255] (uint8, or "
    "floats in [0, 255]) and would see them as near-black: multiply by 255 first.")


def check_pixel_range(images, source="The batch"):
    """Refuses a float array (numpy, or a backend tensor) whose values lie in [0, 1]: images
    scaled to [0, 1] by mistake, which the model would take as near-black [0, 255] images.
    An all-zero batch is not refused. Integer arrays and symbolic tensors pass unchecked."""
    dtype = getattr(images, "dtype", None)
    if dtype is None or "float" not in str(dtype):
        return
    if not isinstance(images, np.ndarray):
        import keras

        try:
            images = keras.ops.convert_to_numpy(images)
        except Exception:  # a symbolic or traced tensor: its values are not known here
            return
    images = np.asarray(images)
    if images.size and np.issubdtype(images.dtype, np.floating):
        low, high = float(images.min()), float(images.max())
        if low >= 0.0 and 0.0 < high <= 1.0:
            raise ValueError(UNIT_RANGE_MESSAGE.format(source=source))


def _as_uint8(images, source):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.number) and images.size and (
            images.min() >= 0 and images.max() <= 255):
        check_pixel_range(images, f"`{source}`")
        return np.round(images).astype("uint8")
    raise ValueError(
        f"`{source}` holds {images.dtype} values outside [0, 255]; expected uint8 images (or "
        "numbers in [0, 255])."
    )


def load_images(source, resize=None, skip_bad_images=False):
    """Your own images: `(images uint8 (N, H, W, 3), labels or None, class_names or None)`.

    `source` is:
    - a folder of images (`.png`, `.jpg`, ...): flat (no labels), or one subfolder per class
      (labels kept, for evaluation; folder names sorted are the classes);
    - an `.npy` array (N, H, W), (N, H, W, 1), (N, H, W, 3) or (N, H, W, 4);
    - an `.npz` with `images` (or `x`) and optionally `labels` (or `y`);
    - `tfds:NAME` or `tfds:NAME:SPLIT` (default "train"), a tensorflow-datasets dataset with
      an image feature (and a class label, kept), prepared in `$TFDS_DATA_DIR` or
      downloaded when online (`load_tfds_images`).

    Grayscale is tiled to RGB and alpha dropped, with a one-line note; `resize=(H, W)`
    brings every image to one size (needed when the files differ). Images stay uint8 in
    [0, 255] (floats in [0, 255] are rounded). A file of a folder that cannot be decoded is
    refused with its path (all of them, in one error); `skip_bad_images=True` leaves them
    out (and their labels) with a note of how many.
    """
    source = os.fspath(source)
    labels = classes = None
    if source.startswith(TFDS_PREFIX):
        images, labels, classes = load_tfds_images(source)
    elif not os.path.exists(source):
        raise ValueError(f"`{source}` does not exist; give a folder of images, an .npy or "
                         f"an .npz file, or a tfds name as {TFDS_PREFIX}NAME[:SPLIT].")
    elif os.path.isdir(source):
        flat = _image_files(source)
        subdirs = sorted(d for d in os.listdir(source)
                         if os.path.isdir(os.path.join(source, d))
                         and _image_files(os.path.join(source, d)))
        if flat and subdirs:
            raise ValueError(
                f"`{source}` holds images and class subfolders {subdirs[:3]}: use one layout "
                "(a flat folder, or one subfolder per class)."
            )
        if flat:
            files = [os.path.join(source, f) for f in flat]
        elif subdirs:
            files, labels = [], []
            for label, name in enumerate(subdirs):
                names = _image_files(os.path.join(source, name))
                files += [os.path.join(source, name, f) for f in names]
                labels += [label] * len(names)
            labels, classes = np.asarray(labels, dtype="int64"), subdirs
        else:
            raise ValueError(f"No .jpg/.png images found in `{source}` or its subfolders.")
        images, kept = _decode_any(files, resize, skip_bad=skip_bad_images)
        if labels is not None:
            labels = labels[kept]
    elif source.endswith(".npy"):
        images = np.load(source)
    elif source.endswith(".npz"):
        with np.load(source) as data:
            key = "images" if "images" in data else "x" if "x" in data else None
            if key is None:
                raise ValueError(f"`{source}` has no `images` (or `x`) array; it has "
                                 f"{sorted(data.files)}.")
            images = data[key]
            label_key = "labels" if "labels" in data else "y" if "y" in data else None
            if label_key is not None:
                labels = np.asarray(data[label_key]).astype("int64").reshape(-1)
    else:
        raise ValueError(f"`{source}` is not a folder, an .npy or an .npz file (or "
                         f"{TFDS_PREFIX}NAME).")
    images = _to_rgb(_as_uint8(images, source))
    if resize is not None and not os.path.isdir(source):
        import tensorflow as tf

        images = np.round(tf.image.resize(images, resize).numpy()).astype("uint8")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"`{source}` has {len(images)} images but {len(labels)} labels.")
    if len(images) == 0:
        raise ValueError(f"`{source}` holds no images.")
    return images, labels, classes


TFDS_PREFIX = "tfds:"


def load_tfds_images(spec, data_dir=None):
    """`tfds:NAME[:SPLIT]` as `(images (N, H, W, C) uint8, labels or None, class names or
    None)`: the dataset's first image feature and, if it has one, its first class label.
    Prepared copies are read from `data_dir` (default: tfds' own, `$TFDS_DATA_DIR`); an
    unprepared one is downloaded, and refused at once when its host cannot be reached."""
    name, _, split = spec[len(TFDS_PREFIX):].partition(":")
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    split = split or "train"
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ValueError(f"`{spec}` needs tensorflow-datasets (pip install "
                         "tensorflow-datasets).") from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        raise ValueError(f"tfds has no dataset `{name}` ({type(e).__name__}: {e}); give "
                         f"{TFDS_PREFIX}NAME with a name from tfds.list_builders().") from e
    if not builder.is_prepared():
        if not _reachable(_download_host(builder)):
            raise ValueError(
                f"tfds has no prepared `{name}` in {builder.data_dir} and its download host "
                "cannot be reached (offline?). Prepare it once while online "
                f"(`tfds.builder('{name}').download_and_prepare()`), or give a folder or "
                ".npy/.npz of the images instead.")
        builder.download_and_prepare()
    features = builder.info.features
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not image_keys:
        raise ValueError(f"tfds `{name}` has no image feature; its features: {list(features)}.")
    if split not in builder.info.splits:
        raise ValueError(f"tfds `{name}` has no split `{split}`; it has "
                         f"{sorted(builder.info.splits)} ({TFDS_PREFIX}{name}:SPLIT).")
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    images = np.asarray(data[image_keys[0]])
    if not label_keys:
        return images, None, None
    label = label_keys[0]
    return images, np.asarray(data[label]).astype("int64"), list(features[label].names)


def load_local(path, split, cache_dir=None):
    """Loads one split of a local `split/class/image` folder or archive as uint8 arrays.

    Returns `(images, labels, class_names)`, `images` of shape `(N, H, W, 3)`.
    Decoded arrays are cached as `.npz` so the JPEGs are decoded only once.
    """
    cache_dir = cache_dir or default_cache_dir()
    if not os.path.exists(path):
        raise _no_source_error(f"`{path}` does not exist")
    if os.path.isfile(path):
        if not tarfile.is_tarfile(path):
            raise ValueError(
                f"`{path}` is a file but not a tar archive; pass a folder or a .tar.gz "
                "laid out as `<split>/<class>/<image>`."
            )
        root = _extract_archive(path, cache_dir)
    else:
        root = _find_split_root(path)
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise ValueError(
            f"Split `{split}` not found under `{root}`; available: "
            f"{sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))}."
        )
    files, labels, classes = _list_split(split_dir)
    key = hashlib.sha256(("\n".join(files)).encode()).hexdigest()[:16]
    npz = os.path.join(cache_dir, f"{split}-{key}.npz")
    if os.path.exists(npz):
        with np.load(npz) as data:
            return data["images"], data["labels"], list(classes)
    images = _decode_files(files)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = npz + ".tmp.npz"
    np.savez(tmp, images=images, labels=labels)
    os.replace(tmp, npz)  # never leave a half-written cache where readers look
    return images, labels, list(classes)


def _download_host(builder):
    """The host tfds downloads CIFAR-10 from (read from tfds, not hard-coded here)."""
    import inspect
    import re
    from urllib.parse import urlparse

    try:
        source = inspect.getsource(type(builder))
        url = re.search(r"https?://[^\s\"']+", source).group(0)
        return urlparse(url).hostname
    except (OSError, TypeError, AttributeError):
        return None


def _reachable(host, port=443, timeout=3.0):
    """Whether a TCP connection to `host` opens within `timeout` seconds."""
    import socket

    if not host:
        return True  # unknown: let tfds try
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(split, data_dir=None):
    """Loads one split of tfds `cifar10` as uint8 arrays (downloads it if allowed)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise _no_source_error("tensorflow-datasets is not installed") from e
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        if not builder.is_prepared() and not _reachable(_download_host(builder)):
            # Fail in seconds: tfds would retry the download for minutes before giving up.
            raise _no_source_error(
                "tfds has no prepared cifar10 and its download host cannot be reached: this "
                "machine looks offline"
            )
        builder.download_and_prepare()
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    except ValueError:
        raise
    except Exception as e:
        raise _no_source_error(f"tfds could not provide cifar10: {type(e).__name__}: {e}") from e
    images, labels = data
    return images.astype("uint8"), labels.astype("int64"), list(CIFAR10_CLASSES)


def load_cifar10(split="train", source=None, cache_dir=None):
    """Returns `(images uint8 (N,32,32,3), labels int64 (N,), class_names)` for a split.

    `source`: a local folder or `.tar.gz` path, `"tfds"`, or None (then
    `$KERAS_INFOBAL_CIFAR10`, else tfds).
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'; got {split!r}.")
    source = source or os.environ.get(ENV_VAR) or "tfds"
    if source == "tfds":
        return load_tfds(split)
    return load_local(os.fspath(source), split, cache_dir=cache_dir)


def make_dataset(images, labels=None, batch_size=64, shuffle=False, augment_images=False,
                 drop_remainder=False, seed=None, pairs=False, color_jitter=0.0,
                 grayscale=0.0, translate=0.125, flip=True, crop=0.0,
                 augmentation=None):
    """A batched `tf.data.Dataset` of uint8 images (and labels), augmented per batch.

    The augmentation is a Keras preprocessing pipeline (`augmentation.augmentation_pipeline`
    of `color_jitter`, `grayscale`, `translate`, `flip` and `crop`, or your own Keras layer as
    `augmentation`), run here in `tf.data` on every backend. `pairs=True` yields `(x1, x2)`:
    two independent augmentations of the same images, the input of
    `InfoBal(augmented_pairs=True)`.

    ```python
    ds = make_dataset(x_train, batch_size=64, shuffle=True, pairs=True, color_jitter=0.5,
                      grayscale=0.2, drop_remainder=True, seed=0)
    ```
    """
    import tensorflow as tf

    from keras_infobal.augmentation import augmentation_pipeline, check_options

    images = np.asarray(images)
    check_pixel_range(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"Expected images of shape (N, H, W, 3); got {images.shape}. "
            "`datasets.load_images` tiles grayscale and drops alpha."
        )
    if pairs and labels is not None:
        raise ValueError(
            "`pairs=True` makes (x1, x2) batches for self-supervised pretraining and takes no "
            "labels; pass labels=None."
        )
    if (color_jitter or grayscale or augmentation is not None) and not (
            augment_images or pairs):
        raise ValueError(
            "`color_jitter`, `grayscale` and `augmentation` are part of the augmentation: "
            "also pass augment_images=True (or pairs=True)."
        )
    check_options(color_jitter, grayscale, translate, crop)
    if augmentation is None and (augment_images or pairs):
        augmentation = augmentation_pipeline(color_jitter=color_jitter, grayscale=grayscale,
                                             translate=translate, flip=flip, crop=crop,
                                             seed=seed)

    def aug(x):
        # Back to uint8: 4x less to hold in the prefetch buffer, and the model's input
        # contract (uint8 or floats in [0, 255]) is the same with or without augmentation.
        out = augmentation(x, training=True)
        return tf.cast(tf.round(tf.clip_by_value(tf.cast(out, tf.float32), 0, 255)),
                       tf.uint8)

    data = images if labels is None else (images, labels)
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(min(len(images), 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    # With a seed, one batch at a time: the pipeline's random layers share their seed
    # state, and parallel calls would hand the draws to batches in a racing order (the run
    # would not repeat). Without one, batches are augmented in parallel. Either way
    # prefetching overlaps augmentation with the training step.
    calls = None if seed is not None else tf.data.AUTOTUNE
    if pairs:
        ds = ds.map(lambda x: (aug(x), aug(x)), num_parallel_calls=calls)
    elif augment_images:
        ds = (ds.map(aug, num_parallel_calls=calls) if labels is None
              else ds.map(lambda x, y: (aug(x), y), num_parallel_calls=calls))
    return ds.prefetch(tf.data.AUTOTUNE)


def cifar10_dataset(split="train", batch_size=64, augment=None, with_labels=False,
                    source=None, cache_dir=None, shuffle=None, drop_remainder=None, seed=None,
                    pairs=False, color_jitter=0.0, grayscale=0.0, augmentation=None):
    """CIFAR-10 as a batched `tf.data.Dataset` of uint8 images (and labels).

    Training defaults: shuffled, crop+flip augmented, remainder dropped (every batch keeps
    in-batch negatives). Test defaults: none of those. `pairs`, `color_jitter` and
    `grayscale` as in `make_dataset` (the `dim_pairs` recipe uses True, 0.5 and 0.2).
    """
    images, labels, _ = load_cifar10(split, source=source, cache_dir=cache_dir)
    training = split == "train"
    return make_dataset(
        images,
        labels if with_labels else None,
        batch_size=batch_size,
        shuffle=training if shuffle is None else shuffle,
        augment_images=training if augment is None else augment,
        drop_remainder=training if drop_remainder is None else drop_remainder,
        seed=seed,
        pairs=pairs,
        color_jitter=color_jitter,
        grayscale=grayscale,
        augmentation=augmentation,
    )
