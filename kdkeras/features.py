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

__all__ = ["AttentionLoss", "FeatureDistiller", "HintLoss", "RelationLoss", "attention_relation_kl",
           "attention_score_mse", "capture_outputs", "last_layers_map", "rkd_angle", "rkd_distance",
           "uniform_layer_map"]


def _find_layer(model, layer, role):
    """A layer of ``model`` by name, searched in nested models too (a KerasHub task's backbone), or the layer itself."""
    if isinstance(layer, keras.layers.Layer):
        return layer
    try:
        return model.get_layer(layer)
    except ValueError:
        pass
    for sub in model._flatten_layers(include_self=False):
        if sub.name == layer:
            return sub
    names = [sub.name for sub in model._flatten_layers(include_self=False)][:40]
    raise ValueError(
        f"The {role} {model.name!r} has no layer named {layer!r}, nested models included. Its layers: {names}. "
        "Pass a layer name from that list, or the layer object itself."
    ) from None


def uniform_layer_map(student_layers, teacher_layers):
    """``[(i, j)]``: student layer ``i`` learns from teacher layer ``j = ceil((i + 1) * L_t / L_s) - 1`` (TinyBERT).

    With 4 student and 12 teacher layers: ``[(0, 2), (1, 5), (2, 8), (3, 11)]``; the last
    student layer always learns from the last teacher layer.
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"A layer map needs 1 <= student layers <= teacher layers; received {student_layers} "
                         f"and {teacher_layers}.")
    return [(i, -(-(i + 1) * teacher_layers // student_layers) - 1) for i in range(student_layers)]


def last_layers_map(student_layers, teacher_layers, count=1):
    """``[(i, j)]`` of the last ``count`` layers of each (MiniLM distils the last layer only)."""
    if not 1 <= count <= min(student_layers, teacher_layers):
        raise ValueError(f"count must be in [1, {min(student_layers, teacher_layers)}]; received {count}.")
    return [(student_layers - count + k, teacher_layers - count + k) for k in range(count)]


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
    """Maps a student feature onto a teacher feature's shape (resize + 1x1 conv, or dense on the last axis).

    Feature maps ``(height, width, channels)``, vectors ``(width,)`` and
    sequences ``(steps, width)`` (a transformer's hidden states, the same
    steps on both sides) are supported.
    """

    def __init__(self, student_shape, teacher_shape, project=True, **kwargs):
        super().__init__(**kwargs)
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
        ranks = (len(self.student_shape), len(self.teacher_shape))
        if not project:  # the student's features as they are (DistilBERT's cosine on the hidden states)
            if ranks[0] != ranks[1] or any(s is not None and t is not None and s != t
                                           for s, t in zip(self.student_shape, self.teacher_shape)):
                raise ValueError(f"A hint without projection needs features of one shape; received student "
                                 f"{self.student_shape} and teacher {self.teacher_shape} (use the projection, "
                                 "hint_projection=True, where widths differ).")
            self.project = None
            return
        if ranks == (3, 3):
            self.project = keras.layers.Conv2D(self.teacher_shape[-1], 1, name=f"{self.name}_conv1x1")
        elif ranks in ((1, 1), (2, 2)):
            if ranks == (2, 2) and None not in (self.student_shape[0], self.teacher_shape[0]) and \
                    self.student_shape[0] != self.teacher_shape[0]:
                raise ValueError(f"Sequence hints need the same steps on both sides; received student "
                                 f"{self.student_shape} and teacher {self.teacher_shape}.")
            self.project = keras.layers.Dense(self.teacher_shape[-1], name=f"{self.name}_dense")
        else:
            raise ValueError(
                f"A hint needs feature maps (height, width, channels), sequences (steps, width) or vectors on "
                f"both sides; received student {self.student_shape} and teacher {self.teacher_shape}."
            )
        self.project.build((None,) + self.student_shape)

    @property
    def is_sequence(self):
        return len(self.teacher_shape) == 2

    def call(self, x):
        x = tf.cast(x, tf.float32)
        if self.project is None:
            return x
        if len(self.teacher_shape) == 3 and self.student_shape[:2] != self.teacher_shape[:2]:
            x = tf.image.resize(x, self.teacher_shape[:2], method="bilinear")
        return self.project(x)


# --------------------------------------------------------------------------- #
# The loss terms
# --------------------------------------------------------------------------- #
class HintLoss(LossTerm):
    """FitNets hints: the summed loss between adapted student features and teacher features.

    For feature maps and vectors: per example, the mean squared error. For
    sequences ``[batch, steps, width]`` (hidden states of transformers): per
    token, ``"mse"`` (the mean over the width, as TinyBERT) or ``"cosine"``
    (``1 - cos``, as DistilBERT); the term is then reduced over the real tokens
    of the global batch (the token weights: a language model's, or the inputs'
    ``padding_mask``), so padding changes nothing.

    Args:
        pairs: ``[(student_layer, teacher_layer), ...]``.
        adapters: One layer per pair, mapping the student's feature onto the teacher's shape.
        loss: ``"mse"`` or ``"cosine"`` (sequences only).
        name, weight: As in :class:`kdkeras.terms.LossTerm`.
    """

    def __init__(self, pairs, adapters, loss="mse", name="hint_loss", weight=1.0):
        super().__init__(name, weight)
        self.student_layers = {i: s for i, (s, _) in enumerate(pairs)}
        self.teacher_layers = {i: t for i, (_, t) in enumerate(pairs)}
        self.adapters = list(adapters)
        kinds = {getattr(a, "is_sequence", False) for a in self.adapters}
        if len(kinds) > 1:
            raise ValueError("Hints of one distiller are all sequences (steps, width) or all per example; "
                             "received both kinds.")
        self.per_token = kinds == {True}
        if loss not in ("mse", "cosine") or (loss == "cosine" and not self.per_token):
            raise ValueError(f"hint_loss must be 'mse', or 'cosine' for sequence hints; received {loss!r}.")
        self.loss = loss

    def call(self, batch):
        student, teacher = batch.student_features[self.name], batch.teacher_features[self.name]
        per_hint = []
        for i, adapter in enumerate(self.adapters):
            mapped, target = adapter(_output(student[i])), tf.cast(_output(teacher[i]), tf.float32)
            if self.per_token and self.loss == "cosine":
                per_hint.append(1.0 - tf.reduce_sum(tf.math.l2_normalize(mapped, -1) *
                                                    tf.math.l2_normalize(target, -1), axis=-1))
            elif self.per_token:
                per_hint.append(tf.reduce_mean(tf.square(mapped - target), axis=-1))
            else:
                per_hint.append(tf.reduce_mean(tf.reshape(tf.square(mapped - target), [tf.shape(mapped)[0], -1]),
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
# Attention transfer (MiniLM-v2 relations, TinyBERT scores)
# --------------------------------------------------------------------------- #
def _attention_mask(token_weights, steps, causal):
    """``[batch, queries, keys]``: real keys (and, for a decoder, keys up to the query)."""
    keys = tf.ones([1, steps], tf.bool) if token_weights is None else tf.cast(token_weights, tf.float32) > 0
    mask = tf.broadcast_to(keys[:, None, :], tf.concat([tf.shape(keys)[:1], [steps, steps]], 0))
    if causal:
        mask = tf.logical_and(mask, tf.linalg.band_part(tf.ones([steps, steps], tf.bool), -1, 0)[None])
    return mask


def _heads(x, heads):
    """``[batch, steps, H, d]`` (or ``[batch, steps, width]``) as ``[batch, heads, steps, width / heads]``."""
    x = tf.cast(x, tf.float32)
    batch, steps = tf.shape(x)[0], tf.shape(x)[1]
    x = tf.reshape(x, [batch, steps, heads, -1])
    return tf.transpose(x, [0, 2, 1, 3])


def _relation_log_probs(x, heads, mask):
    x = _heads(x, heads)
    scores = tf.matmul(x, x, transpose_b=True) / tf.sqrt(tf.cast(tf.shape(x)[-1], tf.float32))
    scores = tf.where(mask[:, None], scores, tf.constant(-1e9, tf.float32))
    return tf.nn.log_softmax(scores, axis=-1)


def attention_relation_kl(teacher, student, relation_heads, token_weights=None, causal=False):
    """MiniLM-v2 self-attention relation transfer of one of Q, K or V, per query token: ``[batch, steps]``.

    Both sides' vectors (``[batch, steps, heads, head_dim]`` or ``[batch, steps,
    width]``) are concatenated over heads and split into ``relation_heads``
    relation heads (so head counts and widths may differ); per relation head the
    scaled dot products ``softmax(x x^T / sqrt(d_r))`` over the real keys (and
    keys up to the query for a decoder) give a distribution per query, and the
    value is ``KL(teacher || student)`` averaged over the relation heads (Wang et
    al., "MiniLMv2", 2021).
    """
    steps = tf.shape(student)[1]
    mask = _attention_mask(token_weights, steps, causal)
    log_t = tf.stop_gradient(_relation_log_probs(teacher, relation_heads, mask))
    log_s = _relation_log_probs(student, relation_heads, mask)
    p_t = tf.where(mask[:, None], tf.exp(log_t), 0.0)
    kl = tf.reduce_sum(p_t * (log_t - log_s), axis=-1)  # [batch, relation heads, queries]
    return tf.reduce_mean(kl, axis=1)


def attention_score_mse(teacher_q, teacher_k, student_q, student_k, token_weights=None, causal=False):
    """TinyBERT's attention-score transfer, per query token: the MSE of ``q k^T / sqrt(d)`` per head over real keys.

    Needs the same number of heads on both sides (``[batch, steps, heads, head_dim]`` inputs).
    """
    heads = student_q.shape[2]
    if teacher_q.shape[2] != heads:
        raise ValueError(f"Attention-score transfer needs the same number of heads on both sides; received student "
                         f"{heads} and teacher {teacher_q.shape[2]}. Use the MiniLM relations instead.")

    def scores(q, k):
        q, k = _heads(q, heads), _heads(k, heads)
        return tf.matmul(q, k, transpose_b=True) / tf.sqrt(tf.cast(tf.shape(q)[-1], tf.float32))

    mask = tf.cast(_attention_mask(token_weights, tf.shape(student_q)[1], causal), tf.float32)[:, None]
    diff = tf.square(scores(student_q, student_k) - tf.stop_gradient(scores(teacher_q, teacher_k))) * mask
    per_head = tf.math.divide_no_nan(tf.reduce_sum(diff, -1), tf.reduce_sum(mask, -1))  # mean over real keys
    return tf.reduce_mean(per_head, axis=1)


def _attention_layer(model, layer, role):
    """The ``MultiHeadAttention`` of a layer: itself, or a KerasHub transformer layer's self-attention."""
    layer = _find_layer(model, layer, role)
    attention = layer if isinstance(layer, keras.layers.MultiHeadAttention) else \
        getattr(layer, "_self_attention_layer", None)
    if not isinstance(attention, keras.layers.MultiHeadAttention):
        raise ValueError(f"Attention transfer needs a keras.layers.MultiHeadAttention or a KerasHub "
                         f"TransformerEncoder/TransformerDecoder; the {role}'s {layer.name!r} is "
                         f"{type(layer).__name__}.")
    causal = "Decoder" in type(layer).__name__ or bool(getattr(attention, "_use_causal_mask", False))
    return attention, causal


