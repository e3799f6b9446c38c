"""Choosing temperature, alpha, loss and learning rate on validation data, with KerasTuner.

A search distils a fresh copy of the student (always from the same initial
weights, with the recipe's seed, so trials differ in their settings alone) for
every trial, scores it on a validation split carved from the training data, and
keeps the trained student of every trial. The teacher runs once: its logits for
the training inputs are cached and shared by all trials when the recipe does
not augment. The test split is not an argument of anything here; evaluate the
chosen student on it once, after the search.

Needs KerasTuner: ``pip install "kdkeras[tune]"``.

Example:

```python
train, val = kdkeras.validation_split(x, y, size=0.1, seed=0)
hypermodel = kdkeras.tuning.DistillationHyperModel(
    student, teacher, kdkeras.Recipe(student_epochs=10, shift=0, rotation=0),
    temperatures=(2, 4, 8, 16), alphas=(0.0, 0.1, 0.5))
tuner = kdkeras.tuning.DistillationTuner(hypermodel, max_trials=8, directory="runs/tune")
tuner.search(train, validation_data=val)
best_student = tuner.get_best_models(1)[0]  # trained; evaluate it on the test split once
best_settings = tuner.get_best_hyperparameters(1)[0].values
```
"""

import logging
import math
import os
import time

import keras
import numpy as np

try:
    import keras_tuner as kt
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError('kdkeras.tuning needs KerasTuner: pip install keras-tuner (or pip install "kdkeras[tune]").'
                      ) from e

from kdkeras import evaluation, experiment
from kdkeras import losses as kd_losses
from kdkeras.atomic import save_model
from kdkeras.data import teacher_logit_arrays

logger = logging.getLogger(__name__)

__all__ = ["ALGORITHMS", "DistillationHyperModel", "DistillationTuner", "OBJECTIVE", "trial_table"]

#: What a search maximizes: the distilled student's accuracy on the validation split after training.
OBJECTIVE = kt.Objective("val_accuracy", direction="max")
#: Search algorithms by name (KerasTuner oracles).
ALGORITHMS = ("random", "bayesian", "grid")
#: The file each trial's trained student is saved to, inside the trial's directory.
STUDENT_FILE = "student.keras"


class DistillationHyperModel(kt.HyperModel):
    """The search space and one trial: distil a fresh copy of ``student`` with a trial's settings.

    Every setting not searched comes from ``recipe`` (budget, batch size,
    augmentation, schedule, seed). Each searched setting is a
    ``hp.Choice`` over the given values; pass one value to fix it.

    Args:
        student: The untrained student ``keras.Model`` (each trial trains a
            clone that starts from these weights).
        teacher: The trained teacher (logits out).
        recipe: A :class:`kdkeras.Recipe`.
        temperatures: Values of ``T`` to try.
        alphas: Values of ``alpha`` (weight of the hard-label loss) to try;
            ``1.0`` is the student trained on hard labels alone.
        losses: Distillation loss names (:func:`kdkeras.losses.available`).
        learning_rates: Adam learning rates to try.
    """

    def __init__(self, student, teacher, recipe, *, temperatures=(1.0, 2.0, 4.0, 8.0, 16.0, 20.0),
                 alphas=(0.0, 0.1, 0.5), losses=("kl",), learning_rates=(1e-3, 3e-3), name="distillation"):
        super().__init__(name=name, tunable=True)
        self.temperatures = _values("temperatures", temperatures, float, kd_losses.check_temperature)
        self.alphas = _values("alphas", alphas, float, kd_losses.check_alpha)
        self.losses = _values("losses", losses, str, kd_losses.get)
        self.learning_rates = _values("learning_rates", learning_rates, float, _check_learning_rate)
        self.student, self.teacher, self.recipe = student, teacher, recipe
        self._initial_weights = student.get_weights()

    def build(self, hp):
        """Declares the search space in ``hp`` and returns an untrained copy of the student."""
        hp.Choice("temperature", self.temperatures, ordered=True)
        hp.Choice("alpha", self.alphas, ordered=True)
        hp.Choice("loss", self.losses)
        hp.Choice("learning_rate", self.learning_rates, ordered=True)
        try:
            model = keras.models.clone_model(self.student)
        except Exception as e:  # noqa: BLE001 - subclassed models without get_config cannot be cloned
            raise ValueError(f"The student cannot be cloned for each trial ({e}); build it with the functional "
                             "API or give it get_config/from_config.") from None
        model.set_weights(self._initial_weights)
        return model

    def recipe_for(self, hp):
        """The recipe of a trial: ``recipe`` with the trial's temperature, alpha, loss and learning rate."""
        return self.recipe.replace(temperature=hp.get("temperature"), alpha=hp.get("alpha"), loss=hp.get("loss"),
                                   learning_rate=hp.get("learning_rate"))

    def fit(self, hp, model, train, validation_data, teacher_logits=None, callbacks=(), verbose=0):
        """Distils ``model`` with the trial's recipe; returns its validation accuracy and training time."""
        start = time.perf_counter()
        experiment.distil(model, self.teacher, train, self.recipe_for(hp), teacher_logits=teacher_logits,
                          callbacks=list(callbacks), verbose=verbose)
        seconds = time.perf_counter() - start
        return {OBJECTIVE.name: evaluation.accuracy(model, *validation_data), "train_seconds": seconds}


