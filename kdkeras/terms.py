"""Loss terms: the one extension point of kdkeras' distillers.

A distiller's loss is a weighted sum of named terms, in the manner of
torchdistill's composed losses::

    loss = sum_k weight_k * term_k(batch)

:class:`kdkeras.Distiller` is built from two of them, :class:`StudentLoss`
(hard labels, weight ``alpha``) and :class:`SoftTargetLoss` (the teacher's
soft targets, weight ``1 - alpha``). :class:`kdkeras.FeatureDistiller` adds
FitNets hints and RKD as terms, and :class:`kdkeras.MutualLearning` composes
each of its students' losses from the same terms. Your own term is a subclass
of :class:`LossTerm` passed to ``Distiller(..., loss_terms=[...])``: it gets
the batch's labels, both models' logits and the outputs of any layers it asks
for, and is reported under its name in ``fit``'s logs.

Every term is reduced the same way (:func:`reduce_terms`): per-example values
are weighted by the sample weights, summed, and divided by the *global* batch
size, so N replicas under ``tf.distribute`` update the weights exactly as one
device does on the same global batch.

Example:

```python
class LogitNorm(kdkeras.terms.LossTerm):
    '''Penalises large student logits (a per-example term).'''

    def call(self, batch):
        return tf.reduce_sum(tf.square(batch.student_logits), axis=-1)

distiller = kdkeras.Distiller(student, teacher, loss_terms=[LogitNorm("logit_norm", weight=1e-3)])
```
"""

import contextlib
from typing import NamedTuple

import keras
import tensorflow as tf

from kdkeras import distribute as _distribute
from kdkeras import losses as losses_module

__all__ = [
    "DistillationBatch",
    "LossTerm",
    "SoftTargetLoss",
    "StudentLoss",
    "TermValues",
    "capture_outputs",
    "is_token_level",
    "per_example_loss",
    "reduce_terms",
    "token_weights",
]


class DistillationBatch(NamedTuple):
    """What a :class:`LossTerm` sees of one (local) batch.

    Attributes:
        labels: The batch's labels (checked to lie in ``[0, num_classes)`` when integer).
        sample_weight: Per-example weights, or ``None``.
        teacher_logits: The teacher's logits, float32, no gradient.
        student_logits: The student's logits (gradients flow through them).
        teacher_features: ``{term name: {key: layer output}}`` for the teacher
            layers each term asked for (no gradient).
        student_features: The same for the student's layers.
        hard_label_weight: 1.0, or 0.0 on a batch of the student's own
            samples (on-policy distillation), whose "labels" are no labels.
        token_weights: ``[batch, steps]`` weights of the input tokens (the
            inputs' ``padding_mask``), or ``None``: what per-token terms of a
            sequence model whose outputs are per example (a text classifier)
            are weighted by.
    """

    labels: object
    sample_weight: object
    teacher_logits: object
    student_logits: object
    teacher_features: dict = {}
    student_features: dict = {}
    hard_label_weight: object = 1.0
    token_weights: object = None


class TermValues(NamedTuple):
    """The result of :func:`reduce_terms`.

    Attributes:
        gradient_loss: What to differentiate: every term's weighted sum over
            the local examples, divided by the global batch size.
        total: The weighted mean loss of the local batch (what ``loss`` reports).
        means: Each term's unweighted mean over the local batch, in order.
        local_n: The local batch size (float32); for token-level logits, the
            local sum of the token weights (the number of real tokens).
        example_weights: The per-example weights used (ones without sample
            weights); for token-level logits the ``[batch, steps]`` token weights.
        student_top1, teacher_top1: Both models' top-1 tokens when the terms
            were computed over chunks of tokens (:mod:`kdkeras.token_chunks`),
            else ``None``.
    """

    gradient_loss: object
    total: object
    means: list
    local_n: object
    example_weights: object
    student_top1: object = None
    teacher_top1: object = None


