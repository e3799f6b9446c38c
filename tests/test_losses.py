"""Distillation losses against independent NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.shared import log_softmax_np, softmax_np

import kdkeras
from kdkeras import losses


def ref_kl(zt, zs, t):
    pt, lpt, lps = softmax_np(zt, t), log_softmax_np(zt, t), log_softmax_np(zs, t)
    return t**2 * (pt * (lpt - lps)).sum(-1)


def ref_reverse_kl(zt, zs, t):
    ps, lpt, lps = softmax_np(zs, t), log_softmax_np(zt, t), log_softmax_np(zs, t)
    return t**2 * (ps * (lps - lpt)).sum(-1)


def ref_soft_ce(zt, zs, t):
    return -(t**2) * (softmax_np(zt, t) * log_softmax_np(zs, t)).sum(-1)


def ref_mse(zt, zs, t):
    return ((np.asarray(zs, np.float64) - zt) ** 2).mean(-1)


def ref_dkd(zt, zs, t, labels=None, alpha=1.0, beta=8.0):
    """DKD as in the authors' code (mdistiller): binary TCKD, NCKD with the target masked by -1000."""
    labels = np.argmax(zt, -1) if labels is None else labels
    gt = np.eye(zt.shape[-1])[labels]
    pt, ps = softmax_np(zt, t), softmax_np(zs, t)
    bt = np.stack([(pt * gt).sum(-1), (pt * (1 - gt)).sum(-1)], -1)
    bs = np.stack([(ps * gt).sum(-1), (ps * (1 - gt)).sum(-1)], -1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum(-1)
    masked_t = np.asarray(zt, np.float64) / t - 1000.0 * gt
    masked_s = np.asarray(zs, np.float64) / t - 1000.0 * gt
    nckd = (softmax_np(masked_t) * (log_softmax_np(masked_t) - log_softmax_np(masked_s))).sum(-1)
    return t**2 * (alpha * tckd + beta * nckd)


REFERENCES = {"kl": ref_kl, "reverse_kl": ref_reverse_kl, "soft_ce": ref_soft_ce, "mse": ref_mse,
              "dkd": ref_dkd}


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.normal(0, 3, (16, 10)).astype("float32"), rng.normal(0, 3, (16, 10)).astype("float32"))


def test_available_lists_the_builtin_losses():
    assert set(losses.available()) >= {"kl", "reverse_kl", "soft_ce", "mse", "dkd"}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 10.0])
def test_loss_matches_numpy_reference(name, temperature, logits):
    zt, zs = logits
    got = losses.get(name)(zt, zs, temperature)
    assert got.shape == (16,)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), REFERENCES[name](zt, zs, temperature), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_loss_works_inside_tf_function_and_xla(name, logits):
    zt, zs = logits
    fn = tf.function(lambda a, b, t: losses.get(name)(a, b, t), jit_compile=True)
    np.testing.assert_allclose(fn(zt, zs, tf.constant(2.0)).numpy(), REFERENCES[name](zt, zs, 2.0), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 20.0])
def test_kl_gradient_is_T_times_difference_of_soft_distributions(temperature, logits):
    zt, zs = logits
    zs = tf.Variable(zs)
    with tf.GradientTape() as tape:
        per_example = losses.kl_divergence(zt, zs, temperature)
        total = tf.reduce_sum(per_example)
    grad = tape.gradient(total, zs).numpy()
    expected = temperature * (softmax_np(zs.numpy(), temperature) - softmax_np(zt, temperature))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_extreme_logits_stay_finite(name):
    zt = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]], "float32")
    zs = np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -5.0]], "float32")
    for t in (0.05, 1.0, 3.0, 100.0):
        value = losses.get(name)(zt, zs, t).numpy()
        assert np.all(np.isfinite(value)), (name, t, value)
        assert np.all(value >= 0)
    # and the gradients too
    zs_var = tf.Variable(zs)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(losses.get(name)(zt, zs_var, 3.0))
    assert np.all(np.isfinite(tape.gradient(value, zs_var).numpy()))


def test_kl_is_large_for_opposite_extreme_logits():
    # log-softmax keeps the information that clipped probabilities would lose
    zt = np.array([[1e4, -1e4]], "float32")
    zs = np.array([[-1e4, 1e4]], "float32")
    assert losses.kl_divergence(zt, zs, 1.0).numpy()[0] == pytest.approx(2e4, rel=1e-4)


def test_half_precision_logits_give_float32_losses(logits):
    zt, zs = logits
    got = losses.get("kl")(zt.astype("float16"), zs.astype("float16"), 3.0)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), ref_kl(zt.astype("float16"), zs.astype("float16"), 3.0), rtol=1e-3, atol=1e-3)


def test_kl_divergence_string_is_the_correct_softened_formula(logits):
    # keras.distillation resolves "kl_divergence" to KL on raw scaled logits; we don't
    zt, zs = logits
    np.testing.assert_allclose(losses.get("kl_divergence")(zt, zs, 3.0).numpy(), ref_kl(zt, zs, 3.0), rtol=2e-5, atol=2e-5)


