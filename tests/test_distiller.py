"""Distiller: the keras.io workflow, the maths of one step, weights, precision, saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.shared import LOGITS_LOSS, log_softmax_np, make_distiller, softmax_np

import kdkeras


def numpy_total_loss(y, zs, zt, alpha, t, w=None):
    ce = -log_softmax_np(zs)[np.arange(len(y)), y]
    kl = t**2 * (softmax_np(zt, t) * (log_softmax_np(zt, t) - log_softmax_np(zs, t))).sum(-1)
    w = np.ones(len(y)) if w is None else w
    n = len(y)
    return (alpha * (w * ce).sum() + (1 - alpha) * (w * kl).sum()) / n, (w * ce).sum() / n, (w * kl).sum() / n


def test_keras_io_style_script_trains_a_student_well_above_chance(sample_arrays):
    """The keras.io 'Knowledge Distillation' example's calls, unchanged, on real digits."""
    (x_train, y_train), (x_test, y_test) = sample_arrays
    train_ds = kdkeras.make_dataset(x_train, y_train, 64, shuffle=True, seed=0)
    test_ds = kdkeras.make_dataset(x_test, y_test, 64)

    teacher = kdkeras.build_teacher(seed=0)
    teacher.compile(optimizer=keras.optimizers.Adam(), loss=LOGITS_LOSS,
                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
    teacher.fit(train_ds, epochs=2, verbose=0)
    teacher_before = [w.copy() for w in teacher.get_weights()]

    distiller = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=0.1,
        temperature=10,
    )
    history = distiller.fit(train_ds, epochs=3, validation_data=test_ds, verbose=0)
    results = distiller.evaluate(test_ds, return_dict=True, verbose=0)

    expected = {"loss", "student_loss", "distillation_loss", "sparse_categorical_accuracy", "agreement"}
    assert expected <= set(history.history)
    assert {"val_" + k for k in expected} <= set(history.history)
    assert expected <= set(results)
    assert results["sparse_categorical_accuracy"] > 0.8  # chance is 0.1
    assert results["agreement"] > 0.8
    assert history.history["loss"][-1] < history.history["loss"][0]
    # the teacher is frozen
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not teacher.trainable
    assert len(distiller.trainable_variables) == len(distiller.student.trainable_variables)


def test_predict_returns_student_logits(trained_teacher, small_batch):
    x, _ = small_batch
    distiller = make_distiller(trained_teacher)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), distiller.student.predict(x, verbose=0), atol=1e-6)
    # logits, not probabilities
    assert not np.allclose(distiller.predict(x, verbose=0).sum(-1), 1.0)


@pytest.mark.parametrize("with_weights", [False, True])
def test_evaluate_matches_numpy_reference(trained_teacher, small_batch, with_weights):
    x, y = small_batch
    w = np.linspace(0.0, 2.0, len(y)).astype("float32") if with_weights else None
    alpha, t = 0.3, 4.0
    distiller = make_distiller(trained_teacher, alpha=alpha, temperature=t)
    zs = distiller.student.predict(x, verbose=0)
    zt = trained_teacher.predict(x, verbose=0)
    total, ce, kl = numpy_total_loss(y, zs, zt, alpha, t, w)
    res = distiller.evaluate(x, y, sample_weight=w, batch_size=len(y), return_dict=True, verbose=0)
    assert res["loss"] == pytest.approx(total, rel=1e-4)
    assert res["student_loss"] == pytest.approx(ce, rel=1e-4)
    assert res["distillation_loss"] == pytest.approx(kl, rel=1e-4)
    agree = (zs.argmax(-1) == zt.argmax(-1)).astype(float)
    expected_agreement = agree.mean() if w is None else (agree * w).sum() / w.sum()
    assert res["agreement"] == pytest.approx(expected_agreement, rel=1e-5)


def test_one_sgd_step_matches_numpy_gradient_of_the_formula(trained_teacher, small_batch):
    """W_new = W - lr * dL/dW, with dL/dz_s from the closed form, back-propagated by the student."""
    x, y = small_batch
    x, y = x[:32], y[:32]
    alpha, t, lr = 0.25, 2.5, 0.1
    distiller = make_distiller(trained_teacher, optimizer=keras.optimizers.SGD(lr), alpha=alpha, temperature=t)
    student = distiller.student
    zt = trained_teacher.predict(x, verbose=0).astype(np.float64)
    before = [v.numpy().copy() for v in student.trainable_variables]
    # closed-form gradient of the mean loss w.r.t. the student logits
    zs = student.predict(x, verbose=0).astype(np.float64)
    onehot = np.eye(10)[y]
    dz = (alpha * (softmax_np(zs) - onehot) + (1 - alpha) * t * (softmax_np(zs, t) - softmax_np(zt, t))) / len(y)
    with tf.GradientTape() as tape:
        out = student(x, training=True)
    grads = tape.gradient(out, student.trainable_variables, output_gradients=tf.constant(dz, tf.float32))
    distiller.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    for b, g, v in zip(before, grads, student.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - lr * g.numpy(), rtol=1e-4, atol=1e-6)


