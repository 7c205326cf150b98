"""Presets: each shipped model is data, a JSON file beside its weights.

A preset (`keras_infobal/applications/weights/<name>.preset.json`) holds:
- `backbone`: the architecture (`ViewEncoder` + `ViewAggregator` arguments), so a preset
  trained with another split, M or aggregator ships without new code;
- `pretraining_config`: the whole `InfoBal` config it was pretrained with (objective,
  critics, lambda), for `InfoBal.from_preset`;
- `weights` (encoder, aggregator and classifier head, float16) and optionally
  `pretraining_weights` (the whole pretraining model, critics included), each a file name and
  its sha256;
- `feature_layer` (what the head reads), `head` ("linear", or "mlp": DIM's evaluation
  classifier, dense 200 -> BN -> dropout -> ReLU -> dense; "linear" when absent),
  `validation_accuracy` (that head on 5,000 held-out training images: how the default is
  chosen), `test_accuracy` (the shipped
  classifier on the full CIFAR-10 test set), `command` (how it was trained), `run`.

```python
from keras_infobal.applications import presets
presets.list_presets()            # ['dim', 'dim_pairs', ...]
presets.default_preset()          # the most accurate on the validation split
presets.get_preset("dim")["backbone"]
```
"""

import glob
import hashlib
import json
import os

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")
SUFFIX = ".preset.json"
REQUIRED = ("name", "backbone", "pretraining_config", "weights", "feature_layer",
            "validation_accuracy", "test_accuracy", "command")
DEFAULT_BACKBONE = dict(num_views=2, split="rows", aggregator="concat", filters=[64, 128],
                        conv_filters=256, fc_units=1024, output_dim=64)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_all(weights_dir=None):
    weights_dir = weights_dir or WEIGHTS_DIR
    out = {}
    for path in sorted(glob.glob(os.path.join(weights_dir, "*" + SUFFIX))):
        with open(path) as f:
            preset = json.load(f)
        missing = [k for k in REQUIRED if k not in preset]
        if missing:
            raise ValueError(f"The preset file `{path}` lacks the keys {missing}.")
        out[preset["name"]] = preset
    return out


def list_presets():
    """Names of the shipped presets, sorted."""
    return sorted(_load_all())


def get_preset(name):
    """The preset dict of `name`; raises a ValueError listing the shipped ones."""
    presets = _load_all()
    if name not in presets:
        raise ValueError(
            f"No shipped CIFAR-10 preset {name!r} (the `variant` / preset name); available: "
            f"{sorted(presets)}."
        )
    return presets[name]


def default_preset():
    """The name of the preset with the highest validation accuracy (never the test set)."""
    presets = _load_all()
    if not presets:
        raise ValueError(f"No presets are shipped in `{WEIGHTS_DIR}`; reinstall keras-infobal.")
    return max(presets, key=lambda n: presets[n]["validation_accuracy"])


def checked_path(name, key="weights"):
    """The path of a preset's weights file (`key`: "weights" or "pretraining_weights"),
    after checking its sha256; raises if it is missing or differs."""
    preset = get_preset(name)
    entry = preset.get(key)
    if not entry:
        raise ValueError(f"The preset {name!r} ships no {key.replace('_', ' ')}.")
    path = os.path.join(WEIGHTS_DIR, entry["file"])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The shipped weights file `{path}` is missing; reinstall keras-infobal."
        )
    actual = sha256(path)
    if actual != entry["sha256"]:
        raise ValueError(
            f"The weights file `{path}` does not match its recorded sha256 "
            f"({actual} != {entry['sha256']}): it is corrupted or was modified, so it was not "
            "loaded. Reinstall keras-infobal to restore it."
        )
    return path


