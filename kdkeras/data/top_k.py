"""The top-k teacher cache of a language model: per real token, the teacher's k most likely tokens.

A vocabulary of 32k-256k entries makes a language model's full logits far
too large to keep (``4 * vocab`` bytes per token). This cache keeps, per
*real* token (weight > 0: padding and masked prompts cost nothing), the
teacher's ``k`` largest log-probabilities (float16 by default), their token
ids (uint16 when the vocabulary fits, else int32) and the exact log of the
remaining mass in float32 (what the one-bucket tail of
:class:`kdkeras.losses.TopKTeacher` needs): ``k * (2 + 2) + 4`` bytes per
token for a vocabulary up to 65,536 (516 bytes at ``k = 128``). Batches are
rebuilt densely, one batch at a time, in the format of
:func:`kdkeras.distiller.top_k_batch`.
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from kdkeras import language
from kdkeras.atomic import atomic_directory
from kdkeras.distiller import top_k_batch

logger = logging.getLogger(__name__)

__all__ = ["TopKCache", "load_top_k", "save_top_k", "teacher_top_k", "top_k_log_probs"]


def top_k_log_probs(logits, k, temperature=1.0):
    """``(log_probs [..., k], indices [..., k], tail_log_mass [...])`` of logits at a temperature.

    The tail is computed exactly, as the log-sum-exp of every log-probability
    outside the top ``k`` (``-inf`` when ``k`` is the whole vocabulary).
    """
    logits = tf.cast(logits, tf.float32)
    log_p = tf.nn.log_softmax(logits / temperature, axis=-1)
    values, indices = tf.math.top_k(log_p, k)
    vocab = log_p.shape[-1]
    if vocab is not None and k == vocab:
        return values, indices, tf.fill(tf.shape(values)[:-1], -np.inf)
    flat = tf.reshape(log_p, [-1, tf.shape(log_p)[-1]])
    flat_indices = tf.reshape(indices, [-1, k])
    rows = tf.repeat(tf.range(tf.shape(flat)[0]), k)
    where = tf.stack([rows, tf.reshape(flat_indices, [-1])], axis=1)
    rest = tf.tensor_scatter_nd_update(flat, where, tf.fill([tf.shape(where)[0]], -np.inf))
    tail = tf.reshape(tf.reduce_logsumexp(rest, axis=-1), tf.shape(values)[:-1])
    return values, indices, tail


class TopKCache:
    """The stored top-k teacher of a token dataset (see :func:`teacher_top_k`).

    Attributes:
        elements: ``(x, y, weights)`` of every sequence, in order (tensors).
        log_probs, indices, tail_log_mass: ``RaggedTensor`` rows per sequence,
            one entry per real token.
        k, temperature, vocabulary_size: What the cache was made with.
        batch_size: The size of the first input batch (the default of :meth:`dataset`).
    """

    def __init__(self, elements, log_probs, indices, tail_log_mass, k, temperature, vocabulary_size, batch_size=None):
        self.elements = elements
        self.batch_size = batch_size
        self.log_probs, self.indices, self.tail_log_mass = log_probs, indices, tail_log_mass
        self.k, self.temperature, self.vocabulary_size = k, temperature, vocabulary_size

    @property
    def tokens(self):
        """The number of real tokens stored."""
        return int(self.tail_log_mass.flat_values.shape[0])

    @property
    def nbytes(self):
        """Bytes of the teacher's part of the cache (the inputs not counted)."""
        return sum(int(np.prod(r.flat_values.shape)) * r.flat_values.dtype.size
                   for r in (self.log_probs, self.indices, self.tail_log_mass))

    @property
    def bytes_per_token(self):
        return self.nbytes / max(self.tokens, 1)

    def dataset(self, batch_size=None, shuffle=True, seed=None):
        """Batches in the top-k format, reshuffled every epoch (indices shuffled, one gather per batch).

        ``batch_size`` defaults to that of the input's first batch.
        """
        batch_size = batch_size or self.batch_size
        n = int(self.elements[1].shape[0])
        index = tf.data.Dataset.range(n)
        if shuffle:
            index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return index.batch(batch_size).map(self.batch, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True).prefetch(tf.data.AUTOTUNE)

    def batch(self, i):
        """The top-k batch of the examples at indices ``i`` (a tensor of ints)."""
        x, y, w = tf.nest.map_structure(lambda t: tf.gather(t, i), self.elements)
        rows = [tf.gather(r, i).flat_values for r in (self.log_probs, self.indices, self.tail_log_mass)]
        return _dense_batch(x, y, w, *rows, self.temperature)


def _dense_batch(x, y, w, log_probs, indices, tail, temperature):
    """A top-k batch from per-real-token rows: zeros (and weight 0) at every other position."""
    where = tf.where(w > 0)
    shape = tf.shape(w, out_type=tf.int64)
    k = tf.shape(log_probs, out_type=tf.int64)[-1]
    dense = top_k_batch(
        x,
        tf.scatter_nd(where, log_probs, tf.concat([shape, [k]], 0)),
        tf.scatter_nd(where, tf.cast(indices, tf.int32), tf.concat([shape, [k]], 0)),
        tf.scatter_nd(where, tail, shape),
        tf.fill(tf.shape(w)[:1], tf.constant(temperature, tf.float32)),
    )
    return dense, y, w


