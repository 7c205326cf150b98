"""What a training batch must be, checked where it enters (mixed into `InfoBal`).

`fit`, `evaluate`, `train_on_batch` and `test_on_batch` build the model for the data's image
size (or check it) and the float range before Keras traces a step; `batch_images` checks one
batch inside the step and returns its image batches: one, or the two augmentations of an
augmented pair, which each backend's trainer stacks (with a run-time check of their sizes on
TensorFlow, whose traced shapes may be unknown).
"""

import keras

from keras_infobal.models.infobal_backbone import is_tf_dataset


def batch_size_message(n):
    """The error for a batch of `n` images, too few for in-batch negatives."""
    return (
        f"InfoBal needs at least 2 images per batch (got {n}): the other images of the batch "
        "are the negatives of every MI estimate. Use batch_size >= 2, and "
        "drop_remainder=True when batching a tf.data dataset."
    )


PAIR_SIZES_MESSAGE = "The two augmentations of a pair must have the same batch size"


class BatchInput:
    """Input checks of the pretraining task, at the boundary."""

    def fit(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        # A tf.data dataset shuffles itself; Keras would warn on every fit that its own
        # default shuffle=True is ignored.
        # `shuffle` is fit's 9th parameter: only default it when not given positionally.
        if is_tf_dataset(x) and len(args) < 8:
            kwargs.setdefault("shuffle", False)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().evaluate(x, *args, **kwargs)

    def train_on_batch(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().test_on_batch(x, *args, **kwargs)

    @property
    def min_batch_size(self):
        """The fewest images a batch may hold (both halves of augmented pairs, stacked)."""
        return 4 if self.augmented_pairs and self.augmentation is None else 2

    def batch_images(self, data, single=False):
        """The image batches of one batch of `data`, checked: `[x]`, or with augmented pairs
        (unless `single`, as prediction takes single images) `[x1, x2]`."""
        if self.augmented_pairs and not single and self.augmentation is None:
            parts = self._pair(data)
        else:
            parts = [self._single(data, single)]
        for x in parts if not single else ():  # a prediction may take one image
            if x.shape[0] is not None and x.shape[0] * len(parts) < self.min_batch_size:
                raise ValueError(batch_size_message(x.shape[0]))
        return parts

    def _single(self, data, single):
        if isinstance(data, (tuple, list)):
            x = data[0]
            second = data[1] if len(data) > 1 else None
            if (not single and second is not None and hasattr(second, "shape")
                    and len(second.shape) == 4):
                if self.augmentation is not None:
                    raise ValueError(
                        "This model augments its batches inside the train step "
                        "(`augmentation` is set), but the batch is a pair (x1, x2) of image "
                        "batches. Pass batches of single images (make_dataset(..., "
                        "pairs=False)), or build the task with augmentation=None.")
                raise ValueError(
                    "This model takes single images, but the batch is a pair (x1, x2) of image "
                    "batches (e.g. from make_dataset(..., pairs=True)). Build the task with "
                    "InfoBal(..., augmented_pairs=True) to train on augmented pairs, or make "
                    "the dataset with pairs=False."
                )
        else:
            x = data
        if isinstance(x, dict):
            raise ValueError("InfoBal takes a batch of images, not a dict of inputs.")
        return self._images(x)

    def _pair(self, data):
        if isinstance(data, (tuple, list)):
            # train_on_batch(x1, x2) arrives as Keras' (x, y, sample_weight) = (x1, x2, None).
            while len(data) > 2 and data[-1] is None:
                data = data[:-1]
        if not (isinstance(data, (tuple, list)) and len(data) == 2
                and not isinstance(data[0], dict) and not isinstance(data[1], dict)
                and len(data[0].shape) == len(data[1].shape) == 4):
            raise ValueError(
                "This model has augmented_pairs=True: each batch must be a pair (x1, x2) of "
                "two augmentations of the same images, both of shape (B, H, W, 3), e.g. from "
                "keras_infobal.datasets.make_dataset(images, pairs=True, ...)."
            )
        x1, x2 = (self._images(x) for x in data)
        if (x1.shape[0] is not None and x2.shape[0] is not None
                and x1.shape[0] != x2.shape[0]):
            raise ValueError(f"{PAIR_SIZES_MESSAGE}; got {x1.shape[0]} and {x2.shape[0]}.")
        return [x1, x2]

    def _images(self, x):
        if len(x.shape) != 4:
            raise ValueError(
                f"InfoBal expects batches of images of shape (B, H, W, 3); got {tuple(x.shape)}."
            )
        dtype = keras.backend.standardize_dtype(x.dtype)
        if dtype not in ("uint8", "float16", "float32", "float64", "bfloat16", "int32"):
            raise ValueError(
                f"Images must be uint8 (or float in [0, 255]); got dtype {dtype}."
            )
        self.backbone.check_images(x.shape)
        return x
