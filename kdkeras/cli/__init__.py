"""The command line: one ``kdkeras`` command with a module per subcommand.

- :mod:`kdkeras.cli.dispatch`: ``kdkeras train-mnist | train-text | train-classifier | distill | distill-lm |
  cache-teacher | tune``.
- :mod:`kdkeras.cli.train_mnist`: the MNIST main job (``scripts/train_mnist.py``,
  ``kdkeras-train-mnist``).
- :mod:`kdkeras.cli.train_text`: the language-model main job (``scripts/train_text.py``).
- :mod:`kdkeras.cli.train_classifier`: the text-classification job (``scripts/train_text_classifier.py``).
- :mod:`kdkeras.cli.distill`, :mod:`kdkeras.cli.tune`: your own models and data
  (what they share: :mod:`kdkeras.cli.own_data`).
- :mod:`kdkeras.cli.common`: one-line errors, the output folder, the quiet TensorFlow import.

Every module parses its flags before TensorFlow is imported, so ``--help``
answers at once. The MNIST job's entry point and helpers are also importable
from this package (``kdkeras.cli.main`` runs the MNIST job).
"""

from kdkeras.cli.common import (EXIT_USAGE, TrainingFailed, UserError, check_distillation_args, quiet_native_stderr,
                                tensorboard_callbacks)
from kdkeras.cli.train_mnist import (_check_args, build_parser, load_teachers, main, make_strategy,  # noqa: F401
                                     recipe_from_args, run)

__all__ = ["EXIT_USAGE", "TrainingFailed", "UserError", "build_parser", "check_distillation_args", "load_teachers",
           "main", "make_strategy", "quiet_native_stderr", "recipe_from_args", "run", "tensorboard_callbacks"]
