"""Runs one step of tests/test_backends.py in its own process (KERAS_BACKEND is fixed at import).

usage (KERAS_BACKEND set by the caller):
  python tests/backend_worker.py init   DIR LAMBDA     # initial weights and a batch, in DIR
  python tests/backend_worker.py step   DIR LAMBDA OUT # one SGD step from them -> OUT.npz
  python tests/backend_worker.py chain  IN.keras|- OUT.keras OUT.npz  # load (or make), fit, save
  python tests/backend_worker.py dataparallel OUT.npz  # JAX, 2 CPU devices vs one device
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_infobal  # noqa: E402,F401  (registers the classes for load_model)
from helpers import tiny  # noqa: E402

B = 8


def make(lam):
    # jsd: a deterministic critic (CLUB's sampled variant draws partners at random).
    return tiny(infomin_weight=lam, critic="jsd")


def sgd(model, lr=0.1):
    # At lambda = 0 a discriminator optimizer would train the monitor: give none.
    model.compile(optimizer=keras.optimizers.SGD(lr),
                  discriminator_optimizer=keras.optimizers.SGD(lr)
                  if model.infomin_weight > 0 else None)


def by_path(model):
    return {v.path: np.array(v) for v in model.weights}


def images(seed=0, n=B):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)).astype("uint8")


def main():
    mode = sys.argv[1]
    if mode == "init":
        d, lam = sys.argv[2], float(sys.argv[3])
        keras.utils.set_random_seed(3)
        model = make(lam)
        model.save_weights(os.path.join(d, f"init{lam}.weights.h5"))
        np.save(os.path.join(d, "batch.npy"), images())
    elif mode == "step":
        d, lam, out = sys.argv[2], float(sys.argv[3]), sys.argv[4]
        model = make(lam)
        model.load_weights(os.path.join(d, f"init{lam}.weights.h5"))
        sgd(model)
        start = by_path(model)
        logs = model.train_on_batch(np.load(os.path.join(d, "batch.npy")), return_dict=True)
        end = by_path(model)
        np.savez(out, paths=np.array(sorted(end)), start=np.array([start[k] for k in sorted(end)],
                 dtype=object), end=np.array([end[k] for k in sorted(end)], dtype=object),
                 logs=json.dumps({k: float(v) for k, v in logs.items()}))
    elif mode == "chain":
        src, dst, out = sys.argv[2:5]
        x = images(1, 16)
        if src == "-":
            keras.utils.set_random_seed(0)
            model = tiny(infomin_weight=1.0, infomin_critic="club_sampled")
            model.compile(optimizer=keras.optimizers.Adam(1e-3),
                          discriminator_optimizer=keras.optimizers.Adam(1e-3))
            loaded_pred, iterations = None, (0, 0)
        else:
            model = keras.models.load_model(src)
            loaded_pred = model.predict(x, verbose=0)
            iterations = (int(model.optimizer.iterations),
                          int(model.discriminator_optimizer.iterations))
        hist = model.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
        model.save(dst)
        np.savez(out, pred=model.predict(x, verbose=0),
                 loaded_pred=np.zeros(0) if loaded_pred is None else loaded_pred,
                 iterations=np.array(iterations),
                 after=np.array([int(model.optimizer.iterations),
                                 int(model.discriminator_optimizer.iterations)]),
                 loss=hist.history["loss"][-1], backend=keras.backend.backend())
    elif mode == "dataparallel":
        import jax

        out = sys.argv[2]
        devices = jax.devices()
        assert len(devices) == 2, devices
        x = images(2, 16)
        keras.utils.set_random_seed(5)
        one = tiny(infomin_weight=1.0, critic="infonce")
        sgd(one)
        start = one.get_weights()
        one.fit(x, batch_size=16, epochs=2, verbose=0, shuffle=False)
        parallel = keras.distribution.DataParallel(devices=devices)
        with parallel.scope():
            two = tiny(infomin_weight=1.0, critic="infonce")
            two.set_weights(start)
            sgd(two)
            two.fit(x, batch_size=16, epochs=2, verbose=0, shuffle=False)
            # Every variable lives on both devices (replicated; the batch is split).
            n_devices = min(len(v.value.sharding.device_set) for v in two.variables)
        np.savez(out, one=np.array(one.get_weights(), dtype=object),
                 two=np.array(two.get_weights(), dtype=object),
                 start=np.array(start, dtype=object), n_devices=n_devices)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
