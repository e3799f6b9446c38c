"""Callbacks for distillation runs: schedules, a non-finite-loss stop, crash-safe backups.

- :class:`DistillationSchedule` changes the Distiller's temperature and alpha
  between epochs. Both live in non-trainable variables, so a new value takes
  effect in the next step without retracing the compiled step function.
- :class:`StopOnNonFinite` stops training at the first step whose loss is NaN
  or infinite and raises :class:`NonFiniteLossError` naming the epoch and step
  (opt-in: a per-step callback costs about 10 % of a small student's CPU step).
- :class:`AtomicBackupAndRestore` is ``keras.callbacks.BackupAndRestore`` whose
  backups are written whole or not at all: a run killed while it writes a
  backup resumes from the previous complete one.

Example:

```python
schedule = kdkeras.callbacks.DistillationSchedule(
    temperature={0: 8.0, 10: 4.0},   # epoch -> value, held until the next key
    alpha=lambda epoch: 0.1 if epoch < 10 else 0.5,
)
distiller.fit(train_ds, epochs=20, callbacks=[schedule])
```
"""

import json
import logging
import math
import os
import shutil

import keras

from kdkeras import losses as _losses
from kdkeras.atomic import atomic_directory, write_text

__all__ = [
    "AtomicBackupAndRestore",
    "DistillationSchedule",
    "NonFiniteLossError",
    "StageProgress",
    "StopOnNonFinite",
    "latest_backup_epoch",
    "linear_warmup",
    "tensorboard_stage",
]

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Schedules
# --------------------------------------------------------------------------- #
def _as_schedule(value, what):
    """Turns a constant, a dict {epoch: value} or a callable into epoch -> value."""
    if value is None or callable(value):
        return value
    if isinstance(value, dict):
        if not value or not all(isinstance(k, int) and k >= 0 for k in value):
            raise ValueError(
                f"A {what} schedule given as a dict maps epoch indices (integers >= 0) to "
                f"values; received {value!r}."
            )
        if 0 not in value:
            raise ValueError(f"A {what} schedule dict must give a value for epoch 0; received {value!r}.")
        keys = sorted(value)

        def step(epoch):
            return value[max(k for k in keys if k <= epoch)]

        return step
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return lambda epoch: value
    raise TypeError(
        f"A {what} schedule must be a number, a dict {{epoch: value}} or a callable "
        f"epoch -> value; received {value!r} of type {type(value).__name__}."
    )


class DistillationSchedule(keras.callbacks.Callback):
    """Sets the Distiller's temperature and/or alpha at the start of every epoch.

    Each value is checked (temperature > 0 and finite, alpha in [0, 1]) and
    assigned to the Distiller's non-trainable variable, so the compiled step
    function is not retraced. The values in use are added to the epoch logs as
    ``temperature`` and ``alpha`` (and so to ``History``).

    Args:
        temperature: A number, a dict ``{epoch: value}`` (piecewise constant;
            must contain epoch 0) or a callable ``epoch -> value``.
            ``None`` leaves the temperature alone.
        alpha: The weight of the hard-label loss, in the same forms.

    Example:

    ```python
    # Two stages: soft targets first, then mostly hard labels.
    schedule = DistillationSchedule(temperature={0: 8.0, 10: 2.0}, alpha={0: 0.1, 10: 0.7})
    ```
    """

    def __init__(self, temperature=None, alpha=None):
        super().__init__()
        if temperature is None and alpha is None:
            raise ValueError("DistillationSchedule needs a temperature or an alpha schedule (both are None).")
        self._temperature = _as_schedule(temperature, "temperature")
        self._alpha = _as_schedule(alpha, "alpha")

    def on_epoch_begin(self, epoch, logs=None):
        for name, schedule, check in (
            ("temperature", self._temperature, _losses.check_temperature),
            ("alpha", self._alpha, _losses.check_alpha),
        ):
            if schedule is None:
                continue
            variable = getattr(self.model, f"{name}_variable", None)
            if variable is None:
                raise TypeError(
                    f"DistillationSchedule works on a kdkeras.Distiller; {type(self.model).__name__} "
                    f"has no {name}_variable."
                )
            value = schedule(epoch)
            check(value)
            variable.assign(float(value))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name in ("temperature", "alpha"):
                variable = getattr(self.model, f"{name}_variable", None)
                if variable is not None:
                    logs[name] = float(keras.ops.convert_to_numpy(variable))