def test_alpha_one_is_plain_student_training(trained_teacher, small_batch):
    x, y = small_batch
    d = make_distiller(trained_teacher, alpha=1.0)
    res = d.evaluate(x, y, return_dict=True, verbose=0)
    assert res["loss"] == pytest.approx(res["student_loss"], rel=1e-5)
    d = make_distiller(trained_teacher, alpha=0.0)
    res = d.evaluate(x, y, return_dict=True, verbose=0)
    assert res["loss"] == pytest.approx(res["distillation_loss"], rel=1e-5)


def test_temperature_and_alpha_change_without_retracing(trained_teacher, small_batch):
    x, y = small_batch
    ds = kdkeras.make_dataset(x, y, 32)

    class CountingDistiller(kdkeras.Distiller):
        traces = 0

        def train_step(self, data):
            CountingDistiller.traces += 1  # Python runs only while tracing
            return super().train_step(data)

    d = CountingDistiller(student=kdkeras.build_student(seed=0), teacher=trained_teacher)
    d.compile(optimizer="adam", temperature=1.0, alpha=0.5)
    seen = []
    traces_after_epoch = []

    class Schedule(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.temperature = [1.0, 4.0, 8.0][epoch]
            self.model.alpha = [0.5, 0.2, 0.0][epoch]

        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model.temperature, self.model.alpha))
            traces_after_epoch.append(CountingDistiller.traces)

    d.fit(ds, epochs=3, callbacks=[Schedule()], verbose=0)
    assert seen == [(1.0, 0.5), (4.0, pytest.approx(0.2)), (8.0, 0.0)]
    # changing temperature/alpha between epochs never retraces the step
    # (tf.function may trace twice on the first call while variables are created)
    assert traces_after_epoch[0] >= 1
    assert traces_after_epoch == [traces_after_epoch[0]] * 3, traces_after_epoch
    assert d.temperature_variable in d.non_trainable_variables
    # the loss really uses the new values
    zs, zt = d.student.predict(x, verbose=0), trained_teacher.predict(x, verbose=0)
    _, _, kl = numpy_total_loss(y, zs, zt, 0.0, 8.0)
    assert d.evaluate(x, y, return_dict=True, verbose=0)["loss"] == pytest.approx(kl, rel=1e-4)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "soft_ce", "mse"])
def test_every_named_loss_trains(trained_teacher, small_batch, name):
    x, y = small_batch
    d = make_distiller(trained_teacher, distillation_loss_fn=name)
    h = d.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(h.history["loss"]))
    assert h.history["distillation_loss"][-1] < h.history["distillation_loss"][0]


def test_custom_callable_loss(trained_teacher, small_batch):
    x, y = small_batch
    calls = []

    def zero_loss(teacher_logits, student_logits, temperature):
        calls.append(1)
        return tf.zeros(tf.shape(student_logits)[:1])

    d = make_distiller(trained_teacher, distillation_loss_fn=zero_loss, alpha=0.5)
    res = d.evaluate(x, y, return_dict=True, verbose=0)
    assert calls and res["distillation_loss"] == 0.0
    assert res["loss"] == pytest.approx(0.5 * res["student_loss"], rel=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_losses_in_float32(policy, small_batch):
    x, y = small_batch
    keras.config.set_dtype_policy(policy)
    teacher = kdkeras.build_teacher(seed=0)
    d = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=teacher)
    d.compile(optimizer="adam", metrics=["accuracy"])
    if policy == "mixed_float16":
        assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
    assert d.student(x[:2]).dtype != tf.float32  # the student computes in half precision
    t_logits = teacher(x[:8])
    batch = kdkeras.terms.DistillationBatch(y[:8], None, tf.cast(t_logits, "float32"), d.student(x[:8]))
    values = d.term_values(batch)
    assert values.gradient_loss.dtype == tf.float32 and all(m.dtype == tf.float32 for m in values.means)
    h = d.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.all(np.isfinite(h.history["loss"]))
    assert d.student.trainable_variables[0].dtype == "float32"  # float32 master weights


