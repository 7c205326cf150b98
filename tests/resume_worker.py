"""Training process for the crash/resume test: deterministic, resumable with BackupAndRestore.

usage: python tests/resume_worker.py BACKUP_DIR OUT_WEIGHTS MARKER_DIR EPOCHS [SLOW]
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# keras_infobal before tensorflow: on the torch backend TensorFlow's import would otherwise
# import Keras itself and crash (docs/backends.md).
import keras_infobal  # noqa: E402,F401  (registers the classes for load_model)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import optimizers, tiny  # noqa: E402


def main():
    backup, out, markers, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    slow = len(sys.argv) > 5
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3)).astype("uint8")
    model = tiny(infomin_weight=1.0)
    model.compile(**optimizers())

    class Marker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            open(os.path.join(markers, f"epoch{epoch + 1}"), "w").close()

        def on_train_batch_end(self, batch, logs=None):
            if slow:
                time.sleep(0.2)  # leaves time to be killed mid-epoch

    model.fit(x, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.BackupAndRestore(backup, double_checkpoint=True),
                         Marker()])
    model.save_weights(out)


if __name__ == "__main__":
    main()
