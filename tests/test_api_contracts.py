"""Library contracts checked inside real Keras runs: schedules and the NaN guard in fit, loss registration,
Keras loss functions as distillation losses."""

import keras
import numpy as np
import pytest
from helpers.shared import log_softmax_np, make_distiller, softmax_np

import kdkeras
from kdkeras.callbacks import NonFiniteLossError, StopOnNonFinite, linear_warmup


def test_linear_warmup_sets_alpha_epoch_by_epoch_inside_fit(trained_teacher, small_batch):
    x, y = small_batch
    distiller = make_distiller(trained_teacher, alpha=0.2, temperature=3.0)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(distiller.alpha))
    history = distiller.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[linear_warmup(0.2, 4), probe])
    # 1 - alpha = 0.8 * min(1, (epoch + 1) / 4): alpha 0.8, 0.6, 0.4, 0.2, 0.2.
    np.testing.assert_allclose(seen, [0.8, 0.6, 0.4, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(history.history["alpha"], seen, atol=1e-6)
    # The logged loss is the mix at that epoch's alpha, not at the compiled one.
    h = history.history
    for epoch, alpha in enumerate(seen):
        mixed = alpha * h["student_loss"][epoch] + (1 - alpha) * h["distillation_loss"][epoch]
        assert h["loss"][epoch] == pytest.approx(mixed, rel=2e-2)


def test_stop_on_non_finite_watches_only_the_monitored_entry(small_batch):
    x, y = small_batch

    def model_with_metric(bad_metric):
        keras.utils.set_random_seed(0)
        model = kdkeras.build_student(seed=0)

        def always_nan(y_true, y_pred):
            return keras.ops.mean(y_pred) * np.float32("nan")

        always_nan.__name__ = bad_metric
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[always_nan])
        return model

    # A NaN in an entry that ends in "loss" stops training by default, naming epoch and step ...
    with pytest.raises(NonFiniteLossError, match=r"nan_loss.*epoch 1, step 1"):
        model_with_metric("nan_loss").fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[StopOnNonFinite()])
    # ... but not when only "loss" is monitored,
    history = model_with_metric("nan_loss").fit(x, y, batch_size=32, epochs=2, verbose=0,
                                                callbacks=[StopOnNonFinite(monitor=["loss"])])
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    # ... and a monitored entry whose name does not end in "loss" is watched too.
    with pytest.raises(NonFiniteLossError, match="always_bad"):
        model_with_metric("always_bad").fit(x, y, batch_size=32, epochs=1, verbose=0,
                                            callbacks=[StopOnNonFinite(monitor=["always_bad"])])


def test_register_refuses_a_taken_name_unless_overwrite():
    teacher = np.random.default_rng(0).normal(size=(8, 10)).astype("float32")
    student = np.random.default_rng(1).normal(size=(8, 10)).astype("float32")
    name = "contract_test_loss"
    def kl(t, s, temperature):
        return kdkeras.losses.kl_divergence(t, s, temperature)

    def double_kl(t, s, temperature):
        return 2.0 * kdkeras.losses.kl_divergence(t, s, temperature)

    try:
        kdkeras.losses.register(name, kl)
        with pytest.raises(ValueError, match="already registered"):
            kdkeras.losses.register(name, double_kl)
        once = kdkeras.losses.get(name)(teacher, student, 2.0).numpy()
        kdkeras.losses.register(name, double_kl, overwrite=True)
        twice = kdkeras.losses.get(name)(teacher, student, 2.0).numpy()
        np.testing.assert_allclose(twice, 2.0 * once, rtol=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            kdkeras.losses.register("kl", lambda t, s, temperature: 0.0 * t[:, 0])  # built-ins are protected too
    finally:
        kdkeras.losses._REGISTRY.pop(name, None)


@pytest.mark.parametrize("fn", [keras.losses.kl_divergence, keras.losses.categorical_crossentropy],
                         ids=["kl_divergence", "categorical_crossentropy"])
def test_two_argument_keras_loss_is_applied_to_the_softened_distributions(fn):
    rng = np.random.default_rng(0)
    teacher = rng.normal(0, 3, (16, 10)).astype("float32")
    student = rng.normal(0, 3, (16, 10)).astype("float32")
    temperature = 4.0
    got = kdkeras.losses.get(fn)(teacher, student, temperature).numpy()
    pt, ps = softmax_np(teacher, temperature), softmax_np(student, temperature)
    if fn is keras.losses.kl_divergence:
        expected = (pt * (np.log(pt) - np.log(ps))).sum(-1)
    else:
        expected = -(pt * log_softmax_np(student, temperature)).sum(-1)
    np.testing.assert_allclose(got, temperature**2 * expected, rtol=1e-4, atol=1e-5)


def test_two_argument_keras_loss_trains_a_distiller_like_the_builtin_kl(trained_teacher, small_batch):
    x, y = small_batch
    weights = []
    for loss in ("kl", keras.losses.kl_divergence):
        distiller = make_distiller(trained_teacher, distillation_loss_fn=loss, alpha=0.1, temperature=4.0)
        distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights.append(distiller.student.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-4)
