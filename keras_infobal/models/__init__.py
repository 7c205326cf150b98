"""Models of keras_infobal."""

from keras_infobal.models.infobal import InfoBal, load_infobal
