"""One small update-step module per Keras backend; `Trainer` is the one for this process.

`InfoBal` inherits from `Trainer`: the objective is written once in `keras.ops` (in
`models/infobal.py`); each module here only says how one discriminator update and one encoder
update run on its backend (tf.GradientTape, jax.value_and_grad on stateless values, or
torch autograd). The backend is fixed when Keras is imported (`KERAS_BACKEND`).
"""

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    from keras_infobal.models.trainers.tensorflow import TensorFlowTrainer as Trainer
elif BACKEND == "jax":
    from keras_infobal.models.trainers.jax import JAXTrainer as Trainer
elif BACKEND == "torch":
    from keras_infobal.models.trainers.torch import TorchTrainer as Trainer
else:
    raise ImportError(
        f"keras_infobal trains on the tensorflow, jax and torch Keras backends; this process "
        f"uses {BACKEND!r}. Set KERAS_BACKEND=tensorflow, jax or torch before importing keras."
    )

__all__ = ["BACKEND", "Trainer"]
