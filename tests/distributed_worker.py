"""Distributed-training worker for tests/test_distribute.py (runs in its own process).

usage:
  python tests/distributed_worker.py mirrored OUT.npz CROSS(0|1) CRITIC
  python tests/distributed_worker.py multiworker OUT.npz INDEX PORT0 PORT1
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
mode = sys.argv[1]
if mode == "multiworker":
    index, ports = int(sys.argv[3]), sys.argv[4:6]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_infobal  # noqa: E402,F401  (registers the classes for load_model)
from helpers import tiny  # noqa: E402

B = 8  # per-replica batch


def images():
    return np.random.default_rng(0).integers(0, 256, (2 * B, 16, 16, 3)).astype("uint8")


def make(strategy, cross_replica_negatives=False, synchronized_batch_norm=False, **kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(5)
        model = tiny(**kwargs)
        # Plain SGD: a wrong gradient scale shows up in the weights (Adam would hide it).
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      discriminator_optimizer=keras.optimizers.SGD(0.5),
                      cross_replica_negatives=cross_replica_negatives,
                      synchronized_batch_norm=synchronized_batch_norm)
    return model


def step(model, x):
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2 * B)
    model.fit(ds, epochs=1, verbose=0)
    return [np.array(v) for v in model.trainable_variables]


def mirrored(out, cross, critic):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    kwargs = dict(infomin_weight=1.0, critic=critic, cross_replica_negatives=bool(cross),
                  synchronized_batch_norm=bool(cross))
    one = make(tf.distribute.get_strategy(), **kwargs)
    start = [np.array(v) for v in one.trainable_variables]
    two = make(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), **kwargs)
    for a, b in zip(start, two.trainable_variables):  # same start
        np.testing.assert_array_equal(a, np.array(b))
    x = images()
    w_one, w_two = step(one, x), step(two, x)
    np.savez(out, start=np.array(start, dtype=object), one=np.array(w_one, dtype=object),
             two=np.array(w_two, dtype=object), replicas=two.distribute_strategy.num_replicas_in_sync)


def multiworker(out, index):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model = make(strategy, infomin_weight=1.0, cross_replica_negatives=True,
                 synchronized_batch_norm=True)
    x = images()
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2 * B).repeat(3)
    hist = model.fit(ds, epochs=1, verbose=0)
    np.savez(out, weights=np.array([np.array(v) for v in model.trainable_variables], dtype=object),
             loss=hist.history["loss"][-1], replicas=strategy.num_replicas_in_sync)


if __name__ == "__main__":
    if mode == "mirrored":
        mirrored(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        multiworker(sys.argv[2], int(sys.argv[3]))
