"""Pretrained models: `InfoBalCIFAR`, `decode_predictions`, and `unfreeze` for fine-tuning."""

from keras_infobal.applications.infobal_cifar import InfoBalCIFAR, decode_predictions, unfreeze
