"""Layers of keras_infobal: view encoder, view aggregator, MI critics (by name: registry)."""

from keras_infobal.layers.batch_normalization import BatchNormalization
from keras_infobal.layers.critics import (
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
)
from keras_infobal.layers.club import CLUB
from keras_infobal.layers.pair_critics import PairCLUB, PairCritics
from keras_infobal.layers.registry import (
    critic_names,
    get_critic,
    get_infomin_critic,
    get_pair_critics,
    infomin_critic_names,
    is_upper_bound,
)
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder, trunk_scales_inputs