class LossTerm:
    """A named, weighted term of a distiller's loss (subclass it and implement :meth:`call`).

    Args:
        name: The name the term is reported under in ``fit``/``evaluate`` logs
            (unique within a distiller).
        weight: A number, a variable, or a function of no arguments returning
            the weight (read at every step, so a schedule can change it).

    Class attributes a subclass may set:
        per_example: ``True`` (default) when :meth:`call` returns one value per
            example (shape ``[batch]``; for a language model's token-level
            logits, one per token, ``[batch, steps]``); ``False`` when it returns one value for
            the whole batch, such as RKD's relations between examples.

    Attributes a subclass may set in ``__init__``:
        teacher_layers / student_layers: ``{key: layer}`` whose outputs the term
            needs; they are captured during the forward passes and handed over
            as ``batch.teacher_features[self.name][key]``. A term that asks for
            teacher layers needs the teacher online (no cached logits).
    """

    per_example = True
    #: ``True`` when :meth:`call` returns one value per input token (``[batch, steps]``)
    #: while the logits are per example (hidden-state hints of a text classifier): the
    #: term is then reduced over the real tokens of the global batch, weighted by
    #: ``batch.token_weights`` times the example's sample weight.
    per_token = False
    #: Whether a token's value depends on that token's row of logits only, so that
    #: the term can be computed over chunks of tokens (:mod:`kdkeras.token_chunks`).
    #: A chunkable term gets a batch of one chunk: ``[1, chunk]`` labels and weights,
    #: ``[1, chunk, V]`` float32 logits, no features; it returns ``[1, chunk]`` values.
    chunkable = False

    def __init__(self, name, weight=1.0):
        if not isinstance(name, str) or not name:
            raise ValueError(f"A loss term needs a non-empty name; received {name!r}.")
        self.name = name
        self.weight = weight
        self.teacher_layers = {}
        self.student_layers = {}

    def current_weight(self):
        """The weight for this step, as a float32 scalar."""
        weight = self.weight() if callable(self.weight) else self.weight
        return tf.cast(weight, tf.float32)

    def call(self, batch):
        """Returns the term's values for a :class:`DistillationBatch` (float32)."""
        raise NotImplementedError(f"{type(self).__name__} must implement call(batch).")

    def logit_gradient(self, batch):
        """A chunkable term's closed form, or ``None`` (the default: autodiff differentiates :meth:`call`).

        Returns ``(values, gradient)`` for a one-chunk batch: the ``[1, chunk]``
        values, float32, and ``[1, chunk, V]``, each token's value
        differentiated with respect to its own row of student logits. Computed
        in the forward pass over chunks (:mod:`kdkeras.token_chunks`), it saves
        autodiff's passes over the logits.
        """
        return None

    def __call__(self, batch):
        return tf.cast(self.call(batch), tf.float32)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def per_example_loss(fn, y, logits):
    """A hard-label loss per example, float32, shape ``[batch]``.

    ``fn`` is a ``keras.losses.Loss`` (its unreduced ``call``) or a function
    ``f(y_true, y_pred)``; extra axes of its result are averaged.
    """
    values = fn.call(y, logits) if isinstance(fn, keras.losses.Loss) else fn(y, logits)
    return _mean_per_example(tf.cast(values, tf.float32))


def _mean_per_example(values):
    """``values`` with every axis after the batch axis averaged: shape ``[batch]``."""
    if values.shape.rank is not None and values.shape.rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values


class StudentLoss(LossTerm):
    """The hard-label loss of the student's logits (``T = 1``), per example (chunkable).

    Args:
        loss_fn: A ``keras.losses.Loss`` or ``f(y_true, y_pred)`` on logits.
        name, weight: As in :class:`LossTerm`.
    """

    chunkable = True

    def __init__(self, loss_fn, name="student_loss", weight=1.0):
        super().__init__(name, weight)
        self.loss_fn = loss_fn

    def logit_gradient(self, batch):
        """Sparse cross-entropy on logits: ``logsumexp(z) - z_y``, gradient ``softmax(z) - onehot(y)``."""
        if not _is_sparse_cross_entropy_on_logits(self.loss_fn):
            return None
        values, gradient = losses_module.cross_entropy_and_gradient(batch.labels, batch.student_logits)
        if isinstance(batch.hard_label_weight, float) and batch.hard_label_weight == 1.0:
            return values, gradient
        return values * batch.hard_label_weight, gradient * batch.hard_label_weight

    def call(self, batch):
        if is_token_level(batch.student_logits):
            values = self.loss_fn.call(batch.labels, batch.student_logits) if isinstance(
                self.loss_fn, keras.losses.Loss) else self.loss_fn(batch.labels, batch.student_logits)
            values = tf.cast(values, tf.float32)
        else:
            values = per_example_loss(self.loss_fn, batch.labels, batch.student_logits)
        if isinstance(batch.hard_label_weight, float) and batch.hard_label_weight == 1.0:
            return values
        # On-policy batches hold the student's own samples, not labels: no hard-label loss there.
        return values * batch.hard_label_weight


