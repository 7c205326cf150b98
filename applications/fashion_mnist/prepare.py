"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` as two .npz files that
`keras-infobal pretrain/evaluate --data` read (images (N, 28, 28) uint8 and labels).

    sudo apt-get install dataset-fashion-mnist
    python applications/fashion_mnist/prepare.py --out $FMNIST   # train.npz, test.npz

The files stay outside the repository: never commit the data or anything made from it.
"""

import argparse
import gzip
import os
import sys

import numpy as np

SOURCE = "/usr/share/datasets/fashion-mnist"
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle boot")


def read_idx(path):
    """An IDX file (the MNIST format: magic, dims, then uint8 data) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"`{path}` is not a uint8 IDX file (magic {data[:4].hex()}).")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=SOURCE)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if not os.path.isdir(args.source):
        sys.exit(f"{args.source} is missing: apt-get install dataset-fashion-mnist")
    os.makedirs(args.out, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(os.path.join(args.source, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(args.source, f"{prefix}-labels-idx1-ubyte.gz"))
        np.savez(os.path.join(args.out, f"{split}.npz"), images=images,
                 labels=labels.astype("int64"))
        print(f"{split}: {images.shape} images, {np.bincount(labels).tolist()} per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
