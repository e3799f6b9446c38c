"""Feature- and relation-based distillation: FitNets hints, RKD, captured layer outputs."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.shared import LOGITS_LOSS

import kdkeras
from kdkeras.features import FeatureDistiller, capture_outputs, rkd_angle, rkd_distance


def huber_np(d):
    d = np.abs(d)
    return np.where(d < 1, 0.5 * d**2, d - 0.5)


def ref_rkd_distance(t, s):
    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    pairs = [(i, j) for i in range(len(t)) for j in range(len(t)) if i != j]
    dt = np.array([np.linalg.norm(t[i] - t[j]) for i, j in pairs])
    ds = np.array([np.linalg.norm(s[i] - s[j]) for i, j in pairs])
    return huber_np(ds / ds.mean() - dt / dt.mean()).mean()


def ref_rkd_angle(t, s):
    def cos(e, i, j, k):
        a, b = e[i] - e[j], e[k] - e[j]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        return 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)

    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    n = len(t)
    return np.mean([huber_np(cos(s, i, j, k) - cos(t, i, j, k))
                    for i, j, k in itertools.product(range(n), repeat=3)])


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 5)).astype("float32"), rng.normal(size=(7, 3)).astype("float32")


def test_rkd_losses_match_numpy_reference(embeddings):
    t, s = embeddings
    np.testing.assert_allclose(rkd_distance(t, s).numpy(), ref_rkd_distance(t, s), rtol=1e-4)
    np.testing.assert_allclose(rkd_angle(t, s).numpy(), ref_rkd_angle(t, s), rtol=1e-4, atol=1e-6)


def test_rkd_is_zero_for_a_scaled_rotated_copy_and_has_finite_gradients(embeddings):
    t, _ = embeddings
    rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
    s = (3.0 * t @ rotation).astype("float32")  # same relations, different coordinates
    assert rkd_distance(t, s).numpy() < 1e-6 and rkd_angle(t, s).numpy() < 1e-6
    var = tf.Variable(np.concatenate([s, s[:1]]))  # a duplicate row: zero distance and angle vectors
    with tf.GradientTape() as tape:
        loss = rkd_distance(np.concatenate([t, t[:1] + 1]), var) + rkd_angle(np.concatenate([t, t[:1] + 1]), var)
    assert np.all(np.isfinite(tape.gradient(loss, var).numpy()))


def test_capture_outputs_records_and_restores(trained_teacher, small_batch):
    x, _ = small_batch
    layer = trained_teacher.get_layer("conv2")
    with capture_outputs({"c": layer}) as out:
        trained_teacher(x[:4])
    assert out["c"].shape == (4, 11, 11, 64)
    assert "call" not in vars(layer)  # the instance attribute is gone again


def make_feature_distiller(teacher, student, **kwargs):
    d = FeatureDistiller(student=student, teacher=teacher, **kwargs)
    d.compile(optimizer="adam", student_loss_fn=LOGITS_LOSS, metrics=["accuracy"], alpha=0.5, temperature=4.0)
    return d


def test_hints_train_an_adapter_that_is_not_part_of_the_student(trained_teacher, sample_arrays, tmp_path):
    (x, y), _ = sample_arrays
    student = kdkeras.build_student(seed=0)
    d = make_feature_distiller(trained_teacher, student, hints=[("conv1", "conv2"), ("dense", "dense")],
                               relation=("dense", "dense"))
    kernel = d.adapters[0].project.kernel
    assert tuple(kernel.shape) == (1, 1, 16, 64)  # 26x26x16 resized to 11x11, then 1x1 conv to 64
    assert tuple(d.adapters[1].project.kernel.shape) == (32, 128)
    before = kernel.numpy().copy()
    history = d.fit(kdkeras.make_dataset(x[:1024], y[:1024], 64, shuffle=True, seed=0), epochs=3, verbose=0)
    hint = history.history["hint_loss"]
    assert hint[-1] < hint[0] and history.history["rkd_loss"][-1] < history.history["rkd_loss"][0]
    assert np.abs(kernel.numpy() - before).max() > 1e-3  # adapters train with the student
    student_ids = {id(v) for v in student.trainable_variables}
    adapter_vars = [v for a in d.adapters for v in a.trainable_variables]
    assert adapter_vars and all(id(v) in {id(w) for w in d.trainable_variables} for v in adapter_vars)
    assert not any(id(v) in student_ids for v in adapter_vars)
    student.save(tmp_path / "student.keras")  # deployed without the adapters
    assert keras.models.load_model(tmp_path / "student.keras").count_params() == 87_050


def test_total_loss_adds_the_weighted_terms(trained_teacher, sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[::160], y[::160]  # 25 digits of every class (the triple loop of the reference is cubic)
    d = make_feature_distiller(trained_teacher, kdkeras.build_student(seed=0), hints=[("conv1", "conv1")],
                               relation=("dense", "dense"), hint_weight=2.0)
    r = d.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    base = 0.5 * r["student_loss"] + 0.5 * r["distillation_loss"]
    np.testing.assert_allclose(r["loss"], base + 2.0 * r["hint_loss"] + r["rkd_loss"], rtol=1e-5)
    t_emb = trained_teacher.get_layer("dense")
    with capture_outputs({"t": t_emb}) as t_out:
        trained_teacher(x)
    with capture_outputs({"s": d.student.get_layer("dense")}) as s_out:
        d.student(x)
    expected_rkd = 25 * ref_rkd_distance(t_out["t"].numpy(), s_out["s"].numpy()) + 50 * ref_rkd_angle(
        t_out["t"].numpy(), s_out["s"].numpy())
    np.testing.assert_allclose(r["rkd_loss"], expected_rkd, rtol=1e-3)
    # FitNets: the mean over examples of the MSE between the 1x1-projected student conv1 and the teacher's conv1,
    # computed here with NumPy from the adapter's kernel and bias (same spatial size: no resize).
    with capture_outputs({"t": trained_teacher.get_layer("conv1")}) as t_out:
        trained_teacher(x)
    with capture_outputs({"s": d.student.get_layer("conv1")}) as s_out:
        d.student(x)
    kernel, bias = (w.astype(np.float64) for w in d.adapters[0].project.get_weights())
    mapped = np.tensordot(s_out["s"].numpy().astype(np.float64), kernel[0, 0], axes=1) + bias
    expected_hint = ((mapped - t_out["t"].numpy()) ** 2).reshape(len(x), -1).mean(-1).mean()
    np.testing.assert_allclose(r["hint_loss"], expected_hint, rtol=1e-4)


class SubclassedStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="features")
        self.pool = keras.layers.MaxPooling2D(2)
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.flat(self.pool(self.conv(x))))


@pytest.mark.parametrize("style", ["functional", "subclassed"])
def test_functional_and_subclassed_students(style, trained_teacher, small_batch):
    x, y = small_batch
    if style == "functional":
        inputs = keras.Input((28, 28, 1))
        h = keras.layers.Conv2D(8, 3, activation="relu", name="features")(inputs)
        student = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(h)))
        kwargs = {}
    else:
        student = SubclassedStudent()
        student(x[:1])
        kwargs = {"input_shape": (28, 28, 1)}
    d = make_feature_distiller(trained_teacher, student, hints=[("features", "conv1")], **kwargs)
    history = d.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["hint_loss"]))
    assert tuple(d.adapters[0].project.kernel.shape) == (1, 1, 8, 32)


def test_feature_distiller_refuses_bad_setups(trained_teacher, small_batch):
    x, y = small_batch
    student = kdkeras.build_student(seed=0)
    with pytest.raises(ValueError, match="no layer named 'conv9'.*conv1"):
        FeatureDistiller(student=student, teacher=trained_teacher, hints=[("conv9", "conv1")])
    with pytest.raises(ValueError, match="received none"):
        FeatureDistiller(student=student, teacher=trained_teacher)
    with pytest.raises(ValueError, match="feature maps"):
        FeatureDistiller(student=student, teacher=trained_teacher, hints=[("dense", "conv1")])
    d = make_feature_distiller(trained_teacher, student, hints=[("conv1", "conv1")])
    cached = kdkeras.cache_teacher_logits(trained_teacher, kdkeras.make_dataset(x, y, 32))
    with pytest.raises(ValueError, match="online"):
        d.fit(cached, epochs=1, verbose=0)


def test_feature_distiller_saves_and_loads(trained_teacher, small_batch, tmp_path):
    x, y = small_batch
    d = make_feature_distiller(trained_teacher, kdkeras.build_student(seed=0), hints=[("conv1", "conv2")],
                               relation=("dense", "dense"), hint_weight=0.5)
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    d.save(tmp_path / "fd.keras")
    loaded = keras.models.load_model(tmp_path / "fd.keras")
    assert isinstance(loaded, FeatureDistiller) and loaded.hint_weight == 0.5
    np.testing.assert_allclose(loaded.adapters[0].project.kernel.numpy(), d.adapters[0].project.kernel.numpy())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-6)
