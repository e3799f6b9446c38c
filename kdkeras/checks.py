"""Input validation for the distillers: every bad input is refused before a training step runs.

Each function checks one concern and raises ``ValueError``/``TypeError`` with
a message that names what was received and how to fix it. The distillers call
them at construction, in ``compile`` and around ``fit``/``evaluate``; the
training step itself only carries the in-graph label-range check.
"""

import logging
import math
import re

import keras
import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

__all__ = [
    "LABEL_CHECK_TAG",
    "applies_softmax",
    "check_alpha",
    "check_data",
    "check_logit_shapes",
    "check_model",
    "check_same_outputs",
    "check_temperature",
    "checked_cache_temperature",
    "checked_labels",
    "expected_input_shape",
    "output_dim",
    "raise_friendly",
    "resolve_student_loss",
]

#: Marks the in-graph label-range assertion, so its error can be reworded for the user.
LABEL_CHECK_TAG = "kdkeras-label-range-check"
#: Marks the in-graph check that a top-k teacher cache was made at the training temperature.
TOP_K_TEMPERATURE_TAG = "kdkeras-top-k-temperature"


def _final_layer(model):
    layers = getattr(model, "layers", None)
    return layers[-1] if layers else None


def applies_softmax(model):
    """True when the model's last layer turns its output into probabilities."""
    layer = _final_layer(model)
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    if activation is None:
        return False
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def output_dim(model):
    """The static number of output logits of a built functional model, or None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    return outputs[0].shape[-1]


def check_model(model, role):
    """A ``keras.Model`` that outputs logits, or a ``TypeError``/``ValueError`` saying why not."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"{role} must be a keras.Model; received {model!r} of type {type(model).__name__}.")
    if applies_softmax(model):
        way_through = (
            ' For a trained teacher, pass teacher_outputs="probabilities" to the Distiller (it distils '
            "its log-probabilities, which give exactly the same soft targets), or build it with "
            "classifier_activation=None (keras.applications)." if role.startswith("teacher") else
            " Use from_logits=True losses."
        )
        raise ValueError(
            f"The {role} {model.name!r} ends in a softmax (last layer {_final_layer(model).name!r}), so it "
            "outputs probabilities. Distillation needs logits: rebuild the last layer without the "
            'activation (e.g. Dense(num_classes) instead of Dense(num_classes, activation="softmax")).'
            + way_through
        )


def check_same_outputs(teacher, student, vocabulary_size=None):
    """Teacher and student must predict the same classes; returns the ``vocabulary_size`` to compare (or None).

    Language models whose output sizes differ only by padding rows are
    compared on their first ``vocabulary_size`` logits; without it, outputs
    of different sizes are refused with a message that names both sizes and
    the argument.
    """
    t_dim, s_dim = output_dim(teacher), output_dim(student)
    if vocabulary_size is not None:
        if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, (int, np.integer)) or \
                vocabulary_size < 1:
            raise ValueError(f"vocabulary_size must be a positive integer; received {vocabulary_size!r}.")
        for role, model, dim in (("teacher", teacher, t_dim), ("student", student, s_dim)):
            if dim is not None and dim < vocabulary_size:
                raise ValueError(
                    f"vocabulary_size={vocabulary_size} is larger than the {role} {model.name!r}'s {dim} output "
                    "logits; it must be at most the smaller of the two output sizes.")
        return int(vocabulary_size)
    if t_dim is not None and s_dim is not None and t_dim != s_dim:
        raise ValueError(
            f"Teacher and student output shapes differ: teacher {teacher.name!r} outputs {t_dim} logits, "
            f"student {student.name!r} outputs {s_dim}. Both must predict the same classes; rebuild the "
            f"student with num_classes={t_dim}. Language models whose vocabularies differ only by padding "
            f"rows: pass Distiller(..., vocabulary_size=V) with V the real vocabulary size "
            f"(at most {min(t_dim, s_dim)}), and both are compared on their first V logits."
        )
    return None


