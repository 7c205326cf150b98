"""The feature layers: one registry of the representations a model exposes for evaluation.

`InfoBal.extract_features`, `evaluation.linear_probe`, `ViewAggregator(output_mode=...)`,
`InfoBalCIFAR(feature_layer=...)`, the `keras-infobal` command and the CIFAR-10 scripts all
read the names from here.

```python
from keras_infobal import features
features.names()                  # ('local', 'conv', 'fc', 'R')
features.probe_layers()           # ('conv', 'fc', 'R'): what linear_probe scores by default
features.LAYERS["fc"].description
```

A model whose `features()` computes another layer registers it, and every name check then
accepts it:

```python
features.register_feature_layer("pooled", "the local map averaged over space",
                                produced_by="MyInfoBal.features")
```

This module imports nothing: the command line reads it without importing Keras.
"""

from collections import namedtuple

FeatureLayer = namedtuple("FeatureLayer", ["description", "produced_by", "probe"])
FeatureLayer.__doc__ = """A feature layer: what it is, the layer that computes it, and whether
linear probes score it by default (`probe`)."""

LAYERS = {}  # name -> FeatureLayer, ordered from local to global (the tables' column order)


def register_feature_layer(name, description, produced_by, probe=False):
    """Adds a feature layer; `extract_features`, `linear_probe` and the CLI then accept it.

    The model must compute it: `InfoBal.features()` (or a subclass's) returns it under `name`.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"A feature layer's name must be a non-empty string; got {name!r}.")
    spec = FeatureLayer(str(description), str(produced_by), bool(probe))
    if name in LAYERS and LAYERS[name] != spec:
        raise ValueError(f"A feature layer named {name!r} is already registered.")
    LAYERS[name] = spec
    return name


def names():
    """Every feature layer, built-in and registered, in order."""
    return tuple(LAYERS)


def probe_layers():
    """The layers linear probes score by default."""
    return tuple(name for name, spec in LAYERS.items() if spec.probe)


def produced_by(producer):
    """The layers that `producer` (e.g. "ViewAggregator") computes, in order."""
    return tuple(name for name, spec in LAYERS.items() if spec.produced_by == producer)


def check_layers(layers, argument="layers", allowed=None):
    """Returns `layers` as a tuple; raises a ValueError naming the unknown ones.

    `allowed`: the names accepted here (default: every registered feature layer).
    """
    valid = names() if allowed is None else tuple(allowed)
    if isinstance(layers, str):
        raise ValueError(
            f"`{argument}` must be a list or tuple of feature layer names, e.g. "
            f"({layers!r},); got the string {layers!r}."
        )
    layers = tuple(layers)
    unknown = [k for k in layers if k not in valid]
    if unknown:
        hint = ("" if allowed is not None else
                " A model that computes another layer adds it with "
                "keras_infobal.features.register_feature_layer.")
        raise ValueError(
            f"Unknown feature layers {unknown} in `{argument}`; choose from "
            f"{', '.join(valid)}.{hint}"
        )
    return layers


register_feature_layer(
    "local", "the views' local feature maps, flattened (DIM's local features; 8x8x128 for "
    "CIFAR-10)", produced_by="ViewEncoder")
register_feature_layer(
    "conv", "the views' conv 4x4/2 outputs, flattened and concatenated (4096 for CIFAR-10)",
    produced_by="ViewAggregator", probe=True)
register_feature_layer(
    "fc", "the aggregated view vectors after the dense layer, BN and ReLU (fc_units, 1024)",
    produced_by="ViewAggregator", probe=True)
register_feature_layer(
    "R", "the global representation (output_dim, 64; DIM's Y)", produced_by="ViewAggregator",
    probe=True)
NAMES = names()  # the built-in names, in order
