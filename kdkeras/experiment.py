"""The main job's stages as a public API: train a teacher, a student from scratch, a distilled student.

Each stage takes the models, the training arrays and one :class:`kdkeras.Recipe`,
trains with the recipe's batch order (a function of the seed and the epoch),
augmentation, optimizer and schedule, and returns a :class:`StageResult`
(the trained model and its per-epoch history). With a :class:`RunState` a
stage backs itself up after every epoch, saves its model when done, and on
``resume`` loads a finished model or continues an interrupted one from its
last completed epoch. ``scripts/train_mnist.py``, ``scripts/recipe_probe.py``,
``scripts/compare_methods.py`` and the notebook all train through these
functions.

Example:

```python
recipe = kdkeras.Recipe(teacher_steps=2000, student_steps=2000, seed=0)  # or teacher_epochs=, student_epochs=
(x, y), (x_test, y_test) = kdkeras.load_mnist_arrays("sample")
teacher = kdkeras.experiment.train_teacher(kdkeras.build_teacher(seed=0), (x, y), recipe).model
scratch = kdkeras.experiment.train_scratch(kdkeras.build_student(seed=0), (x, y), recipe).model
distilled = kdkeras.experiment.distil(kdkeras.build_student(seed=0), teacher, (x, y), recipe).model
```
"""

import contextlib
import json
import logging
import os
import shutil
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from kdkeras import augment as augment_module
from kdkeras.atomic import save_model, write_text
from kdkeras.callbacks import AtomicBackupAndRestore, StageProgress, StopOnNonFinite, latest_backup_epoch
from kdkeras.data import fixed_epoch_order, make_dataset, teacher_logit_arrays
from kdkeras.distiller import Distiller, cached_batch
from kdkeras.distribute import multiworker_compatible

logger = logging.getLogger(__name__)

__all__ = ["RunState", "StageResult", "distil", "fit_stage", "train_scratch", "train_teacher"]

#: Stage names, in the order the main job runs them.
STAGES = ("teacher", "scratch", "distilled")


class StageResult(NamedTuple):
    """A trained model and its history (``{log name: [value per epoch]}``)."""

    model: object
    history: dict


# --------------------------------------------------------------------------- #
# The three stages
# --------------------------------------------------------------------------- #
def train_teacher(teacher, train, recipe, *, validation_data=None, state=None, strategy=None, verbose=2,
                  callbacks=()):
    """Trains the teacher on the hard labels, with the recipe's augmentation (no mixup).

    Args:
        teacher: An uncompiled ``keras.Model`` (logits out), built under ``strategy``'s scope.
        train: ``(x, y)`` training arrays, integer labels.
        recipe: A :class:`kdkeras.Recipe`.
        validation_data: Optional ``(x, y)`` arrays evaluated after every epoch.
        state: Optional :class:`RunState` (backups, saving, resume).
        strategy: Optional ``tf.distribute`` strategy (default: the current one).
        verbose: 0 silent, 1 one progress bar for the stage, 2 a line per epoch.
        callbacks: Extra Keras callbacks.

    Returns:
        A :class:`StageResult`.
    """
    return _train_alone("teacher", teacher, train, recipe, recipe.epochs("teacher", len(train[0])), mixup=0.0,
                        validation_data=validation_data, state=state, strategy=strategy, verbose=verbose,
                        callbacks=callbacks)


def train_scratch(student, train, recipe, *, validation_data=None, state=None, strategy=None, verbose=2,
                  callbacks=()):
    """Trains the student from scratch on the hard labels: the baseline of the distilled student.

    Same arguments as :func:`train_teacher`; the student gets the students'
    epochs and augmentation (mixup included), so the two students differ in
    the loss alone.
    """
    return _train_alone("scratch", student, train, recipe, recipe.epochs("student", len(train[0])), mixup=recipe.mixup,
                        validation_data=validation_data, state=state, strategy=strategy, verbose=verbose,
                        callbacks=callbacks)