def linear_warmup(alpha, epochs):
    """A schedule that brings the distillation term in linearly over ``epochs`` epochs.

    The Distiller's loss is ``alpha * hard + (1 - alpha) * distill``; this sets
    ``alpha`` so that the distillation weight ``1 - alpha`` grows from
    ``(1 - alpha) / epochs`` in the first epoch to ``1 - alpha`` from epoch
    ``epochs`` on — the warm-up of DKD (Zhao et al., 2022), which ramps the
    distillation term over the first 20 epochs. (In the paper the hard-label
    weight stays 1; here the two weights always sum to 1.)

    Args:
        alpha: The hard-label weight after the warm-up, in [0, 1].
        epochs: Length of the warm-up in epochs (>= 1).

    Returns:
        A :class:`DistillationSchedule`.
    """
    _losses.check_alpha(alpha)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Warm-up epochs must be an integer >= 1; received {epochs!r}.")
    return DistillationSchedule(alpha=lambda epoch: 1.0 - (1.0 - alpha) * min(1.0, (epoch + 1) / epochs))


# --------------------------------------------------------------------------- #
# Non-finite loss
# --------------------------------------------------------------------------- #
class NonFiniteLossError(FloatingPointError):
    """Training stopped because a loss became NaN or infinite.

    Attributes:
        epoch: 1-based epoch in which it happened (as Keras' progress bar counts).
        step: 1-based step within that epoch.
        name: The log entry that was not finite (for example ``"loss"``).
        value: The value it had.
    """

    def __init__(self, message, epoch, step, name, value):
        super().__init__(message)
        self.epoch, self.step, self.name, self.value = epoch, step, name, value


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and says where.

    After every training step the loss entries of the logs are checked. The
    first non-finite one stops training and raises :class:`NonFiniteLossError`
    naming the epoch and the step (both 1-based), so that a diverging run never
    ends as a silently NaN model. Files written before (checkpoints, saved
    models) are not touched.

    With ``steps_per_execution > 1`` Keras reports once per call, so the step
    named is the last of the call in which the loss became non-finite.

    Typical causes: a NaN or infinite value in an input batch, a learning rate
    that makes the weights diverge, or float16 overflow in a layer.

    Args:
        monitor: Log entries to check. ``None`` checks every entry whose name
            ends in ``loss``.
    """

    def __init__(self, monitor=None):
        super().__init__()
        self.monitor = None if monitor is None else tuple(monitor)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs:
            return
        names = self.monitor or tuple(k for k in logs if k.endswith("loss"))
        for name in names:
            if name not in logs:
                continue
            value = float(keras.ops.convert_to_numpy(logs[name]))
            if not math.isfinite(value):
                self.model.stop_training = True
                epoch, step = self._epoch + 1, batch + 1
                raise NonFiniteLossError(
                    f"Training stopped: {name} became {value} at epoch {epoch}, step {step} "
                    "(both counted from 1; a Distiller also reports a NaN loss when an input batch "
                    "holds NaN or infinite values). Look for NaN or infinite values in the input "
                    "batches, or lower the learning rate; weights updated in this epoch are "
                    "not trustworthy, and files written before this step were left as they were.",
                    epoch=epoch, step=step, name=name, value=value,
                )


# --------------------------------------------------------------------------- #
# Crash-safe backups
# --------------------------------------------------------------------------- #
_LATEST = "latest.json"
_WEIGHTS = "model.weights.h5"


def _read_latest(backup_dir):
    path = os.path.join(backup_dir, _LATEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    weights = os.path.join(backup_dir, state["directory"], _WEIGHTS)
    if not os.path.exists(weights):
        raise OSError(f"The backup in {backup_dir!r} names {state['directory']!r}, which has no weights.")
    return state, weights


def latest_backup_epoch(backup_dir):
    """Returns the number of epochs completed by the newest backup in ``backup_dir`` (0 if none)."""
    found = _read_latest(backup_dir)
    return 0 if found is None else int(found[0]["epoch"])


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backups cannot be half-written.

    Keras' callback overwrites one weights file and then one metadata file, so a
    process killed in between can leave weights of epoch ``k + 1`` labelled as
    epoch ``k``. Here every backup goes to a new directory (weights and the
    epoch count together); only when it is complete does one atomic rename of
    ``latest.json`` make it current, and older backups are then removed.
    Restoring loads the model weights, the optimizer state and every
    non-trainable variable (a Distiller's temperature and alpha included) and
    makes ``fit`` continue from the first epoch that was not completed.

    Backups are made at the end of every epoch and kept after training (delete
    ``backup_dir`` when the run's outputs are safe).

    Args:
        backup_dir: Directory for the backups (created when needed).
    """

    def __init__(self, backup_dir):
        super().__init__(os.fspath(backup_dir), save_freq="epoch", delete_checkpoint=False)

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "AtomicBackupAndRestore needs a built model: call the model on a batch or "
                "build it before fit()."
            )
        found = _read_latest(self.backup_dir)
        if found is None:
            return
        state, weights = found
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = int(state["epoch"])  # how Keras' BackupAndRestore resumes fit
        _log.info("Restored the backup of epoch %d from %s", state["epoch"], self.backup_dir)

    def on_train_end(self, logs=None):
        # Keras never clears the epoch it resumed from; a later fit() must start afresh.
        self.model._initial_epoch = None
        super().on_train_end(logs)

    def _save_model(self):
        name = f"epoch-{self._current_epoch:06d}"
        with atomic_directory(os.path.join(self.backup_dir, name)) as tmp:
            os.makedirs(tmp)
            self.model.save_weights(os.path.join(tmp, _WEIGHTS))
        write_text(os.path.join(self.backup_dir, _LATEST),
                   json.dumps({"epoch": self._current_epoch, "directory": name}))
        for entry in os.listdir(self.backup_dir):
            if entry.startswith("epoch-") and entry != name:
                shutil.rmtree(os.path.join(self.backup_dir, entry), ignore_errors=True)


