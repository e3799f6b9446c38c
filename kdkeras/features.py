"""Feature- and relation-based distillation: FitNets hints and RKD.

- **Hints** (FitNets; Romero et al., 2015): an intermediate layer of the student
  is mapped by a learnable *adapter* onto the shape of a teacher layer, and the
  mean squared error between them is added to the loss. Adapters are a 1x1
  convolution for feature maps (after a bilinear resize when the spatial sizes
  differ) or a dense layer for vectors. They train with the student and live in
  the distiller, not in the student: ``distiller.student`` is exported without them.
- **RKD** (relational KD; Park et al., CVPR 2019): the *distances* between the
  embeddings of the examples of a batch, normalised by their mean, and the
  *angles* formed by triples of embeddings, are matched between teacher and
  student with the Huber loss. Embedding sizes may differ.

Layers are found by name (or passed as layer objects) and their outputs are
captured while the models run, so Sequential, Functional and subclassed
students all work, provided the layer is an attribute that ``get_layer`` finds
(or is passed itself).

Example:

```python
distiller = kdkeras.FeatureDistiller(
    student=student, teacher=teacher,
    hints=[("conv1", "conv2")],          # (student layer, teacher layer)
    relation=("dense", "dense"),         # embeddings for RKD
)
distiller.compile(optimizer="adam", student_loss_fn=..., alpha=0.5, temperature=4.0)
distiller.fit(train_ds, epochs=10)       # the teacher runs online
```
"""

import keras
import tensorflow as tf

from kdkeras import checks
from kdkeras.distiller import Distiller
from kdkeras.terms import LossTerm, capture_outputs

__all__ = ["FeatureDistiller", "HintLoss", "RelationLoss", "rkd_angle", "rkd_distance", "capture_outputs"]


def _find_layer(model, layer, role):
    if isinstance(layer, keras.layers.Layer):
        return layer
    try:
        return model.get_layer(layer)
    except ValueError:
        names = [sub.name for sub in model.layers]
        raise ValueError(
            f"The {role} {model.name!r} has no layer named {layer!r}. Its layers: {names}. "
            "Pass a layer name from that list, or the layer object itself."
        ) from None


# --------------------------------------------------------------------------- #
# RKD losses (pure functions)
# --------------------------------------------------------------------------- #
def _flatten(e):
    e = tf.cast(e, tf.float32)
    return tf.reshape(e, [tf.shape(e)[0], -1])


def _huber(a, b):
    d = tf.abs(a - b)
    return tf.where(d < 1.0, 0.5 * tf.square(d), d - 0.5)


def _pairwise_distances(e):
    sq = tf.reduce_sum(tf.square(e), axis=-1)
    d2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(e, e, transpose_b=True), 1e-12)
    n = tf.shape(e)[0]
    off_diagonal = 1.0 - tf.eye(n)
    return tf.sqrt(d2) * off_diagonal, off_diagonal


def rkd_distance(teacher_embeddings, student_embeddings):
    """RKD distance loss of one batch (a scalar).

    ``psi(i, j) = ||e_i - e_j|| / mu`` with ``mu`` the mean distance over pairs
    ``i != j``; the loss is the mean Huber loss between the teacher's and the
    student's ``psi`` over those pairs.
    """
    t, s = _flatten(teacher_embeddings), _flatten(student_embeddings)
    dt, mask = _pairwise_distances(t)
    ds, _ = _pairwise_distances(s)
    pairs = tf.maximum(tf.reduce_sum(mask), 1.0)
    dt = dt / tf.maximum(tf.reduce_sum(dt) / pairs, 1e-12)
    ds = ds / tf.maximum(tf.reduce_sum(ds) / pairs, 1e-12)
    return tf.reduce_sum(_huber(ds, tf.stop_gradient(dt)) * mask) / pairs


def _angles(e):
    diff = e[None, :, :] - e[:, None, :]  # diff[j, i] = e_i - e_j
    unit = tf.math.l2_normalize(diff, axis=-1)
    return tf.matmul(unit, unit, transpose_b=True)  # [j, i, k] = cos of angle i-j-k


