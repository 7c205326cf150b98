"""Scores every built-in preset's shipped classifier (`InfoBalCIFAR(preset=...)`) on the full
CIFAR-10 test set and compares it with the `test_accuracy` its metadata records.

The test JPEGs are decoded twice: by the package's loader (TensorFlow's decoder, what every
recorded accuracy uses) and by Pillow (`measured_pil`): the two decoders round the inverse
DCT differently, so pixels differ by a few levels and so do the accuracies.

    python applications/cifar10/check_presets.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --out applications/cifar10/preset_check.json

Exits 1 when a preset is more than `--tolerance` (0.0005, i.e. 0.05 points) from its record.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_test_with_pil(source, classes):
    """(images uint8 (N, 32, 32, 3), labels) of the tarball's test/<class>/ JPEGs, decoded
    with Pillow; labels index `classes` (the package loader's class order)."""
    import io
    import tarfile

    import numpy as np
    from PIL import Image

    index = {name: i for i, name in enumerate(classes)}
    found = []
    with tarfile.open(source) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] != "test":
                continue
            data = tar.extractfile(member).read()
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            found.append((index[parts[-2]], parts[-1], image))
    found.sort(key=lambda t: t[:2])  # the package loader's order: class, then file name
    return (np.stack([t[2] for t in found]).astype("uint8"),
            np.asarray([t[0] for t in found], dtype="int64"))


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

    x_test, y_test, classes = datasets.load_cifar10("test", source=args.data)
    x_pil, y_pil = load_test_with_pil(args.data, classes)
    assert np.array_equal(y_pil, y_test), "the two loaders list the test images differently"
    diff = np.abs(x_pil.astype("int16") - x_test.astype("int16"))
    pixels = {"share_of_values_differing": float(np.mean(diff > 0)),
              "largest_difference_in_levels": int(diff.max())}
    print("decoders:", pixels, flush=True)
    results, ok = {}, True
    for name in presets.list_presets():
        recorded = presets.load_metadata(name)["test_accuracy"]
        model = InfoBalCIFAR(preset=name)
        pred = model.predict(x_test, batch_size=500, verbose=0).argmax(-1)
        measured = float(np.mean(pred == y_test))
        within = abs(measured - recorded) <= args.tolerance
        ok &= within
        pred_pil = model.predict(x_pil, batch_size=500, verbose=0).argmax(-1)
        results[name] = {"recorded": recorded, "measured": measured, "within": within,
                         "measured_pil": float(np.mean(pred_pil == y_pil))}
        print(name, results[name], flush=True)
    out = {"test_images": int(len(y_test)), "data": args.data, "keras": keras.__version__,
           "decoders": {"measured": "the package's loader (TensorFlow's JPEG decoder)",
                        "measured_pil": "Pillow"},
           "decoder_pixel_difference": pixels,
           "backend": keras.backend.backend(), "tolerance": args.tolerance,
           "presets": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
