"""Token-level loss terms over chunks of tokens, and the fused language-model head.

At a real vocabulary (32 k to 262 k tokens) a language model's logits are the
largest tensors of a distillation step: ``[tokens, V]`` float32 is 0.6 GB for
1,024 tokens at ``V = 151,936``, and every ``log_softmax``, mixture or
difference of a loss is another such copy, kept for the backward pass. Here
every chunkable term (the hard-label loss, every distillation loss, the top-k
path, your own :class:`kdkeras.terms.LossTerm` with ``chunkable = True``) is
computed over chunks of ``chunk_size`` tokens inside one
``tf.custom_gradient``. The loss is the last operation of a step, so each
token's weight in it (its token weight, the term's weight over the global
token count, the loss scale) is known before the chunks are formed: the
forward pass keeps each chunk's per-token values *and* its contribution to
the gradient, and the backward pass only scales the sums, with nothing
formed twice. The default terms (sparse cross-entropy and forward KL) give
their gradient in closed form (:meth:`kdkeras.terms.LossTerm.logit_gradient`),
the others by autodiff inside the chunk. A step then holds the logits
themselves, their gradient and one chunk's temporaries.

**Fused head.** A model whose logits are ``head(body(x))`` (a KerasHub
``CausalLM``: the backbone, then the token embedding with ``reverse=True``)
can hand the Distiller its hidden states instead of its logits
(:class:`HeadLogits`); the logits are then formed chunk by chunk from the
hidden states inside the loss, so no full ``[tokens, V]`` logits tensor of
that model exists during the step, and the teacher's chunk logits are formed
once. Gradients reach the hidden states and the
head's weights (the tied embedding, or a separate head). A plain Keras model
gets the fused path by defining ``distillation_head()`` (see
:func:`head_of`).

Values and gradients equal the unchunked computation up to float rounding
(each token's terms are computed from its own row of logits).

This module is core: TensorFlow and Keras only; keras-hub is never imported
(a KerasHub model is recognised by its attributes).
"""

import dataclasses
import functools
import logging
from typing import NamedTuple

import tensorflow as tf

from kdkeras import distribute as _distribute
from kdkeras.losses import TopKTeacher
from kdkeras.terms import DistillationBatch, reduce_terms, token_weights

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "ChunkedTerms",
    "HeadLogits",
    "LMHead",
    "TokenChunking",
    "chunk_size_for",
    "chunked_terms",
    "head_of",
    "reduce_token_terms",
    "update_metrics_by_chunks",
]

#: ``token_chunk_size="auto"``: chunks of about this many logits (``tokens * V``), 64 MiB in float32.
AUTO = "auto"
_AUTO_ELEMENTS = 2 ** 24
_MIN_CHUNK = 8
#: A fused head's chunks hold at least ``min(width, _HEAD_CHUNK)`` tokens (see :func:`chunk_size_for`).
_HEAD_CHUNK = 512


