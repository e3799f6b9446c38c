"""The teacher always runs in inference mode, on every path that calls it.

The teachers here have dropout and batch normalisation, so their outputs in
training mode differ from inference; and a probe layer records every
``training`` flag the teacher is called with. Each distiller takes one step at
learning rate 0: its training-step losses must then equal its test-step
losses on the same batch (the student has neither dropout nor batch
normalisation, so only the teacher's mode could make them differ).
"""

import keras
import numpy as np
import pytest

import kdkeras


@keras.saving.register_keras_serializable(package="kdkeras_tests")
class ModeProbe(keras.layers.Layer):
    """Passes its input through; records the ``training`` flag of every call (traced or eager)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs, training=None):
        self.seen.append(training)
        return inputs


def noisy_teacher(classes=4, softmax=False, seed=0):
    init = keras.initializers.GlorotUniform(seed)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(32, activation="relu", kernel_initializer=init)(inputs)
    h = keras.layers.BatchNormalization(momentum=0.5)(h)
    h = keras.layers.Dropout(0.5, seed=seed)(h)
    probe = ModeProbe(name="probe")
    h = probe(h)
    out = keras.layers.Dense(classes, kernel_initializer=init, activation="softmax" if softmax else None)(h)
    model = keras.Model(inputs, out, name=f"noisy_teacher_{seed}")
    # Moving statistics far from any batch's: batch normalisation in training mode is visibly different.
    bn = model.layers[2]
    bn.moving_mean.assign(np.full(32, 3.0, "float32"))
    bn.moving_variance.assign(np.full(32, 0.1, "float32"))
    return model, probe


def plain_student(classes=4, seed=1):
    init = keras.initializers.GlorotUniform(seed)
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu", kernel_initializer=init,
                                                                    name="hidden"),
                             keras.layers.Dense(classes, kernel_initializer=init)], name="student")


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    y = rng.permutation(np.arange(64) % 4).astype("int32")
    return x, y


def _train_equals_test(distiller, batch, keys):
    x, y = batch
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.3, temperature=2.0)
    logs = distiller.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    test = distiller.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    for key in keys:
        np.testing.assert_allclose(logs[key][0], test[key], rtol=1e-5, err_msg=key)


def test_the_online_teacher_runs_in_inference_mode(batch, reliability):
    teacher, probe = noisy_teacher()
    d = kdkeras.Distiller(plain_student(), teacher)
    _train_equals_test(d, batch, ["distillation_loss", "agreement", "loss"])
    assert probe.seen and not any(probe.seen), probe.seen
    reliability("property", "teacher with dropout and batch normalisation never called in training mode: "
                "online Distiller")


def test_feature_distillation_captures_the_teachers_features_in_inference_mode(batch, reliability):
    teacher, probe = noisy_teacher()
    d = kdkeras.FeatureDistiller(plain_student(), teacher, hints=[("hidden", "probe")])
    _train_equals_test(d, batch, ["distillation_loss", "loss"] + [t.name for t in d.loss_terms])
    assert probe.seen and not any(probe.seen), probe.seen
    reliability("property", "teacher with dropout and batch normalisation never called in training mode: "
                "FeatureDistiller (teacher features)")


def test_ensemble_members_and_probability_teachers_run_in_inference_mode(batch, reliability):
    (first, p1), (second, p2) = noisy_teacher(seed=0), noisy_teacher(seed=3)
    _train_equals_test(kdkeras.Distiller(plain_student(), [first, second]), batch, ["distillation_loss"])
    softmax_teacher, p3 = noisy_teacher(softmax=True, seed=5)
    _train_equals_test(kdkeras.Distiller(plain_student(), softmax_teacher, teacher_outputs="probabilities"), batch,
                       ["distillation_loss"])
    for probe in (p1, p2, p3):
        assert probe.seen and not any(probe.seen), probe.seen
    reliability("property", "teacher with dropout and batch normalisation never called in training mode: "
                "teacher ensembles and probability teachers")


def test_the_teacher_logit_cache_runs_the_teacher_in_inference_mode(batch, reliability):
    teacher, probe = noisy_teacher()
    x, y = batch
    cached = kdkeras.cache_teacher_logits(teacher, (x, y), batch_size=64, shuffle=False)
    (inputs, _), = cached.take(1)
    np.testing.assert_allclose(inputs["teacher_logits"].numpy(), teacher.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)
    assert probe.seen and not any(probe.seen)
    reliability("property", "teacher with dropout and batch normalisation never called in training mode: "
                "the teacher-logit cache")


def test_mutual_learning_evaluates_peers_in_inference_mode(batch, reliability):
    """In training, DML's peers give their targets from their own training-mode pass (Zhang et al., 2018)."""
    peers = [noisy_teacher(seed=0), noisy_teacher(seed=3)]
    mutual = kdkeras.MutualLearning([m for m, _ in peers])
    mutual.compile(optimizer=keras.optimizers.SGD(0.0), alpha=0.3, temperature=2.0)
    x, y = batch
    for _, probe in peers:
        probe.seen.clear()
    first = mutual.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    second = mutual.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert first == second  # dropout off: evaluation repeats exactly
    for _, probe in peers:
        assert probe.seen and not any(probe.seen), probe.seen
    reliability("property", "teacher with dropout and batch normalisation never called in training mode: "
                "MutualLearning evaluation (peers)")
