"""kdkeras: knowledge distillation for Keras 3 on TensorFlow.

The public API::

    import kdkeras
    teacher = kdkeras.build_teacher()
    student = kdkeras.build_student()
    train_ds, test_ds = kdkeras.load_mnist(source="auto", batch_size=64)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)
"""

from kdkeras import augment, callbacks, losses
from kdkeras.data import (
    DatasetUnavailableError,
    cache_teacher_logits,
    load_mnist,
    load_mnist_arrays,
    make_dataset,
)
from kdkeras.distiller import Distiller
from kdkeras.distribute import multiworker_compatible
from kdkeras.features import FeatureDistiller
from kdkeras.mutual import MutualLearning, born_again
from kdkeras.models import build_cnn, build_student, build_teacher

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "DatasetUnavailableError",
    "FeatureDistiller",
    "MutualLearning",
    "born_again",
    "build_cnn",
    "build_student",
    "build_teacher",
    "augment",
    "callbacks",
    "cache_teacher_logits",
    "load_mnist",
    "load_mnist_arrays",
    "losses",
    "make_dataset",
    "multiworker_compatible",
]