def test_cached_teacher_logits_give_the_same_weights_as_online(trained_teacher, sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[:640], y[:640]
    online_ds = kdkeras.make_dataset(x, y, 64, shuffle=False)
    cached_ds = kdkeras.cache_teacher_logits(trained_teacher, online_ds, shuffle=False)
    first = next(iter(cached_ds))
    assert set(first[0]) == {"inputs", "teacher_logits"}
    np.testing.assert_allclose(first[0]["teacher_logits"], trained_teacher.predict(x[:64], verbose=0), atol=1e-5)

    calls = {"n": 0}
    online = make_distiller(trained_teacher, seed=3)
    cached = make_distiller(trained_teacher, seed=3)
    online.fit(online_ds, epochs=1, verbose=0)
    # the teacher is not run on cached batches: break it and train anyway
    original_call = trained_teacher.call

    def exploding_call(*args, **kwargs):
        calls["n"] += 1
        raise AssertionError("teacher called on cached batches")

    trained_teacher.call = exploding_call
    try:
        cached.fit(cached_ds, epochs=1, verbose=0)
    finally:
        trained_teacher.call = original_call
    assert calls["n"] == 0
    for a, b in zip(online.student.get_weights(), cached.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # predict/evaluate accept cached batches too
    res = cached.evaluate(cached_ds, return_dict=True, verbose=0)
    student_top = cached.student.predict(x, verbose=0).argmax(-1)
    teacher_top = trained_teacher.predict(x, verbose=0).argmax(-1)
    assert res["agreement"] == pytest.approx(float(np.mean(student_top == teacher_top)), abs=1e-6)


def test_cache_in_float16_and_with_sample_weights(trained_teacher, small_batch):
    x, y = small_batch
    w = np.ones(len(y), "float32")
    ds = kdkeras.make_dataset(x, y, 32, sample_weight=w)
    cached = kdkeras.cache_teacher_logits(trained_teacher, ds, dtype="float16", shuffle=False)
    inputs, labels, weights = next(iter(cached))
    assert inputs["teacher_logits"].dtype == tf.float16
    assert weights.shape == (32,)
    d = make_distiller(trained_teacher)
    assert np.isfinite(d.fit(cached, epochs=1, verbose=0).history["loss"][0])


def test_cache_on_disk_holds_the_same_batches_and_trains_the_same(trained_teacher, sample_arrays, tmp_path):
    (x, y), _ = sample_arrays
    x, y = x[:200], y[:200]
    w = np.linspace(0.5, 1.5, len(y)).astype("float32")
    ds = kdkeras.make_dataset(x, y, 64, sample_weight=w)  # batches of 64, 64, 64, 8
    memory = kdkeras.cache_teacher_logits(trained_teacher, ds, shuffle=False)
    disk = kdkeras.cache_teacher_logits(trained_teacher, ds, shuffle=False, directory=tmp_path / "cache")
    assert os.listdir(tmp_path) == ["cache"]  # the temporary sibling was renamed, nothing left over
    batches = list(zip(memory, disk))
    assert [int(tf.shape(b[1])[0]) for b, _ in batches] == [64, 64, 64, 8]
    for (mi, my, mw), (di, dy, dw) in batches:
        for key in ("inputs", "teacher_logits"):
            np.testing.assert_array_equal(mi[key], di[key])
        np.testing.assert_array_equal(my, dy)
        np.testing.assert_array_equal(mw, dw)
    np.testing.assert_allclose(batches[0][1][0]["teacher_logits"], trained_teacher.predict(x[:64], verbose=0), atol=1e-5)
    a, b = make_distiller(trained_teacher, seed=3), make_distiller(trained_teacher, seed=3)
    a.fit(memory, epochs=1, verbose=0)
    b.fit(disk, epochs=1, verbose=0)
    for wa, wb in zip(a.student.get_weights(), b.student.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)
    # The on-disk cache outlives the process: tf.data.Dataset.load reads it back.
    assert int(tf.data.Dataset.load(str(tmp_path / "cache")).unbatch().reduce(0, lambda n, _: n + 1)) == 200


def test_cache_of_any_dataset_equals_cache_of_a_make_dataset_pipeline(trained_teacher, sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[:150], y[:150]
    fast = kdkeras.cache_teacher_logits(trained_teacher, (x, y), shuffle=False)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).map(lambda a, b: (a, b))  # not ours
    generic = kdkeras.cache_teacher_logits(trained_teacher, plain, shuffle=False)
    n = 0
    for (fi, fy), (gi, gy) in zip(fast, generic):
        np.testing.assert_array_equal(fi["inputs"], gi["inputs"])
        np.testing.assert_allclose(fi["teacher_logits"], gi["teacher_logits"], atol=1e-5)
        np.testing.assert_array_equal(fy, gy)
        n += int(tf.shape(fy)[0])
    assert n == 150


def test_cache_on_disk_refuses_a_non_empty_directory_and_stores_float16(trained_teacher, small_batch, tmp_path):
    x, y = small_batch
    ds = kdkeras.make_dataset(x, y, 32)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        kdkeras.cache_teacher_logits(trained_teacher, ds, directory=tmp_path / "used")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    cached = kdkeras.cache_teacher_logits(trained_teacher, ds, dtype="float16", directory=tmp_path / "half", seed=1)
    inputs, labels = next(iter(cached))
    assert inputs["teacher_logits"].dtype == tf.float16
    assert sorted(labels.numpy().tolist()) != labels.numpy().tolist()  # shuffled (the batch holds every class)


def test_jit_compile_trains_like_the_graph_step(trained_teacher, small_batch):
    x, y = small_batch
    ds = kdkeras.make_dataset(x, y, 32)
    plain = make_distiller(trained_teacher, seed=4, optimizer=keras.optimizers.SGD(0.1))
    xla = make_distiller(trained_teacher, seed=4, optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    assert xla.jit_compile
    h_plain = plain.fit(ds, epochs=2, verbose=0).history
    h_xla = xla.fit(ds, epochs=2, verbose=0).history
    for a, b in zip(plain.student.get_weights(), xla.student.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)
    moved = max(np.abs(a - b).max() for a, b in zip(kdkeras.build_student(seed=4).get_weights(), xla.student.get_weights()))
    assert moved > 1e-2
    np.testing.assert_allclose(h_plain["loss"], h_xla["loss"], rtol=1e-4)
    r = xla.evaluate(ds, return_dict=True, verbose=0)
    assert set(r) >= {"loss", "student_loss", "distillation_loss", "agreement"}


def test_save_and_load_round_trip(trained_teacher, small_batch, tmp_path):
    x, y = small_batch
    d = make_distiller(trained_teacher, alpha=0.3, temperature=5.0, distillation_loss_fn="reverse_kl")
    d.fit(x, y, batch_size=32, epochs=1, verbose=0)
    d.temperature = 2.0  # as a schedule would leave it
    path = tmp_path / "d.keras"
    d.save(path)
    loaded = keras.models.load_model(path)  # safe_mode stays on
    assert isinstance(loaded, kdkeras.Distiller)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), d.predict(x, verbose=0))
    assert loaded.temperature == 2.0 and loaded.alpha == pytest.approx(0.3)
    assert loaded.distillation_loss_fn is kdkeras.losses.reverse_kl_divergence
    assert not loaded.teacher.trainable
    np.testing.assert_allclose(
        loaded.evaluate(x, y, return_dict=True, verbose=0)["loss"],
        d.evaluate(x, y, return_dict=True, verbose=0)["loss"], rtol=1e-6)
    # training continues with the restored optimizer state
    assert int(loaded.optimizer.iterations.numpy()) == int(d.optimizer.iterations.numpy())
    loaded.fit(x, y, batch_size=32, epochs=1, verbose=0)

    student_path = tmp_path / "student.keras"
    d.student.save(student_path)
    student = keras.models.load_model(student_path)
    np.testing.assert_array_equal(student.predict(x, verbose=0), d.predict(x, verbose=0))


def test_hard_label_loss_uses_the_true_labels_not_the_teachers_guess(small_batch):
    """alpha = 1 with an untrained teacher (whose top class is mostly wrong): the loss is CE of the true labels."""
    x, y = small_batch
    teacher = kdkeras.build_teacher(seed=5)  # untrained: its argmax disagrees with most labels
    distiller = kdkeras.Distiller(student=kdkeras.build_student(seed=0), teacher=teacher)
    distiller.compile(optimizer="adam", alpha=1.0, temperature=2.0)
    got = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    zs = distiller.student.predict(x, verbose=0)
    true_ce = -log_softmax_np(zs)[np.arange(len(y)), y].mean()
    guessed = teacher.predict(x, verbose=0).argmax(-1)
    guessed_ce = -log_softmax_np(zs)[np.arange(len(y)), guessed].mean()
    assert np.mean(guessed == y) < 0.5 and abs(true_ce - guessed_ce) > 1e-3  # the data can show the bug
    np.testing.assert_allclose(got["student_loss"], true_ce, rtol=1e-5)
    np.testing.assert_allclose(got["loss"], true_ce, rtol=1e-5)


def test_shuffled_cache_keeps_image_logits_and_label_together(trained_teacher, sample_arrays):
    (x, y), _ = sample_arrays
    x, y = x[:300], y[:300]
    cached = kdkeras.cache_teacher_logits(trained_teacher, (x, y), batch_size=64, shuffle=True, seed=3)
    label_of = {x[i].tobytes(): (y[i], i) for i in range(len(x))}
    reference = trained_teacher.predict(x, verbose=0)
    seen = []
    for inputs, labels in cached:
        for image, logits, label in zip(inputs["inputs"].numpy(), inputs["teacher_logits"].numpy(), labels.numpy()):
            true_label, i = label_of[image.tobytes()]
            assert label == true_label
            np.testing.assert_allclose(logits, reference[i], atol=1e-5)
            seen.append(i)
    assert sorted(seen) == list(range(300)) and seen != sorted(seen)  # every example once, shuffled
