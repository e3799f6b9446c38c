"""The :class:`Distiller`: a ``keras.Model`` that trains a student from a frozen teacher."""

import logging
import re

import keras
import numpy as np
import tensorflow as tf

from kdkeras import distribute as _distribute
from kdkeras import losses as losses_module
from kdkeras.data import split_cached_inputs

logger = logging.getLogger(__name__)

__all__ = ["Distiller"]

_LABEL_CHECK_TAG = "kdkeras-label-range-check"


def _final_layer(model):
    layers = getattr(model, "layers", None)
    return layers[-1] if layers else None


def _applies_softmax(model):
    """True when the model's last layer turns its output into probabilities."""
    layer = _final_layer(model)
    if layer is None:
        return False
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    if activation is None:
        return False
    return activation is keras.activations.softmax or (
        getattr(activation, "__name__", "") == "softmax"
    )


def _output_dim(model):
    """The static number of output logits of a built functional model, or None."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs or len(outputs) != 1:
        return None
    return outputs[0].shape[-1]


def _is_array(value):
    return isinstance(value, (np.ndarray, tf.Tensor)) or (
        hasattr(value, "__array__") and not isinstance(value, tf.data.Dataset)
    )


def per_example_loss(fn, y, logits):
    """A hard-label loss per example, float32, shape ``[batch]``.

    ``fn`` is a ``keras.losses.Loss`` (its unreduced ``call``) or a function
    ``f(y_true, y_pred)``; extra axes of its result are averaged.
    """
    values = fn.call(y, logits) if isinstance(fn, keras.losses.Loss) else fn(y, logits)
    values = tf.cast(values, tf.float32)
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


@keras.saving.register_keras_serializable(package="kdkeras")
class Distiller(keras.Model):
    """Trains a student network to match a frozen teacher (knowledge distillation).

    The loss of one batch (Hinton, Vinyals & Dean, 2015) is::

        alpha * student_loss(y, z_s) + (1 - alpha) * distillation_loss(z_t, z_s, T)

    where ``z_t`` and ``z_s`` are the teacher's and the student's logits. With
    the default ``distillation_loss_fn="kl"`` the distillation term is
    ``T**2 * KL(softmax(z_t / T) || softmax(z_s / T))``. ``alpha`` is the weight
    of the hard-label loss, as in the keras.io "Knowledge Distillation"
    example (some texts call ``1 - alpha`` "alpha").

    The teacher is frozen and always called with ``training=False``.
    ``call``/``predict`` return the student's plain logits (``T = 1``).
    ``fit`` and ``evaluate`` report ``loss``, ``student_loss``,
    ``distillation_loss``, ``agreement`` (teacher-student top-1 agreement)
    and the compiled metrics on the student's predictions.

    Batches may be ``(x, y)``, ``(x, y, sample_weight)``, or carry cached
    teacher logits as ``({"inputs": x, "teacher_logits": t}, y[, sample_weight])``
    (see :func:`kdkeras.cache_teacher_logits`), in which case the teacher is
    not run. Under ``tf.distribute`` one step updates the weights exactly as
    one device does on the same global batch.

    Args:
        student: The ``keras.Model`` to train; it must output logits.
        teacher: The trained ``keras.Model``; logits of the same shape.
        **kwargs: Passed on to ``keras.Model`` (for example ``name``).

    Example:

    ```python
    teacher = kdkeras.build_teacher()
    # ... teacher.compile(...); teacher.fit(...)
    distiller = kdkeras.Distiller(student=kdkeras.build_student(), teacher=teacher)
    distiller.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
        student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        distillation_loss_fn="kl",
        alpha=0.1,
        temperature=3.0,
    )
    distiller.fit(train_ds, epochs=3, validation_data=test_ds)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(self, student, teacher, **kwargs):
        super().__init__(**kwargs)
        for role, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise TypeError(
                    f"{role} must be a keras.Model; received {model!r} of type "
                    f"{type(model).__name__}."
                )
            if _applies_softmax(model):
                raise ValueError(
                    f"The {role} {model.name!r} ends in a softmax (last layer "
                    f"{_final_layer(model).name!r}), so it outputs probabilities. "
                    "Distillation needs logits: rebuild the last layer without the "
                    'activation (e.g. Dense(num_classes) instead of Dense(num_classes, '
                    'activation="softmax")) and use from_logits=True losses.'
                )
        t_dim, s_dim = _output_dim(teacher), _output_dim(student)
        if t_dim is not None and s_dim is not None and t_dim != s_dim:
            raise ValueError(
                f"Teacher and student output shapes differ: teacher {teacher.name!r} "
                f"outputs {t_dim} logits, student {student.name!r} outputs {s_dim}. "
                "Both must predict the same classes; rebuild the student with "
                f"num_classes={t_dim}."
            )
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature_variable = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(3.0),
            trainable=False,
            dtype="float32",
        )
        self.alpha_variable = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(0.1),
            trainable=False,
            dtype="float32",
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self._distill_compile_args = None
        if student.built:
            self.built = True

    # ------------------------------------------------------------------ #
    # Configuration
    # ------------------------------------------------------------------ #
    def get_config(self):
        def serialize(model):
            # The sub-models' own compile state (e.g. the teacher's optimizer)
            # plays no part in distillation and is not saved with the distiller.
            config = keras.saving.serialize_keras_object(model)
            config.pop("compile_config", None)
            return config

        return {
            "name": self.name,
            "trainable": self.trainable,
            "student": serialize(self.student),
            "teacher": serialize(self.teacher),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        student = keras.saving.deserialize_keras_object(
            config.pop("student"), custom_objects=custom_objects
        )
        teacher = keras.saving.deserialize_keras_object(
            config.pop("teacher"), custom_objects=custom_objects
        )
        return cls(student=student, teacher=teacher, **config)

    def build(self, input_shape=None):
        if not self.student.built and input_shape is not None:
            self.student.build(input_shape)
        self.built = True

    # ------------------------------------------------------------------ #
    # temperature / alpha
    # ------------------------------------------------------------------ #
    @property
    def temperature(self):
        """The current temperature (a float). Assigning validates and updates the variable."""
        return float(keras.ops.convert_to_numpy(self.temperature_variable))

    @temperature.setter
    def temperature(self, value):
        self.temperature_variable.assign(losses_module.check_temperature(value))

    @property
    def alpha(self):
        """The current weight of the hard-label loss (a float in [0, 1])."""
        return float(keras.ops.convert_to_numpy(self.alpha_variable))

    @alpha.setter
    def alpha(self, value):
        self.alpha_variable.assign(losses_module.check_alpha(value))

    # ------------------------------------------------------------------ #
    # compile
    # ------------------------------------------------------------------ #
    def compile(
        self,
        optimizer="adam",
        metrics=None,
        student_loss_fn=None,
        distillation_loss_fn="kl",
        alpha=0.1,
        temperature=3.0,
        **kwargs,
    ):
        """Configures the distiller for training.

        Args:
            optimizer: Optimizer for the student (name or instance).
            metrics: Metrics computed on the student's logits, as in
                ``keras.Model.compile``. ``weighted_metrics`` is accepted too.
            student_loss_fn: Hard-label loss on the student's logits; default
                ``SparseCategoricalCrossentropy(from_logits=True)``. A string
                naming a Keras cross-entropy is resolved with ``from_logits=True``.
            distillation_loss_fn: ``"kl"`` (default), ``"reverse_kl"``,
                ``"soft_ce"``, ``"mse"`` or another registered name (see
                :func:`kdkeras.losses.available`), a ``keras.losses.Loss``
                instance such as ``KLDivergence()`` (applied keras.io-style to
                the softened distributions, times ``T**2``), or a function
                ``f(teacher_logits, student_logits, temperature)``.
            alpha: Weight of the hard-label loss, in ``[0, 1]``.
            temperature: Softmax temperature ``T > 0`` of the soft targets.
            **kwargs: Other ``keras.Model.compile`` arguments (``jit_compile``,
                ``steps_per_execution``, ``run_eagerly``, ``weighted_metrics``,
                ``auto_scale_loss``). ``loss`` is not accepted: use
                ``student_loss_fn`` and ``distillation_loss_fn``.
        """
        if "loss" in kwargs:
            raise TypeError(
                "Distiller.compile() does not take `loss`; received "
                f"loss={kwargs['loss']!r}. Pass student_loss_fn= (hard labels) and "
                "distillation_loss_fn= (teacher soft targets) instead."
            )
        alpha = losses_module.check_alpha(alpha)
        temperature = losses_module.check_temperature(temperature)
        self.student_loss_fn = self._resolve_student_loss(student_loss_fn)
        self.distillation_loss_fn = losses_module.get(distillation_loss_fn)
        self._distill_compile_args = {
            "student_loss_fn": self.student_loss_fn,
            "distillation_loss_fn": distillation_loss_fn,
            "alpha": alpha,
            "temperature": temperature,
        }
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.temperature_variable.assign(temperature)
        self.alpha_variable.assign(alpha)

    @staticmethod
    def _resolve_student_loss(student_loss_fn):
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
                    f"Unknown student_loss_fn {student_loss_fn!r}. Pass a Keras loss "
                    "name or instance, e.g. keras.losses.SparseCategoricalCrossentropy"
                    "(from_logits=True)."
                ) from None
        if not callable(student_loss_fn):
            raise TypeError(
                "student_loss_fn must be a Keras loss or callable f(y_true, y_pred); "
                f"received {student_loss_fn!r}."
            )
        config = getattr(student_loss_fn, "get_config", lambda: {})()
        if config.get("from_logits") is False:
            logger.warning(
                "student_loss_fn %s has from_logits=False, but the student outputs "
                "logits; use from_logits=True.",
                getattr(student_loss_fn, "name", student_loss_fn),
            )
        return student_loss_fn

    def get_compile_config(self):
        config = super().get_compile_config()
        if not self._distill_compile_args:
            return config
        args = dict(self._distill_compile_args)
        dist = args["distillation_loss_fn"]
        if not isinstance(dist, (str, keras.losses.Loss)):
            name = losses_module.name_of(dist)
            if name is None:
                logger.warning(
                    "The distillation loss %r is not registered by name; it is saved "
                    "as a function and may not load. Register it with "
                    "kdkeras.losses.register().",
                    dist,
                )
            else:
                dist = name
        config.pop("loss", None)
        config.pop("loss_weights", None)
        config["student_loss_fn"] = keras.saving.serialize_keras_object(args["student_loss_fn"])
        config["distillation_loss_fn"] = (
            dist if isinstance(dist, str) else keras.saving.serialize_keras_object(dist)
        )
        config["alpha"] = args["alpha"]
        config["temperature"] = args["temperature"]
        return config

    def compile_from_config(self, config):
        config = dict(config)
        dist = config.pop("distillation_loss_fn", "kl")
        if not isinstance(dist, str):
            dist = keras.saving.deserialize_keras_object(dist)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(distillation_loss_fn=dist, **config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ #
    # Forward pass and losses
    # ------------------------------------------------------------------ #
    def call(self, inputs, training=None):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    def _unpack(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, teacher_logits = split_cached_inputs(x)
        return x, y, sample_weight, teacher_logits

    def _teacher_logits(self, x, cached):
        if cached is not None:
            return tf.stop_gradient(tf.cast(cached, tf.float32))
        return tf.stop_gradient(tf.cast(self.teacher(x, training=False), tf.float32))

    @staticmethod
    def _check_shapes(teacher_logits, student_logits):
        t, s = teacher_logits.shape, student_logits.shape
        if t.rank is not None and s.rank is not None:
            if t.rank != s.rank or (
                t[-1] is not None and s[-1] is not None and t[-1] != s[-1]
            ):
                raise ValueError(
                    f"Teacher and student output shapes differ: teacher logits {t}, "
                    f"student logits {s}. Both must predict the same classes."
                )

    def _check_labels(self, y, num_classes):
        """In-graph check that integer labels lie in [0, num_classes)."""
        y = tf.convert_to_tensor(y)
        if self.jit_compile or not y.dtype.is_integer:
            return y
        flat = tf.reshape(y, [-1])
        # Two reductions and a scalar test per step: cheap next to the student's step
        # (the offending values are reported as the smallest and largest label).
        lowest, highest = tf.reduce_min(flat), tf.reduce_max(flat)
        in_range = tf.logical_and(lowest >= 0, highest < tf.cast(num_classes, flat.dtype))
        check = tf.debugging.Assert(
            in_range,
            [
                f"{_LABEL_CHECK_TAG}: labels must be in [0, num_classes); num_classes =",
                num_classes,
                "; labels out of range in this batch: smallest",
                lowest,
                "largest",
                highest,
            ],
        )
        # The loss, and so the update, waits for the check: a bad batch is never applied.
        with tf.control_dependencies([check]):
            return tf.identity(y)

    def _global_batch_size(self, local_batch_size):
        return _distribute.global_batch_size(local_batch_size)

    def _per_example_student_loss(self, y, student_logits):
        return per_example_loss(self.student_loss_fn, y, student_logits)

    def _distillation_losses(self, y, student_logits, teacher_logits, sample_weight):
        """Returns (loss for the gradient, per-replica mean losses, local batch size)."""
        if self.distillation_loss_fn is None:
            raise RuntimeError("Call Distiller.compile() before fit(), evaluate() or test_step().")
        student_logits = tf.cast(student_logits, tf.float32)
        self._check_shapes(teacher_logits, student_logits)
        y = self._check_labels(y, tf.shape(student_logits)[-1])
        temperature = self.temperature_variable
        alpha = self.alpha_variable
        student_values = self._per_example_student_loss(y, student_logits)
        if losses_module.takes_labels(self.distillation_loss_fn):  # e.g. DKD needs the target class
            distill_values = self.distillation_loss_fn(teacher_logits, student_logits, temperature, labels=y)
        else:
            distill_values = self.distillation_loss_fn(teacher_logits, student_logits, temperature)
        distill_values = tf.cast(distill_values, tf.float32)
        local_n = tf.cast(tf.shape(student_logits)[0], tf.float32)
        if sample_weight is None:
            weights = tf.ones_like(student_values)
        else:
            weights = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        student_sum = tf.reduce_sum(weights * student_values)
        distill_sum = tf.reduce_sum(weights * distill_values)
        total_sum = alpha * student_sum + (1.0 - alpha) * distill_sum
        grad_loss = total_sum / self._global_batch_size(local_n)
        safe_n = tf.maximum(local_n, 1.0)
        means = (total_sum / safe_n, student_sum / safe_n, distill_sum / safe_n)
        return grad_loss, means, local_n, weights

    def _update_trackers(self, means, local_n, student_logits, teacher_logits, weights, extra_means=()):
        for tracker, value in extra_means:
            tracker.update_state(value, sample_weight=local_n)
        total, student, distill = means
        self._loss_tracker.update_state(total, sample_weight=local_n)
        self.student_loss_tracker.update_state(student, sample_weight=local_n)
        self.distillation_loss_tracker.update_state(distill, sample_weight=local_n)
        agree = tf.cast(
            tf.equal(tf.argmax(student_logits, axis=-1), tf.argmax(teacher_logits, axis=-1)),
            tf.float32,
        )
        self.agreement_tracker.update_state(agree, sample_weight=weights)

    # Hooks for subclasses (kdkeras.FeatureDistiller): features captured during the
    # forward passes and extra loss terms computed from them.
    def _teacher_forward(self, x, cached):
        """Returns ``(teacher_logits, teacher_features)``."""
        return self._teacher_logits(x, cached), {}

    def _student_forward(self, x, training):
        """Returns ``(student_logits, student_features)``."""
        return self.student(x, training=training), {}

    def _auxiliary_loss(self, teacher_features, student_features, local_n):
        """Extra loss terms from captured features.

        Returns ``(gradient term, weighted per-replica mean, [(tracker, mean), ...])``:
        the gradient term is already divided by the global batch size; the weighted
        mean is added to the reported total ``loss``.
        """
        return 0.0, 0.0, []

    def train_step(self, data):
        x, y, sample_weight, cached = self._unpack(data)
        teacher_logits, teacher_features = self._teacher_forward(x, cached)
        with tf.GradientTape() as tape:
            student_logits, student_features = self._student_forward(x, training=True)
            loss, means, local_n, weights = self._distillation_losses(
                y, student_logits, teacher_logits, sample_weight
            )
            extra, extra_mean, extra_means = self._auxiliary_loss(teacher_features, student_features, local_n)
            loss = loss + extra
            means = (means[0] + extra_mean,) + tuple(means[1:])
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        means = self._poison_if_non_finite(means, x)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._update_trackers(means, local_n, student_logits, teacher_logits, weights, extra_means)
        return self._step_logs(x, y, student_logits, sample_weight)

    def _poison_if_non_finite(self, means, x):
        """Makes the reported loss NaN when the input batch holds NaN or infinite values.

        A NaN pixel can vanish in the forward pass (ReLU and max-pooling drop it),
        leaving the loss finite, and still turn the weights into NaN through the
        gradient. With a NaN loss, ``StopOnNonFinite`` stops at this step. (Checking
        the inputs costs two ops per step; checking every gradient cost about 7 % of
        a small student's step on CPU.)
        """
        flags = [tf.reduce_all(tf.math.is_finite(t)) for t in tf.nest.flatten(x)
                 if isinstance(t, tf.Tensor) and t.dtype.is_floating]
        if not flags:
            return means
        finite = flags[0] if len(flags) == 1 else tf.reduce_all(tf.stack(flags))
        total = tf.where(finite, means[0], tf.constant(float("nan"), means[0].dtype))
        return (total,) + tuple(means[1:])

    def test_step(self, data):
        x, y, sample_weight, cached = self._unpack(data)
        teacher_logits, teacher_features = self._teacher_forward(x, cached)
        student_logits, student_features = self._student_forward(x, training=False)
        _, means, local_n, weights = self._distillation_losses(y, student_logits, teacher_logits, sample_weight)
        _, extra_mean, extra_means = self._auxiliary_loss(teacher_features, student_features, local_n)
        means = (means[0] + extra_mean,) + tuple(means[1:])
        self._update_trackers(means, local_n, student_logits, teacher_logits, weights, extra_means)
        return self._step_logs(x, y, student_logits, sample_weight)

    def _step_logs(self, x, y, student_logits, sample_weight):
        # Scalars cannot be reduced across workers by Keras 3.15 (see kdkeras.distribute).
        return _distribute.reducible_logs(self.compute_metrics(x, y, student_logits, sample_weight))

    @property
    def metrics(self):
        # The loss trackers first, then compiled metrics (Keras' order), and
        # never the teacher's or student's own compiled metrics.
        metrics = []
        if self.compiled:
            metrics.append(self._loss_tracker)
        metrics += [
            self.student_loss_tracker,
            self.distillation_loss_tracker,
            self.agreement_tracker,
        ]
        metrics += self._auxiliary_trackers()
        if self.compiled and self._compile_metrics is not None:
            metrics.append(self._compile_metrics)
        return metrics

    def _auxiliary_trackers(self):
        return []

    # ------------------------------------------------------------------ #
    # Input validation around fit / evaluate
    # ------------------------------------------------------------------ #
    def _num_classes(self):
        return _output_dim(self.student) or _output_dim(self.teacher)

    def _expected_input_shape(self):
        """The student's input shape without the batch axis, when it is known."""
        try:
            shape = self.student.input_shape
        except (AttributeError, ValueError):
            return None
        if not isinstance(shape, tuple) or not shape or isinstance(shape[0], (tuple, list)):
            return None  # unbuilt, or several inputs: Keras checks those itself
        return tuple(shape[1:])

    def _check_input_shape(self, shape, role):
        expected = self._expected_input_shape()
        if expected is None or shape is None:
            return
        got = tuple(shape[1:])
        if len(got) != len(expected) or any(
            e is not None and g is not None and e != g for e, g in zip(expected, got)
        ):
            raise ValueError(
                f"The {role} inputs have shape {tuple(shape)} (batch first), but the student "
                f"{self.student.name!r} expects (batch, {', '.join(map(str, expected))}). "
                "Resize or reshape the images, or build the models with the matching input_shape."
            )

    def _check_data(self, x, y, role):
        if x is None:
            return
        if isinstance(x, tf.data.Dataset):
            if int(x.cardinality()) == 0:
                raise ValueError(
                    f"The {role} dataset is empty (cardinality 0): it yields no batches. "
                    "Check the source arrays and any filter()/take() upstream."
                )
            spec = x.element_spec
            if isinstance(spec, tuple) and spec:
                spec = spec[0]
            spec, _ = split_cached_inputs(spec)
            if isinstance(spec, tf.TensorSpec):
                self._check_input_shape(spec.shape.as_list() if spec.shape.rank is not None else None, role)
            return
        if _is_array(x) and len(x) == 0:
            raise ValueError(f"The {role} inputs are empty (0 examples); received shape {np.shape(x)}.")
        if _is_array(x):
            self._check_input_shape(np.shape(x), role)
        if y is not None and _is_array(y):
            y_arr = np.asarray(y)
            n = self._num_classes()
            if y_arr.dtype.kind in "iu" and y_arr.size and n is not None:
                bad = (y_arr < 0) | (y_arr >= n)
                if np.any(bad):
                    raise ValueError(
                        f"The {role} labels must be in [0, {n}) for a model with {n} "
                        f"output logits; received {np.unique(y_arr[bad])[:10].tolist()} "
                        f"({int(bad.sum())} labels out of range)."
                    )

    def _check_validation(self, validation_data):
        if validation_data is None:
            return
        if isinstance(validation_data, tf.data.Dataset):
            self._check_data(validation_data, None, "validation")
        elif isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            self._check_data(validation_data[0], validation_data[1], "validation")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reduces a distributed data batch across workers just to learn its
        # shapes, which fails under MultiWorkerMirroredStrategy (see kdkeras.distribute).
        return _distribute.symbolic_build(self, super()._maybe_symbolic_build, iterator, data_batch)

    def _reraise_friendly(self, error, role):
        message = getattr(error, "message", str(error))
        if _LABEL_CHECK_TAG in message:
            detail = message[message.index(_LABEL_CHECK_TAG) + len(_LABEL_CHECK_TAG) :]
            detail = re.sub(r"\s+", " ", detail.split("\n\t [[")[0]).strip(" :")
            raise ValueError(
                f"Labels in the {role} data are out of range: {detail}. Labels must be "
                "integer class indices 0..num_classes-1."
            ) from None
        if "Empty logs" in message:
            raise ValueError(
                f"The {role} data produced no batches (an empty dataset?). {message}"
            ) from None
        raise error

    def fit(self, x=None, y=None, *args, **kwargs):
        """Trains the student; see ``keras.Model.fit``.

        Bad data raises ``ValueError`` before the first step. Pass
        ``callbacks=[kdkeras.callbacks.StopOnNonFinite()]`` to stop at the first
        NaN or infinite loss with an error naming the epoch and step (the main job
        does); it is not added by default because a per-step Python callback costs
        about 10 % of a small student's step on CPU.
        """
        self._check_data(x, y, "training")
        self._check_validation(kwargs.get("validation_data"))
        if isinstance(x, tf.data.Dataset) and len(args) < 7:
            # Keras 3.15 warns about its default shuffle=True for every dataset; a dataset shuffles itself.
            kwargs.setdefault("shuffle", False)
        try:
            history = super().fit(x, y, *args, **kwargs)
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            self._reraise_friendly(e, "training")
        epochs = kwargs.get("epochs", args[1] if len(args) > 1 else 1)
        initial_epoch = kwargs.get("initial_epoch", 0)
        if epochs > initial_epoch and not history.history:
            raise ValueError(
                "The training data produced no batches (an empty dataset?): no "
                "training step ran. Check the source arrays and any filter()/take() upstream."
            )
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x, y, "evaluation")
        try:
            return super().evaluate(x, y, *args, **kwargs)
        except (tf.errors.InvalidArgumentError, ValueError) as e:
            self._reraise_friendly(e, "evaluation")