def rkd_angle(teacher_embeddings, student_embeddings):
    """RKD angle loss of one batch (a scalar).

    ``psi(i, j, k) = <(e_i - e_j)/|e_i - e_j|, (e_k - e_j)/|e_k - e_j|>``, the
    cosine of the angle at ``e_j``; the loss is the mean Huber loss between the
    teacher's and the student's cosines over all triples.
    """
    t, s = _flatten(teacher_embeddings), _flatten(student_embeddings)
    return tf.reduce_mean(_huber(_angles(s), tf.stop_gradient(_angles(t))))


# --------------------------------------------------------------------------- #
# Adapters
# --------------------------------------------------------------------------- #
class _HintAdapter(keras.layers.Layer):
    """Maps a student feature onto a teacher feature's shape (resize + 1x1 conv, or dense)."""

    def __init__(self, student_shape, teacher_shape, **kwargs):
        super().__init__(**kwargs)
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        if len(self.teacher_shape) == 3 and len(self.student_shape) == 3:
            self.project = keras.layers.Conv2D(self.teacher_shape[-1], 1, name=f"{self.name}_conv1x1")
        elif len(self.teacher_shape) == 1 and len(self.student_shape) == 1:
            self.project = keras.layers.Dense(self.teacher_shape[-1], name=f"{self.name}_dense")
        else:
            raise ValueError(
                f"A hint needs feature maps (height, width, channels) or vectors on both sides; "
                f"received student {self.student_shape} and teacher {self.teacher_shape}."
            )
        self.project.build((None,) + self.student_shape)

    def call(self, x):
        x = tf.cast(x, tf.float32)
        if len(self.teacher_shape) == 3 and self.student_shape[:2] != self.teacher_shape[:2]:
            x = tf.image.resize(x, self.teacher_shape[:2], method="bilinear")
        return self.project(x)


# --------------------------------------------------------------------------- #
# The loss terms
# --------------------------------------------------------------------------- #
class HintLoss(LossTerm):
    """FitNets hints: per example, the summed MSE between adapted student features and teacher features.

    Args:
        pairs: ``[(student_layer, teacher_layer), ...]``.
        adapters: One layer per pair, mapping the student's feature onto the teacher's shape.
        name, weight: As in :class:`kdkeras.terms.LossTerm`.
    """

    def __init__(self, pairs, adapters, name="hint_loss", weight=1.0):
        super().__init__(name, weight)
        self.student_layers = {i: s for i, (s, _) in enumerate(pairs)}
        self.teacher_layers = {i: t for i, (_, t) in enumerate(pairs)}
        self.adapters = list(adapters)

    def call(self, batch):
        student, teacher = batch.student_features[self.name], batch.teacher_features[self.name]
        per_hint = []
        for i, adapter in enumerate(self.adapters):
            mapped = adapter(student[i])
            per_hint.append(tf.reduce_mean(tf.reshape(tf.square(mapped - teacher[i]), [tf.shape(mapped)[0], -1]),
                                           axis=-1))
        return tf.add_n(per_hint)


class RelationLoss(LossTerm):
    """RKD: ``distance_weight * rkd_distance + angle_weight * rkd_angle`` of two layers' embeddings.

    A batch-level term (relations between the examples of a batch).

    Args:
        student_layer, teacher_layer: The layers whose outputs are the embeddings.
        distance_weight: Weight of the distance loss (25 in the paper).
        angle_weight: Weight of the angle loss (50 in the paper).
        name, weight: As in :class:`kdkeras.terms.LossTerm`.
    """

    per_example = False

    def __init__(self, student_layer, teacher_layer, distance_weight=25.0, angle_weight=50.0, name="rkd_loss",
                 weight=1.0):
        super().__init__(name, weight)
        self.student_layers = {"embedding": student_layer}
        self.teacher_layers = {"embedding": teacher_layer}
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def call(self, batch):
        t_emb = batch.teacher_features[self.name]["embedding"]
        s_emb = batch.student_features[self.name]["embedding"]
        return self.distance_weight * rkd_distance(t_emb, s_emb) + self.angle_weight * rkd_angle(t_emb, s_emb)


