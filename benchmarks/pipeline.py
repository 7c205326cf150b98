"""Input pipeline speed: the Keras preprocessing pipeline against the hand-written tf.image
augmentation it replaced, and whether either is ever the bottleneck of training.

    python benchmarks/pipeline.py --data ../shared/data/cifar10-jpeg.tar.gz   # ~5 min

Measures, on the CIFAR-10 training images read from the uint8 cache:
(1) the one-time JPEG decode of the test split into the cache (a fresh cache folder);
(2) images/s of the crop+flip pipeline (shuffle, batch 64, prefetch) and pairs/s of the
    dim_pairs pipeline (two crop+flip+colour augmentations per image), for two contenders,
    alternating in short rounds (best round kept, all rounds in the JSON):
    - `keras`: `datasets.make_dataset(seed=None)`, a `keras.layers.Pipeline` of Keras layers,
      batches augmented in parallel (`num_parallel_calls=AUTOTUNE`);
    - `keras_seeded`: the same with `seed=0`, one batch at a time (what seeded runs, and so
      `keras-infobal pretrain`, use: the draws then repeat exactly);
    - `tf_image`: the session-6 hand-written code (`reference_augment` below, tf.image ops,
      `num_parallel_calls=AUTOTUNE`), kept here as the reference;
    and the CPU time each takes per 1,000 images (process CPU time over the round: what the
    augmentation takes from the training step on a machine whose cores it shares);
(3) the training speed logged by the shipped runs (applications/cifar10/runs/*/log.csv),
    for scale. Writes benchmarks/results/pipeline/pipeline.{json,md} with the CPU model and flags.
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def reference_augment(images, pad=4, color_jitter=0.0, grayscale=0.0, seed=None):
    """The augmentation before the Keras pipeline (datasets.augment until commit 417237c):
    reflection pad + random crop, flip, and colour jitter (80% of images) / grayscale in tf.image."""
    import tensorflow as tf

    seeds = iter([None] * 8 if seed is None else range(seed * 8, seed * 8 + 8))
    shape = tf.shape(images)
    h, w = images.shape[-3], images.shape[-2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    out = tf.image.random_crop(padded, tf.stack([shape[0], h, w, shape[3]]), seed=next(seeds))
    mask = tf.random.uniform([shape[0], 1, 1, 1], seed=next(seeds)) < 0.5
    out = tf.where(mask, tf.reverse(out, axis=[2]), out)
    if not (color_jitter or grayscale):
        return out
    x = tf.cast(out, tf.float32)
    n = tf.shape(x)[0]

    def factor():
        return tf.random.uniform([n, 1, 1, 1], 1 - 0.8 * color_jitter, 1 + 0.8 * color_jitter,
                                 seed=next(seeds))

    def grey(t):
        return tf.reduce_sum(t * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)

    if color_jitter:
        j = x * factor()
        mean = tf.reduce_mean(grey(j), axis=[1, 2, 3], keepdims=True)
        j = (j - mean) * factor() + mean
        g = grey(j)
        j = (j - g) * factor() + g
        apply = tf.random.uniform([n, 1, 1, 1], seed=next(seeds)) < 0.8
        x = tf.where(apply, tf.clip_by_value(j, 0.0, 255.0), x)
    if grayscale:
        to_grey = tf.random.uniform([n, 1, 1, 1], seed=next(seeds)) < grayscale
        x = tf.where(to_grey, tf.tile(grey(x), [1, 1, 1, 3]), x)
    return tf.cast(tf.round(x), tf.uint8)


def reference_dataset(x, pairs, seed=0):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(x).shuffle(50_000, seed=seed).batch(
        64, drop_remainder=True)
    if pairs:
        ds = ds.map(lambda b: (reference_augment(b, color_jitter=0.5, grayscale=0.2, seed=seed),
                               reference_augment(b, color_jitter=0.5, grayscale=0.2,
                                                 seed=seed + 1)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda b: reference_augment(b, seed=seed), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    p.add_argument("--batches", type=int, default=600, help="batches per round")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from speed import machine

    from keras_infobal import datasets

    out = {"data": args.data or "tfds", "machine": machine(), "batches_per_round": args.batches,
           "rounds": args.rounds}
    if args.data:
        with tempfile.TemporaryDirectory() as cache:
            datasets.load_local(args.data, "train", cache_dir=cache)  # extraction, untimed
            t0 = time.perf_counter()
            x, _, _ = datasets.load_local(args.data, "test", cache_dir=cache)
            out["decode_images_per_second"] = len(x) / (time.perf_counter() - t0)
    x, _, _ = datasets.load_cifar10("train", source=args.data)
    streams = {}
    for seed, name in ((None, "keras"), (0, "keras_seeded")):
        streams[f"{name}_single"] = datasets.make_dataset(
            x, batch_size=64, shuffle=True, augment_images=True, drop_remainder=True, seed=seed)
        streams[f"{name}_pairs"] = datasets.make_dataset(
            x, batch_size=64, shuffle=True, pairs=True, color_jitter=0.5, grayscale=0.2,
            drop_remainder=True, seed=seed)
    streams["tf_image_single"] = reference_dataset(x, pairs=False)
    streams["tf_image_pairs"] = reference_dataset(x, pairs=True)
    iters = {k: iter(ds.repeat()) for k, ds in streams.items()}
    for it in iters.values():  # warm-up: tracing, the shuffle buffer, prefetch
        for _ in range(30):
            next(it)
    rounds = {k: [] for k in streams}
    cpu = {k: [] for k in streams}
    names = list(streams)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                next(iters[k])
            rounds[k].append(64 * args.batches / (time.perf_counter() - t0))
            # Prefetching threads keep working a little past the round: a small overcount.
            cpu[k].append(1000 * (time.process_time() - c0) / (64 * args.batches))
            time.sleep(0.5)
    out["images_per_second_rounds"] = rounds
    out["images_per_second_best"] = {k: max(v) for k, v in rounds.items()}
    out["cpu_seconds_per_1000_images_rounds"] = cpu
    out["cpu_seconds_per_1000_images_best"] = {k: min(v) for k, v in cpu.items()}
    training = {}
    for variant in ("dim", "infobal", "dim_pairs"):
        log = os.path.join(ROOT, "applications", "cifar10", "runs", variant, "log.csv")
        if os.path.exists(log):
            with open(log) as f:
                training[variant] = max(float(r["images_per_second"]) for r in csv.DictReader(f))
    out["training_images_per_second_best_epoch"] = training
    os.makedirs(os.path.join(HERE, "results", "pipeline"), exist_ok=True)
    with open(os.path.join(HERE, "results", "pipeline", "pipeline.json"), "w") as f:
        json.dump(out, f, indent=2)
    m, best = out["machine"], out["images_per_second_best"]
    md = [f"CPU: {m.get('cpu_model')} ({m['cores']} cores; flags "
          f"{', '.join(m.get('cpu_flags', []))}); keras {m['keras']}, tensorflow "
          f"{m['tensorflow']}. Command: `python benchmarks/pipeline.py --data "
          f"../shared/data/cifar10-jpeg.tar.gz` ({args.rounds} rounds of {args.batches} "
          "batches of 64, contenders alternating, best round).", "",
          f"JPEG decode into the cache (once): {out.get('decode_images_per_second', 0):.0f} "
          "images/s", "",
          "| pipeline (batch 64, from the cache) | Keras Pipeline, parallel (no seed) | Keras "
          "Pipeline, seeded (one batch at a time) | tf.image (before) | Keras parallel / "
          "tf.image |", "|---|---|---|---|---|"]
    cpu = out["cpu_seconds_per_1000_images_best"]
    for kind, what in (("single", "crop+flip"),
                       ("pairs", "two crop+flip+colour augmentations")):
        k, s, t = (best[f"{n}_{kind}"] for n in ("keras", "keras_seeded", "tf_image"))
        md.append(f"| {what}, {'pairs' if kind == 'pairs' else 'images'}/s | {k:.0f} | {s:.0f} "
                  f"| {t:.0f} | {k / t:.2f}x |")
        k, s, t = (cpu[f"{n}_{kind}"] for n in ("keras", "keras_seeded", "tf_image"))
        md.append(f"| {what}, CPU seconds per 1,000 | {k:.3f} | {s:.3f} | {t:.3f} | "
                  f"{k / t:.2f}x |")
    md.append("")
    md += [f"Training step, {k} run (best epoch): {v:.0f} images/s" for k, v in training.items()]
    with open(os.path.join(HERE, "results", "pipeline", "pipeline.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
