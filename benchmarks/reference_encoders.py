"""Reference encoders for the README table: random init and supervised, same architecture.

    python benchmarks/reference_encoders.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 10 --threads 1

Both use InfoBal's encoder (ViewEncoder M=2 rows + ViewAggregator concat). The supervised one
is trained end to end with a linear softmax on R (crop+flip, Adam 1e-3, cosine decay);
then, like the self-supervised encoders, it is frozen and linear-probed on conv / fc / R with
the same protocols. Writes benchmarks/results/reference_encoders/reference_encoders.json.
"""

import argparse
import json
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--out", default=os.path.join(HERE, "results", "reference_encoders",
                                                 "reference_encoders.json"))
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import InfoBal, InfoBalBackbone, datasets, features
    from keras_infobal.evaluation import train_classifier

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=args.data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=args.data)
    if args.limit:
        keep = np.random.default_rng(0).permutation(len(x_tr))[: args.limit]
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    layers = features.NAMES  # every feature layer

    def probe(model):
        f_tr = model.extract_features(x_tr, layers=layers)
        f_te = model.extract_features(x_te, layers=layers)
        return {proto: {k: train_classifier(f_tr[k], y_tr, f_te[k], y_te, protocol=proto)
                        for k in layers} for proto in ("note", "converged")}

    results = {"data": args.data or "tfds"}
    random_model = InfoBal(InfoBalBackbone(image_shape=(32, 32, 3)), infomin_weight=0.0)
    results["random_init"] = probe(random_model)
    print("random", results["random_init"], flush=True)

    model = InfoBal(InfoBalBackbone(image_shape=(32, 32, 3)), infomin_weight=0.0)
    inputs = keras.Input((32, 32, 3))
    logits = keras.layers.Dense(10)(model.backbone(inputs))
    clf = keras.Model(inputs, logits)
    steps = (len(x_tr) // 64) * args.epochs
    clf.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                    1e-3, steps, alpha=0.01)),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    ds = datasets.make_dataset(x_tr, y_tr, batch_size=64, shuffle=True, augment_images=True,
                               drop_remainder=True)
    t0 = time.time()
    clf.fit(ds, epochs=args.epochs, verbose=2, shuffle=False)
    results["supervised"] = probe(model)
    results["supervised"]["end_to_end_test_accuracy"] = float(
        clf.evaluate(x_te, y_te, batch_size=500, verbose=0, return_dict=True)["accuracy"])
    results["supervised"]["epochs"] = args.epochs
    results["supervised"]["train_seconds"] = time.time() - t0
    print("supervised", results["supervised"], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
