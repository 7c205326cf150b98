"""Pretrained models: `InfoBalCIFAR` and `decode_predictions`."""

from keras_infobal.applications.infobal_cifar import InfoBalCIFAR, decode_predictions
