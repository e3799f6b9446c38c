"""Bad input gets a ValueError/TypeError naming the bad value, before any training step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras


@pytest.fixture
def distiller(trained_teacher):
    d = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=trained_teacher)
    d.compile(optimizer=keras.optimizers.SGD(0.1))
    return d


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_untouched(before, model):
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_output_shapes_differ():
    teacher = kdkeras.build_teacher(num_classes=10)
    student = kdkeras.build_student(num_classes=7)
    with pytest.raises(ValueError) as info:
        kdkeras.Distiller(student=student, teacher=teacher)
    assert "10" in str(info.value) and "7" in str(info.value)
    assert "num_classes" in str(info.value)


def test_output_shapes_differ_for_subclassed_models_at_first_step(small_batch):
    class Tiny(keras.Model):
        def __init__(self, n, **kw):
            super().__init__(**kw)
            self.flat = keras.layers.Flatten()
            self.out = keras.layers.Dense(n)

        def call(self, x, training=None):
            return self.out(self.flat(x))

    x, y = small_batch
    d = kdkeras.Distiller(student=Tiny(7), teacher=Tiny(10))
    d.compile()
    with pytest.raises(ValueError, match=r"differ.*10.*7|differ.*7.*10"):
        d.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(distiller, bad):
    with pytest.raises(ValueError) as info:
        distiller.compile(temperature=bad)
    assert repr(bad) in str(info.value) or str(bad) in str(info.value)
    with pytest.raises(ValueError):
        distiller.temperature = bad


def test_non_numeric_temperature(distiller):
    with pytest.raises(TypeError, match="'hot'"):
        distiller.compile(temperature="hot")


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_alpha_outside_unit_interval(distiller, bad):
    with pytest.raises(ValueError) as info:
        distiller.compile(alpha=bad)
    assert str(bad) in str(info.value) and "[0, 1]" in str(info.value)


def test_unknown_loss_name_lists_valid_names(distiller):
    with pytest.raises(ValueError) as info:
        distiller.compile(distillation_loss_fn="kullback")
    message = str(info.value)
    assert "'kullback'" in message
    assert all(name in message for name in ("kl", "reverse_kl", "soft_ce", "mse"))


def test_compile_rejects_loss_keyword(distiller):
    with pytest.raises(TypeError, match="student_loss_fn"):
        distiller.compile(loss="mse")


@pytest.mark.parametrize("style", ["dense_activation", "softmax_layer"])
def test_softmax_teacher_is_refused(style):
    layers = [keras.Input((28, 28, 1)), keras.layers.Flatten()]
    if style == "dense_activation":
        layers.append(keras.layers.Dense(10, activation="softmax", name="probs"))
    else:
        layers += [keras.layers.Dense(10), keras.layers.Softmax(name="probs")]
    teacher = keras.Sequential(layers)
    with pytest.raises(ValueError) as info:
        kdkeras.Distiller(student=kdkeras.build_student(), teacher=teacher)
    message = str(info.value)
    assert "softmax" in message and "logits" in message and "'probs'" in message


def test_non_model_teacher_is_a_type_error():
    with pytest.raises(TypeError, match="teacher must be a keras.Model"):
        kdkeras.Distiller(student=kdkeras.build_student(), teacher="teacher.keras")


def test_labels_out_of_range_arrays(distiller, small_batch):
    x, y = small_batch
    y = y.copy()
    y[5] = 10
    before = weights_of(distiller.student)
    with pytest.raises(ValueError) as info:
        distiller.fit(x, y, epochs=1, verbose=0)
    assert "[10]" in str(info.value) and "[0, 10)" in str(info.value)
    assert_untouched(before, distiller.student)


def test_labels_out_of_range_in_a_dataset(distiller, small_batch):
    x, y = small_batch
    y = y.astype("int64")
    y[3] = -2
    y[7] = 12
    before = weights_of(distiller.student)
    with pytest.raises(ValueError) as info:
        distiller.fit(kdkeras.make_dataset(x, y, 96), epochs=1, verbose=0)
    message = str(info.value)
    assert "-2" in message and "12" in message and "out of range" in message
    assert_untouched(before, distiller.student)  # the bad step was not applied


def test_empty_dataset(distiller, small_batch):
    x, y = small_batch
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8)
    with pytest.raises(ValueError, match="empty"):
        distiller.fit(empty, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        distiller.evaluate(empty, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        distiller.fit(x[:0], y[:0], epochs=1, verbose=0)


def test_empty_dataset_of_unknown_cardinality(distiller, small_batch):
    x, y = small_batch
    empty = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b > 100).batch(8)
    with pytest.raises(ValueError, match="no batches"):
        distiller.fit(empty, epochs=1, verbose=0)


def test_empty_validation_dataset(distiller, small_batch):
    x, y = small_batch
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8)
    with pytest.raises(ValueError, match="validation dataset is empty"):
        distiller.fit(x, y, validation_data=empty, epochs=1, verbose=0)


def test_fit_before_compile(trained_teacher, small_batch):
    x, y = small_batch
    d = kdkeras.Distiller(student=kdkeras.build_student(), teacher=trained_teacher)
    with pytest.raises((RuntimeError, ValueError), match="compile"):
        d.fit(x, y, epochs=1, verbose=0)
