"""Why XLA slows the multi-view steps: the aggregator's convolution on small view maps.

    python benchmarks/xla_conv.py     # ~1 min; writes benchmarks/results/xla_conv/xla_conv.{json,md}

The aggregator applies DIM's 4x4, stride-2, "same" convolution (128 -> 256 channels) to every
view's map: one 8x8 map per image at M = 1, two 4x8 maps at M = 2 (rows), four 4x4 maps at
M = 4 (grid). This times that convolution's forward and backward pass (gradients of input
and kernel), alone, on TensorFlow (graph, oneDNN), TensorFlow + XLA and JAX (jit, XLA), in
alternating rounds (best round kept), for a batch of 64 images.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speed import best_of_rounds, machine  # noqa: E402

SHAPES = {"M=1 (8x8 map)": (64, 8, 8, 128), "M=2 rows (4x8 views)": (128, 4, 8, 128),
          "M=4 grid (4x4 views)": (256, 4, 4, 128)}


def contenders():
    rng = np.random.default_rng(0)
    kernel = (0.05 * rng.normal(size=(4, 4, 128, 256))).astype("float32")
    tk = tf.constant(kernel)
    jk = jnp.asarray(kernel)
    out = {}
    for label, shape in SHAPES.items():
        x = rng.normal(size=shape).astype("float32")
        tx, jx = tf.constant(x), jnp.asarray(x)
        for jit in (False, True):
            @tf.function(jit_compile=jit)
            def tf_step(x):
                with tf.GradientTape() as tape:
                    tape.watch([x, tk])
                    y = tf.reduce_sum(tf.nn.conv2d(x, tk, strides=2, padding="SAME") ** 2)
                gx, gk = tape.gradient(y, [x, tk])
                return y + tf.reduce_sum(gx) + tf.reduce_sum(gk)

            name = "TensorFlow + XLA" if jit else "TensorFlow (oneDNN)"
            out[(label, name)] = (lambda f=tf_step, a=tx: float(f(a)))

        def loss(x, k):
            y = jax.lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.sum(y ** 2)

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        out[(label, "JAX (XLA)")] = (lambda a=jx: float(grad(a, jk)[0]))
    return out


def main(rounds=5, calls=4):
    fns = contenders()
    for f in fns.values():
        f()
    best = best_of_rounds(fns, rounds, calls)
    rows = [{"views": v, "backend": b, "ms": 1000 * best[(v, b)]} for v, b in fns]
    out = {"machine": machine(), "rounds": rounds, "calls_per_round": calls, "results": rows}
    os.makedirs(os.path.join(HERE, "results", "xla_conv"), exist_ok=True)
    with open(os.path.join(HERE, "results", "xla_conv", "xla_conv.json"), "w") as f:
        json.dump(out, f, indent=2)
    backends = ["TensorFlow (oneDNN)", "TensorFlow + XLA", "JAX (XLA)"]
    m = out["machine"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores); tensorflow {m['tensorflow']}, jax "
          f"{m['jax']}. The aggregator's 4x4 stride-2 convolution (128 -> 256 channels), "
          f"forward + backward, batch of 64 images; ms, best of {rounds} alternating rounds.",
          "", "| views | " + " | ".join(backends) + " |", "|---" * 4 + "|"]
    for v in SHAPES:
        md.append(f"| {v} | " + " | ".join(f"{1000 * best[(v, b)]:.1f}" for b in backends)
                  + " |")
    with open(os.path.join(HERE, "results", "xla_conv", "xla_conv.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
