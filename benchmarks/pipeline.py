"""Input pipeline speed: is decoding and augmentation ever the bottleneck of training?

    python benchmarks/pipeline.py --data ../shared/data/cifar10-jpeg.tar.gz

Measures (1) the one-time JPEG decode of the test split into the uint8 cache (a fresh cache
folder), (2) images/s of the training pipeline (shuffle, batch 64, crop+flip, prefetch) read
from the cache, (3) pairs/s of the dim_pairs recipe's pipeline (two crop+flip+colour
augmentations per image), and compares them with the training speed logged by the shipped
runs (applications/cifar10/runs/*/log.csv). Writes benchmarks/results/pipeline.{json,md}.
"""

import argparse
import csv
import json
import os
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def batches_per_second(ds, batches, warmup=20):
    it = iter(ds.repeat())
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    p.add_argument("--batches", type=int, default=400)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_infobal import datasets

    out = {"data": args.data or "tfds"}
    if args.data:
        with tempfile.TemporaryDirectory() as cache:
            datasets.load_local(args.data, "train", cache_dir=cache)  # extraction, untimed
            t0 = time.perf_counter()
            x, _, _ = datasets.load_local(args.data, "test", cache_dir=cache)
            out["decode_images_per_second"] = len(x) / (time.perf_counter() - t0)
    x, _, _ = datasets.load_cifar10("train", source=args.data)
    ds = datasets.make_dataset(x, batch_size=64, shuffle=True, augment_images=True,
                               drop_remainder=True)
    out["pipeline_images_per_second"] = batches_per_second(ds, args.batches) * 64
    # The dim_pairs recipe: two crop/flip/colour augmentations of every image.
    pairs = datasets.make_dataset(x, batch_size=64, shuffle=True, pairs=True, color_jitter=0.5,
                                  grayscale=0.2, drop_remainder=True)
    out["pairs_pipeline_pairs_per_second"] = batches_per_second(pairs, args.batches) * 64
    training = {}
    for variant in ("dim", "infobal", "dim_pairs"):
        log = os.path.join(ROOT, "applications", "cifar10", "runs", variant, "log.csv")
        if os.path.exists(log):
            with open(log) as f:
                ips = [float(r["images_per_second"]) for r in csv.DictReader(f)]
            training[variant] = max(ips)
    out["training_images_per_second_best_epoch"] = training
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "pipeline.json"), "w") as f:
        json.dump(out, f, indent=2)
    md = [f"JPEG decode into the cache (once): {out.get('decode_images_per_second', 0):.0f} images/s",
          f"Training pipeline from the cache (shuffle, batch 64, crop+flip): "
          f"{out['pipeline_images_per_second']:.0f} images/s"]
    md.append(f"Pair pipeline from the cache (shuffle, batch 64, two crop+flip+colour "
              f"augmentations): {out['pairs_pipeline_pairs_per_second']:.0f} pairs/s")
    md += [f"Training step, {k} run (best epoch, 1 core each): {v:.0f} images/s"
           for k, v in training.items() if k != "dim_pairs"]
    if "dim_pairs" in training:
        md.append(f"Training step, dim_pairs run (best epoch, both cores, bfloat16): "
                  f"{training['dim_pairs']:.0f} pairs/s")
    with open(os.path.join(HERE, "results", "pipeline.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
