"""kdkeras: knowledge distillation for Keras 3 on TensorFlow.

The public API::

    import kdkeras
    teacher = kdkeras.build_teacher()
    student = kdkeras.build_student()
    train_ds, test_ds = kdkeras.load_mnist(source="auto", batch_size=64)
    distiller = kdkeras.Distiller(student=student, teacher=teacher)

Importing kdkeras imports TensorFlow and registers kdkeras' Keras classes (so
``keras.models.load_model`` finds them), except in the command-line entry
points, which load it on first use so that ``--help`` answers at once.
"""

import importlib
import os
import sys

__version__ = "0.2.0"

# name -> module that defines it
_EXPORTS = {
    "Distiller": "kdkeras.distiller",
    "FeatureDistiller": "kdkeras.features",
    "MutualLearning": "kdkeras.mutual",
    "born_again": "kdkeras.mutual",
    "ProbabilityTeacher": "kdkeras.teachers",
    "FitImages": "kdkeras.data.images",
    "TeacherEnsemble": "kdkeras.teachers",
    "Recipe": "kdkeras.recipe",
    "LMRecipe": "kdkeras.lm_recipe",
    "EncoderRecipe": "kdkeras.encoder_recipe",
    "DatasetUnavailableError": "kdkeras.data",
    "cache_teacher_logits": "kdkeras.data",
    "load_mnist": "kdkeras.data",
    "load_mnist_arrays": "kdkeras.data",
    "make_dataset": "kdkeras.data",
    "validation_split": "kdkeras.data",
    "multiworker_compatible": "kdkeras.distribute",
    "OnPolicy": "kdkeras.sampling",
    "TokenChunking": "kdkeras.token_chunks",
    "build_cnn": "kdkeras.models",
    "build_mlp": "kdkeras.models",
    "build_student": "kdkeras.models",
    "build_teacher": "kdkeras.models",
}
_SUBMODULES = ("atomic", "augment", "callbacks", "checks", "data", "distiller", "distribute", "encoder_recipe",
               "evaluation", "experiment", "export", "features", "language", "lm_recipe", "losses", "models", "mutual", "plotting", "provenance",
               "recipe", "sampling", "soft_targets", "teachers", "terms", "text", "token_chunks")
# Submodules that need an extra (pip install "kdkeras[tune]"): imported on first use only.
_OPTIONAL = ("tuning",)
# Entry points that parse their arguments before TensorFlow is needed.
_COMMANDS = ("kdkeras-train-mnist", "train_mnist.py", "train_text.py", "train_text_classifier.py",
             "kdkeras", "__main__.py", "-m")  # -m: python -m kdkeras

__all__ = sorted(_EXPORTS) + ["augment", "callbacks", "data", "evaluation", "experiment", "export", "language", "losses",
                              "plotting", "sampling", "teachers", "terms", "token_chunks"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES or name in _OPTIONAL:
        return importlib.import_module(f"kdkeras.{name}")
    raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES) | set(_OPTIONAL))


def _load_all():
    for name in _EXPORTS:
        __getattr__(name)
    for name in _SUBMODULES:
        __getattr__(name)


if os.path.basename(sys.argv[0] if sys.argv else "") not in _COMMANDS:
    _load_all()