def test_keras_kldivergence_instance_applied_keras_io_style(logits):
    zt, zs = logits
    fn = losses.get(keras.losses.KLDivergence())
    # keras.io: KLDivergence(softmax(zt/T), softmax(zs/T)) * T**2, with Keras' clipping at 1e-7
    t = 3.0
    pt = np.clip(softmax_np(zt, t), 1e-7, 1)
    ps = np.clip(softmax_np(zs, t), 1e-7, 1)
    expected = t**2 * (pt * np.log(pt / ps)).sum(-1)
    np.testing.assert_allclose(fn(zt, zs, t).numpy(), expected, rtol=1e-4, atol=1e-5)
    # and on moderate logits it agrees with the exact "kl"
    np.testing.assert_allclose(fn(zt, zs, t).numpy(), ref_kl(zt, zs, t), rtol=1e-3, atol=1e-4)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        losses.get("kl_div_typo")
    message = str(info.value)
    assert "kl_div_typo" in message
    for name in ("kl", "reverse_kl", "soft_ce", "mse"):
        assert name in message


def test_non_callable_is_a_type_error():
    with pytest.raises(TypeError, match="42"):
        losses.get(42)


def test_register_custom_loss_by_name(logits):
    zt, zs = logits

    def half_kl(teacher_logits, student_logits, temperature):
        return 0.5 * losses.kl_divergence(teacher_logits, student_logits, temperature)

    losses.register("half_kl_test", half_kl)
    try:
        assert "half_kl_test" in losses.available()
        np.testing.assert_allclose(losses.get("half_kl_test")(zt, zs, 2.0).numpy(), 0.5 * ref_kl(zt, zs, 2.0), rtol=2e-5)
        with pytest.raises(ValueError, match="already registered"):
            losses.register("half_kl_test", half_kl)
    finally:
        losses._REGISTRY.pop("half_kl_test", None)


def test_three_argument_callable_is_used_as_is():
    def mine(teacher_logits, student_logits, temperature):
        return tf.zeros(tf.shape(teacher_logits)[:1])

    assert losses.get(mine) is mine


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "soft_ce"])
def test_kl_family_zero_or_entropy_when_student_equals_teacher(name, logits):
    zt, _ = logits
    value = losses.get(name)(zt, zt + 5.0, 2.0).numpy()  # a constant shift changes nothing
    if name == "soft_ce":
        entropy = -(softmax_np(zt, 2.0) * log_softmax_np(zt, 2.0)).sum(-1)
        np.testing.assert_allclose(value, 4.0 * entropy, rtol=1e-4)
    else:
        np.testing.assert_allclose(value, 0.0, atol=1e-4)


def test_public_api_exposes_losses_module():
    assert kdkeras.losses is losses


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_with_labels_and_custom_weights_matches_reference(temperature, logits):
    zt, zs = logits
    labels = np.arange(16) % 10
    dkd = losses.decoupled_kd(target_weight=0.5, non_target_weight=2.0)
    got = dkd(zt, zs, temperature, labels=labels).numpy()
    np.testing.assert_allclose(got, ref_dkd(zt, zs, temperature, labels, 0.5, 2.0), rtol=2e-5, atol=2e-5)
    # With equal weights DKD is not KL (KL = TCKD + (1 - p_t[target]) * NCKD), but both vanish together.
    assert np.all(dkd(zt, zt + 3.0, temperature, labels=labels).numpy() < 1e-4)
    with pytest.raises(ValueError, match="non_target_weight"):
        losses.decoupled_kd(1.0, -1.0)


def test_distiller_passes_the_true_labels_to_dkd(trained_teacher, small_batch):
    x, y = small_batch
    distiller = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=trained_teacher)
    distiller.compile(optimizer="adam", student_loss_fn=keras.losses.SparseCategoricalCrossentropy(True),
                      distillation_loss_fn="dkd", alpha=0.0, temperature=4.0)
    got = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["distillation_loss"]
    zt = trained_teacher.predict(x, verbose=0)
    zs = distiller.student.predict(x, verbose=0)
    with_labels = ref_dkd(zt, zs, 4.0, y).mean()
    np.testing.assert_allclose(got, with_labels, rtol=1e-4)
    wrong = (y + 1) % 10
    assert abs(ref_dkd(zt, zs, 4.0, wrong).mean() - with_labels) > 1e-3  # the labels matter
    # Without labels DKD would take the teacher's top class; on this batch that gives another value.
    assert np.any(zt.argmax(-1) != y)
    assert abs(ref_dkd(zt, zs, 4.0, zt.argmax(-1)).mean() - with_labels) > 1e-4 * abs(with_labels)


def test_linear_warmup_ramps_the_distillation_weight():
    schedule = kdkeras.callbacks.linear_warmup(alpha=0.2, epochs=4)
    weights = [1 - schedule._alpha(e) for e in range(6)]
    np.testing.assert_allclose(weights, [0.2, 0.4, 0.6, 0.8, 0.8, 0.8], rtol=1e-6)
    with pytest.raises(ValueError):
        kdkeras.callbacks.linear_warmup(alpha=0.2, epochs=0)
