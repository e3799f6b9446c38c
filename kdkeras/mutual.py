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

from kdkeras import checks
from kdkeras import distribute as _distribute
from kdkeras.distiller import Distiller, split_cached_inputs
from kdkeras.soft_targets import SoftTargetVariables
from kdkeras.terms import DistillationBatch, LossTerm, SoftTargetLoss, StudentLoss, reduce_terms

__all__ = ["MutualLearning", "PeerDistillation", "born_again"]

#: ``compile``'s defaults for mutual learning (the paper trains with equal weights at T = 1).
DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 1.0


class PeerDistillation(LossTerm):
    """The mean distillation loss from every peer's logits to one student's, per example.

    ``batch.teacher_logits`` holds the list of the peers' logits (constants for
    this student). Each peer's loss is the :class:`kdkeras.terms.SoftTargetLoss`.

    Args:
        soft_target: The :class:`~kdkeras.terms.SoftTargetLoss` to apply per peer.
        name, weight: As in :class:`kdkeras.terms.LossTerm`.
    """

    def __init__(self, soft_target, name="peer_loss", weight=1.0):
        super().__init__(name, weight)
        self.soft_target = soft_target

    def call(self, batch):
        peers = [self.soft_target(batch._replace(teacher_logits=z)) for z in batch.teacher_logits]
        return tf.add_n(peers) / float(len(peers))


@keras.saving.register_keras_serializable(package="kdkeras")
class MutualLearning(SoftTargetVariables, keras.Model):
    """Deep mutual learning: several students teach each other while they train.

    Student ``k`` minimises ``alpha * CE(y, z_k) + (1 - alpha) * mean_{j != k}
    D(z_j, z_k, T)``, where ``D`` is the distillation loss (``T**2 * KL(p_j ||
    p_k)`` by default) and the peers' predictions ``z_j`` are constants for
    student ``k`` (as in the paper, where each network treats the others'
    posteriors as targets). All students are updated in the same step. Each
    student's loss is composed of the same terms as the Distiller's
    (:class:`kdkeras.terms.StudentLoss` and :class:`PeerDistillation`), and
    temperature and alpha live in variables, so
    :class:`kdkeras.callbacks.DistillationSchedule` works here too.

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
        dims = {checks.output_dim(s) for s in students}
        if len(dims) > 1:
            raise ValueError(f"The students' output sizes differ: {sorted(map(str, dims))}; they must match.")
        self.students = students
        self._create_soft_target_variables(DEFAULT_TEMPERATURE, DEFAULT_ALPHA)
        self.student_loss_fn = None
        self.distillation_loss_fn = None
        self._terms = None
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
                alpha=DEFAULT_ALPHA, temperature=DEFAULT_TEMPERATURE, **kwargs):
        """Configures training; the arguments mean what they mean in ``Distiller.compile``."""
        self.student_loss_fn, self.distillation_loss_fn, alpha, temperature = self._compile_soft_targets(
            student_loss_fn, distillation_loss_fn, alpha, temperature)
        soft = SoftTargetLoss(self.distillation_loss_fn, lambda: self.temperature_variable)
        self._terms = [StudentLoss(self.student_loss_fn, weight=self._hard_weight),
                       PeerDistillation(soft, weight=self._soft_weight)]
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self._assign_soft_targets(alpha, temperature)

    def call(self, inputs, training=None):
        inputs, _ = split_cached_inputs(inputs)
        return self.students[0](inputs, training=training)

    def _mutual_losses(self, x, y, sample_weight, training):
        """Every student's logits and the summed loss terms of all students."""
        if self._terms is None:
            raise RuntimeError("Call MutualLearning.compile() before fit() or evaluate().")
        x, _ = split_cached_inputs(x)
        logits = [tf.cast(s(x, training=training), tf.float32) for s in self.students]
        per_student = []
        for k, z_k in enumerate(logits):
            peers = [tf.stop_gradient(z_j) for j, z_j in enumerate(logits) if j != k]
            per_student.append(reduce_terms(self._terms, DistillationBatch(y, sample_weight, peers, z_k)))
        return logits, per_student

    def _update(self, y, logits, per_student):
        local_n = per_student[0].local_n
        total = tf.add_n([values.total for values in per_student])
        self.total_tracker.update_state(total, sample_weight=local_n)
        labels = tf.reshape(tf.cast(y, tf.int64), [-1])
        for tracker, z in zip(self.accuracy_trackers, logits):
            tracker.update_state(tf.cast(tf.equal(tf.argmax(z, -1), labels), tf.float32),
                                 sample_weight=per_student[0].example_weights)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            # Forward pass of every student, and each student's loss against the others
            logits, per_student = self._mutual_losses(x, y, sample_weight, training=True)
            loss = tf.add_n([values.gradient_loss for values in per_student])
            scaled = self.optimizer.scale_loss(loss)
        # Compute gradients and update every student's weights
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
        self._update(y, logits, per_student)
        return _distribute.reducible_logs(self.compute_metrics(x, y, logits[0], sample_weight))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits, per_student = self._mutual_losses(x, y, sample_weight, training=False)
        self._update(y, logits, per_student)
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
