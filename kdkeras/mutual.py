"""Online and self distillation: deep mutual learning and born-again networks.

- :class:`MutualLearning` (Zhang et al., CVPR 2018) trains two or more
  students together with no pretrained teacher: each learns from the hard
  labels and from the others' softened predictions.
- :func:`born_again` (Furlanello et al., ICML 2018) distils a model into a
  fresh copy of its own architecture, generation after generation.

Example:

```python
mutual = kdkeras.MutualLearning([kdkeras.build_student(seed=0), kdkeras.build_student(seed=1)])
mutual.compile(optimizer="adam", alpha=0.5, temperature=1.0)
mutual.fit(train_ds, epochs=10, validation_data=test_ds)
best = mutual.students[0]     # any student is a plain Keras model
```
"""

import keras
import tensorflow as tf

from kdkeras import distribute as _distribute
from kdkeras import losses as losses_module
from kdkeras.data import split_cached_inputs
from kdkeras.distiller import Distiller, _output_dim, per_example_loss

__all__ = ["MutualLearning", "born_again"]


@keras.saving.register_keras_serializable(package="kdkeras")
class MutualLearning(keras.Model):
    """Deep mutual learning: several students teach each other while they train.

    Student ``k`` minimises ``alpha * CE(y, z_k) + (1 - alpha) * mean_{j != k}
    D(z_j, z_k, T)``, where ``D`` is the distillation loss (``T**2 * KL(p_j ||
    p_k)`` by default) and the peers' predictions ``z_j`` are constants for
    student ``k`` (as in the paper, where each network treats the others'
    posteriors as targets). All students are updated in the same step.

    ``call``/``predict`` return the first student's logits; the compiled
    metrics are computed on it, and every student's accuracy is reported as
    ``student_k_accuracy``.

    Args:
        students: Two or more ``keras.Model`` with logits of the same size.
    """

    def __init__(self, students, **kwargs):
        super().__init__(**kwargs)
        students = list(students)
        if len(students) < 2 or not all(isinstance(s, keras.Model) for s in students):
            raise ValueError(
                f"MutualLearning needs a list of at least two keras.Model students; received {students!r}."
            )
        dims = {_output_dim(s) for s in students}
        if len(dims) > 1:
            raise ValueError(f"The students' output sizes differ: {sorted(map(str, dims))}; they must match.")
        self.students = students
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self.alpha = self.temperature = None
        self.accuracy_trackers = [keras.metrics.Mean(name=f"student_{k}_accuracy") for k in range(len(students))]
        self.total_tracker = keras.metrics.Mean(name="loss")
        if all(s.built for s in students):
            self.built = True

    def get_config(self):
        return {"name": self.name, "students": [keras.saving.serialize_keras_object(s) for s in self.students]}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        students = [keras.saving.deserialize_keras_object(s, custom_objects=custom_objects)
                    for s in config.pop("students")]
        return cls(students=students, **config)

    def compile(self, optimizer="adam", metrics=None, student_loss_fn=None, distillation_loss_fn="kl",
                alpha=0.5, temperature=1.0, **kwargs):
        """Configures training; the arguments mean what they mean in ``Distiller.compile``."""
        self.alpha = losses_module.check_alpha(alpha)
        self.temperature = losses_module.check_temperature(temperature)
        self.student_loss_fn = Distiller._resolve_student_loss(student_loss_fn)
        self.distillation_loss_fn = losses_module.get(distillation_loss_fn)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def call(self, inputs, training=None):
        inputs, _ = split_cached_inputs(inputs)
        return self.students[0](inputs, training=training)

    def _mutual_losses(self, x, y, sample_weight, training):
        if self.distillation_loss_fn is None:
            raise RuntimeError("Call MutualLearning.compile() before fit() or evaluate().")
        x, _ = split_cached_inputs(x)
        logits = [tf.cast(s(x, training=training), tf.float32) for s in self.students]
        local_n = tf.cast(tf.shape(logits[0])[0], tf.float32)
        w = tf.ones_like(logits[0][:, 0]) if sample_weight is None else tf.reshape(
            tf.cast(sample_weight, tf.float32), [-1])
        per_student = []
        for k, z_k in enumerate(logits):
            hard = per_example_loss(self.student_loss_fn, y, z_k)
            peers = [self.distillation_loss_fn(tf.stop_gradient(z_j), z_k, self.temperature)
                     for j, z_j in enumerate(logits) if j != k]
            soft = tf.add_n(peers) / float(len(peers))
            per_student.append(tf.reduce_sum(w * (self.alpha * hard + (1.0 - self.alpha) * soft)))
        total_sum = tf.add_n(per_student)
        return logits, total_sum, local_n, w

    def _update(self, y, logits, total_sum, local_n, w):
        self.total_tracker.update_state(total_sum / tf.maximum(local_n, 1.0), sample_weight=local_n)
        labels = tf.reshape(tf.cast(y, tf.int64), [-1])
        for tracker, z in zip(self.accuracy_trackers, logits):
            tracker.update_state(tf.cast(tf.equal(tf.argmax(z, -1), labels), tf.float32), sample_weight=w)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits, total_sum, local_n, w = self._mutual_losses(x, y, sample_weight, training=True)
            loss = total_sum / _distribute.global_batch_size(local_n)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self._update(y, logits, total_sum, local_n, w)
        return _distribute.reducible_logs(self.compute_metrics(x, y, logits[0], sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits, total_sum, local_n, w = self._mutual_losses(x, y, sample_weight, training=False)
        self._update(y, logits, total_sum, local_n, w)
        return _distribute.reducible_logs(self.compute_metrics(x, y, logits[0], sample_weight))

    @property
    def metrics(self):
        metrics = [self.total_tracker, *self.accuracy_trackers]
        if self.compiled and self._compile_metrics is not None:
            metrics.append(self._compile_metrics)
        return metrics


def born_again(build_fn, teacher, train_data, generations=2, epochs=10, validation_data=None,
               verbose=0, callbacks=None, **compile_kwargs):
    """Born-again networks: distils ``teacher`` into copies of an architecture, generation by generation.

    Generation 1 learns from ``teacher``; generation ``g`` learns from
    generation ``g - 1``. With ``build_fn`` building the teacher's own
    architecture this is the born-again scheme of Furlanello et al. (2018).

    Args:
        build_fn: ``build_fn(generation) -> keras.Model`` (logits out), e.g.
            ``lambda g: kdkeras.build_teacher(seed=g)``.
        teacher: The trained generation-0 model.
        train_data: Training data for ``Distiller.fit`` (the teacher runs online
            unless the batches carry cached logits of *this* teacher, so pass
            plain batches).
        generations: Number of generations to train (>= 1).
        epochs: Epochs per generation.
        validation_data, verbose, callbacks: Passed to ``fit``.
        **compile_kwargs: Passed to ``Distiller.compile`` (optimizer, alpha,
            temperature, distillation_loss_fn, metrics, ...). An optimizer given
            as an instance is cloned for every generation.

    Returns:
        A list of ``(model, history)``, one per generation.
    """
    if not isinstance(generations, int) or generations < 1:
        raise ValueError(f"generations must be an integer >= 1; received {generations!r}.")
    results = []
    previous = teacher
    for generation in range(1, generations + 1):
        kwargs = dict(compile_kwargs)
        optimizer = kwargs.get("optimizer", "adam")
        if isinstance(optimizer, keras.optimizers.Optimizer):
            kwargs["optimizer"] = optimizer.__class__.from_config(optimizer.get_config())
        if "metrics" in kwargs and kwargs["metrics"] is not None:
            kwargs["metrics"] = [m if isinstance(m, str) else m.__class__.from_config(m.get_config())
                                 for m in kwargs["metrics"]]
        student = build_fn(generation)
        distiller = Distiller(student=student, teacher=previous)
        distiller.compile(**kwargs)
        history = distiller.fit(train_data, epochs=epochs, validation_data=validation_data,
                                verbose=verbose, callbacks=callbacks)
        results.append((student, history))
        previous = student
    return results
