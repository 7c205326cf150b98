"""The objective as parts: one module per term, with its paper (see `base.py`).

- `InfoMax` (dim.py): DIM's global/local InfoMax, multi-scale and across augmented pairs.
- `InfoMin` (infomin.py): the views' MI minimized (InfoBal), adversarially or with CLUB.
- `CMC` (cmc.py): the views' MI maximized, both directions, InfoNCE.
- `CPC` (cpc.py): upper rows predict the lower rows' features k steps ahead, InfoNCE.
"""

from keras_infobal.objectives.base import Encodings, ObjectiveTerm
from keras_infobal.objectives.dim import InfoMax
from keras_infobal.objectives.infomin import InfoMin
from keras_infobal.objectives.cmc import CMC
from keras_infobal.objectives.cpc import CPC
