"""Channels-last against channels-first for DIM's convolutional trunk on TensorFlow's CPU kernels.

    python benchmarks/conv_layout.py   # ~1 min; writes benchmarks/results/conv_layout/conv_layout.{json,md}

DIM's trunk (4x4 stride-2 convolutions 3 -> 64 -> 128 on 32x32 images, batch 64), forward and
backward (gradients of the input and the kernels), with `tf.nn.conv2d` in NHWC (what Keras
and the view splits use) and NCHW, alternating rounds, best round kept. A layout TensorFlow
cannot run on this CPU is recorded with its error.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speed import best_of_rounds, machine  # noqa: E402


def step_fn(fmt, kernels):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = x
            for k in kernels:
                h = tf.nn.relu(tf.nn.conv2d(h, k, strides=2, padding="SAME", data_format=fmt))
            loss = tf.reduce_sum(h * h)
        grads = tape.gradient(loss, [x] + kernels)
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads])
    return step


def main(rounds=6, calls=5):
    rng = np.random.default_rng(0)
    kernels = [tf.Variable(0.05 * rng.normal(size=s).astype("float32"))
               for s in ((4, 4, 3, 64), (4, 4, 64, 128))]
    x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
    inputs = {"NHWC": tf.constant(x), "NCHW": tf.constant(x.transpose(0, 3, 1, 2))}
    fns, errors = {}, {}
    for fmt in ("NHWC", "NCHW"):
        f = step_fn(fmt, kernels)
        try:
            float(f(inputs[fmt]))
            fns[fmt] = f
        except Exception as e:  # noqa: BLE001 - recorded as the result for that layout
            errors[fmt] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    best = best_of_rounds({k: (lambda f=f, k=k: float(f(inputs[k]))) for k, f in fns.items()},
                          rounds, calls)
    out = {"machine": machine(), "rounds": rounds, "calls_per_round": calls,
           "ms": {k: 1000 * v for k, v in best.items()}, "errors": errors}
    os.makedirs(os.path.join(HERE, "results", "conv_layout"), exist_ok=True)
    with open(os.path.join(HERE, "results", "conv_layout", "conv_layout.json"), "w") as f:
        json.dump(out, f, indent=2)
    m = out["machine"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores); tensorflow {m['tensorflow']}. DIM's "
          f"trunk convolutions, forward + backward, batch 64; ms, best of {rounds} alternating "
          "rounds.", "", "| layout | ms | note |", "|---|---|---|"]
    for fmt in ("NHWC", "NCHW"):
        if fmt in best:
            md.append(f"| {fmt} | {1000 * best[fmt]:.1f} | |")
        else:
            md.append(f"| {fmt} | - | {errors[fmt]} |")
    with open(os.path.join(HERE, "results", "conv_layout", "conv_layout.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