def distil(student, teacher, train, recipe, *, validation_data=None, state=None, strategy=None, verbose=2,
           callbacks=(), distillation_loss_fn=None, distiller_class=Distiller, teacher_logits=None,
           **distiller_kwargs):
    """Distils ``teacher`` into ``student`` with a :class:`kdkeras.Distiller`.

    The teacher runs online on the student's augmented views when the recipe
    augments, and is otherwise run once to cache its logits (``recipe.cache``).

    Args:
        student: An uncompiled student ``keras.Model``.
        teacher: The trained teacher.
        train, recipe, validation_data, state, strategy, verbose, callbacks: As in :func:`train_teacher`.
        distillation_loss_fn: Overrides ``recipe.loss`` with a loss function
            (for experiments with losses that are not registered).
        distiller_class: :class:`kdkeras.Distiller` or a subclass such as
            :class:`kdkeras.FeatureDistiller`; ``**distiller_kwargs`` go to it.
        teacher_logits: Optional teacher logits for ``train``'s inputs, computed
            earlier (e.g. once for every trial of a search); the teacher is then
            not run. Only for recipes that do not augment.

    Returns:
        A :class:`StageResult` whose model is the student (not the Distiller).
    """
    if state is not None and state.finished("distilled"):
        return state.load("distilled", strategy)
    epochs = recipe.epochs("student", len(train[0]))
    keras.utils.set_random_seed(recipe.seed)
    with _scope(strategy):
        distiller = distiller_class(student=student, teacher=teacher, **distiller_kwargs)
        distiller.compile(optimizer=_adam(recipe, epochs, len(train[0])),
                          metrics=[_accuracy_metric(recipe)], student_loss_fn=_hard_loss(recipe),
                          distillation_loss_fn=distillation_loss_fn or recipe.loss, alpha=recipe.alpha,
                          temperature=recipe.temperature,
                          steps_per_execution=_steps_per_call(recipe, len(train[0]), strategy))
    elements = _labelled(train, recipe)
    needs_teacher_features = any(term.teacher_layers for term in distiller.loss_terms)
    if teacher_logits is not None:
        elements = _with_logits(elements, teacher_logits, recipe, needs_teacher_features)
    elif recipe.cache and not recipe.augmented and not needs_teacher_features:
        elements = teacher_logit_arrays(teacher, elements, batch_size=recipe.batch_size)
    history = _fit(distiller, "distilled", elements, recipe, epochs, recipe.mixup, validation_data,
                   state, verbose, callbacks, saved_model=student)
    return StageResult(student, history)


def _with_logits(elements, teacher_logits, recipe, needs_teacher_features):
    """The cached-batch elements of ``(x, y)`` with logits computed earlier, after checking they can serve."""
    if recipe.augmented or needs_teacher_features:
        raise ValueError("teacher_logits cannot serve a recipe that augments its inputs or a loss on teacher "
                         "features: the teacher must run online.")
    x, y = elements
    logits = tf.convert_to_tensor(teacher_logits)
    if logits.shape[0] != len(x):
        raise ValueError(f"teacher_logits has {logits.shape[0]} rows but train has {len(x)} examples.")
    return (cached_batch(tf.convert_to_tensor(x), logits), y)


def _train_alone(key, model, train, recipe, epochs, mixup, *, validation_data, state, strategy, verbose, callbacks):
    if state is not None and state.finished(key):
        return state.load(key, strategy)
    keras.utils.set_random_seed(recipe.seed)
    with _scope(strategy):
        model = multiworker_compatible(model)
        model.compile(optimizer=_adam(recipe, epochs, len(train[0])), loss=_hard_loss(recipe),
                      metrics=[_accuracy_metric(recipe)],
                      steps_per_execution=_steps_per_call(recipe, len(train[0]), strategy))
    history = _fit(model, key, _labelled(train, recipe), recipe, epochs, mixup, validation_data, state, verbose,
                   callbacks, saved_model=model)
    return StageResult(model, history)