class AttentionLoss(LossTerm):
    """Attention transfer between pairs of self-attention layers, per query token (a per-token term).

    ``kind="relations"`` (default): MiniLM-v2's Q-Q, K-K and V-V relations, summed
    (:func:`attention_relation_kl`); ``kind="scores"``: TinyBERT's attention-score
    MSE (:func:`attention_score_mse`, same head counts). Decoder layers (a
    KerasHub ``TransformerDecoder``) compare keys up to the query only.

    Args:
        pairs: ``[(student_layer, teacher_layer)]``: names or layers, each a
            ``MultiHeadAttention`` or a KerasHub transformer layer.
        student, teacher: The models (to find layers by name).
        relation_heads: Relation heads of the MiniLM relations.
        kind: ``"relations"`` or ``"scores"``.
        name, weight: As in :class:`kdkeras.terms.LossTerm`.
    """

    per_token = True

    def __init__(self, pairs, student, teacher, relation_heads=4, kind="relations", name="attention_loss",
                 weight=1.0):
        super().__init__(name, weight)
        if kind not in ("relations", "scores"):
            raise ValueError(f"kind must be 'relations' or 'scores'; received {kind!r}.")
        self.kind, self.relation_heads, self.causal = kind, int(relation_heads), []
        parts = ("q", "k", "v") if kind == "relations" else ("q", "k")
        for i, (s, t) in enumerate(pairs):
            (s_att, s_causal), (t_att, t_causal) = _attention_layer(student, s, "student"), \
                _attention_layer(teacher, t, "teacher")
            self.causal.append(s_causal or t_causal)
            for part in parts:
                self.student_layers[(i, part)] = getattr(s_att, f"_{_DENSE[part]}_dense")
                self.teacher_layers[(i, part)] = getattr(t_att, f"_{_DENSE[part]}_dense")
        self.pairs = len(pairs)

    def call(self, batch):
        s, t = batch.student_features[self.name], batch.teacher_features[self.name]
        values = []
        for i in range(self.pairs):
            if self.kind == "relations":
                values += [attention_relation_kl(t[(i, p)], s[(i, p)], self.relation_heads, batch.token_weights,
                                                 self.causal[i]) for p in ("q", "k", "v")]
            else:
                values.append(attention_score_mse(t[(i, "q")], t[(i, "k")], s[(i, "q")], s[(i, "k")],
                                                  batch.token_weights, self.causal[i]))
        return tf.add_n(values)


