"""Export of the student: SavedModel and TensorFlow Lite (float32, dynamic-range int8)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.shared import LOGITS_LOSS

import kdkeras
from kdkeras import export


@pytest.fixture(scope="module")
def exported(sample_arrays, tmp_path_factory):
    """A student trained 2 epochs on the bundled 4,000-digit split, exported."""
    keras.utils.set_random_seed(0)
    (x, y), _ = sample_arrays
    student = kdkeras.build_student(seed=0)
    student.compile(optimizer="adam", loss=LOGITS_LOSS)
    student.fit(kdkeras.make_dataset(x, y, 64, shuffle=True, seed=0), epochs=2, verbose=0)
    out = tmp_path_factory.mktemp("export")
    return student, export.export_student(student, str(out)), out


def test_tflite_float32_logits_match_keras(exported, sample_arrays, reliability):
    student, paths, _ = exported
    _, (x_test, _) = sample_arrays
    expected = student.predict(x_test, verbose=0)
    got = export.tflite_predict(paths["tflite_float32"], x_test)
    diff = float(np.abs(got - expected).max())
    assert got.shape == expected.shape == (len(x_test), 10)
    assert diff <= 1e-4
    reliability("export verified", "TFLite float32 logits vs Keras on the 1,000 test digits",
                max_abs_diff=diff)


def test_tflite_int8_accuracy_within_one_point_of_float32(exported, sample_arrays, reliability):
    _, paths, _ = exported
    _, (x_test, y_test) = sample_arrays
    acc = {key: float(np.mean(np.argmax(export.tflite_predict(paths[key], x_test), -1) == y_test))
           for key in ("tflite_float32", "tflite_int8")}
    assert acc["tflite_float32"] > 0.85  # a trained student, or the comparison means little
    assert abs(acc["tflite_int8"] - acc["tflite_float32"]) <= 0.01
    size = {key: os.path.getsize(paths[key]) for key in acc}
    assert size["tflite_int8"] < 0.4 * size["tflite_float32"]  # int8 weights: about 4x smaller
    reliability("export verified", "TFLite dynamic-range int8 accuracy vs float32 (1,000 test digits)",
                float32=acc["tflite_float32"], int8=acc["tflite_int8"])


def test_saved_model_serves_the_same_logits(exported, sample_arrays):
    student, paths, _ = exported
    _, (x_test, _) = sample_arrays
    loaded = tf.saved_model.load(paths["saved_model"])
    got = loaded.serve(tf.constant(x_test[:64])).numpy()
    np.testing.assert_allclose(got, student.predict(x_test[:64], verbose=0), atol=1e-5)


def test_export_accepts_a_distiller_and_leaves_no_temporary_files(exported, trained_teacher, tmp_path):
    student, _, out = exported
    distiller = kdkeras.Distiller(student=student, teacher=trained_teacher)
    paths = export.export_student(distiller, str(tmp_path), tflite=False)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    assert sorted(os.listdir(out)) == ["saved_model", "student_float32.tflite", "student_int8.tflite"]
    # The teacher is not exported with the student: the SavedModel holds the student's weights only.
    loaded = tf.saved_model.load(paths["saved_model"])
    n_weights = sum(int(np.prod(v.shape)) for v in loaded.variables)
    assert n_weights == student.count_params()


def test_export_refuses_an_unbuilt_model(tmp_path):
    with pytest.raises(ValueError, match="built keras.Model"):
        export.export_student(keras.Sequential([keras.layers.Dense(3)]), str(tmp_path))


def test_latency_is_measured(exported, sample_arrays):
    _, paths, _ = exported
    _, (x_test, _) = sample_arrays
    ms = export.tflite_latency_ms(paths["tflite_int8"], x_test[0], repeats=30)
    # A second, independent measurement: wall time of 30 single-image runs through our own interpreter loop.
    import time

    interpreter = export._interpreter(paths["tflite_int8"])
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, *x_test.shape[1:]])
    interpreter.allocate_tensors()
    laps = []
    for image in x_test[:33]:
        start = time.perf_counter()
        interpreter.set_tensor(index, image[None].astype(np.float32))
        interpreter.invoke()
        laps.append(time.perf_counter() - start)
    reference_ms = float(np.median(laps[3:])) * 1000
    assert reference_ms / 5 < ms < reference_ms * 5, (ms, reference_ms)


def test_both_interpreters_run_the_litert_files_alike(exported, sample_arrays, monkeypatch):
    """ai_edge_litert's interpreter when installed (the dev extras install it), TensorFlow's otherwise:
    the same logits, and TensorFlow's deprecation warning is not passed on."""
    import warnings

    _, paths, _ = exported
    _, (x_test, _) = sample_arrays
    assert export._interpreter_class() is not None  # ai-edge-litert is a dev extra
    litert = export.tflite_predict(paths["tflite_int8"], x_test[:64])
    monkeypatch.setattr(export, "_interpreter_class", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = export.tflite_predict(paths["tflite_int8"], x_test[:64])
    np.testing.assert_allclose(litert, fallback, atol=1e-5)
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]