class SoftTargetLoss(LossTerm):
    """A response-based distillation loss between teacher and student logits, per example (chunkable).

    Calls ``loss_fn(teacher_logits, student_logits, temperature)`` (see
    :mod:`kdkeras.losses`), adding ``labels=`` for losses that take them (DKD).

    Args:
        loss_fn: A function from :func:`kdkeras.losses.get`.
        temperature: A number, variable, or function of no arguments.
        name, weight: As in :class:`LossTerm`.
    """

    chunkable = True

    def __init__(self, loss_fn, temperature, name="distillation_loss", weight=1.0):
        super().__init__(name, weight)
        self.loss_fn = loss_fn
        self.temperature = temperature
        self._takes_labels = losses_module.takes_labels(loss_fn)

    def logit_gradient(self, batch):
        """Forward KL against full teacher logits: gradient ``T (softmax(z_s / T) - softmax(z_t / T))``."""
        if self.loss_fn is not losses_module.kl_divergence or isinstance(batch.teacher_logits,
                                                                          losses_module.TopKTeacher):
            return None
        temperature = self.temperature() if callable(self.temperature) else self.temperature
        return losses_module.kl_divergence_and_gradient(batch.teacher_logits, batch.student_logits, temperature)

    def call(self, batch):
        temperature = self.temperature() if callable(self.temperature) else self.temperature
        if self._takes_labels:  # e.g. DKD needs the target class
            return self.loss_fn(batch.teacher_logits, batch.student_logits, temperature, labels=batch.labels)
        return self.loss_fn(batch.teacher_logits, batch.student_logits, temperature)


def _is_sparse_cross_entropy_on_logits(fn):
    """Whether ``fn`` is Keras' sparse categorical cross-entropy on logits, with no ignored class."""
    if not isinstance(fn, keras.losses.SparseCategoricalCrossentropy):
        return False
    config = fn.get_config()
    return bool(config.get("from_logits")) and config.get("ignore_class") is None and config.get("axis", -1) == -1


def is_token_level(logits):
    """Whether ``logits`` are a sequence model's ``[batch, steps, vocab]`` (static rank 3 or more)."""
    return logits.shape.rank is not None and logits.shape.rank >= 3


def token_weights(sample_weight, logits):
    """The per-token weights ``[batch, steps]`` (float32) of token-level logits.

    ``None`` gives ones; a ``[batch]`` weight is spread over the example's
    steps; a ``[batch, steps]`` weight is used as it is. Any other shape is
    refused with a ``ValueError`` naming both shapes (at trace time).
    """
    steps_shape = tf.shape(getattr(logits, "hidden", logits))[:-1]  # logits, or a fused head's hidden states
    if sample_weight is None:
        return tf.ones(steps_shape, tf.float32)
    weights = tf.cast(sample_weight, tf.float32)
    expected = logits.shape[:-1]
    if weights.shape.rank is not None and expected.rank is not None:
        if weights.shape.rank == 1:
            return tf.broadcast_to(weights[:, None], steps_shape)
        if weights.shape.rank != expected.rank or not weights.shape.is_compatible_with(expected):
            raise ValueError(
                f"The token weights (sample_weight or padding_mask) have shape {weights.shape}, but the logits "
                f"{logits.shape} need one weight per token, shape {expected} (or one per sequence, "
                f"shape [{expected[0]}]). A KerasHub preprocessor's sample_weight has the right shape.")
    return weights


