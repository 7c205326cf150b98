"""keras-infobal: multi-view mutual-information representation learning for Keras 3.

```python
import keras_infobal as kib
model = kib.InfoBal(num_views=2, split="rows", infomin_weight=1.0)
```
"""

from keras_infobal import datasets, estimators, features, knn
from keras_infobal.layers import (
    CLUB,
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    ViewAggregator,
    ViewEncoder,
)
from keras_infobal.callbacks import AtomicModelCheckpoint, NonFiniteGuard, atomic_save
from keras_infobal.models import InfoBal, load_infobal

InfoBalModel = InfoBal

__version__ = "0.1.0"
