"""Faults survived in-process: resume from backups, NaN/Inf and divergence stops, schedules."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.shared import make_distiller

import kdkeras
from kdkeras.callbacks import (
    AtomicBackupAndRestore,
    DistillationSchedule,
    NonFiniteLossError,
    latest_backup_epoch,
)

EPOCHS = 4


def student_weights(distiller):
    return np.concatenate([v.numpy().ravel() for v in distiller.student.weights])


class CrashAt(keras.callbacks.Callback):
    """Stands in for a killed process: raises when epoch ``epoch`` (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated crash")


def fixed_order(data, seed, initial_epoch=0):
    return kdkeras.data.fixed_epoch_order(data, 64, EPOCHS, seed, initial_epoch=initial_epoch)


@pytest.fixture(scope="module")
def data(sample_arrays):
    (x, y), _ = sample_arrays
    return x[:640], y[:640]


@pytest.mark.parametrize("backup_cls", [keras.callbacks.BackupAndRestore, AtomicBackupAndRestore])
def test_backup_and_restore_resumes_where_the_run_stopped(backup_cls, trained_teacher, data, tmp_path,
                                                          reliability):
    """Killed after epoch 2, resumed: same weights, optimizer state and temperature as never stopped."""
    schedule = DistillationSchedule(temperature={0: 3.0, 1: 5.0})  # T changes before the crash

    ref = make_distiller(trained_teacher)
    ds, steps = fixed_order(data, seed=1)
    ref.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=0, callbacks=[schedule])

    backup_dir = str(tmp_path / "backup")
    first = make_distiller(trained_teacher)
    ds, steps = fixed_order(data, seed=1)
    with pytest.raises(KeyboardInterrupt):
        first.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=0,
                  callbacks=[DistillationSchedule(temperature={0: 3.0, 1: 5.0}), backup_cls(backup_dir),
                             CrashAt(2)])

    # A new process: a fresh distiller compiled with T = 3 and no schedule.
    resumed = make_distiller(trained_teacher, temperature=3.0)
    ds, steps = fixed_order(data, seed=1, initial_epoch=2)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("first_epoch", epoch)
            seen.setdefault("temperature", float(self.model.temperature_variable.numpy()))
            seen.setdefault("iterations", int(self.model.optimizer.iterations.numpy()))

    history = resumed.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=0,
                          callbacks=[backup_cls(backup_dir), Probe()])
    assert seen == {"first_epoch": 2, "temperature": 5.0, "iterations": 2 * steps}
    assert len(history.history["loss"]) == EPOCHS - 2
    assert int(resumed.optimizer.iterations.numpy()) == int(ref.optimizer.iterations.numpy())
    diff = np.abs(student_weights(resumed) - student_weights(ref)).max()
    assert diff < 1e-6
    assert np.abs(student_weights(resumed) - student_weights(first)).max() > 1e-3  # it did train on
    reliability("fault survived", f"crash after epoch 2 of {EPOCHS}, resumed with {backup_cls.__name__}",
                max_weight_diff=float(diff))


def test_fixed_epoch_order_is_a_function_of_seed_and_epoch(sample_arrays):
    (x, y), _ = sample_arrays
    base = (x[:200], np.arange(200))

    def epochs(initial):
        ds, steps = kdkeras.data.fixed_epoch_order(base, 50, 3, seed=7, initial_epoch=initial)
        labels = np.concatenate([b[1].numpy() for b in ds])
        return labels.reshape(-1, 200), steps

    full, steps = epochs(0)
    tail, _ = epochs(1)
    assert steps == 4
    assert np.array_equal(full[1:], tail)
    assert all(sorted(e) == list(range(200)) for e in full)  # each epoch is a permutation
    assert not np.array_equal(full[0], full[1])
    with pytest.raises(ValueError, match="initial_epoch"):
        kdkeras.data.fixed_epoch_order(base, 50, 3, seed=0, initial_epoch=3)
    with pytest.raises(TypeError, match="arrays"):
        kdkeras.data.fixed_epoch_order(tf.data.Dataset.range(3), 50, 3, seed=0)
    with pytest.raises(ValueError, match="same number of examples"):
        kdkeras.data.fixed_epoch_order((x[:200], np.arange(199)), 50, 3, seed=0)


