"""Export a trained student for deployment: SavedModel and TensorFlow Lite.

The student is a plain Keras model (the Distiller, the teacher and any
training-only adapters are not part of it). :func:`export_student` writes

- ``saved_model/``: a TensorFlow SavedModel with a ``serve`` endpoint
  (``keras.Model.export``), for TF Serving and ``tf.saved_model.load``;
- ``student_float32.tflite``: LiteRT (TensorFlow Lite), float32 weights;
- ``student_int8.tflite``: LiteRT with dynamic-range quantisation (weights
  stored as int8, activations float; about 4x smaller).

Both ``.tflite`` files come from Keras' own ``model.export(path,
format="litert")``.

Every output is written under a temporary name and renamed when complete.
:func:`tflite_predict` runs a ``.tflite`` file on a batch of images and
:func:`tflite_latency_ms` measures one image's inference time.

Example:

```python
paths = kdkeras.export.export_student(student, "exported/")
logits = kdkeras.export.tflite_predict(paths["tflite_float32"], x_test[:100])
```

To run them, kdkeras uses the ``ai_edge_litert`` interpreter when it is
installed (``pip install "kdkeras[litert]"``; TensorFlow 2.21 deprecates
``tf.lite.Interpreter`` in its favour) and TensorFlow's own otherwise, whose
deprecation warning (issued by its interpreter module) is not repeated on every
call.
"""

import os
import time
import warnings

import numpy as np
import tensorflow as tf

from kdkeras.atomic import atomic_directory, atomic_path

__all__ = ["export_student", "tflite_predict", "tflite_latency_ms", "to_tflite"]


def _saved_model(model, path):
    with atomic_directory(path) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)


def to_tflite(saved_model_dir, quantize=False):
    """Converts a SavedModel to TensorFlow Lite bytes.

    Args:
        saved_model_dir: A directory written by ``model.export``.
        quantize: ``True`` for dynamic-range quantisation (int8 weights).

    Returns:
        The ``.tflite`` flatbuffer as ``bytes``.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir))
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def export_student(model, directory, tflite=True):
    """Writes the student as a SavedModel and (optionally) two TensorFlow Lite files.

    Args:
        model: The trained student (a built ``keras.Model``), not the Distiller.
        directory: Output directory (created when needed).
        tflite: Also write ``student_float32.tflite`` and ``student_int8.tflite``.

    Returns:
        A dict ``{"saved_model": path, "tflite_float32": path, "tflite_int8": path}``.
    """
    import keras

    from kdkeras.distiller import Distiller

    if isinstance(model, Distiller):
        model = model.student
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"export_student needs a built keras.Model (the student); received {model!r}."
        )
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = {"saved_model": os.path.join(directory, "saved_model")}
    _saved_model(model, paths["saved_model"])
    if tflite:
        for key, quantize in (("tflite_float32", False), ("tflite_int8", True)):
            paths[key] = os.path.join(directory, f"student_{key.split('_')[1]}.tflite")
            options = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantize else {}
            with atomic_path(paths[key]) as tmp:
                model.export(tmp, format="litert", verbose=False, **options)
    return paths


def _interpreter_class():
    """``ai_edge_litert``'s Interpreter when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


def _interpreter(model):
    interpreter_class = _interpreter_class()
    kwargs = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {
        "model_path": os.fspath(model)}
    if interpreter_class is not None:
        return interpreter_class(**kwargs)
    with warnings.catch_warnings():
        # TensorFlow's interpreter warns that it is deprecated (in favour of ai_edge_litert) on every use.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow\.lite\.python\.interpreter")
        return tf.lite.Interpreter(**kwargs)


def tflite_predict(model, x, batch_size=256):
    """Runs a TensorFlow Lite model on ``x`` and returns its outputs (logits).

    Args:
        model: Path to a ``.tflite`` file, or its bytes.
        x: Inputs, float32, batch first.
        batch_size: Images per interpreter call.
    """
    x = np.asarray(x, np.float32)
    interpreter = _interpreter(model)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs, current = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if current != len(chunk):
            interpreter.resize_tensor_input(inp["index"], [len(chunk), *x.shape[1:]])
            interpreter.allocate_tensors()
            current = len(chunk)
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(outputs)


def tflite_latency_ms(model, image, repeats=50):
    """Median milliseconds of one single-image inference with the TFLite interpreter."""
    interpreter = _interpreter(model)
    inp = interpreter.get_input_details()[0]
    image = np.asarray(image, np.float32)[None]
    interpreter.resize_tensor_input(inp["index"], list(image.shape))
    interpreter.allocate_tensors()
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times[3:]) * 1000.0)
