"""Teachers that are not a single logits model: ensembles, and models that output probabilities.

- :class:`TeacherEnsemble` makes several trained teachers one teacher: the
  weighted mean of their logits. ``kdkeras.Distiller(teacher=[t1, t2])`` builds
  one for you.
- :class:`ProbabilityTeacher` wraps a teacher that ends in a softmax (such as a
  ``keras.applications`` model with its default ``classifier_activation``) so
  that it outputs log-probabilities. ``log softmax(z) = z - logsumexp(z)``
  differs from the logits ``z`` by one constant per example, and
  ``softmax((z - c) / T) = softmax(z / T)`` at every temperature, so the soft
  targets, and every loss built on them (``kl``, ``soft_ce``, ``dkd``...), are
  exactly those of the logits teacher (up to float rounding, and to the
  probabilities that underflow to 0 in float32). Only losses on the raw
  logits (``mse``) see the constant. ``kdkeras.Distiller(...,
  teacher_outputs="probabilities")`` wraps for you.

Both are Keras models registered for ``.keras`` saving: a Distiller with an
ensemble teacher saves and loads like any other.
"""

import math

import keras

from kdkeras import checks

__all__ = ["ProbabilityTeacher", "TeacherEnsemble", "as_teacher", "TEACHER_OUTPUTS"]

#: What a teacher's outputs are: ``"logits"`` (the default) or ``"probabilities"`` (it ends in a softmax).
TEACHER_OUTPUTS = ("logits", "probabilities")

# The smallest normal float32: log() of a probability that underflowed to 0 stays finite (about -87.3).
_TINY = 1.1754944e-38


def _check_outputs_kind(teacher_outputs):
    if teacher_outputs not in TEACHER_OUTPUTS:
        raise ValueError(f'teacher_outputs must be "logits" or "probabilities"; received {teacher_outputs!r}.')


@keras.saving.register_keras_serializable(package="kdkeras")
class ProbabilityTeacher(keras.Model):
    """A teacher that outputs probabilities, turned into one that outputs log-probabilities.

    Args:
        model: A trained ``keras.Model`` whose outputs are class probabilities.

    Example:

    ```python
    net = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    teacher = kdkeras.ProbabilityTeacher(net)   # or Distiller(..., teacher_outputs="probabilities")
    ```
    """

    def __init__(self, model, **kwargs):
        kwargs.setdefault("name", f"{getattr(model, 'name', 'teacher')}_log_probabilities")
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"ProbabilityTeacher wraps a keras.Model; received {model!r}.")
        self.model = model
        self.model.trainable = False

    def call(self, inputs, training=False):
        probabilities = keras.ops.cast(self.model(inputs, training=False), "float32")
        return keras.ops.log(keras.ops.maximum(probabilities, _TINY))

    def get_config(self):
        return {"name": self.name, "model": keras.saving.serialize_keras_object(self.model)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        return cls(model, **config)


@keras.saving.register_keras_serializable(package="kdkeras")
class TeacherEnsemble(keras.Model):
    """Several trained teachers as one: the weighted mean of their logits.

    Args:
        members: Trained ``keras.Model`` teachers with the same number of classes.
        weights: Optional positive weights, one per member (normalized to sum 1;
            default: equal).
        teacher_outputs: ``"logits"`` (default) or ``"probabilities"``: the
            members' outputs; probabilities are averaged as log-probabilities
            (see :class:`ProbabilityTeacher`).

    Example:

    ```python
    ensemble = kdkeras.TeacherEnsemble([teacher_a, teacher_b], weights=[2, 1])
    distiller = kdkeras.Distiller(student=student, teacher=ensemble)
    ```
    """

    def __init__(self, members, weights=None, teacher_outputs="logits", **kwargs):
        kwargs.setdefault("name", "teacher_ensemble")
        super().__init__(**kwargs)
        _check_outputs_kind(teacher_outputs)
        members = list(members) if isinstance(members, (list, tuple)) else None
        if not members:
            raise ValueError("A TeacherEnsemble needs a non-empty list of keras.Model teachers.")
        for i, member in enumerate(members):
            if teacher_outputs == "logits":
                checks.check_model(member, f"teacher {i}")
            elif not isinstance(member, keras.Model):
                raise TypeError(f"teacher {i} must be a keras.Model; received {member!r}.")
        for member in members[1:]:
            checks.check_same_outputs(members[0], member)
        if weights is None:
            weights = [1.0] * len(members)
        weights = [float(w) for w in weights]
        if len(weights) != len(members) or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"weights must be {len(members)} positive numbers, one per teacher; received {weights}.")
        self.teacher_outputs = teacher_outputs
        self.members = [ProbabilityTeacher(m) if teacher_outputs == "probabilities" else m for m in members]
        for member in self.members:
            member.trainable = False
        total = sum(weights)
        self.member_weights = [w / total for w in weights]

    def call(self, inputs, training=False):
        outputs = [keras.ops.cast(m(inputs, training=False), "float32") for m in self.members]
        return sum(w * z for w, z in zip(self.member_weights, outputs))

    def get_config(self):
        members = [m.model if isinstance(m, ProbabilityTeacher) and self.teacher_outputs == "probabilities" else m
                   for m in self.members]
        return {"name": self.name, "members": [keras.saving.serialize_keras_object(m) for m in members],
                "weights": self.member_weights, "teacher_outputs": self.teacher_outputs}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        members = [keras.saving.deserialize_keras_object(m, custom_objects=custom_objects)
                   for m in config.pop("members")]
        return cls(members, **config)


def as_teacher(teacher, teacher_outputs="logits"):
    """The one logits-out teacher model for a model, a list of models, or a probability model."""
    _check_outputs_kind(teacher_outputs)
    if isinstance(teacher, (list, tuple)):
        return teacher[0] if len(teacher) == 1 and teacher_outputs == "logits" else TeacherEnsemble(
            teacher, teacher_outputs=teacher_outputs)
    if teacher_outputs == "probabilities" and not isinstance(teacher, (ProbabilityTeacher, TeacherEnsemble)):
        if not isinstance(teacher, keras.Model):
            raise TypeError(f"teacher must be a keras.Model; received {teacher!r} of type {type(teacher).__name__}.")
        return ProbabilityTeacher(teacher)
    return teacher