class StageProgress(keras.callbacks.Callback):
    """One progress bar for a whole training stage: one tick per epoch, with the latest loss and accuracy.

    Keras' own ``verbose=1`` draws a new bar every epoch and ``verbose=2``
    prints a line per epoch; for a stage of hundreds of epochs a person wants
    one bar. Use it with ``fit(verbose=0)``; the jobs do this for
    ``--verbose 1``. The bar shows ``loss`` (or a distiller's
    ``student_loss``), ``accuracy``, ``val_accuracy`` and ``agreement`` when
    the logs have them.

    Args:
        epochs: The stage's last epoch (the bar's end); a resumed stage's bar
            starts at the epoch it resumes from.
    """

    SHOWN = ("loss", "student_loss", "accuracy", "val_accuracy", "agreement")

    def __init__(self, epochs):
        super().__init__()
        self.epochs = int(epochs)
        self._bar = None

    def on_train_begin(self, logs=None):
        self._bar = keras.utils.Progbar(self.epochs, unit_name="epoch", stateful_metrics=self.SHOWN)

    def on_epoch_end(self, epoch, logs=None):
        values = [(k, float(v)) for k, v in (logs or {}).items() if k in self.SHOWN]
        self._bar.update(epoch + 1, values=values)


def tensorboard_stage(log_dir, stage, temperature=None, alpha=None):
    """Keras' TensorBoard callback writing one stage's logs under ``log_dir/stage`` (``[]`` without ``log_dir``).

    With ``temperature`` and ``alpha`` (a distilled stage) a constant
    :class:`DistillationSchedule` comes first, so that both are in the epoch
    logs TensorBoard shows.
    """
    if not log_dir:
        return []
    board = keras.callbacks.TensorBoard(log_dir=os.path.join(log_dir, stage), write_graph=False)
    if temperature is None:
        return [board]
    return [DistillationSchedule(temperature=temperature, alpha=alpha), board]
