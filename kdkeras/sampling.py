"""On-policy sampling: the student continues each prompt, on its KV cache where it has one.

Two paths draw the same tokens for the same ``(seed, step)``:

- **cached** (KerasHub ``CausalLM``: ``call_with_cache`` and ``_build_cache``):
  the cache is seeded with one pass over the prompts, then each new token costs
  one step of the model on one position, as in KerasHub's own ``generate``;
- **generic** (any Keras model mapping token ids to ``[batch, steps, V]``
  logits): one full forward pass per new position.

The token at position ``p`` is drawn by inverting the softmax's cumulative
sum at one number of a counter-based hash keyed by ``(seed, step, row, p)``
alone, so which path ran, and how many sequences were
still being sampled, change nothing. A sequence stops at the end token: the
position that predicts it keeps its weight (the student learns to stop), the
positions after it weigh 0 and are padding. Where padding and end token share
an id (GPT-2), only the weights tell them apart, never the ids.

This module is core: TensorFlow only; a KerasHub model is recognised by its
methods.
"""

import dataclasses
import functools
import weakref

import numpy as np
import tensorflow as tf

from kdkeras import language

__all__ = ["OnPolicy", "has_kv_cache", "inverse_cdf_draw", "kv_cache_steps", "on_policy_coin", "sample_continuations",
           "uniform_noise", "uniform_noise_key"]