def reduce_terms(terms, batch, precomputed=None, global_n=None):
    """Evaluates and weighs ``terms`` on one local batch; returns :class:`TermValues`.

    Per-example terms are weighted by the sample weights and summed; their
    weighted sum is divided once by the global batch size (the same under any
    number of replicas). A batch-level term is weighted by this replica's share
    of the global batch, so that the replicas' summed gradients are those of
    the example-weighted mean.

    Token-level logits (``[batch, steps, vocab]``, a language model) are
    reduced per token instead: each term gives ``[batch, steps]`` values, the
    weights are per token (:func:`token_weights`: padding weighs 0), and the
    loss is ``sum(w * value) / sum(w)`` with the weight sum taken over the
    *global* batch, so padding, and replicas that hold different numbers of
    real tokens, change nothing. A batch whose tokens all weigh 0 adds 0.

    ``precomputed`` maps a term's index to its values computed elsewhere (over
    chunks of tokens); those terms are not called. ``global_n``: the global
    weight sum when the caller has it already (saves one all-reduce).
    """
    precomputed = precomputed or {}
    if is_token_level(batch.student_logits):
        weights = token_weights(batch.sample_weight, batch.student_logits)
        local_n = tf.reduce_sum(weights)  # the real tokens of this replica
        per_item = _per_token
    else:
        n = tf.shape(batch.student_logits)[0]
        weights = tf.ones([n], tf.float32) if batch.sample_weight is None else tf.reshape(
            tf.cast(batch.sample_weight, tf.float32), [-1])
        local_n = tf.cast(n, tf.float32)
        per_item = _mean_per_example
    if global_n is None:
        global_n = _distribute.global_batch_size(local_n)
    weighted_sum, token_share, batch_level, total, means = 0.0, 0.0, None, 0.0, []
    token_level = is_token_level(batch.student_logits)
    for index, term in enumerate(terms):
        weight = term.current_weight()
        values = precomputed[index] if index in precomputed else term(batch)
        if term.per_token and not token_level:  # per input token, logits per example
            mean, share = _token_term(values, batch, weights)
            token_share += weight * share  # already divided by the global token weight
        elif term.per_example:
            summed = tf.reduce_sum(weights * per_item(values))
            weighted_sum += weight * summed
            mean = tf.math.divide_no_nan(summed, local_n)  # 0 for a replica without examples or real tokens
        else:
            batch_level = weight * values if batch_level is None else batch_level + weight * values
            mean = values
        total += weight * mean
        means.append(mean)
    gradient_loss = tf.math.divide_no_nan(weighted_sum, global_n) + token_share
    if batch_level is not None:
        gradient_loss += batch_level * tf.math.divide_no_nan(local_n, global_n)
    return TermValues(gradient_loss, total, means, local_n, weights)


def _token_term(values, batch, example_weights):
    """A per-token term of per-example logits: ``(local mean, local weighted sum / global weight sum)``.

    Token weights are the inputs' ``token_weights`` (ones without them) times the
    example's weight; the sum is divided by the weight sum of the *global* batch.
    """
    values = tf.cast(values, tf.float32)
    tokens = tf.ones_like(values) if batch.token_weights is None else tf.cast(batch.token_weights, tf.float32)
    tokens = tokens * example_weights[:, None]
    local = tf.reduce_sum(tokens)
    summed = tf.reduce_sum(tokens * values)
    return tf.math.divide_no_nan(summed, local), tf.math.divide_no_nan(summed, _distribute.global_batch_size(local))


def _per_token(values):
    """A token-level term's values ``[batch, steps]``; one value per sequence holds for each of its tokens."""
    return values[:, None] if values.shape.rank == 1 else values


@contextlib.contextmanager
def capture_outputs(layers):
    """Records the outputs of ``layers`` (``{key: layer}``) while the block runs a model.

    Yields a dict that is filled with ``{key: output}`` as the layers are called.
    The layers are restored when the block ends.
    """
    outputs = {}
    keys_of = {}
    for key, layer in layers.items():  # one layer may serve several keys (a hint and RKD)
        keys_of.setdefault(id(layer), (layer, []))[1].append(key)
    patched = []
    for layer, keys in keys_of.values():
        original = layer.call

        def call(*args, _original=original, _keys=tuple(keys), **kwargs):
            result = _original(*args, **kwargs)
            for key in _keys:
                outputs[key] = result
            return result

        object.__setattr__(layer, "call", call)
        patched.append(layer)
    try:
        yield outputs
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")
