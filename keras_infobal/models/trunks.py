"""Named trunks for `InfoBalBackbone(trunk=NAME)`: feature-map networks beside DIM's own.

`resnet18_cifar`: ResNet-18 (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) with the CIFAR stem that lightly's and solo-learn's CIFAR-10 benchmarks use: a
3x3 stride-1 convolution and no max-pool, so 32x32 images keep 32x32 maps into the first
stage. Four stages of two basic blocks (64, 128, 256, 512 channels), the last three halving
the map: a 32x32 image becomes a 4x4x512 local map, whose rows are InfoBal's views. Its
BatchNormalization is the package's fused one (`layers.BatchNormalization`).

```python
backbone = kib.InfoBalBackbone(trunk="resnet18_cifar", num_views=2, split="rows")
```
"""

import keras

from keras_infobal.layers.batch_normalization import BatchNormalization


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, strides, name):
    y = _conv_bn(x, filters, 3, strides, f"{name}_1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    if strides != 1 or x.shape[-1] != filters:
        x = _conv_bn(x, filters, 1, strides, f"{name}_shortcut", relu=False)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([x, y]))


def resnet18_cifar(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), name="resnet18_cifar"):
    """ResNet-18 with the CIFAR stem, images (already scaled, e.g. to [-1, 1]) -> a map of
    1/8 their size with `widths[-1]` channels, for any image size.

    Args:
        widths: the channels of the stem and first stage, then of each later stage.
        blocks: basic blocks per stage (ResNet-18: two in each of four stages).
    """
    if len(widths) != len(blocks) or not all(
            isinstance(v, int) and v > 0 for v in tuple(widths) + tuple(blocks)):
        raise ValueError(
            f"`widths` and `blocks` must be positive integers, one of each per stage; got "
            f"widths={widths!r}, blocks={blocks!r}.")
    x = inputs = keras.Input((None, None, 3), name="images")
    x = _conv_bn(x, widths[0], 3, 1, "stem")
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}")
    return keras.Model(inputs, x, name=name)


TRUNKS = {"resnet18_cifar": resnet18_cifar}


def get_trunk(name):
    """A new trunk by name (see `TRUNKS`)."""
    if name not in TRUNKS:
        raise ValueError(
            f"`trunk` names one of {sorted(TRUNKS)} (or is a Keras layer or model mapping "
            f"images to a feature map); got {name!r}.")
    return TRUNKS[name]()