@dataclasses.dataclass(frozen=True)
class OnPolicy:
    """On-policy distillation (GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024): ``compile(on_policy=...)``.

    With probability ``fraction`` a training batch is replaced by the
    student's own continuations of its prompts, scored by the (online)
    teacher, with the loss on the generated tokens only and no hard-label
    loss on them. KerasHub ``CausalLM`` students sample on their KV cache, in
    one XLA-compiled loop; other models by full passes.

    Attributes:
        fraction: Probability ``lambda`` that a training batch is on-policy
            (GKD's student-data fraction), in ``[0, 1]``.
        max_new_tokens: Tokens the student generates per sequence; the prompt
            is each sequence's first ``steps - max_new_tokens`` real tokens.
        temperature: Sampling temperature of the student (> 0).
        seed: Seed of the coin flips and the samples. Batch ``i`` of training
            (the optimizer's iteration count) always draws the same numbers, so
            a run resumed from a checkpoint samples the same sequences.
        end_token_id: A sequence stops after sampling this token (its
            position keeps its weight, later ones weigh 0). ``"auto"``
            (default): the tokenizer's ``end_token_id`` (the Distiller's
            preprocessor, else the student's or the teacher's), else none;
            ``None``: never stop early.
        pad_token_id: The id written after a sequence's end; ``None``
            (default): the tokenizer's pad id, else 0.
        start_step: Training batches before this optimizer step are never
            on-policy: an off-policy warm start, as in GKD (default 0).
    """

    fraction: float
    max_new_tokens: int
    temperature: float = 1.0
    seed: int = 0
    end_token_id: object = "auto"
    pad_token_id: object = None
    start_step: int = 0

    def __post_init__(self):
        def fail(name, value, what):
            raise ValueError(f"{name} must be {what}; received {value!r}.")

        def is_int(value):
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or \
                not 0.0 <= self.fraction <= 1.0:
            fail("OnPolicy.fraction", self.fraction, "a number in [0, 1]")
        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            fail("OnPolicy.max_new_tokens", self.max_new_tokens, "a positive integer (tokens the student generates)")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or \
                not np.isfinite(self.temperature) or self.temperature <= 0:
            fail("OnPolicy.temperature", self.temperature, "a finite number > 0")
        if not is_int(self.seed):
            fail("OnPolicy.seed", self.seed, "an integer")
        if self.end_token_id not in (None, "auto") and (not is_int(self.end_token_id) or self.end_token_id < 0):
            fail("OnPolicy.end_token_id", self.end_token_id, "a token id >= 0, 'auto' or None")
        if self.pad_token_id is not None and (not is_int(self.pad_token_id) or self.pad_token_id < 0):
            fail("OnPolicy.pad_token_id", self.pad_token_id, "a token id >= 0 or None")
        if not is_int(self.start_step) or self.start_step < 0:
            fail("OnPolicy.start_step", self.start_step, "an integer >= 0")

    def resolved(self, tokenizer=None):
        """This policy with ``"auto"`` / ``None`` token ids replaced by ``tokenizer``'s (else no end token, pad 0)."""
        end, pad = self.end_token_id, self.pad_token_id
        if isinstance(end, str):
            end = getattr(tokenizer, "end_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "pad_token_id", None)
        return dataclasses.replace(self, end_token_id=None if end is None else int(end),
                                   pad_token_id=0 if pad is None else int(pad))


def has_kv_cache(model):
    """Whether ``model`` samples on a KV cache (a KerasHub ``CausalLM``: ``call_with_cache`` and ``_build_cache``)."""
    return callable(getattr(model, "call_with_cache", None)) and callable(getattr(model, "_build_cache", None))


def on_policy_coin(step, policy):
    """Whether training batch ``step`` is on-policy: from ``policy.start_step`` on, a stateless draw below the fraction."""
    seed = tf.stack([tf.constant(policy.seed, tf.int64), tf.cast(step, tf.int64)])
    coin = tf.random.stateless_uniform([], seed) < policy.fraction
    if policy.start_step == 0:
        return coin
    return tf.logical_and(coin, tf.cast(step, tf.int64) >= policy.start_step)


def sample_continuations(student, x, step, policy, vocabulary_size=None, use_cache=None, jit_compile=None):
    """The student continues each sequence of a batch by sampling; returns ``(x, y, weights)``.

    Each sequence's prompt is its first ``min(length, steps - max_new_tokens)``
    real tokens (at least one). The student then samples up to
    ``max_new_tokens`` tokens (temperature ``policy.temperature``, logits
    beyond ``vocabulary_size`` excluded), in inference mode, stopping after
    ``policy.end_token_id``. The result:

    - ``x``: the inputs with the generated tokens written after the prompt
      (``policy.pad_token_id`` after an end token) and the padding mask
      covering prompt and continuation (up to and including the end token);
    - ``y``: the next token at every position (``y[:, t] = ids[:, t + 1]``);
    - ``weights``: 1.0 exactly at the positions that predict a generated token
      (the end token included), 0.0 elsewhere (prompt, after the end, padding).

    The draws depend only on ``(policy.seed, step)`` and the position.

    Args:
        student: The student model (called in inference mode).
        x: The batch's inputs (dict with ``token_ids``/``padding_mask``, or ids).
        step: The training step (an integer tensor), which keys the draws.
        policy: An :class:`OnPolicy`.
        vocabulary_size: Sample from the first ``vocabulary_size`` logits only.
        use_cache: ``True``: the KV-cache path (a KerasHub ``CausalLM``);
            ``False``: full forward passes; ``None`` (default): the cache
            wherever the student has one.
        jit_compile: Compile the sampling loop with XLA (one compiled program
            for the cache's seeding and every new token, kept with the
            student). ``None`` (default): on the KV-cache path, where the
            models are KerasHub's (XLA-compatible); the full-pass path runs
            any Keras model, so it is not compiled by default.
    """
    policy = policy.resolved()  # ids still "auto" here: no end token, pad 0
    ids, _ = language.token_ids_and_mask(x)
    tf.debugging.assert_positive(tf.shape(ids)[1] - policy.max_new_tokens, message=(
        f"On-policy distillation: sequences must be longer than max_new_tokens={policy.max_new_tokens}."))
    cached = has_kv_cache(student) if use_cache is None else use_cache
    if jit_compile is None:
        jit_compile = cached
    if not jit_compile:
        return _sample(student, x, step, policy, vocabulary_size, cached)
    key = (policy, vocabulary_size, cached)
    compiled = _COMPILED.setdefault(student, {})
    if key not in compiled:
        compiled[key] = tf.function(functools.partial(_sample, student, policy=policy,
                                                      vocabulary_size=vocabulary_size, cached=cached),
                                    jit_compile=True, reduce_retracing=True)
    return compiled[key](x, tf.cast(step, tf.int64))  # a tensor: a Keras variable cannot be a traced argument


#: Each student's XLA-compiled sampling loops, by settings (kept with the model, as KerasHub keeps its generate).
_COMPILED = weakref.WeakKeyDictionary()


def _sample(student, x, step, policy, vocabulary_size, cached):
    """:func:`sample_continuations`' loop (``cached``: on the KV cache)."""
    ids, mask = language.token_ids_and_mask(x)
    batch, steps = tf.shape(ids)[0], tf.shape(ids)[1]
    new = policy.max_new_tokens
    lengths = tf.fill([batch], steps) if mask is None else tf.reduce_sum(tf.cast(mask, tf.int32), 1)
    prompt = tf.maximum(tf.minimum(lengths, steps - new), 1)  # [batch]
    positions = tf.range(steps)[None, :]
    pad = tf.cast(policy.pad_token_id, ids.dtype)
    ids = tf.where(positions < prompt[:, None], ids, pad)
    key = uniform_noise_key(policy.seed, step)
    rows = tf.range(batch)
    model_step = kv_cache_steps(student, ids) if cached else _full_logits(student, x, positions)
    state = model_step.initial

    def body(p, ids, stop, state):
        logits, state = model_step.next(p, ids, state)  # [batch, V]: the distribution of the token at p
        if vocabulary_size is not None:
            logits = logits[:, :vocabulary_size]
        token = tf.cast(_draw(logits, policy.temperature, key, rows, p), ids.dtype)
        fill = tf.logical_and(p >= prompt, p < stop)  # [batch]: still sampling at p
        ids = tf.where(tf.logical_and(positions == p, fill[:, None]), token[:, None], ids)
        if policy.end_token_id is not None:
            ended = tf.logical_and(fill, tf.equal(token, tf.cast(policy.end_token_id, ids.dtype)))
            stop = tf.where(ended, p + 1, stop)
        return p + 1, ids, stop, state

    def more(p, ids, stop, state):
        return tf.reduce_any(p < stop)

    _, ids, stop, _ = tf.while_loop(more, body, (tf.reduce_min(prompt), ids, prompt + new, state),
                                    parallel_iterations=1)
    labels = tf.concat([ids[:, 1:], tf.zeros_like(ids[:, :1])], axis=1)
    generated = tf.logical_and(positions >= (prompt - 1)[:, None], positions < (stop - 1)[:, None])
    return language.with_tokens(x, ids, positions < stop[:, None]), labels, tf.cast(generated, tf.float32)


def _draw(logits, temperature, key, rows, position):
    """A categorical sample per row at temperature ``temperature`` (:func:`inverse_cdf_draw`).

    Row ``b``'s number depends on ``(key, b, position)`` alone, and is the same
    compiled by XLA or not (plain integer arithmetic, unlike TensorFlow's
    stateless random ops, whose algorithm differs on XLA).
    """
    uniform = uniform_noise(key, rows, tf.fill(tf.shape(rows), position))
    return inverse_cdf_draw(tf.cast(logits, tf.float32) / temperature, uniform)


def inverse_cdf_draw(logits, uniform):
    """One token a row from ``softmax(logits)``: the first whose cumulative probability reaches ``uniform[b]``.

    ``logits`` ``[batch, V]`` (already at their temperature; ``-inf`` for
    excluded tokens), ``uniform`` ``[batch]`` in ``(0, 1)``.
    """
    cumulative = tf.cumsum(tf.nn.softmax(logits, axis=-1), axis=-1)
    token = tf.reduce_sum(tf.cast(cumulative < uniform[:, None] * cumulative[:, -1:], tf.int32), axis=-1)
    return tf.minimum(token, tf.shape(logits)[-1] - 1)


_GOLDEN = 0x9E3779B9


def _fmix(x):
    """MurmurHash3's 32-bit finaliser: a bijective mix of uint32 values."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(13, tf.uint32)))
    x = x * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _uint32(value):
    return tf.cast(tf.bitwise.bitwise_and(tf.cast(value, tf.int64), 0xFFFFFFFF), tf.uint32)


def _keyed(seed, values):
    """``values`` (uint32-castable) hashed under ``seed``: the first two rounds of :func:`uniform_noise`."""
    return _fmix(tf.bitwise.bitwise_xor(_fmix(tf.bitwise.bitwise_xor(_uint32(seed), tf.constant(_GOLDEN, tf.uint32))),
                                        _uint32(values)))


def uniform_noise_key(seed, stream):
    """A :func:`uniform_noise` seed for one ``stream`` of a seed (on-policy sampling: the training step)."""
    return tf.cast(_keyed(tf.cast(seed, tf.int64) + 1, stream), tf.int64)


def uniform_noise(seed, samples, positions):
    """One uniform number in ``(0, 1)`` per row, ``[batch]``: row ``b``'s depends on ``(seed, samples[b], positions[b])``.

    A counter-based hash (MurmurHash3's finaliser), so a sample's draws do not
    depend on which batch, or which row of it, the sample is in, and are the
    same under XLA.
    """
    row = _fmix(tf.bitwise.bitwise_xor(_keyed(seed, samples), tf.cast(positions, tf.uint32)))
    bits = tf.bitwise.right_shift(_fmix(row), tf.constant(8, tf.uint32))
    return (tf.cast(bits, tf.float32) + 0.5) * (1.0 / (1 << 24))


class _Step:
    """``initial`` loop state and ``next(p, ids, state) -> (logits of the token at p, state)``."""

    def __init__(self, initial, next_fn):
        self.initial = initial
        self.next = next_fn


def _full_logits(student, x, positions):
    """The generic path: one full forward pass per position."""

    def next_fn(p, ids, state):
        logits = student(language.with_tokens(x, ids, positions < p), training=False)
        return tf.gather(logits, p - 1, axis=1), state

    return _Step(tf.constant(0), next_fn)


def kv_cache_steps(model, ids):
    """A KerasHub ``CausalLM``'s decoding on its KV cache: ``initial`` cache and ``next(p, ids, cache)``.

    The cache is seeded with one pass over ``ids`` ``[batch, steps]``; then
    ``next(p, ids, cache)`` runs the model on position ``p - 1`` only (the
    token ``ids[:, p - 1]``, written into the cache there) and returns
    ``(logits [batch, V] of the token at p, cache)``, which equal a full pass's
    logits at ``p - 1`` over the same ids. On-policy sampling and
    :func:`kdkeras.text.complete_prompts` decode with it.
    """
    _, cache = model._build_cache(ids)

    def next_fn(p, ids, cache):
        logits, _, cache = model.call_with_cache(tf.slice(ids, [0, p - 1], [-1, 1]), cache, p - 1)
        return logits[:, 0, :], cache

    return _Step(cache, next_fn)
