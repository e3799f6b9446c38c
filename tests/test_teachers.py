"""Teacher ensembles and probability teachers: the values against NumPy, saving, caching, the main job."""

import keras
import numpy as np
import pytest
from helpers.shared import log_softmax_np, make_distiller, softmax_np

import kdkeras
from kdkeras import teachers


def _two_teachers():
    return kdkeras.build_teacher(seed=1, name="teacher_a"), kdkeras.build_teacher(seed=2, name="teacher_b")


def test_ensemble_is_the_weighted_mean_of_the_logits(small_batch, tmp_path):
    x, _ = small_batch
    a, b = _two_teachers()
    za, zb = a.predict(x, verbose=0), b.predict(x, verbose=0)
    ensemble = kdkeras.TeacherEnsemble([a, b], weights=[3, 1])
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), 0.75 * za + 0.25 * zb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kdkeras.TeacherEnsemble([a, b]).predict(x, verbose=0), (za + zb) / 2, atol=1e-5)
    # Saved and loaded (inside a Distiller too), it predicts the same.
    ensemble.save(tmp_path / "e.keras")
    loaded = keras.models.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), 0.75 * za + 0.25 * zb, rtol=1e-5, atol=1e-5)
    d = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=[a, b])
    assert isinstance(d.teacher, kdkeras.TeacherEnsemble)
    d.compile(optimizer="adam")
    d.save(tmp_path / "d.keras")
    again = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(again.teacher.predict(x, verbose=0), (za + zb) / 2, atol=1e-5)


def test_ensemble_refuses_bad_members_and_weights():
    a, b = _two_teachers()
    with pytest.raises(ValueError, match="non-empty"):
        kdkeras.TeacherEnsemble([])
    with pytest.raises(ValueError, match="weights"):
        kdkeras.TeacherEnsemble([a, b], weights=[1, 0])
    with pytest.raises(ValueError, match="classes|outputs"):
        kdkeras.TeacherEnsemble([a, kdkeras.build_teacher(num_classes=5)])
    with pytest.raises(ValueError, match="softmax"):
        kdkeras.TeacherEnsemble([a, keras.Sequential([b, keras.layers.Softmax()])])


def test_cached_logits_of_an_ensemble_train_like_the_online_ensemble(sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[:320], y[:320]
    ensemble = kdkeras.TeacherEnsemble(list(_two_teachers()))
    weights = []
    for cached in (False, True):
        d = make_distiller(ensemble, seed=3)
        data = (kdkeras.cache_teacher_logits(ensemble, (x, y), batch_size=64, shuffle=False) if cached
                else kdkeras.make_dataset(x, y, 64))
        d.fit(data, epochs=1, verbose=0)
        weights.append(d.student.get_weights())
    for u, v in zip(*weights):
        np.testing.assert_allclose(u, v, atol=1e-5)


def _softmax_teacher(logits_teacher):
    """The same network ending in a softmax: probabilities out."""
    return keras.Sequential([logits_teacher, keras.layers.Softmax()], name="softmax_teacher")


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_probability_teacher_gives_the_soft_targets_of_its_logits(small_batch, temperature):
    x, _ = small_batch
    logits_teacher = kdkeras.build_teacher(seed=1)
    z = logits_teacher.predict(x, verbose=0).astype(np.float64)
    wrapped = kdkeras.ProbabilityTeacher(_softmax_teacher(logits_teacher))
    log_p = wrapped.predict(x, verbose=0)
    np.testing.assert_allclose(log_p, log_softmax_np(z), atol=1e-4)
    np.testing.assert_allclose(softmax_np(log_p, temperature), softmax_np(z, temperature), atol=1e-5)
    # The KL the Distiller minimises is the same for the wrapped softmax teacher and the logits teacher.
    student_logits = np.random.default_rng(0).normal(size=z.shape).astype(np.float32)
    np.testing.assert_allclose(kdkeras.losses.kl_divergence(log_p, student_logits, temperature).numpy(),
                               kdkeras.losses.kl_divergence(z.astype(np.float32), student_logits,
                                                            temperature).numpy(), rtol=1e-3, atol=1e-4)


def test_a_softmax_teacher_is_refused_with_the_way_through_and_accepted_with_it(small_batch):
    x, y = small_batch
    softmax_teacher = _softmax_teacher(kdkeras.build_teacher(seed=1))
    with pytest.raises(ValueError, match='teacher_outputs="probabilities".*classifier_activation=None'):
        kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=softmax_teacher)
    d = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=softmax_teacher,
                          teacher_outputs="probabilities")
    assert isinstance(d.teacher, teachers.ProbabilityTeacher)
    with pytest.raises(ValueError, match="teacher_outputs"):
        kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=softmax_teacher, teacher_outputs="probs")


@pytest.mark.slow
def test_keras_applications_teacher_with_its_default_softmax_distils_end_to_end():
    """A keras.applications model built with weights=None (nothing downloaded), on small colour images."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 32, 32, 3)).astype("float32")
    y = rng.permutation(np.repeat(np.arange(10), 7))[:64]
    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10, alpha=0.35)
    student = kdkeras.build_cnn((8,), 16, input_shape=(32, 32, 3), seed=0)
    d = kdkeras.Distiller(student=student, teacher=net, teacher_outputs="probabilities")
    d.compile(optimizer="adam", alpha=0.0, temperature=4.0)
    history = d.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][1] < history.history["loss"][0]
    # Its logged distillation loss is the KL to the network's own probabilities, softened.
    p = net.predict(x, verbose=0).astype(np.float64)
    zs = student.predict(x, verbose=0).astype(np.float64)
    pt = softmax_np(np.log(np.maximum(p, 1e-38)), 4.0)
    expected = 16.0 * (pt * (np.log(pt) - log_softmax_np(zs, 4.0))).sum(-1).mean()
    got = d.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)["distillation_loss"]
    assert got == pytest.approx(expected, rel=1e-2, abs=2e-6)


def test_a_step_with_an_ensemble_equals_a_step_with_one_model_that_outputs_the_mean(small_batch):
    x, y = small_batch
    a, b = _two_teachers()
    inputs = keras.Input((28, 28, 1))
    mean_model = keras.Model(inputs, keras.layers.Average()([a(inputs), b(inputs)]))
    weights = []
    for teacher in ([a, b], mean_model):
        d = make_distiller(teacher, seed=3)
        d.train_on_batch(x, y)
        weights.append(d.student.get_weights())
    for u, v in zip(*weights):
        np.testing.assert_allclose(u, v, atol=1e-6)


def test_probability_teacher_has_the_loss_and_gradient_of_its_logits_teacher(small_batch):
    import tensorflow as tf

    x, _ = small_batch
    logits_teacher = kdkeras.build_teacher(seed=1)
    wrapped = kdkeras.ProbabilityTeacher(_softmax_teacher(logits_teacher))
    student = kdkeras.build_student(seed=0)
    results = []
    for teacher in (logits_teacher, wrapped):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(kdkeras.losses.kl_divergence(teacher(x), student(x), 4.0))
        results.append((float(loss), tape.gradient(loss, student.trainable_variables)))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-5)
    for g1, g2 in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(g1.numpy(), g2.numpy(), atol=1e-5)