def check_logit_shapes(teacher_logits, student_logits):
    """Static check (at trace time) that the two logit tensors agree in rank and classes."""
    t, s = teacher_logits.shape, student_logits.shape
    if t.rank is not None and s.rank is not None:
        if t.rank != s.rank or (t[-1] is not None and s[-1] is not None and t[-1] != s[-1]):
            raise ValueError(
                f"Teacher and student output shapes differ: teacher logits {t}, student logits {s}. "
                "Both must predict the same classes."
            )


def checked_labels(y, num_classes, jit_compile=False):
    """In-graph check that integer labels lie in ``[0, num_classes)``; returns ``y``.

    The loss, and so the update, waits for the check: a bad batch is never
    applied. (Skipped under XLA, which has no ``Assert``; two reductions and a
    scalar test per step otherwise.)
    """
    y = tf.convert_to_tensor(y)
    if jit_compile or not y.dtype.is_integer:
        return y
    flat = tf.reshape(y, [-1])
    lowest, highest = tf.reduce_min(flat), tf.reduce_max(flat)
    in_range = tf.logical_and(lowest >= 0, highest < tf.cast(num_classes, flat.dtype))
    check = tf.debugging.Assert(
        in_range,
        [f"{LABEL_CHECK_TAG}: labels must be in [0, num_classes); num_classes =", num_classes,
         "; labels out of range in this batch: smallest", lowest, "largest", highest],
    )
    with tf.control_dependencies([check]):
        return tf.identity(y)


def checked_cache_temperature(values, cache_temperature, temperature, jit_compile=False):
    """In-graph check that a teacher cache was made at the training ``temperature``; returns ``values``.

    ``values`` is the cache's structure of tensors (a top-k cache's
    log-probabilities hold only at the temperature they were made at), and
    the loss waits for the check (skipped under XLA, as for the labels).
    """
    if jit_compile:
        return values
    cache_temperature = tf.cast(tf.reshape(cache_temperature, [-1])[:1], tf.float32)
    same = tf.reduce_all(tf.abs(cache_temperature - temperature) <= 1e-6 * temperature)
    check = tf.debugging.Assert(same, [
        f"{TOP_K_TEMPERATURE_TAG}: The top-k teacher cache was made at temperature", cache_temperature,
        "but the Distiller trains at", temperature,
        "; its log-probabilities hold only at the cache's temperature: cache again with temperature= the "
        "training temperature."])
    with tf.control_dependencies([check]):
        return tf.nest.map_structure(tf.identity, values)


def resolve_student_loss(student_loss_fn):
    """The hard-label loss for ``compile(student_loss_fn=...)``: a Keras loss or callable.

    ``None`` gives ``SparseCategoricalCrossentropy(from_logits=True)``; the names
    of Keras' cross-entropies resolve with ``from_logits=True``; a loss configured
    with ``from_logits=False`` gets a warning (the student outputs logits).
    """
    if student_loss_fn is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(student_loss_fn, str):
        name = student_loss_fn.lower()
        if name in ("sparse_categorical_crossentropy", "scce"):
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if name in ("categorical_crossentropy", "cce"):
            return keras.losses.CategoricalCrossentropy(from_logits=True)
        try:
            return keras.losses.get(student_loss_fn)
        except ValueError:
            raise ValueError(
                f"Unknown student_loss_fn {student_loss_fn!r}. Pass a Keras loss name or instance, e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)."
            ) from None
    if not callable(student_loss_fn):
        raise TypeError(
            f"student_loss_fn must be a Keras loss or callable f(y_true, y_pred); received {student_loss_fn!r}."
        )
    config = getattr(student_loss_fn, "get_config", lambda: {})()
    if config.get("from_logits") is False:
        logger.warning("student_loss_fn %s has from_logits=False, but the student outputs logits; use "
                       "from_logits=True.", getattr(student_loss_fn, "name", student_loss_fn))
    return student_loss_fn


