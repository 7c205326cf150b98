"""Models of keras_infobal: the backbone, the pretraining task, presets."""

from keras_infobal.models.infobal_backbone import InfoBalBackbone
from keras_infobal.models.infobal import InfoBal, load_infobal