# --------------------------------------------------------------------------- #
# The distiller
# --------------------------------------------------------------------------- #
@keras.saving.register_keras_serializable(package="kdkeras")
class FeatureDistiller(Distiller):
    """A :class:`~kdkeras.Distiller` that also distils intermediate features and relations.

    The loss is ``alpha * hard + (1 - alpha) * logits_distillation +
    hint_weight * hints + rkd_distance_weight * rkd_distance +
    rkd_angle_weight * rkd_angle``. Hints and RKD are trained jointly with the
    logits loss (FitNets' original two-stage schedule can be had with two fits).
    The teacher runs online: cached teacher logits carry no features and are refused.

    Args:
        student: The student ``keras.Model``.
        teacher: The trained teacher ``keras.Model``.
        hints: List of ``(student_layer, teacher_layer)`` (names or layers).
        relation: ``(student_layer, teacher_layer)`` whose outputs are the
            embeddings for RKD, or ``None``.
        hint_weight: Weight of the summed hint losses (MSE per element).
        rkd_distance_weight: Weight of the RKD distance loss (25 in the paper).
        rkd_angle_weight: Weight of the RKD angle loss (50 in the paper).
        input_shape: The input shape without the batch axis, when the student
            does not know it (a subclassed model): used once to measure the
            feature shapes.
    """

    def __init__(self, student, teacher, hints=(), relation=None, hint_weight=1.0,
                 rkd_distance_weight=25.0, rkd_angle_weight=50.0, input_shape=None, **kwargs):
        super().__init__(student=student, teacher=teacher, **kwargs)
        for name, value in (("hint_weight", hint_weight), ("rkd_distance_weight", rkd_distance_weight),
                            ("rkd_angle_weight", rkd_angle_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0; received {value!r}.")
        hints = [tuple(h) for h in (hints or ())]
        if not hints and relation is None:
            raise ValueError("FeatureDistiller needs hints=[(student_layer, teacher_layer), ...] "
                             "and/or relation=(student_layer, teacher_layer); received neither.")
        self.hint_weight = float(hint_weight)
        self.rkd_distance_weight = float(rkd_distance_weight)
        self.rkd_angle_weight = float(rkd_angle_weight)
        self._hint_spec = [(self._layer_name(s), self._layer_name(t)) for s, t in hints]
        self._relation_spec = None if relation is None else tuple(self._layer_name(v) for v in relation)
        pairs = [(_find_layer(student, s, "student"), _find_layer(teacher, t, "teacher")) for s, t in hints]
        shapes = self._feature_shapes(pairs, input_shape)
        self.adapters = [_HintAdapter(s_shape, t_shape, name=f"hint_adapter_{i}")
                         for i, (s_shape, t_shape) in enumerate(shapes)]
        if pairs:
            self.add_loss_term(HintLoss(pairs, self.adapters, weight=self.hint_weight))
        if relation is not None:
            self.add_loss_term(RelationLoss(_find_layer(student, relation[0], "student"),
                                            _find_layer(teacher, relation[1], "teacher"),
                                            self.rkd_distance_weight, self.rkd_angle_weight))

    @staticmethod
    def _layer_name(layer):
        return layer.name if isinstance(layer, keras.layers.Layer) else layer

    def _feature_shapes(self, pairs, input_shape):
        """The output shapes (no batch axis) of each (student layer, teacher layer) pair."""
        if not pairs:
            return []
        if input_shape is None:
            input_shape = checks.expected_input_shape(self.student)
        if input_shape is None or any(d is None for d in input_shape):
            raise ValueError(
                "FeatureDistiller needs the input shape to measure the feature shapes; the student "
                f"{self.student.name!r} does not say it. Pass input_shape=(28, 28, 1) or similar."
            )
        probe = tf.zeros((2,) + tuple(input_shape))
        with capture_outputs({i: s for i, (s, _) in enumerate(pairs)}) as s_out:
            self.student(probe, training=False)
        with capture_outputs({i: t for i, (_, t) in enumerate(pairs)}) as t_out:
            self.teacher(probe, training=False)
        return [(tuple(s_out[i].shape[1:]), tuple(t_out[i].shape[1:])) for i in range(len(pairs))]

    def get_config(self):
        config = super().get_config()
        config.update(
            hints=[list(h) for h in self._hint_spec],
            relation=None if self._relation_spec is None else list(self._relation_spec),
            hint_weight=self.hint_weight,
            rkd_distance_weight=self.rkd_distance_weight,
            rkd_angle_weight=self.rkd_angle_weight,
        )
        return config