def expected_input_shape(model):
    """The model's input shape without the batch axis, when it is known (one input)."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if not isinstance(shape, tuple) or not shape or isinstance(shape[0], (tuple, list)):
        return None  # unbuilt, or several inputs: Keras checks those itself
    return tuple(shape[1:])


def _check_input_shape(model, shape, role):
    expected = expected_input_shape(model)
    if expected is None or shape is None:
        return
    got = tuple(shape[1:])
    if len(got) != len(expected) or any(e is not None and g is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(
            f"The {role} inputs have shape {tuple(shape)} (batch first), but the student {model.name!r} "
            f"expects (batch, {', '.join(map(str, expected))}). Resize or reshape the images, or build the "
            "models with the matching input_shape."
        )


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and not isinstance(value, tf.data.Dataset))


def check_data(student, num_classes, x, y, role, split_inputs):
    """Refuses empty data, inputs of the wrong shape and integer labels out of range.

    Args:
        student: The model the inputs are for.
        num_classes: The number of output logits, or ``None`` if unknown.
        x, y: What ``fit``/``evaluate`` received (arrays or a dataset in ``x``).
        role: ``"training"``, ``"validation"`` or ``"evaluation"`` (for messages).
        split_inputs: The distiller's ``split_cached_inputs`` (a dataset's element
            may carry cached teacher logits).
    """
    if x is None:
        return
    if isinstance(x, tf.data.Dataset):
        if int(x.cardinality()) == 0:
            raise ValueError(f"The {role} dataset is empty (cardinality 0): it yields no batches. "
                             "Check the source arrays and any filter()/take() upstream.")
        spec = x.element_spec
        if isinstance(spec, tuple) and spec:
            spec = spec[0]
        spec, _ = split_inputs(spec)
        if isinstance(spec, tf.TensorSpec):
            _check_input_shape(student, spec.shape.as_list() if spec.shape.rank is not None else None, role)
        return
    if _is_array(x) and len(x) == 0:
        raise ValueError(f"The {role} inputs are empty (0 examples); received shape {np.shape(x)}.")
    if _is_array(x):
        _check_input_shape(student, np.shape(x), role)
    if y is not None and _is_array(y):
        y_arr = np.asarray(y)
        if y_arr.dtype.kind in "iu" and y_arr.size and num_classes is not None:
            bad = (y_arr < 0) | (y_arr >= num_classes)
            if np.any(bad):
                raise ValueError(
                    f"The {role} labels must be in [0, {num_classes}) for a model with {num_classes} output "
                    f"logits; received {np.unique(y_arr[bad])[:10].tolist()} ({int(bad.sum())} labels out of "
                    "range)."
                )


def _tagged(message, tag):
    """The text of an in-graph assertion after its ``tag``, on one line, without TensorFlow's node trace."""
    detail = message[message.index(tag) + len(tag):]
    return re.sub(r"\s+", " ", detail.split("\n\t [[")[0]).strip(" :")


def raise_friendly(error, role):
    """Re-raises a training error as a ``ValueError`` a user can act on, when it is one of ours."""
    message = getattr(error, "message", str(error))
    if LABEL_CHECK_TAG in message:
        raise ValueError(f"Labels in the {role} data are out of range: {_tagged(message, LABEL_CHECK_TAG)}. Labels "
                         "must be integer class indices 0..num_classes-1.") from None
    if TOP_K_TEMPERATURE_TAG in message:
        detail = _tagged(message, TOP_K_TEMPERATURE_TAG)
        raise ValueError(detail.replace("] [", " ").replace("\\'", "'").strip("[] ")) from None
    if "Empty logs" in message:
        raise ValueError(f"The {role} data produced no batches (an empty dataset?). {message}") from None
    raise error


def check_temperature(temperature):
    """Validates a temperature and returns it as a Python float."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(
            f"temperature must be a positive finite number; received {temperature!r}."
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0; received {temperature!r}. "
            "Typical values are 1 to 20 (Hinton et al. use 2 to 20); T = 1 is "
            "the plain softmax."
        )
    return value


def check_alpha(alpha):
    """Validates ``alpha`` (the weight of the hard-label loss) and returns a float."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a number in [0, 1]; received {alpha!r}.") from None
    if not (0.0 <= value <= 1.0):
        raise ValueError(
            f"alpha must be in [0, 1]; received {alpha!r}. alpha is the weight of "
            "the hard-label (student) loss: total = alpha * student_loss + "
            "(1 - alpha) * distillation_loss."
        )
    return value
