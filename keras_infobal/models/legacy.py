"""Loading files saved with the per-pair InfoMin layout (before the batched critics).

Until the batched InfoMin critics, `InfoBal.infomin_critics` was a list of one critic layer
per view pair, saved as `infomin_critics/<critic>{,_1,_2,...}/<sublayer>/vars/<k>`. Now it is
one layer (`layers.PairCritics` / `layers.PairCLUB`) whose weights carry a leading pair axis,
saved as `infomin_critics/vars/<k>`. `InfoBal.load_own_variables` (which Keras calls on the
model before its layers and optimizers, for `.keras` and `.weights.h5` files alike) calls
`stage` here: the old per-pair weights are stacked into the new layer, and the optimizers'
slots of those weights (in a `.keras` file or a compiled model's `.weights.h5`) are stacked
the same way, so an old checkpoint resumes with its optimizer state.
"""

import warnings

import keras
import numpy as np

GROUP = "infomin_critics"


def stage(model, store):
    """Prepares the migration when `store` (Keras' root H5 store) has the old layout."""
    layer = model.infomin_critics
    # A migration staged by an earlier load that Keras did not finish is dropped first.
    for attr in ("optimizer", "discriminator_optimizer"):
        optimizer = getattr(model, attr, None)
        if optimizer is not None:
            optimizer.__dict__.pop("load_own_variables", None)
    if layer is not None:
        layer._legacy = None
    h5 = getattr(store, "h5_file", None)
    if h5 is None or layer is None or GROUP not in h5:
        return False
    if not layer.stage_legacy_weights(h5[GROUP]):
        return False
    for attr in ("optimizer", "discriminator_optimizer"):
        optimizer = getattr(model, attr, None)
        if optimizer is not None and optimizer.built:
            _load_once(optimizer, model, layer, attr)
    return True


def _load_once(optimizer, model, layer, attr):
    """Replaces, for the next call only, `optimizer.load_own_variables` by the migration."""
    def load(store):
        optimizer.__dict__.pop("load_own_variables", None)
        if len(store.keys()) == 0:
            return
        try:
            values = migrate_optimizer_state(optimizer, layer, store)
        except ValueError as e:
            warnings.warn(
                f"The file was saved with the per-pair InfoMin layout; the state of "
                f"`model.{attr}` could not be migrated to the batched layout ({e}) and starts "
                "afresh. The model's weights were migrated.", stacklevel=2)
            return
        for variable, value in zip(optimizer.variables, values):
            variable.assign(value)

    optimizer.__dict__["load_own_variables"] = load


def _shadow(optimizer, shapes_and_names):
    shadow = optimizer.__class__.from_config(optimizer.get_config())
    dummies = [keras.Variable(np.zeros(shape, "float32"), name=name, trainable=True)
               for shape, name in shapes_and_names]
    shadow.build(dummies)
    return shadow


def migrate_optimizer_state(optimizer, layer, store):
    """The new values of `optimizer.variables` from an old file's per-pair optimizer state.

    Two shadow optimizers of the same class and config are built on placeholder variables,
    one in the old order (pair p's weights one by one) and one in the new (stacked) order;
    the names Keras gives their slots (`<variable>_<slot>`) say which old entry feeds which
    new one. Raises ValueError when the file does not match.
    """
    built_on = list(optimizer._trainable_variables)
    stacked = {id(v): w for w, v in enumerate(layer.weights)}
    new_spec, old_spec = [], []
    for k, v in enumerate(built_on):
        w = stacked.get(id(v))
        if w is None:
            new_spec.append((tuple(v.shape), f"v{k}"))
            old_spec.append((tuple(v.shape), f"v{k}"))
        elif w == 0:  # the first stacked weight: the whole old per-pair block goes here
            new_spec.append((tuple(v.shape), f"s{w}"))
            for p in range(layer.num_pairs):
                old_spec += [(tuple(u.shape[1:]), f"p{p}w{i}") for i, u in
                             enumerate(layer.weights)]
        else:
            new_spec.append((tuple(v.shape), f"s{w}"))
    new = _shadow(optimizer, new_spec)
    old = _shadow(optimizer, old_spec)
    if len(old.variables) != len(store.keys()):
        raise ValueError(f"{len(store.keys())} saved optimizer variables, "
                         f"{len(old.variables)} expected")
    old_index = {v.name: i for i, v in enumerate(old.variables)}
    values = []
    for v in new.variables:
        name = v.name
        if name.startswith("s") and "_" in name and name.split("_", 1)[0][1:].isdigit():
            w, slot = name.split("_", 1)
            parts = [store[str(old_index[f"p{p}w{w[1:]}_{slot}"])]
                     for p in range(layer.num_pairs)]
            value = np.stack(parts)
        else:
            if name not in old_index:
                raise ValueError(f"no saved value for the optimizer variable {name!r}")
            value = store[str(old_index[name])]
        if tuple(np.shape(value)) != tuple(v.shape):
            raise ValueError(f"shape {np.shape(value)} saved for {name!r}, {tuple(v.shape)} "
                             "expected")
        values.append(value)
    if len(values) != len(optimizer.variables):
        raise ValueError("the optimizer was built on other variables")
    return values
