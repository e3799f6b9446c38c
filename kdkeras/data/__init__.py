"""The data layer: MNIST sources, in-memory pipelines and the teacher-logit cache.

- :mod:`kdkeras.data.mnist`: where the digits come from (tensorflow-datasets,
  the bundled 5,000-digit sample, ``.npz`` files) and the seeded validation split.
- :mod:`kdkeras.data.pipeline`: batched ``tf.data`` pipelines over in-memory
  arrays, and epochs in an order fixed by ``(seed, epoch)``.
- :mod:`kdkeras.data.cache`: the teacher runs once; batches carry its logits.

The distillers never import this package: they work on any dataset.
"""

from kdkeras.data.cache import cache_teacher_logits, teacher_logit_arrays
from kdkeras.data.mnist import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    DatasetUnavailableError,
    load_mnist,
    load_mnist_arrays,
    sample_path,
)
from kdkeras.data.pipeline import (
    batched_dataset,
    fixed_epoch_order,
    make_dataset,
    steps_per_epoch,
    stratified_indices,
    validation_split,
)

__all__ = [
    "DatasetUnavailableError",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "batched_dataset",
    "cache_teacher_logits",
    "fixed_epoch_order",
    "load_mnist",
    "load_mnist_arrays",
    "make_dataset",
    "sample_path",
    "steps_per_epoch",
    "stratified_indices",
    "teacher_logit_arrays",
    "validation_split",
]
