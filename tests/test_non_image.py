"""The Distiller on data that is not images: tabular rows, and per-step outputs of a sequence model."""

import keras
import numpy as np

import kdkeras
from helpers.shared import log_softmax_np, softmax_np


def _mlp(units, classes, seed, name):
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(classes)], name=name)


def test_tabular_rows_distil_and_the_loss_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12)).astype("float32")
    y = (x[:, :3] @ np.array([1.0, -2.0, 0.5]) > 0).astype("int32") + 2 * (x[:, 3] > 0.5)  # 4 classes
    keras.utils.set_random_seed(0)
    teacher = _mlp(64, 4, 0, "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    teacher.fit(x, y, epochs=30, batch_size=64, verbose=0)
    d = kdkeras.Distiller(student=_mlp(8, 4, 1, "student"), teacher=teacher)
    d.compile(optimizer=keras.optimizers.Adam(1e-2), alpha=0.1, temperature=2.0)
    d.fit(x, y, epochs=20, batch_size=64, verbose=0)
    result = d.evaluate(x, y, batch_size=600, verbose=0, return_dict=True)
    assert result["agreement"] > 0.9
    zt, zs = teacher.predict(x, verbose=0), d.student.predict(x, verbose=0)
    pt = softmax_np(zt, 2.0)
    expected = 4.0 * (pt * (np.log(pt) - log_softmax_np(zs, 2.0))).sum(-1).mean()
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=1e-3)


def test_sequence_outputs_per_step_are_distilled_per_step():
    """Outputs of shape [batch, steps, classes] with labels [batch, steps]: every step is a distribution."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 6, 5)).astype("float32")
    y = (x[..., 0] > 0).astype("int32") + (x[..., 1] > 1)  # 3 classes per step

    def tagger(units, name):
        return keras.Sequential([keras.Input((6, 5)), keras.layers.Dense(units, activation="relu"),
                                 keras.layers.Dense(3)], name=name)

    keras.utils.set_random_seed(0)
    teacher, student = tagger(32, "teacher"), tagger(4, "student")
    d = kdkeras.Distiller(student=student, teacher=teacher)
    d.compile(optimizer="adam", alpha=0.5, temperature=3.0)
    history = d.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    result = d.evaluate(x, y, batch_size=128, verbose=0, return_dict=True)
    zt, zs = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    pt = softmax_np(zt, 3.0)
    kl = 9.0 * (pt * (np.log(pt) - log_softmax_np(zs, 3.0))).sum(-1)   # [batch, steps]
    np.testing.assert_allclose(result["distillation_loss"], kl.mean(), rtol=1e-3)
    agreement = np.mean(zt.argmax(-1) == zs.argmax(-1))
    np.testing.assert_allclose(result["agreement"], agreement, atol=1e-6)
