"""keras-infobal: multi-view mutual-information representation learning for Keras 3.

```python
import keras_infobal as kib
backbone = kib.InfoBalBackbone(num_views=2, split="rows")
model = kib.InfoBal(backbone, critic="jsd", infomin_weight=1.0)
```
"""

# Before anything imports Keras: TensorFlow's LLVM would crash Triton on the torch backend.
from keras_infobal import backend_guard

backend_guard.protect_triton()
backend_guard.require_keras()

from keras_infobal import datasets, estimators, features, knn  # noqa: E402
from keras_infobal.layers import (  # noqa: E402
    CLUB,
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    ViewAggregator,
    ViewEncoder,
)
from keras_infobal.callbacks import AtomicModelCheckpoint, NonFiniteGuard, atomic_save  # noqa: E402
from keras_infobal.models import InfoBal, InfoBalBackbone, load_infobal  # noqa: E402

__version__ = "0.1.0"
