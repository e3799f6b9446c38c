"""Online and self distillation: deep mutual learning and born-again networks."""

import keras
import numpy as np
import pytest
from helpers.shared import LOGITS_LOSS, log_softmax_np, softmax_np

import kdkeras


def test_one_mutual_step_matches_the_closed_form_gradient(small_batch):
    """Bias update of each student = -lr * sum_n dL/dz_k, with dL/dz_k from the formula in NumPy."""
    x, y = small_batch
    x, y = x[:16], y[:16]
    students = [kdkeras.build_student(seed=s, name=f"s{s}") for s in (0, 1)]
    alpha, t, lr = 0.3, 2.0, 0.5
    z = [s.predict(x, verbose=0).astype(np.float64) for s in students]
    biases = [s.get_layer("logits").bias.numpy().copy() for s in students]
    mutual = kdkeras.MutualLearning(students)
    mutual.compile(optimizer=keras.optimizers.SGD(lr), alpha=alpha, temperature=t)
    mutual.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    onehot = np.eye(10)[y]
    for k, j in ((0, 1), (1, 0)):
        grad_z = (alpha * (softmax_np(z[k]) - onehot) + (1 - alpha) * t * (softmax_np(z[k], t) - softmax_np(z[j], t))) / 16
        expected = biases[k] - lr * grad_z.sum(0)
        np.testing.assert_allclose(students[k].get_layer("logits").bias.numpy(), expected, atol=1e-5)
        assert np.abs(expected - biases[k]).max() > 1e-3  # the step moved the bias


def subset(sample_arrays, n=1024):
    """n training digits of every class (the bundled split is sorted by class)."""
    (x, y), (xt, yt) = sample_arrays
    idx = np.random.default_rng(0).permutation(len(x))[:n]
    return (x[idx], y[idx]), (xt, yt)


def test_mutual_learning_trains_every_student(sample_arrays):
    (x, y), (xt, yt) = subset(sample_arrays)
    mutual = kdkeras.MutualLearning([kdkeras.build_student(seed=s, name=f"s{s}") for s in range(3)])
    mutual.compile(optimizer="adam", metrics=["accuracy"])
    history = mutual.fit(kdkeras.make_dataset(x, y, 64, shuffle=True, seed=0), epochs=3,
                         verbose=0, validation_data=(xt, yt))
    for k in range(3):
        assert history.history[f"val_student_{k}_accuracy"][-1] > 0.8
    np.testing.assert_allclose(history.history["val_accuracy"][-1], history.history["val_student_0_accuracy"][-1],
                               atol=1e-6)
    assert mutual.predict(xt[:5], verbose=0).shape == (5, 10)


def test_mutual_learning_refuses_bad_setups():
    with pytest.raises(ValueError, match="at least two"):
        kdkeras.MutualLearning([kdkeras.build_student(seed=0)])
    with pytest.raises(ValueError, match="output sizes differ"):
        kdkeras.MutualLearning([kdkeras.build_student(seed=0), kdkeras.build_student(seed=1, num_classes=5)])


def test_mutual_learning_saves_and_loads(small_batch, tmp_path):
    x, y = small_batch
    mutual = kdkeras.MutualLearning([kdkeras.build_student(seed=s, name=f"s{s}") for s in (0, 1)])
    mutual.compile(optimizer="adam")
    mutual.fit(x, y, epochs=1, verbose=0)
    mutual.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.students[1].predict(x, verbose=0), mutual.students[1].predict(x, verbose=0),
                               atol=1e-6)


def test_born_again_chains_generations(trained_teacher, sample_arrays):
    (x, y), (xt, yt) = subset(sample_arrays)
    built = []

    def build(generation):
        built.append(generation)
        return kdkeras.build_student(seed=generation, name=f"gen{generation}")

    results = kdkeras.born_again(build, trained_teacher, kdkeras.make_dataset(x, y, 64, shuffle=True, seed=0),
                                 generations=2, epochs=3, optimizer=keras.optimizers.Adam(1e-3),
                                 student_loss_fn=LOGITS_LOSS, alpha=0.5, temperature=4.0)
    assert built == [1, 2] and [m.name for m, _ in results] == ["gen1", "gen2"]
    for model, history in results:
        assert np.mean(model.predict(xt, verbose=0).argmax(-1) == yt) > 0.6  # chance is 0.1
        assert len(history.history["loss"]) == 3
    # Generation 2 learned from generation 1: it agrees with it more than with chance.
    agree = np.mean(results[1][0].predict(xt, verbose=0).argmax(-1) == results[0][0].predict(xt, verbose=0).argmax(-1))
    assert agree > 0.7
    with pytest.raises(ValueError, match="generations"):
        kdkeras.born_again(build, trained_teacher, None, generations=0)


def test_distillation_schedule_sets_mutual_learnings_temperature_and_alpha(small_batch):
    x, y = small_batch
    mutual = kdkeras.MutualLearning([kdkeras.build_student(seed=s, name=f"s{s}") for s in (0, 1)])
    mutual.compile(optimizer="adam", alpha=0.5, temperature=1.0)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((mutual.temperature, mutual.alpha))

    schedule = kdkeras.callbacks.DistillationSchedule(temperature={0: 2.0, 1: 6.0}, alpha=lambda e: 0.1 * (e + 1))
    history = mutual.fit(x, y, batch_size=48, epochs=2, verbose=0, callbacks=[schedule, Record()])
    assert seen == [(2.0, pytest.approx(0.1))] * 2 + [(6.0, pytest.approx(0.2))] * 2
    assert history.history["temperature"] == [2.0, 6.0]
    # The step reads the variables: alpha = 1 leaves only the hard-label loss (no peer term).
    mutual.alpha = 1.0
    logits = [s.predict(x, verbose=0) for s in mutual.students]
    loss = mutual.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"]
    ce = sum(-log_softmax_np(z)[np.arange(len(y)), y].mean() for z in logits)
    np.testing.assert_allclose(loss, ce, rtol=1e-5)
