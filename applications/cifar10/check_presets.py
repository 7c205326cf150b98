"""Scores every built-in preset's shipped classifier (`InfoBalCIFAR(preset=...)`) on the full
CIFAR-10 test set and compares it with the `test_accuracy` its metadata records.

    python applications/cifar10/check_presets.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --out applications/cifar10/preset_check.json

Exits 1 when a preset is more than `--tolerance` (0.0005, i.e. 0.05 points) from its record.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tolerance", type=float, default=0.0005)
    args = p.parse_args(argv)
    import keras
    import numpy as np

    from keras_infobal import datasets
    from keras_infobal.applications import InfoBalCIFAR
    from keras_infobal.models import presets

    x_test, y_test, _ = datasets.load_cifar10("test", source=args.data)
    results, ok = {}, True
    for name in presets.list_presets():
        recorded = presets.load_metadata(name)["test_accuracy"]
        model = InfoBalCIFAR(preset=name)
        pred = model.predict(x_test, batch_size=500, verbose=0).argmax(-1)
        measured = float(np.mean(pred == y_test))
        within = abs(measured - recorded) <= args.tolerance
        ok &= within
        results[name] = {"recorded": recorded, "measured": measured, "within": within}
        print(name, results[name], flush=True)
    out = {"test_images": int(len(y_test)), "data": args.data, "keras": keras.__version__,
           "backend": keras.backend.backend(), "tolerance": args.tolerance,
           "presets": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
