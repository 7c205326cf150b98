#!/usr/bin/env bash
# The Fashion-MNIST demonstration of docs/own_images.md: pretrain from the command line on
# the 60,000 training images at their own 28x28 grayscale size, then a linear probe and a
# weighted kNN, fitted on the training images and scored on the 10,000 test images, for the
# pretrained encoder and for random init of the same architecture.
#   bash applications/fashion_mnist/run_demo.sh $FMNIST OUT
set -euo pipefail
DATA=${1:?"usage: run_demo.sh FMNIST_DIR [OUT]: FMNIST_DIR is where prepare.py writes train.npz and test.npz"}
OUT=${2:-applications/fashion_mnist/run}
python applications/fashion_mnist/prepare.py --out "$DATA"
# dim_pairs with one view: the 7x7 local map of 28x28 images has no even split in rows.
keras-infobal pretrain --recipe dim_pairs --set backbone.num_views=1 \
    --data "$DATA/train.npz" --epochs 10 --mixed-precision --out "$OUT"
for init in pretrained random_init; do
  extra=""; [ "$init" = random_init ] && extra="--random-init"
  keras-infobal evaluate --model "$OUT/preset" --data "$DATA/train.npz" \
      --test-data "$DATA/test.npz" --layers conv,fc,R --knn 200 $extra \
      --out "$OUT/evaluate_$init.json"
done