def write_preset(preset, weights_dir=None):
    """Writes `preset` as `<weights_dir>/<name>.preset.json` (used by export_weights.py)."""
    missing = [k for k in REQUIRED if k not in preset]
    if missing:
        raise ValueError(f"A preset needs the keys {missing}.")
    path = os.path.join(weights_dir or WEIGHTS_DIR, preset["name"] + SUFFIX)
    with open(path, "w") as f:
        json.dump(preset, f, indent=2)
        f.write("\n")
    return path


def _copy_weights(target, source):
    import keras

    target.set_weights([keras.ops.convert_to_numpy(w).astype("float32")
                        for w in source.get_weights()])


def load_encoder_and_aggregator(model, name):
    """Loads preset `name`'s encoder and aggregator (from its classifier weights) into the
    `InfoBal` `model`; its critics are left as they are."""
    from keras_infobal.applications.infobal_cifar import _load_keras_weights, canonical_model

    preset = get_preset(name)
    source = canonical_model(preset["feature_layer"], backbone=preset["backbone"],
                             head=preset.get("head", "linear"))
    _load_keras_weights(source, checked_path(name))
    _copy_weights(model.encoder, source.get_layer("view_encoder"))
    _copy_weights(model.aggregator, source.get_layer("view_aggregator"))


def infobal_from_preset(name, cls=None, **overrides):
    """The whole pretraining model of preset `name`, ready to `compile` and `fit`.

    Encoder and aggregator come from the preset; so do the InfoMax critics and the InfoMin
    critics when the preset ships its pretraining weights and `overrides` keep their type
    (others start fresh, with a warning). `overrides` change the config, e.g.
    `infomin_weight=0.1, infomin_critic="club"` to continue pretraining as InfoBal.

    ```python
    model = kib.InfoBal.from_preset("dim_pairs", infomin_weight=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    model.fit(my_unlabeled_pairs, epochs=5)
    ```
    """
    import warnings

    from keras_infobal.models.infobal import InfoBal

    cls = cls or InfoBal
    preset = get_preset(name)
    config = {**preset["pretraining_config"], **overrides}
    backbone_keys = ("num_views", "split", "aggregator", "filters", "conv_filters", "fc_units",
                     "output_dim")
    changed = [k for k in backbone_keys if k in overrides
               and overrides[k] != preset["pretraining_config"].get(k)]
    if changed:
        raise ValueError(
            f"`from_preset` keeps the preset's architecture; {changed} cannot be overridden. "
            "Build `InfoBal(...)` with your architecture and `weights=None` instead."
        )
    model = cls(**config)
    if model.image_shape is None:
        model.build((None, 32, 32, 3))
    fresh = []
    if preset.get("pretraining_weights"):
        source = cls(**{**preset["pretraining_config"], "input_shape": [32, 32, 3]})
        source.load_weights(checked_path(name, "pretraining_weights"))
        pairs = [(model.encoder, source.encoder), (model.aggregator, source.aggregator)]
        pairs += list(zip(model.infomax_critics, source.infomax_critics))
        same_infomax = (model.critic, model.critic_units, model.scorer, model.shared_critic) == (
            source.critic, source.critic_units, source.scorer, source.shared_critic)
        if not same_infomax:
            pairs = pairs[:2]
            fresh.append("InfoMax critics")
        # The discriminators' width is infomin_units, or critic_units by default.
        if (model.infomin_critic, getattr(model.infomin_critics, "units", None)) == (
                source.infomin_critic, getattr(source.infomin_critics, "units", None)):
            # One batched layer each (all view pairs' critics; absent with one view).
            if model.infomin_critics is not None:
                pairs.append((model.infomin_critics, source.infomin_critics))
        else:
            fresh.append("InfoMin critics")
    else:
        pairs = []
        load_encoder_and_aggregator(model, name)
        fresh.append("critics (this preset ships encoder and aggregator only)")
    for target, src in pairs:
        _copy_weights(target, src)
    if fresh:
        warnings.warn(f"InfoBal.from_preset({name!r}): {', '.join(fresh)} start from a random "
                      "initialization.", stacklevel=3)
    return model