_DENSE = {"q": "query", "k": "key", "v": "value"}


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
            feature shapes. Models with dict inputs (KerasHub's
            ``{"token_ids", "padding_mask"}``) are probed with 8 tokens.
        hint_loss: ``"mse"`` (default) or, for sequence hints, ``"cosine"``.
        hint_projection: ``True`` (default): the student's feature passes a
            learned projection (a 1x1 convolution, or a dense layer on the
            width) onto the teacher's shape, as FitNets and TinyBERT;
            ``False``: compared as it is, as DistilBERT's cosine on the hidden
            states (the shapes must match; the student's and teacher's widths
            are the same).
        attention: ``[(student_layer, teacher_layer)]`` of self-attention
            layers for attention transfer (:class:`AttentionLoss`), weighted by
            ``attention_weight``; ``attention_kind`` ``"relations"`` (MiniLM-v2,
            ``relation_heads`` heads) or ``"scores"`` (TinyBERT).

    Layers are found by name in nested models too (``"transformer_layer_3"``
    of a KerasHub backbone); :func:`uniform_layer_map` and
    :func:`last_layers_map` give the usual student-to-teacher layer maps.
    """

    def __init__(self, student, teacher, hints=(), relation=None, hint_weight=1.0,
                 rkd_distance_weight=25.0, rkd_angle_weight=50.0, input_shape=None, hint_loss="mse", attention=(),
                 attention_weight=1.0, attention_kind="relations", relation_heads=4, hint_projection=True, **kwargs):
        super().__init__(student=student, teacher=teacher, **kwargs)
        for name, value in (("hint_weight", hint_weight), ("rkd_distance_weight", rkd_distance_weight),
                            ("rkd_angle_weight", rkd_angle_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0; received {value!r}.")
        hints = [tuple(h) for h in (hints or ())]
        attention = [tuple(a) for a in (attention or ())]
        if not hints and relation is None and not attention:
            raise ValueError("FeatureDistiller needs hints=[(student_layer, teacher_layer), ...], "
                             "relation=(student_layer, teacher_layer) and/or attention=[...]; received none.")
        self.hint_weight = float(hint_weight)
        self.rkd_distance_weight = float(rkd_distance_weight)
        self.rkd_angle_weight = float(rkd_angle_weight)
        self._hint_spec = [(self._layer_name(s), self._layer_name(t)) for s, t in hints]
        self._relation_spec = None if relation is None else tuple(self._layer_name(v) for v in relation)
        pairs = [(_find_layer(student, s, "student"), _find_layer(teacher, t, "teacher")) for s, t in hints]
        shapes = self._feature_shapes(pairs, input_shape)
        if not isinstance(hint_projection, bool):
            raise ValueError(f"hint_projection must be True or False; received {hint_projection!r}.")
        self.hint_projection = hint_projection
        self.adapters = [_HintAdapter(s_shape, t_shape, project=hint_projection, name=f"hint_adapter_{i}")
                         for i, (s_shape, t_shape) in enumerate(shapes)]
        self.hint_loss = hint_loss
        if pairs:
            self.add_loss_term(HintLoss(pairs, self.adapters, loss=hint_loss, weight=self.hint_weight))
        self._attention_spec = [(self._layer_name(a), self._layer_name(b)) for a, b in attention]
        self.attention_weight, self.attention_kind, self.relation_heads = float(attention_weight), attention_kind, \
            int(relation_heads)
        if attention:
            self.add_loss_term(AttentionLoss(attention, student, teacher, relation_heads, attention_kind,
                                             weight=self.attention_weight))
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
        probe = _probe_inputs(self.student, input_shape)
        with capture_outputs({i: s for i, (s, _) in enumerate(pairs)}) as s_out:
            self.student(probe, training=False)
        with capture_outputs({i: t for i, (_, t) in enumerate(pairs)}) as t_out:
            self.teacher(probe, training=False)
        return [(tuple(_output(s_out[i]).shape[1:]), tuple(_output(t_out[i]).shape[1:])) for i in range(len(pairs))]

    def get_config(self):
        config = super().get_config()
        config.update(
            hints=[list(h) for h in self._hint_spec],
            relation=None if self._relation_spec is None else list(self._relation_spec),
            hint_weight=self.hint_weight,
            rkd_distance_weight=self.rkd_distance_weight,
            rkd_angle_weight=self.rkd_angle_weight,
            hint_loss=self.hint_loss,
            hint_projection=self.hint_projection,
            attention=[list(a) for a in self._attention_spec],
            attention_weight=self.attention_weight,
            attention_kind=self.attention_kind,
            relation_heads=self.relation_heads,
        )
        return config


def _output(value):
    """A layer's output tensor (the first of a tuple: a KerasHub decoder layer also returns its cache)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def _probe_inputs(model, input_shape):
    """Two zero examples for measuring feature shapes: from ``input_shape``, else the model's inputs (dicts too)."""
    if input_shape is None:
        inputs = getattr(model, "_inputs_struct", None)
        if isinstance(inputs, dict):
            return {k: tf.zeros((2,) + tuple(d or 8 for d in v.shape[1:]), v.dtype) for k, v in inputs.items()}
        input_shape = checks.expected_input_shape(model)
    if input_shape is None or any(d is None for d in input_shape):
        raise ValueError(
            "FeatureDistiller needs the input shape to measure the feature shapes; the student "
            f"{model.name!r} does not say it. Pass input_shape=(28, 28, 1) or similar."
        )
    return tf.zeros((2,) + tuple(input_shape))

