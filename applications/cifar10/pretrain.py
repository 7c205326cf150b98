"""Pretrains an InfoBal or DIM encoder on CIFAR-10 and evaluates it with linear probes.

This is the recipe behind the weights shipped in `keras_infobal/applications/weights/`:

    python applications/cifar10/pretrain.py --variant infobal \
        --data ../shared/data/cifar10-jpeg.tar.gz --threads 1 --out applications/cifar10/runs/infobal
    python applications/cifar10/pretrain.py --variant dim \
        --data ../shared/data/cifar10-jpeg.tar.gz --threads 1 --out applications/cifar10/runs/dim

(the two ran side by side, one core each). It resumes after a crash (BackupAndRestore in
OUT/backup), logs every epoch to OUT/log.csv (MI estimates, and a linear probe on a held-out
part of the training set every --probe-every epochs), and at the end writes OUT/results.json
(local / conv / fc / R probe accuracy under both protocols) and OUT/model.keras. Exporting the
shipped weights is a separate step (export_weights.py). The code lives in
`keras_infobal.pretraining`, which `keras-infobal pretrain` also runs.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_infobal.layers.critics import critic_names, infomin_critic_names  # noqa: E402
from keras_infobal.layers.view_encoder import SPLIT_REGISTRY  # noqa: E402
from keras_infobal.pretraining import CONFIGS, DEFAULTS, pretrain_cifar10  # noqa: E402


def parse_args(argv=None):
    # The choices come from the registries when the parser is made, so estimators and splits
    # registered before (register_estimator, register_split) are accepted.
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=sorted(CONFIGS), default="infobal")
    p.add_argument("--critic", choices=critic_names(), default=None,
                   help="override the variant's estimator")
    p.add_argument("--infomin-critic", default=None, choices=infomin_critic_names(),
                   help="InfoMin estimator: an adversarial lower-bound critic, or the CLUB "
                        "upper bound")
    p.add_argument("--infomin-weight", type=float, default=None, help="override lambda")
    p.add_argument("--num-views", type=int, default=None)
    p.add_argument("--split", choices=tuple(SPLIT_REGISTRY), default=None)
    p.add_argument("--score-clip", type=float, default=None,
                   help="soft-clip critic scores to (-c, c)")
    p.add_argument("--augmented-pairs", type=int, choices=[0, 1], default=None,
                   help="1: two augmentations per image, R of one against the local views "
                        "of the other")
    p.add_argument("--color-jitter", type=float, default=None,
                   help="colour distortion strength of the augmentation (0 = off)")
    p.add_argument("--grayscale", type=float, default=None,
                   help="probability of a grey image in the augmentation")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train under the mixed_bfloat16 policy (1.4x faster DIM(L) steps here)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine decay)")
    p.add_argument("--critic-units", type=int, default=512)
    p.add_argument("--infomin-units", type=int, default=None,
                   help="width of the InfoMin discriminators (default: --critic-units)")
    p.add_argument("--probe-every", type=int, default=5)
    p.add_argument("--probe-train", type=int, default=10000,
                   help="training images for the in-training probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = all)")
    p.add_argument("--limit", type=int, default=0, help="use only N training images (smoke)")
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"),
                   help="CIFAR-10 folder/.tar.gz (default: $KERAS_INFOBAL_CIFAR10, else tfds)")
    p.add_argument("--out", required=True)
    p.add_argument("--skip-final-probe", action="store_true")
    p.add_argument("--init-from", default=None,
                   help="warm start: a shipped variant name (its encoder and aggregator) or an "
                        "InfoBal .keras file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    pretrain_cifar10(**vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