def test_a_backup_interrupted_while_written_leaves_the_previous_one(trained_teacher, data, tmp_path,
                                                                    monkeypatch, reliability):
    backup_dir = str(tmp_path / "backup")
    distiller = make_distiller(trained_teacher)
    ds, steps = fixed_order(data, seed=2)
    callback = AtomicBackupAndRestore(backup_dir)
    distiller.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0, callbacks=[callback])
    assert latest_backup_epoch(backup_dir) == 2
    good = student_weights(distiller)

    def torn_write(filepath, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n half a file")
        raise KeyboardInterrupt("killed while saving")

    distiller.student.layers[-1].kernel.assign(distiller.student.layers[-1].kernel * 0 + 7)
    monkeypatch.setattr(distiller, "save_weights", torn_write)
    callback._current_epoch = 3
    with pytest.raises(KeyboardInterrupt):
        callback._save_model()
    monkeypatch.undo()

    assert latest_backup_epoch(backup_dir) == 2
    fresh = make_distiller(trained_teacher)
    restore = AtomicBackupAndRestore(backup_dir)
    restore.set_model(fresh)
    restore.on_train_begin()
    assert fresh._initial_epoch == 2
    assert np.array_equal(student_weights(fresh), good)
    reliability("fault survived", "process killed while a backup was being written: previous backup used")


def test_nan_in_a_batch_stops_with_epoch_and_step(trained_teacher, sample_arrays, reliability):
    (x, y), _ = sample_arrays
    x = x[:256].copy()
    x[100, 5, 5, 0] = np.nan  # batch 4 of 8 at batch size 32 (no shuffle)
    distiller = make_distiller(trained_teacher)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 4") as info:
        distiller.fit(kdkeras.make_dataset(x, y[:256], 32), epochs=2, verbose=0,
                      callbacks=[kdkeras.callbacks.StopOnNonFinite()])
    assert (info.value.epoch, info.value.step) == (1, 4)
    assert "NaN or infinite values in the input" in str(info.value)
    reliability("fault survived", "NaN pixel in one batch: stopped, epoch and step named")


def test_inf_teacher_logits_in_a_cached_batch_stop_training(trained_teacher, sample_arrays):
    (x, y), _ = sample_arrays
    logits = trained_teacher.predict(x[:128], verbose=0)
    logits[70, 3] = np.inf
    data = tf.data.Dataset.from_tensor_slices(
        ({"inputs": x[:128], "teacher_logits": logits}, y[:128])).batch(32)
    distiller = make_distiller(trained_teacher)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3"):
        distiller.fit(data, epochs=1, verbose=0, callbacks=[kdkeras.callbacks.StopOnNonFinite()])


def test_diverging_learning_rate_stops_and_keeps_the_last_good_backup(trained_teacher, data, tmp_path,
                                                                      reliability):
    backup_dir = str(tmp_path / "backup")
    distiller = make_distiller(trained_teacher, optimizer=keras.optimizers.SGD(0.01))
    saved = {}

    class KeepEpochWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            saved[epoch + 1] = student_weights(self.model)

    blow_up = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 if epoch < 2 else 1e12)
    ds, steps = fixed_order(data, seed=3)
    with pytest.raises(NonFiniteLossError) as info:
        distiller.fit(ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=0,
                      callbacks=[blow_up, KeepEpochWeights(), AtomicBackupAndRestore(backup_dir),
                                 kdkeras.callbacks.StopOnNonFinite()])
    assert info.value.epoch == 3
    assert latest_backup_epoch(backup_dir) == 2
    fresh = make_distiller(trained_teacher, optimizer=keras.optimizers.SGD(0.01))
    restore = AtomicBackupAndRestore(backup_dir)
    restore.set_model(fresh)
    restore.on_train_begin()
    restored = student_weights(fresh)
    assert np.all(np.isfinite(restored)) and np.array_equal(restored, saved[2])
    reliability("fault survived",
                f"learning rate raised to 1e12 in epoch 3: stopped at epoch {info.value.epoch}, "
                f"step {info.value.step}; backup of epoch 2 intact")


