"""Presets as folders, keras-hub's layout: one folder per model, every file checked.

A preset folder holds:

- `config.json`: the backbone (`InfoBalBackbone.get_config()`, serialized): the one place
  its architecture is written;
- `model.weights.h5`: the backbone's weights;
- optionally `task.json` and `critics.weights.h5`: the pretraining task's objective
  (`InfoBal.get_config()` without the backbone) and its critics, so `InfoBal.from_preset`
  continues pretraining;
- optionally `classifier.weights.h5`: a classifier head trained on frozen features (what
  `InfoBalCIFAR()` classifies with), described by `metadata["classifier"]`;
- `metadata.json`: the sha256 of every other file, the library versions that wrote it,
  and what the writer adds (validation and test accuracy, the command that trained it).

Built-in presets live in `keras_infobal/presets/<name>/`; any folder written by
`save_to_preset` loads the same way.

```python
from keras_infobal.models import presets
presets.list_presets()            # ['dim', 'dim_pairs', ...]
presets.default_preset()          # the most accurate on the validation split
presets.load_metadata("dim")["test_accuracy"]
```
"""

import hashlib
import json
import os

import h5py
import keras
import numpy as np

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "presets")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
TASK_FILE = "task.json"
CRITICS_FILE = "critics.weights.h5"
CLASSIFIER_FILE = "classifier.weights.h5"
METADATA_FILE = "metadata.json"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_presets():
    """Names of the built-in presets, sorted."""
    if not os.path.isdir(BUILTIN_DIR):
        return []
    return sorted(n for n in os.listdir(BUILTIN_DIR)
                  if os.path.exists(os.path.join(BUILTIN_DIR, n, METADATA_FILE)))


def preset_folder(preset):
    """The folder of `preset`: a built-in name or a path to a preset folder."""
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        if not os.path.exists(os.path.join(preset, METADATA_FILE)):
            raise ValueError(
                f"`{preset}` is a folder but not a preset: it has no {METADATA_FILE}. Write "
                "presets with `save_to_preset(folder)`."
            )
        return preset
    if preset in list_presets():
        return os.path.join(BUILTIN_DIR, preset)
    raise ValueError(
        f"No preset {preset!r}: not a built-in preset ({list_presets()}) nor a preset folder."
    )


def load_metadata(preset):
    """The `metadata.json` of a preset (name or folder)."""
    with open(os.path.join(preset_folder(preset), METADATA_FILE)) as f:
        return json.load(f)


def checked_folder(preset):
    """The preset's folder, after checking every file its metadata lists against its
    sha256; raises a ValueError naming the file when one is missing or differs."""
    folder = preset_folder(preset)
    files = load_metadata(folder).get("files", {})
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in files:
            raise ValueError(f"The preset `{folder}` lists no `{required}` in {METADATA_FILE}.")
    for name, digest in sorted(files.items()):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise ValueError(
                f"The preset file `{path}` is missing; reinstall keras-infobal or write the "
                "preset again with save_to_preset."
            )
        actual = sha256(path)
        if actual != digest:
            raise ValueError(
                f"The preset file `{path}` does not match its recorded sha256 ({actual} != "
                f"{digest}): it is corrupted or was modified, so it was not loaded. Reinstall "
                "keras-infobal or write the preset again with save_to_preset."
            )
    return folder


def default_preset():
    """The built-in preset with the highest validation accuracy (never the test set)."""
    scored = {n: load_metadata(n).get("validation_accuracy") for n in list_presets()}
    scored = {n: v for n, v in scored.items() if v is not None}
    if not scored:
        raise ValueError(f"No built-in presets in `{BUILTIN_DIR}`; reinstall keras-infobal.")
    return max(scored, key=scored.get)


def deserialize(path):
    with open(path) as f:
        return keras.saving.deserialize_keras_object(json.load(f))


def write_config(obj, path):
    with open(path, "w") as f:
        json.dump(keras.saving.serialize_keras_object(obj), f, indent=2)
        f.write("\n")


def versions():
    # From the installed metadata: importing the package root here would be a cycle.
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("keras-infobal")
    except PackageNotFoundError:  # run from a source tree that is not installed
        own = "not installed"
    out = {"keras_infobal": own, "keras": keras.__version__,
           "backend": keras.backend.backend(), "numpy": np.__version__}
    try:
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover - tensorflow is a dependency
        pass
    return out


def write_metadata(folder, **extra):
    """(Re)writes `folder/metadata.json`: the sha256 of every other file, the versions, and
    `extra` over what the file held before."""
    path = os.path.join(folder, METADATA_FILE)
    metadata = {}
    if os.path.exists(path):
        with open(path) as f:
            metadata = json.load(f)
    metadata.update(extra)
    metadata["files"] = {n: sha256(os.path.join(folder, n)) for n in sorted(os.listdir(folder))
                         if n != METADATA_FILE and os.path.isfile(os.path.join(folder, n))}
    metadata["versions"] = versions()
    with open(path, "w") as f:
        json.dump(metadata, f, indent=2)
        f.write("\n")
    return metadata


def load_weights(model, path):
    """`model.load_weights(path)` with an error that says what went wrong."""
    try:
        model.load_weights(path)
    except Exception as e:
        raise ValueError(
            f"Could not load `{path}` into this {type(model).__name__}: {e}. The file must come "
            "from a model with the same configuration (the preset's config.json)."
        ) from e


# -- small weight files of a few layers (critics, classifier heads) --------------------------
def save_layers(path, layers):
    """Writes the weights of `layers` (by layer name) to an h5 file."""
    with h5py.File(path, "w") as f:
        for layer in layers:
            group = f.create_group(layer.name)
            for i, w in enumerate(layer.get_weights()):
                group.create_dataset(str(i), data=np.asarray(w))


def layer_names(path):
    """The layer names a `save_layers` file holds."""
    with h5py.File(path, "r") as f:
        return set(f.keys())


def load_layers(path, layers):
    """Loads `save_layers` weights into `layers` (matched by name); raises on a mismatch."""
    with h5py.File(path, "r") as f:
        for layer in layers:
            if layer.name not in f:
                raise ValueError(f"`{path}` holds no weights for the layer `{layer.name}`; it "
                                 f"has {sorted(f.keys())}.")
            group = f[layer.name]
            values = [np.asarray(group[str(i)]) for i in range(len(group.keys()))]
            shapes = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != shapes:
                raise ValueError(
                    f"`{path}` holds weights of shapes {[v.shape for v in values]} for the layer "
                    f"`{layer.name}`, which has {shapes}: the preset was saved with another "
                    "configuration."
                )
            layer.set_weights(values)


def to_float16(path):
    """Rewrites every float32 array of an h5 weights file as float16 (halves the size of the
    built-in presets; loading casts back to the variables' float32)."""
    tmp = path + ".tmp"
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                group = dst.require_group(name)
                for k, v in obj.attrs.items():
                    group.attrs[k] = v
            else:
                data = obj[()]
                if getattr(data, "dtype", None) == np.float32:
                    data = data.astype(np.float16)
                dst.create_dataset(name, data=data)

        src.visititems(copy)
    os.replace(tmp, path)
