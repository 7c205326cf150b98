"""Where the DIM(L) step's time goes, ours (TensorFlow) against the plain PyTorch reference.

    python benchmarks/profile_step.py     # ~3 min on an idle machine; writes results/profile_step/profile_step.{json,md}
    python benchmarks/profile_step.py --level avx2   # the kernels of an AVX2-only CPU

The step is cut into cumulative parts, each timed as its own compiled function (tf.function
for ours, eager PyTorch for the reference), alternating between the two frameworks in
rounds (best round kept, as in `speed.py`):

- `trunk forward`: the convolutional encoder (and, for ours, the view split) on a batch;
- `forward`: + the aggregator, the two critic encoders, the (B, B, L) score tensor and JSD;
- `forward + backward`: + the gradients of the loss with respect to every weight;
- `step`: + the Adam update (the whole training step);
- ours only, `train_on_batch`: the same update through Keras' compiled train step (what
  `fit` runs, with its metrics and logs), so the difference from `step` is Keras' share.

Differences between consecutive parts give each part's cost. Batch 64, 512 critic units,
float32 (`--bf16`: mixed bfloat16 against autocast), JSD, one view (DIM(L)), both frameworks on all cores.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # speed.py: the PyTorch reference and the machine record
PARTS = ("trunk forward", "forward", "forward + backward", "step")
KERAS_STEP = "train_on_batch"  # ours only


def ours(batch, bf16=False):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import InfoBal, InfoBalBackbone

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if bf16 else "float32")
    try:
        model = InfoBal(InfoBalBackbone(num_views=1, image_shape=(32, 32, 3)),
                        infomin_weight=0.0, critic_units=512)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    opt = keras.optimizers.Adam(1e-4, beta_1=0.5)
    model.compile(optimizer=opt)
    x = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)), tf.uint8)
    variables = model.encoder_variables
    opt.build(variables)

    @tf.function
    def trunk():
        return tf.reduce_sum(model.backbone.encoder(x, training=True))

    @tf.function
    def forward():
        return model.encoder_loss(model.backbone.encoder(x, training=True))[0]

    @tf.function
    def backward():
        with tf.GradientTape() as tape:
            loss = model.encoder_loss(model.backbone.encoder(x, training=True))[0]
        grads = tape.gradient(loss, variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = model.encoder_loss(model.backbone.encoder(x, training=True))[0]
        grads = tape.gradient(loss, variables)
        opt.apply(grads, variables)
        return loss

    parts = dict(zip(PARTS, [lambda f=f: float(f()) for f in (trunk, forward, backward, step)]))
    x_numpy = x.numpy()
    parts[KERAS_STEP] = lambda: float(model.train_on_batch(x_numpy, return_dict=True)["loss"])
    return parts


def reference(batch, bf16=False):
    import torch

    from speed import torch_dim_reference

    trunk_fn, loss_fn, opt = torch_dim_reference(batch)
    if bf16:  # torch.autocast, as speed.py's bfloat16 reference
        plain_trunk, plain_loss = trunk_fn, loss_fn

        def trunk_fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain_trunk()

        def loss_fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain_loss()

    def trunk():
        with torch.no_grad():
            return float(trunk_fn().sum())

    def forward():
        with torch.no_grad():
            return float(loss_fn())

    def backward():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return float(loss.detach())

    def step():
        loss = backward()
        opt.step()
        return loss

    return dict(zip(PARTS, (trunk, forward, backward, step)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=os.path.join(HERE, "results", "profile_step"))
    p.add_argument("--level", choices=("native", "avx2"), default="native",
                   help="instruction-set level (speed.LEVELS: avx2 caps oneDNN, ATen and MKL); "
                        "writes profile_step[_avx2].{json,md}")
    p.add_argument("--bf16", action="store_true",
                   help="ours under mixed_bfloat16, the reference under torch.autocast "
                        "bfloat16 (adds _bf16 to the file names)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from speed import LEVELS, machine, write_results

    # Before TensorFlow or PyTorch load their kernels: both read the caps at first use.
    os.environ.update(LEVELS[args.level])
    # Both frameworks in one process: Triton's LLVM must load before TensorFlow's
    # (keras_infobal_startup explains), or PyTorch's import dies with SIGSEGV.
    import keras_infobal_startup

    keras_infobal_startup.preload_triton(any_backend=True)
    stem = ("profile_step" + ("" if args.level == "native" else f"_{args.level}")
            + ("_bf16" if args.bf16 else ""))
    precision = "mixed bfloat16 (ours) / autocast bfloat16 (reference)" if args.bf16 else "float32"

    fns = {"ours (TF)": ours(args.batch, args.bf16),
           "PyTorch reference": reference(args.batch, args.bf16)}
    for parts in fns.values():
        for f in parts.values():
            for _ in range(3):
                f()
    best = {(who, part): [] for who in fns for part in fns[who]}
    for r in range(args.rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for who in order:
            for part, f in fns[who].items():
                time.sleep(0.2)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    f()
                best[who, part].append((time.perf_counter() - t0) / args.steps * 1000)
    out = {"machine": machine(), "level": args.level, "precision": precision, "environment": LEVELS[args.level],
           "batch": args.batch, "rounds": args.rounds,
           "steps_per_round": args.steps,
           "ms": {f"{who} / {part}": {"best": min(v), "median": statistics.median(v)}
                  for (who, part), v in best.items()}}
    caps = ", ".join(f"{k}={v}" for k, v in LEVELS[args.level].items()) or "no caps"
    md = [f"CPU: {out['machine'].get('cpu_model')} ({out['machine']['cores']} cores; flags "
          f"{', '.join(out['machine'].get('cpu_flags', []))}; level {args.level}: {caps}). DIM(L) "
          f"step parts, batch {args.batch}, {precision}; best of {args.rounds} alternating rounds "
          f"x {args.steps} calls (ms per call; the part's own cost in brackets).", "",
          "| part (cumulative) | ours (TF) | PyTorch reference | ours / reference |",
          "|---|---|---|---|"]
    prev = {who: 0.0 for who in fns}
    for part in PARTS:
        cells = []
        for who in fns:
            ms = min(best[who, part])
            cells.append(f"{ms:.1f} (+{ms - prev[who]:.1f})")
            prev[who] = ms
        ratio = min(best["ours (TF)", part]) / min(best["PyTorch reference", part])
        md.append(f"| {part} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    ms = min(best["ours (TF)", KERAS_STEP])
    md.append(f"| step through `train_on_batch` (ours only) | {ms:.1f} "
              f"(+{ms - min(best['ours (TF)', 'step']):.1f} over step) | - | - |")
    write_results(args.out, stem, out, md)


if __name__ == "__main__":
    main()