# --------------------------------------------------------------------------- #
# What the stages share
# --------------------------------------------------------------------------- #
def _scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _steps_per_call(recipe, num_examples, strategy):
    """``steps_per_execution`` for a stage: the recipe's, or 1 under a strategy with several replicas.

    Keras 3.15's multi-step loop fails to run under ``MirroredStrategy`` and
    ``MultiWorkerMirroredStrategy`` with more than one replica ("You must feed a
    value for placeholder tensor ..."), so distributed stages take one step per
    call; the updates are the same either way.
    """
    active = strategy if strategy is not None else tf.distribute.get_strategy()
    if active.num_replicas_in_sync > 1:
        if recipe.steps_per_execution > 1:
            logger.info("%d replicas: one train step per call (steps_per_execution=%d is not used).",
                        active.num_replicas_in_sync, recipe.steps_per_execution)
        return 1
    return recipe.execution_steps(num_examples)


def _labelled(arrays, recipe):
    """``(x, y)`` with the labels the losses expect: one-hot rows with mixup, else integers."""
    x, y = arrays[0], np.asarray(arrays[1])
    if recipe.soft_labels and y.ndim == 1:
        y = np.eye(recipe.num_classes, dtype="float32")[y]
    return (x, y)


def _hard_loss(recipe):
    if recipe.soft_labels:
        return keras.losses.CategoricalCrossentropy(from_logits=True)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _accuracy_metric(recipe):
    if recipe.soft_labels:
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def _adam(recipe, epochs, num_examples):
    if recipe.lr_schedule == "cosine":
        steps = epochs * recipe.steps_per_epoch(num_examples)
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps))
    return keras.optimizers.Adam(recipe.learning_rate)


def _augmenter(recipe, mixup):
    """``f(dataset, initial_step)`` applying the recipe's augmentation, or ``None`` without any."""
    if not (recipe.shift or recipe.rotation or mixup):
        return None
    return lambda ds, initial_step: augment_module.augment(
        ds, recipe.seed, max_shift=recipe.shift, max_rotation=recipe.rotation, mixup_strength=mixup or None,
        num_classes=recipe.num_classes, initial_step=initial_step)


def _data_options():
    options = tf.data.Options()
    # In-memory arrays cannot be split by file: every worker takes its share of each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def _fit(fit_model, key, elements, recipe, epochs, mixup, validation_data, state, verbose, callbacks, saved_model):
    """Fits for ``epochs`` in the recipe's batch order (continuing from a backup); returns the history."""
    done = state.completed_epochs(key) if state is not None else 0
    # Every epoch's order is a function of (seed, epoch): a resumed run sees the
    # batches that the interrupted run would have seen, and the same augmented views.
    first_epoch = min(done, epochs - 1)
    data, steps = fixed_epoch_order(elements, recipe.batch_size, epochs, recipe.seed, initial_epoch=first_epoch)
    augment = _augmenter(recipe, mixup)
    if augment is not None:
        data = augment(data, first_epoch * steps)
    validation = None
    if validation_data is not None:
        validation = make_dataset(*_labelled(validation_data, recipe), recipe.batch_size).with_options(_data_options())
    return fit_stage(fit_model, key, data.with_options(_data_options()), epochs, steps, done, state=state,
                     verbose=verbose, callbacks=callbacks, saved_model=saved_model, validation_data=validation)


def fit_stage(fit_model, key, data, epochs, steps_per_epoch, done=0, *, state=None, verbose=2, callbacks=(),
              saved_model=None, validation_data=None):
    """Fits one stage on ``data`` (already starting at epoch ``done``) with the jobs' callbacks; returns its history.

    The callbacks: the per-epoch log (continuing the ``done`` epochs before),
    the stage's backup when a :class:`RunState` is given, the stop on a
    non-finite loss, ``callbacks``, and with ``verbose=1`` one progress bar
    for the stage. With a state the finished ``saved_model`` is saved.
    """
    log = EpochLog(state.epochs_path(key) if state is not None else None, state.previous_epochs(key, done)
                   if state is not None else {})
    # Order matters: the epoch log is written before the backup that vouches for it.
    stage_callbacks = [log, *(state.backup_callbacks(key) if state is not None else []), StopOnNonFinite(),
                       *callbacks]
    if verbose == 1:  # one bar for the whole stage instead of one per epoch
        stage_callbacks.append(StageProgress(epochs))
    fit_model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                  verbose=0 if verbose == 1 else verbose, callbacks=stage_callbacks,
                  shuffle=False)  # the datasets order themselves, with their seed
    if state is not None:
        state.finish(key, saved_model, log.history)
    return log.history


