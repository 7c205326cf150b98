"""Training safety: stop on a non-finite MI term, save checkpoints atomically."""

import math
import os

import keras


class NonFiniteObjectiveError(RuntimeError):
    """Raised by `NonFiniteGuard` when an MI term or the objective becomes NaN or inf."""


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training at the first batch whose logs hold a NaN or inf, naming the bad terms.

    It raises `NonFiniteObjectiveError` from the batch, so no epoch-end callback runs after
    it: `BackupAndRestore` and `ModelCheckpoint` keep the last good checkpoint untouched
    (Keras' `TerminateOnNaN` lets the epoch end, which saves the NaN weights).

    ```python
    model.fit(ds, epochs=30, callbacks=[NonFiniteGuard(),
                                        keras.callbacks.BackupAndRestore("backup")])
    ```
    """

    def on_train_batch_end(self, batch, logs=None):
        bad = sorted(k for k, v in (logs or {}).items()
                     if isinstance(v, (int, float)) and not math.isfinite(v))
        if not bad:
            # Keras hands over tensors when it does not convert logs; check those too.
            bad = sorted(k for k, v in (logs or {}).items()
                         if not isinstance(v, (int, float)) and _nonfinite(v))
        if bad:
            self.model.stop_training = True
            raise NonFiniteObjectiveError(
                f"Training stopped at batch {batch}: non-finite values in {', '.join(bad)} "
                f"({', '.join(f'{k}={float(logs[k])}' for k in bad)}). The last checkpoint was "
                "not overwritten. Lower the learning rate, or use the 'jsd' or 'infonce' "
                "critic, whose estimates are bounded."
            )


def _nonfinite(value):
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def atomic_save(model, path, **kwargs):
    """`model.save(path)` through a temporary file and an atomic rename.

    A crash mid-save leaves the previous file at `path` intact, never a half-written one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    suffix = ".weights.h5" if base.endswith(".weights.h5") else os.path.splitext(base)[1]
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp{suffix}")
    try:
        if suffix == ".weights.h5":
            model.save_weights(tmp, **kwargs)
        else:
            model.save(tmp, **kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the model (or weights) every epoch with `atomic_save`, to `filepath`.

    `filepath` may hold `{epoch}`; `.weights.h5` saves weights only, `.keras` the whole
    model with both optimizers.
    """

    def __init__(self, filepath):
        super().__init__()
        if not filepath.endswith((".keras", ".weights.h5")):
            raise ValueError(
                f"`filepath` must end in .keras or .weights.h5; got {filepath!r}."
            )
        self.filepath = filepath

    def on_epoch_end(self, epoch, logs=None):
        atomic_save(self.model, self.filepath.format(epoch=epoch + 1))
