"""AtomicModelCheckpoint: per-epoch atomic saves, `{epoch}` paths, suffix checks."""

import os

import keras
import numpy as np
import pytest

from helpers import optimizers, tiny
from keras_infobal.callbacks import AtomicModelCheckpoint, atomic_save


def _model(**kwargs):
    model = tiny(**{"infomin_weight": 1.0, **kwargs})
    model.compile(**optimizers())
    return model


@pytest.mark.parametrize("bad", ["model.h5", "model", "model.weights", "model.keras.tmp",
                                 "weights.h5.keras.bak"])
def test_bad_suffixes_are_refused(bad):
    with pytest.raises(ValueError, match=r"must end in \.keras or \.weights\.h5"):
        AtomicModelCheckpoint(bad)


def test_epoch_in_the_path_saves_one_weights_file_per_epoch(images, tmp_path):
    model = _model()
    path = str(tmp_path / "ck_{epoch}.weights.h5")
    seen = {}

    class Record(keras.callbacks.Callback):
        # Runs after the checkpoint (callbacks run in order): the weights it just saved.
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch + 1] = [np.array(w) for w in self.model.get_weights()]

    model.fit(images, batch_size=4, epochs=2, verbose=0,
              callbacks=[AtomicModelCheckpoint(path), Record()])
    # Epochs are numbered from 1 in the file names; no temporary file is left behind.
    assert sorted(os.listdir(tmp_path)) == ["ck_1.weights.h5", "ck_2.weights.h5"]
    for epoch in (1, 2):
        fresh = _model()
        fresh.load_weights(str(tmp_path / f"ck_{epoch}.weights.h5"))
        for a, b in zip(seen[epoch], fresh.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(seen[1], seen[2]))


def test_keras_path_saves_the_whole_model_with_both_optimizers(images, tmp_path):
    model = _model(discriminator_steps=2)
    path = str(tmp_path / "model.keras")
    model.fit(images, batch_size=4, epochs=1, verbose=0,
              callbacks=[AtomicModelCheckpoint(path)])
    assert os.listdir(tmp_path) == ["model.keras"]
    loaded = keras.models.load_model(path)
    assert int(loaded.optimizer.iterations) == 2
    assert int(loaded.discriminator_optimizer.iterations) == 4
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


def test_atomic_save_leaves_no_temporary_file_and_replaces_in_place(tmp_path):
    model = _model()
    path = str(tmp_path / "w.weights.h5")
    atomic_save(model, path)
    first = open(path, "rb").read()
    for v in model.trainable_variables[:1]:
        v.assign(v + 1.0)
    assert atomic_save(model, path) == path
    assert os.listdir(tmp_path) == ["w.weights.h5"]
    assert open(path, "rb").read() != first
    # A relative path is saved in the working directory's folder.
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        atomic_save(model, "rel.weights.h5")
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path)) == ["rel.weights.h5", "w.weights.h5"]