class EpochLog(keras.callbacks.Callback):
    """Keeps the per-epoch logs (continuing ``previous``), rewritten atomically to ``path`` if given."""

    def __init__(self, path=None, previous=None):
        super().__init__()
        self.path = path
        self.history = {k: list(v) for k, v in (previous or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.path is not None:
            write_text(self.path, json.dumps(self.history))


# --------------------------------------------------------------------------- #
# Backups, saving and resume
# --------------------------------------------------------------------------- #
class RunState:
    """Where a run keeps its models and per-stage state, so that it can resume.

    Per stage, ``state_dir`` holds the backup of the last completed epoch
    (``<stage>/``, see :class:`kdkeras.callbacks.AtomicBackupAndRestore`), the
    per-epoch logs so far (``<stage>.epochs.json``) and, once the model is
    saved in ``out_dir``, ``<stage>.done.json`` with its history. Without
    ``resume`` the state directory is cleared first.

    Args:
        out_dir: Where the finished models are saved (``model_files`` names them).
        resume: Load finished stages and continue an interrupted one.
        model_files: ``{stage: file name}``; default ``teacher.keras``,
            ``student_scratch.keras`` and ``student.keras``.
        state_dir: Default ``out_dir/.kdkeras-state``.
    """

    MODEL_FILES = {"teacher": "teacher.keras", "scratch": "student_scratch.keras", "distilled": "student.keras"}

    def __init__(self, out_dir, resume=False, model_files=None, state_dir=None):
        self.out_dir, self.resume = out_dir, resume
        self.model_files = dict(model_files or self.MODEL_FILES)
        self.root = state_dir or os.path.join(out_dir, ".kdkeras-state")
        if not resume:
            shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)

    def _path(self, key, suffix):
        return os.path.join(self.root, key + suffix)

    def model_path(self, key):
        """Where the stage's finished model is saved."""
        return os.path.join(self.out_dir, self.model_files[key])

    def epochs_path(self, key):
        """The JSON file of the stage's per-epoch logs so far."""
        return self._path(key, ".epochs.json")

    def finished(self, key):
        """Whether ``resume`` can load this stage's finished model."""
        return self.resume and os.path.exists(self._path(key, ".done.json")) and os.path.exists(self.model_path(key))

    def load(self, key, strategy=None):
        """The finished stage's model (loaded with ``safe_mode``) and history."""
        with _scope(strategy):
            model = multiworker_compatible(keras.models.load_model(self.model_path(key)))
        with open(self._path(key, ".done.json"), encoding="utf-8") as f:
            history = json.load(f)
        logger.info("%s: finished earlier; loaded %s", key, self.model_path(key))
        return StageResult(model, history)

    def completed_epochs(self, key):
        """Epochs completed by the stage's newest backup (0 without ``resume`` or a backup)."""
        return latest_backup_epoch(self._path(key, "")) if self.resume else 0

    def previous_epochs(self, key, done):
        """The per-epoch logs of the first ``done`` epochs of an interrupted stage."""
        if not done:
            return {}
        with open(self.epochs_path(key), encoding="utf-8") as f:
            return {k: v[:done] for k, v in json.load(f).items()}

    def backup_callbacks(self, key):
        """The callbacks that back the stage up after every epoch (and restore it on resume)."""
        return [AtomicBackupAndRestore(self._path(key, ""))]

    def backup_dir(self, key):
        """The stage's backup directory."""
        return self._path(key, "")

    def finish(self, key, model, history):
        """Saves the finished model and its history, then drops the stage's backup."""
        save_model(model, self.model_path(key))
        write_text(self._path(key, ".done.json"), json.dumps(history))
        shutil.rmtree(self._path(key, ""), ignore_errors=True)
        if os.path.exists(self.epochs_path(key)):
            os.remove(self.epochs_path(key))