def test_stop_on_non_finite_is_opt_in(trained_teacher, small_batch):
    x, y = small_batch
    x = x.copy()
    x[3, 4, 4, 0] = np.inf
    distiller = make_distiller(trained_teacher)
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)  # no callback: no check, no error
    assert not np.isfinite(history.history["loss"][0])  # ...but the loss says so (input check)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step [1-3]\b"):
        distiller.fit(x, y, 32, 1, 0, [kdkeras.callbacks.StopOnNonFinite()])  # positional callbacks


def test_schedule_changes_temperature_and_alpha_without_retracing(trained_teacher, small_batch):
    x, y = small_batch
    traces = []

    class CountingDistiller(kdkeras.Distiller):
        def train_step(self, data):
            traces.append(1)  # Python runs only while tracing
            return super().train_step(data)

    def fit(callbacks):
        distiller = CountingDistiller(student=kdkeras.build_student(seed=0), teacher=trained_teacher)
        distiller.compile(optimizer="adam", student_loss_fn=keras.losses.SparseCategoricalCrossentropy(True),
                          alpha=0.1, temperature=3.0)
        traces.clear()
        history = distiller.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=callbacks)
        return distiller, history, len(traces)

    _, _, traces_without = fit([])
    schedule = DistillationSchedule(temperature={0: 8.0, 2: 2.0}, alpha=lambda epoch: 0.1 * (epoch + 1))
    distiller, history, traces_with = fit([schedule])
    assert history.history["temperature"] == [8.0, 8.0, 2.0]
    np.testing.assert_allclose(history.history["alpha"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert traces_with == traces_without <= 2  # the first call's trace(s) only, not one per value
    # The variables are what the step reads: the loss at T = 2 differs from T = 8.
    at_2 = distiller.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    distiller.temperature = 8.0
    at_8 = distiller.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    assert abs(at_2 - at_8) > 1e-3


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(), ValueError),
        (dict(temperature={1: 2.0}), ValueError),
        (dict(temperature="hot"), TypeError),
    ],
)
def test_schedule_rejects_bad_specs(kwargs, error):
    with pytest.raises(error):
        DistillationSchedule(**kwargs)


def test_schedule_checks_each_value(trained_teacher, small_batch):
    x, y = small_batch
    distiller = make_distiller(trained_teacher)
    with pytest.raises(ValueError, match="alpha"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[DistillationSchedule(alpha=lambda e: 1.5)])


def test_wrong_image_size_for_the_model_is_refused(trained_teacher, reliability):
    distiller = make_distiller(trained_teacher)
    x = np.zeros((8, 32, 32, 1), "float32")
    y = np.zeros(8, "int32")
    with pytest.raises(ValueError, match=r"\(8, 32, 32, 1\).*expects \(batch, 28, 28, 1\)"):
        distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"expects \(batch, 28, 28, 1\)"):
        distiller.fit(kdkeras.make_dataset(x, y, 4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"expects \(batch, 28, 28, 1\)"):
        distiller.evaluate(x[..., 0], y, verbose=0)
    reliability("bad input refused", "images of the wrong size for the model (32x32, and 28x28 without channel)")


def test_epoch_log_json_is_readable(tmp_path):
    # A stage's per-epoch log is plain JSON that a person can read.
    from kdkeras.experiment import EpochLog

    log = EpochLog(str(tmp_path / "log.json"), {"loss": [1.0]})
    log.on_epoch_end(1, {"loss": 0.5})
    assert json.load(open(tmp_path / "log.json")) == {"loss": [1.0, 0.5]}
    assert os.listdir(tmp_path) == ["log.json"]