def _top_k_rows(teacher, data, k, temperature, vocabulary_size, dtype, verbose):
    """Yields ``((x, y, weights), log_probs, indices, tail)`` per input batch, the last three ragged per sequence."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f'dtype must be "float16" or "float32"; received {dtype!r}.')
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k must be a positive integer; received {k!r}.")

    @tf.function(reduce_retracing=True)
    def forward(x):
        logits = teacher(x, training=False)
        if vocabulary_size is not None:
            logits = logits[..., :vocabulary_size]
        if k > logits.shape[-1]:
            raise ValueError(f"top_k={k} is larger than the teacher's vocabulary of {logits.shape[-1]}.")
        return top_k_log_probs(logits, k, temperature)

    cardinality = int(data.cardinality())
    progbar = keras.utils.Progbar(cardinality if cardinality > 0 else None, verbose=verbose)
    index_dtype = tf.uint16 if _vocab(teacher, vocabulary_size) <= 65536 else tf.int32
    for step, batch in enumerate(data):
        x, y, w = keras.utils.unpack_x_y_sample_weight(batch)
        weights = language.weights_or_ones(x, y, w)
        values, indices, tail = forward(x)
        real = weights > 0
        lengths = tf.reduce_sum(tf.cast(real, tf.int64), axis=1)

        def ragged(t, lengths=lengths, real=real):
            return tf.RaggedTensor.from_row_lengths(tf.boolean_mask(t, real), lengths)

        yield ((x, y, weights), ragged(tf.cast(values, dtype)), ragged(tf.cast(indices, index_dtype)), ragged(tail))
        progbar.update(step + 1)


def _vocab(teacher, vocabulary_size):
    dim = teacher.outputs[0].shape[-1] if getattr(teacher, "outputs", None) else None
    if dim is None:
        return vocabulary_size or 2 ** 31
    return min(dim, vocabulary_size or dim)


def teacher_top_k(teacher, data, k, temperature=1.0, vocabulary_size=None, dtype="float16", verbose=0):
    """Runs the teacher once over token batches; keeps its top ``k`` per real token, in memory.

    Args:
        teacher: The trained language model (``[batch, steps, vocab]`` logits).
        data: A dataset of ``(x, y[, sample_weight])`` token batches. The
            weights (or, without them, the inputs' ``padding_mask``) mark the
            real tokens; the rest are not stored.
        k: Tokens kept per position (``1 <= k <= vocabulary``).
        temperature: The temperature of the stored log-probabilities; the
            Distiller must train at the same one (it checks).
        vocabulary_size: Rank only the first ``vocabulary_size`` logits (the
            teacher's vocabulary without padding rows).
        dtype: Storage dtype of the log-probabilities (``"float16"`` or ``"float32"``).
        verbose: 1 shows a progress bar.

    Returns:
        A :class:`TopKCache`.
    """
    parts = list(_top_k_rows(teacher, data, k, temperature, vocabulary_size, dtype, verbose))
    if not parts:
        raise ValueError("The dataset produced no batches: nothing to cache.")
    elements = tf.nest.map_structure(lambda *p: tf.concat(p, 0), *[p[0] for p in parts])
    ragged = [tf.concat([p[i] for p in parts], 0) for i in (1, 2, 3)]
    cache = TopKCache(elements, *ragged, k=k, temperature=float(temperature),
                      vocabulary_size=_vocab(teacher, vocabulary_size),
                      batch_size=int(parts[0][0][1].shape[0]))
    logger.info("Cached the teacher's top %d tokens for %d real tokens (%.0f bytes a token).",
                k, cache.tokens, cache.bytes_per_token)
    return cache


def save_top_k(teacher, data, directory, k, temperature=1.0, vocabulary_size=None, dtype="float16", verbose=0):
    """Like :func:`teacher_top_k`, but written batch by batch to a new or empty directory (atomically).

    For corpora whose cache does not fit in memory; read it with :func:`load_top_k`.
    Returns the size of the first input batch.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"directory {directory!r} exists and is not empty; give a new or empty directory "
                         "for the top-k teacher cache.")
    rows = _top_k_rows(teacher, data, k, temperature, vocabulary_size, dtype, verbose)
    try:
        first = next(rows)
    except StopIteration:
        raise ValueError("The dataset produced no batches: nothing to cache.") from None

    def spec(t):
        if isinstance(t, tf.RaggedTensor):
            return tf.RaggedTensorSpec([None, None] + t.shape[2:].as_list(), t.dtype, ragged_rank=1)
        return tf.TensorSpec([None] + t.shape[1:].as_list(), t.dtype)

    def generate():
        yield first
        yield from rows

    dataset = tf.data.Dataset.from_generator(generate, output_signature=tf.nest.map_structure(spec, first))
    with atomic_directory(directory) as tmp:
        dataset.unbatch().save(tmp)
        with open(os.path.join(tmp, "kdkeras_top_k.txt"), "w") as f:
            f.write(f"{k} {float(temperature)!r}\n")
    logger.info("Cached the teacher's top %d tokens on disk in %s.", k, directory)
    return int(first[0][1].shape[0])


def load_top_k(directory, batch_size, shuffle=True, seed=None, shuffle_buffer=10_000):
    """Batches in the top-k format, streamed from a directory written by :func:`save_top_k`."""
    directory = os.fspath(directory)
    with open(os.path.join(directory, "kdkeras_top_k.txt")) as f:
        _, temperature = f.read().split()
    rows = tf.data.Dataset.load(directory)
    if shuffle:
        rows = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def ragged_batch(elements, log_probs, indices, tail):
        x, y, w = elements
        return _dense_batch(x, y, w, log_probs.flat_values, indices.flat_values, tail.flat_values,
                            float(temperature))

    return rows.ragged_batch(batch_size).map(ragged_batch, num_parallel_calls=tf.data.AUTOTUNE,
                                             deterministic=True).prefetch(tf.data.AUTOTUNE)
