"""Layers of keras_infobal: view encoder, view aggregator, MI critics."""

from keras_infobal.layers.batch_normalization import BatchNormalization
from keras_infobal.layers.critics import (
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    get_critic,
)
from keras_infobal.layers.club import CLUB
from keras_infobal.layers.pair_critics import PairCLUB, PairCritics
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder, trunk_scales_inputs