def chunk_size_for(setting, vocabulary, width=None):
    """The chunk size in tokens for ``token_chunk_size=setting`` at ``vocabulary`` logits per token (None: off).

    ``"auto"`` gives ``2**24 // vocabulary`` tokens (at least 8): 110 tokens at
    ``V = 151,936``, 65,027 at ``V = 258``, where one chunk holds any usual
    batch. With a fused head of hidden ``width`` a chunk holds at least
    ``min(width, 512)`` tokens: each chunk reads the head's ``[V, width]``
    weights in three matrix products, which a chunk much shorter than the
    width spends its time on.
    """
    if setting is None or setting is False:
        return None
    if setting == AUTO:
        size = max(_MIN_CHUNK, _AUTO_ELEMENTS // max(int(vocabulary or 1), 1))
        return size if width is None else max(size, min(int(width), _HEAD_CHUNK))
    return int(setting)


def check_chunk_setting(value):
    """``TokenChunking.size`` must be ``"auto"``, ``None`` (off) or a positive integer; returns it."""
    ok = value is None or value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value > 0)
    if not ok:
        raise ValueError(f"TokenChunking.size must be 'auto', None (no chunks) or a positive integer (tokens per "
                         f"chunk); received {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class TokenChunking:
    """How a Distiller computes the token-level terms of language models (``compile(token_chunking=...)``).

    Attributes:
        size: Tokens a chunk: ``"auto"`` (default; about ``2**24 / V``, with a
            fused head at least ``min(width, 512)``, see
            :func:`chunk_size_for`), a positive integer, or ``None`` (all
            tokens in one piece).
        fused_head: For a KerasHub ``CausalLM`` (or a model that defines
            ``distillation_head()``) run the backbone to hidden states and form
            the logits chunk by chunk inside the loss, so that no full
            ``[tokens, V]`` logits tensor of that model exists in the step
            (default ``True``; ``False`` calls the models as they are).

    ``compile(token_chunking=None)`` is ``TokenChunking(size=None,
    fused_head=False)``: the plain computation on full logits. Values and
    gradients are the same on every setting.
    """

    size: object = AUTO
    fused_head: bool = True

    def __post_init__(self):
        check_chunk_setting(self.size)
        if not isinstance(self.fused_head, bool):
            raise ValueError(f"fused_head must be True or False; received {self.fused_head!r}.")

    @classmethod
    def of(cls, value):
        """A :class:`TokenChunking` from ``compile``'s argument (an instance, ``None``, or its dict)."""
        if value is None:
            return cls(None, False)
        if isinstance(value, dict):
            return cls(**value)
        if not isinstance(value, cls):
            raise TypeError(f"token_chunking must be a kdkeras.TokenChunking or None; received {value!r}.")
        return value


class LMHead(NamedTuple):
    """How a language model's logits are formed: ``logits = head(body(x))``.

    Attributes:
        body: Callable ``body(x, training=...) -> hidden [batch, steps, d]``
            (a KerasHub backbone).
        head: Callable ``head(hidden) -> logits [..., V]`` applied to any
            leading shape (a ``Dense`` layer, or the token embedding with
            ``reverse=True``); its trainable weights get their gradients.
        vocabulary: ``V``, the head's number of outputs.
    """

    body: object
    head: object
    vocabulary: int


class HeadLogits(NamedTuple):
    """Logits not yet formed: a model's hidden states and its head (see :class:`LMHead`).

    It stands in for ``[batch, steps, V]`` logits in a
    :class:`kdkeras.terms.DistillationBatch`; :func:`chunked_terms` forms them
    per chunk. ``shape`` is the logits' static shape.
    """

    hidden: object
    head: object
    vocabulary: int

    @property
    def shape(self):
        return self.hidden.shape[:-1].concatenate([self.vocabulary])

    @property
    def dtype(self):
        return tf.float32

    def materialize(self):
        """The full logits (what the fused path avoids; for terms that are not chunkable)."""
        return self.head(self.hidden)


def head_of(model):
    """The :class:`LMHead` of ``model``, or ``None`` when its logits cannot be fused into the loss.

    - A model with a ``distillation_head()`` method: what it returns, a
      ``(body, head)`` or ``(body, head, vocabulary_size)`` tuple, where
      ``body(x, training=...)`` gives the hidden states and ``head(hidden)``
      the logits, so that ``model(x) == head(body(x))``. A plain Keras
      language model that ends in a ``Dense`` head returns, say,
      ``(self.body, self.head)``; a functional one ``(keras.Model(inputs,
      hidden), dense_layer)``.
    - A KerasHub ``CausalLM`` (a ``backbone`` whose ``token_embedding`` is a
      ``ReversibleEmbedding``, the task's output being that embedding with
      ``reverse=True``): the backbone and the reversed embedding (tied or a
      separate ``reverse_embeddings`` kernel, any logit soft cap included).
    """
    custom = getattr(model, "distillation_head", None)
    if callable(custom):
        parts = tuple(custom())
        if len(parts) == 3:
            return LMHead(*parts[:2], int(parts[2]))
        body, head = parts
        return LMHead(body, head, _vocabulary_of(model, head))
    backbone = getattr(model, "backbone", None)
    embedding = getattr(backbone, "token_embedding", None)
    if embedding is None or not hasattr(embedding, "tie_weights") or not callable(getattr(model, "call_with_cache",
                                                                                             None)):
        return None
    if _output_layer(model) is not embedding:
        return None

    return LMHead(backbone, _reverse_embedding(embedding), int(embedding.input_dim))


def _reverse_embedding(embedding):
    """``embedding(hidden, reverse=True)`` as one matrix product with the table as it is stored.

    Keras' ``ReversibleEmbedding`` transposes a tied ``[V, d]`` table before
    its product, which costs a transposed copy of the table in the backward
    pass of every chunk; here the product reads the table transposed instead
    (the same logits: its compute dtype, ``reverse_dtype`` and logit soft cap
    apply as in the layer). A quantized table is left to the layer.
    """
    if getattr(embedding, "quantization_mode", None) is not None:
        return lambda hidden: embedding(hidden, reverse=True)
    tied = bool(embedding.tie_weights)

    def reverse(hidden):
        table = embedding.embeddings if tied else embedding.reverse_embeddings
        dtype = embedding.reverse_dtype or embedding.compute_dtype
        kernel = tf.cast(table.value, dtype)
        hidden = tf.cast(hidden, dtype)
        width = tf.shape(hidden)[-1]
        logits = tf.matmul(tf.reshape(hidden, [-1, width]), kernel, transpose_b=tied)
        logits = tf.reshape(logits, tf.concat([tf.shape(hidden)[:-1], [int(embedding.input_dim)]], 0))
        if embedding.logit_soft_cap is not None:
            cap = tf.cast(embedding.logit_soft_cap, logits.dtype)
            logits = tf.tanh(logits / cap) * cap
        return logits

    return reverse


def _output_layer(model):
    """The layer that produced a functional model's single output (None when unknown)."""
    try:
        history = model.outputs[0]._keras_history
    except (AttributeError, IndexError, TypeError):
        return None
    return history.operation if hasattr(history, "operation") else history[0]


def _vocabulary_of(model, head):
    """``V``: the model's static output size, else the head's ``units`` (a ``Dense``)."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    vocabulary = outputs[0].shape[-1] if outputs and len(outputs) == 1 else getattr(head, "units", None)
    if vocabulary is None:
        raise ValueError(f"{model.name!r} defines distillation_head(), but neither its outputs nor the head give "
                         "the vocabulary size: return (body, head, vocabulary_size).")
    return int(vocabulary)


class ChunkedTerms(NamedTuple):
    """What :func:`chunked_terms` returns.

    Attributes:
        values: Each term's per-token values, ``[batch, steps]`` float32, in
            the order given. No gradient flows through them: the gradient
            flows through ``loss``.
        student_top1: The student's most likely token, ``[batch, steps]`` int32.
        teacher_top1: The teacher's, likewise.
        loss: ``sum_k coefficients[k] * sum_t w_t * values[k][t]`` (a float32
            scalar; 0 without coefficients), whose gradient reaches the
            student's logits or hidden states and the head's weights.
    """

    values: list
    student_top1: object
    teacher_top1: object
    loss: object = 0.0


def chunked_terms(terms, batch, chunk_size, vocabulary_size=None, coefficients=None, loss_scale=None):
    """Evaluates per-token ``terms`` on a token-level ``batch`` over chunks of ``chunk_size`` tokens.

    The loss is the last operation of a step, so the weights of each token's
    values in it are known before the chunks are formed: each chunk's
    contribution to the gradient is computed in the forward pass, from the
    chunk's logits while they exist, and the backward pass only scales the
    sums. No chunk is formed twice, and the teacher's chunk logits once.

    Args:
        terms: :class:`kdkeras.terms.LossTerm` instances whose values for a
            token depend on that token's row of logits only (chunkable). A term
            whose :meth:`~kdkeras.terms.LossTerm.logit_gradient` gives a closed
            form is not differentiated by autodiff.
        batch: A :class:`kdkeras.terms.DistillationBatch` whose
            ``student_logits`` are ``[batch, steps, V]`` logits or a
            :class:`HeadLogits`, and ``teacher_logits`` logits, a
            :class:`HeadLogits` or a :class:`kdkeras.losses.TopKTeacher`
            (no gradient flows to the teacher). Its ``sample_weight`` gives the
            token weights ``w`` (ones without).
        chunk_size: Tokens per chunk (``None``: all tokens in one piece, as
            with a fused head and chunking turned off).
        vocabulary_size: Compare the first ``vocabulary_size`` logits only.
        coefficients: One float32 scalar a term, its weight in ``loss`` (the
            term's weight over the global token-weight sum, for a Distiller);
            ``None``: values only, no gradient formed (evaluation).
        loss_scale: The factor the loss is multiplied by before it is
            differentiated (mixed precision's loss scale): the gradient is
            formed at that scale, so that float16 gradients do not underflow.

    Returns:
        :class:`ChunkedTerms`. Only one chunk's temporaries exist at a time; the
        head's weights (fused path) get their gradients summed over the chunks.
    """
    student, teacher = batch.student_logits, batch.teacher_logits
    source = student.hidden if isinstance(student, HeadLogits) else student
    steps_shape = tf.shape(source)[:-1]
    n = tf.reduce_prod(steps_shape)
    flat_student = tf.reshape(source, tf.concat([[n], tf.shape(source)[-1:]], 0))
    flat_teacher = tf.nest.map_structure(lambda t: _flat(t, n), _teacher_parts(teacher))
    labels = tf.reshape(batch.labels, [n])
    weights = tf.reshape(token_weights(batch.sample_weight, student), [n])
    count = len(terms)
    gradient = coefficients is not None and count > 0
    if gradient:
        coefficients = tf.stack([tf.cast(c, tf.float32) for c in coefficients])
        scale = tf.constant(1.0) if loss_scale is None else tf.cast(loss_scale, tf.float32)

    def piece_of(z_s, start, size):
        """The chunk as a one-sequence batch, and the teacher's chunk logits."""
        t_parts = tf.nest.map_structure(lambda t: tf.slice(t, _begin(start, t), _size(size, t)), flat_teacher)
        z_t = _teacher_chunk(teacher, t_parts, vocabulary_size)
        piece = DistillationBatch(
            labels=tf.slice(labels, [start], [size])[None],
            sample_weight=None if batch.sample_weight is None else tf.slice(weights, [start], [size])[None],
            teacher_logits=tf.nest.map_structure(lambda t: t[None], z_t), student_logits=z_s[None],
            hard_label_weight=batch.hard_label_weight)
        return piece, z_t

    def columns_of(values, z_s, z_t, size):
        """``[size, count + 2]``: the terms' values, then both top-1 ids (as float32)."""
        columns = [tf.reshape(v, [size]) for v in values]
        # Token ids below 2**24 are exact in float32: the top-1 ids ride along as two more columns.
        columns += [tf.cast(tf.argmax(z_s, -1, output_type=tf.int32), tf.float32), tf.cast(_top1(z_t), tf.float32)]
        return tf.stack(columns, axis=1)

    def values_only(start, size, acc):
        s_chunk = tf.slice(flat_student, _begin(start, flat_student), _size(size, flat_student))
        z_s = _logits(student, s_chunk, vocabulary_size)
        piece, z_t = piece_of(z_s, start, size)
        return (columns_of([term(piece) for term in terms], z_s, z_t, size),), acc

    if not gradient:
        (values,), _ = _over_chunks(n, chunk_size, values_only, [(tf.float32, [count + 2])])
        return _split(values, steps_shape, count, 0.0)

    head_variables = []  # the trainable variables the student's head reads (found by the first chunk)
    closed_forms = tf.function(functools.partial(_closed_forms, terms), jit_compile=True, autograph=False)

    def with_gradient(s, start, size, acc):
        """A chunk's columns and gradient with respect to ``s``; ``acc`` sums the loss and head-weight gradients."""
        s_chunk = tf.slice(s, _begin(start, s), _size(size, s))
        with tf.GradientTape() as head_tape:
            head_tape.watch(s_chunk)
            z_s = _logits(student, s_chunk, vocabulary_size)
        if acc is None:
            head_variables.extend(head_tape.watched_variables())
        piece, z_t = piece_of(z_s, start, size)
        w = tf.slice(weights, [start], [size])
        values, d_z = _values_and_logit_gradient(terms, piece, z_s, w[:, None] * coefficients * scale, closed_forms)
        loss = tf.reduce_sum(tf.stack([tf.reshape(v, [size]) for v in values], 1) * w[:, None] * coefficients)
        grads = head_tape.gradient(z_s, [s_chunk] + head_variables, output_gradients=d_z,
                                   unconnected_gradients=tf.UnconnectedGradients.ZERO)
        sums = [loss] + [tf.convert_to_tensor(g) for g in grads[1:]]
        if acc is not None:
            sums = [a + g for a, g in zip(acc, sums)]
        return (columns_of(values, z_s, z_t, size), tf.cast(grads[0], s.dtype)), tuple(sums)

    @tf.custom_gradient
    def run(s):
        (values, d_s), sums = _over_chunks(n, chunk_size, lambda *a: with_gradient(s, *a),
                                           [(tf.float32, [count + 2]), (s.dtype, s.shape[1:])], acc=None)
        loss, d_head = sums[0], sums[1:]

        def grad(d_values, d_loss, variables=None):
            # The chunks formed d(loss * scale)/d(.) already; the backward only rescales it.
            factor = tf.zeros([]) if d_loss is None else tf.cast(d_loss, tf.float32) / scale
            by_ref = {v.ref(): g for v, g in zip(head_variables, d_head)}
            d_vars = [by_ref[v.ref()] * tf.cast(factor, by_ref[v.ref()].dtype) if v.ref() in by_ref
                      else tf.zeros(v.shape, v.dtype) for v in variables or []]
            d_source = d_s * tf.cast(factor, d_s.dtype)
            return (d_source, d_vars) if variables else d_source

        return (values, loss), grad

    values, loss = run(flat_student)
    return _split(tf.stop_gradient(values), steps_shape, count, loss)


def _split(values, steps_shape, count, loss):
    """A :class:`ChunkedTerms` from the ``[n, count + 2]`` columns."""
    split = [tf.reshape(values[:, i], steps_shape) for i in range(count + 2)]
    top1 = [tf.cast(v, tf.int32) for v in split[count:]]
    return ChunkedTerms(split[:count], top1[0], top1[1], loss)


def _closed_forms(terms, piece, z_s, c):
    """The closed-form terms' values (``None`` for the others) and their weighted gradient sum (``None``: none)."""
    values, d_z = [], None
    for k, term in enumerate(terms):
        closed = term.logit_gradient(piece)
        if closed is None:
            values.append(None)
            continue
        values.append(closed[0])
        g = c[:, k:k + 1] * tf.reshape(closed[1], tf.shape(z_s))
        d_z = g if d_z is None else d_z + g
    return values, d_z


def _values_and_logit_gradient(terms, piece, z_s, c, closed_forms):
    """Each term's values on a chunk and ``d_z = d(sum_t,k c[t, k] value_k[t]) / d z_s`` (``[size, V]``).

    Terms with a closed form (:meth:`kdkeras.terms.LossTerm.logit_gradient`)
    give their gradient directly, in ``closed_forms`` (:func:`_closed_forms`
    compiled with XLA, which fuses their passes over the ``[chunk, V]``
    block); the others are differentiated together.
    """
    values, d_z = closed_forms(piece, z_s, c)
    values = list(values)
    by_autodiff = [k for k, v in enumerate(values) if v is None]
    if by_autodiff:
        with tf.GradientTape() as tape:
            tape.watch(z_s)
            piece = piece._replace(student_logits=z_s[None])
            for k in by_autodiff:
                values[k] = terms[k](piece)
            weighted = tf.add_n([tf.reduce_sum(c[:, k] * tf.reshape(values[k], [-1])) for k in by_autodiff])
        g = tape.gradient(weighted, z_s, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        d_z = g if d_z is None else d_z + g
    return values, d_z


def reduce_token_terms(terms, batch, chunk_size, vocabulary_size=None, loss_scale=None, gradient=True):
    """:func:`kdkeras.terms.reduce_terms` for token-level logits, the chunkable terms over chunks of tokens.

    Terms that are not chunkable get the full float32 logits (formed from the
    hidden states when the batch carries a :class:`HeadLogits`). The result's
    ``student_top1``/``teacher_top1`` are set. With ``gradient`` (training),
    the chunkable terms' gradient is formed in the forward pass, at
    ``loss_scale`` (see :func:`chunked_terms`); the result's
    ``gradient_loss`` carries it.
    """
    chunkable = {i: term for i, term in enumerate(terms) if getattr(term, "chunkable", False) and term.per_example}
    coefficients = global_n = None
    if gradient and chunkable:
        global_n = _distribute.global_batch_size(tf.reduce_sum(token_weights(batch.sample_weight,
                                                                              batch.student_logits)))
        coefficients = [tf.math.divide_no_nan(term.current_weight(), global_n) for term in chunkable.values()]
    result = chunked_terms(list(chunkable.values()), batch, chunk_size, vocabulary_size, coefficients, loss_scale)
    if len(chunkable) < len(terms):
        batch = batch._replace(student_logits=full_logits(batch.student_logits, vocabulary_size),
                               teacher_logits=full_logits(batch.teacher_logits, vocabulary_size))
    values = reduce_terms(terms, batch, dict(zip(chunkable, result.values)), global_n=global_n)
    if coefficients is not None:  # the chunked terms' gradient, at no change of value
        values = values._replace(gradient_loss=values.gradient_loss + (result.loss - tf.stop_gradient(result.loss)))
    return values._replace(student_top1=result.student_top1, teacher_top1=result.teacher_top1)


def full_logits(logits, vocabulary_size=None):
    """Float32 logits (first ``vocabulary_size``) of a tensor or a :class:`HeadLogits`; a top-k teacher as it is."""
    if isinstance(logits, TopKTeacher):
        return logits
    if isinstance(logits, HeadLogits):
        logits = logits.materialize()
    return _sliced(tf.cast(logits, tf.float32), vocabulary_size)


def update_metrics_by_chunks(metrics, labels, student, sample_weight, chunk_size, vocabulary_size=None):
    """Updates compiled metrics from a :class:`HeadLogits` student, chunk by chunk (no full logits).

    ``metrics`` is Keras' compiled-metrics object. Each chunk is passed as
    ``[chunk, 1]`` sequences of one token, so Keras' per-sample means become
    per-token means: the results equal one call on the ``[batch, steps]``
    logits (weighted metrics by the token weights, the others over all
    positions).
    """
    steps_shape = tf.shape(student.hidden)[:-1]
    n = tf.reduce_prod(steps_shape)
    hidden = tf.stop_gradient(_flat(student.hidden, n))
    labels = tf.reshape(labels, [n, 1])
    weights = None if sample_weight is None else tf.reshape(token_weights(sample_weight, student), [n, 1])

    def update(start, size, acc):
        z = _logits(student, tf.slice(hidden, _begin(start, hidden), _size(size, hidden)), vocabulary_size)
        w = None if weights is None else tf.slice(weights, [start, 0], [size, 1])
        metrics.update_state(tf.slice(labels, [start, 0], [size, 1]), z[:, None, :], w)
        return (), acc

    _over_chunks(n, chunk_size, update, [])


# ---------------------------------------------------------------------- #
# Helpers
# ---------------------------------------------------------------------- #
def _over_chunks(n, chunk, fn, specs, acc=()):
    """Runs ``fn(start, size, acc) -> (outputs, acc)`` over ``[0, n)`` in chunks, one at a time.

    ``chunk`` is a Python int (``None``: all ``n`` at once): the full chunks run in a ``tf.while_loop``
    (``parallel_iterations=1``, so one chunk's temporaries exist at a time)
    with static sizes, and the remainder (possibly empty) once outside it; this
    keeps every slice size a compile-time constant under XLA. ``specs`` are
    ``(dtype, trailing shape)`` of the outputs, which are concatenated in order.
    ``acc=None``: the remainder runs first and its ``acc`` starts the loop's
    (so ``fn`` may learn at trace time what it accumulates).
    """
    if chunk is None:  # one piece of every token
        return fn(0, n, acc)
    full = n // chunk
    arrays = [tf.TensorArray(dtype, size=full, element_shape=[chunk, *tail]) for dtype, tail in specs]

    def body(i, acc, arrays):
        outputs, acc = fn(i * chunk, chunk, acc)
        return i + 1, acc, [a.write(i, o) for a, o in zip(arrays, outputs)]

    remainder_first = acc is None
    if remainder_first:
        rest, acc = fn(full * chunk, n - full * chunk, None)
    _, acc, arrays = tf.while_loop(lambda i, *_: i < full, body, (tf.constant(0), acc, arrays),
                                   parallel_iterations=1)
    if not remainder_first:
        rest, acc = fn(full * chunk, n - full * chunk, acc)
    outputs = []
    for array, last, (_, tail) in zip(arrays, rest, specs):
        stacked = tf.reshape(array.stack(), [full * chunk, *tail])
        outputs.append(tf.concat([stacked, last], axis=0))
    return outputs, acc


def _flat(t, n):
    """``t`` with its two leading (batch, steps) axes merged into ``n`` rows."""
    return tf.reshape(t, tf.concat([[n], tf.shape(t)[2:]], 0))


def _begin(start, t):
    return tf.concat([[start], tf.zeros([tf.rank(t) - 1], tf.int32)], 0) if t.shape.rank is None else \
        [start] + [0] * (t.shape.rank - 1)


def _size(size, t):
    return [size] + [-1] * (t.shape.rank - 1)


def _teacher_parts(teacher):
    """The tensors of a teacher (logits, a top-k cache or hidden states) that are cut into chunks."""
    if isinstance(teacher, HeadLogits):
        return teacher.hidden
    if isinstance(teacher, TopKTeacher):
        return tuple(teacher)
    return teacher


def _teacher_chunk(teacher, parts, vocabulary_size):
    if isinstance(teacher, HeadLogits):
        return tf.stop_gradient(_logits(teacher, parts, vocabulary_size))
    if isinstance(teacher, TopKTeacher):
        return TopKTeacher(*parts)
    return _sliced(tf.cast(parts, tf.float32), vocabulary_size)


def _logits(source, chunk, vocabulary_size):
    """One chunk's float32 logits: the chunk itself, or the head applied to hidden states."""
    z = source.head(chunk) if isinstance(source, HeadLogits) else chunk
    return _sliced(tf.cast(z, tf.float32), vocabulary_size)


def _sliced(z, vocabulary_size):
    return z if vocabulary_size is None else z[..., :vocabulary_size]


def _top1(teacher_chunk):
    if isinstance(teacher_chunk, TopKTeacher):
        return tf.cast(teacher_chunk.indices[..., 0], tf.int32)
    return tf.argmax(teacher_chunk, axis=-1, output_type=tf.int32)