class DistillationTuner(kt.Tuner):
    """A KerasTuner tuner whose trials distil a student; it keeps every trial's trained student.

    ``get_best_models`` returns the trained students of the best trials (loaded
    with ``safe_mode`` from each trial's directory); ``get_best_hyperparameters``
    their settings; ``results_summary`` and :func:`trial_table` list them all.
    ``overwrite=False`` continues a search found in ``directory``.

    Args:
        hypermodel: A :class:`DistillationHyperModel`.
        algorithm: ``"random"``, ``"bayesian"`` or ``"grid"`` (every combination,
            in order, up to ``max_trials``).
        max_trials: Trials to run (``None`` with ``"grid"``: all combinations).
        seed: Seed of the search algorithm (default: the recipe's seed).
        directory, project_name, overwrite: As in ``keras_tuner.Tuner``.
    """

    def __init__(self, hypermodel, *, algorithm="random", max_trials=10, seed=None, directory=None,
                 project_name="kdkeras_tune", overwrite=False):
        if not isinstance(hypermodel, DistillationHyperModel):
            raise TypeError(f"hypermodel must be a DistillationHyperModel; received {type(hypermodel).__name__}.")
        seed = hypermodel.recipe.seed if seed is None else seed
        super().__init__(oracle=_oracle(algorithm, max_trials, seed), hypermodel=hypermodel, directory=directory,
                         project_name=project_name, overwrite=overwrite)
        self.algorithm = algorithm

    def search(self, train, validation_data, verbose=1, callbacks=()):
        """Runs the trials on ``train``, scoring each on ``validation_data`` (both ``(x, y)`` arrays).

        The teacher's logits for ``train`` are computed once here and shared by
        every trial (unless the recipe augments, when the teacher runs online).
        Raises ``RuntimeError`` if no trial completes.
        """
        train, validation_data = _arrays(train, "train"), _arrays(validation_data, "validation_data")
        recipe = self.hypermodel.recipe
        logits = None
        if recipe.cache and not recipe.augmented:
            start = time.perf_counter()
            logits = teacher_logit_arrays(self.hypermodel.teacher, train, batch_size=recipe.batch_size)[0][
                "teacher_logits"]
            self.cache_seconds = time.perf_counter() - start
        super().search(train, validation_data=validation_data, teacher_logits=logits, verbose=verbose,
                       callbacks=list(callbacks))
        trials = self.oracle.trials.values()
        if not any(t.status == "COMPLETED" for t in trials):
            failed = [t for t in trials if t.message]
            raise RuntimeError("No trial completed." + (f" The first failure:\n{failed[0].message}" if failed else ""))

    def run_trial(self, trial, train, validation_data, teacher_logits=None, verbose=0, callbacks=()):
        """Builds, distils and scores one trial's student, saves it in the trial's directory; returns its metrics."""
        hp = trial.hyperparameters
        model = self.hypermodel.build(hp)
        logger.info("Trial %s: %s", trial.trial_id, hp.values)
        metrics = self.hypermodel.fit(hp, model, train, validation_data, teacher_logits=teacher_logits,
                                      callbacks=callbacks, verbose=0 if verbose < 2 else 2)
        self.save_model(trial.trial_id, model)
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Saves a trial's trained student (atomically) as ``student.keras`` in its directory."""
        save_model(model, os.path.join(self.get_trial_dir(trial_id), STUDENT_FILE))

    def load_model(self, trial):
        """A trial's trained student, loaded with ``safe_mode``."""
        return keras.models.load_model(os.path.join(self.get_trial_dir(trial.trial_id), STUDENT_FILE))


def trial_table(tuner):
    """Every trial as a dict (id, status, settings, validation accuracy, seconds), best first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        metrics = {name: float(trial.metrics.get_best_value(name)) for name in (OBJECTIVE.name, "train_seconds")
                   if trial.metrics.exists(name)}
        rows.append({"trial": trial.trial_id, "status": trial.status, **trial.hyperparameters.values, **metrics})
    return sorted(rows, key=lambda r: (-(r.get(OBJECTIVE.name) if r.get(OBJECTIVE.name) is not None else -1),
                                       r["trial"]))


def _oracle(algorithm, max_trials, seed):
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}; received {algorithm!r}.")
    if max_trials is None and algorithm != "grid":
        raise ValueError(f'max_trials=None (every combination) needs algorithm="grid"; received {algorithm!r}.')
    if max_trials is not None and (not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1):
        raise ValueError(f"max_trials must be an integer >= 1; received {max_trials!r}.")
    cls = {"random": kt.oracles.RandomSearchOracle, "bayesian": kt.oracles.BayesianOptimizationOracle,
           "grid": kt.oracles.GridSearchOracle}[algorithm]
    return cls(objective=OBJECTIVE, max_trials=max_trials, seed=seed)


def _values(name, values, kind, check):
    values = [values] if isinstance(values, (str, int, float)) else list(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value.")
    out = []
    for v in values:
        try:
            v = kind(v)
            check(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None
        if v not in out:
            out.append(v)
    return out


def _check_learning_rate(lr):
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"a learning rate must be a positive number; received {lr!r}.")


def _arrays(data, name):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be (x, y) arrays; received {type(data).__name__}.")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name} must hold as many labels as inputs, at least one; received {len(x)} and {len(y)}.")
    return x, y
