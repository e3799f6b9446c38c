"""Distillation losses and the registry that selects them by name.

Every loss here is a small pure function with one signature::

    loss(teacher_logits, student_logits, temperature) -> per-example loss

The inputs are logits of shape ``[batch, num_classes]`` (or a language
model's ``[batch, steps, vocab]``); the result has the logits' shape without
the last axis (``[batch]``, or one value per token) and dtype float32, whatever the dtype of the logits (losses are
always computed in float32, also under a mixed-precision policy). The ``T**2``
factor of Hinton et al. (2015) is included wherever the formula has it, so
that gradient magnitudes stay comparable across temperatures.

All functions use ``tf.nn.log_softmax``, never ``log(softmax(...))`` or clipped
probabilities, so they stay finite for logits as large as ``+-1e4`` and
work inside ``tf.function`` and XLA.

Names are looked up with :func:`get`; :func:`available` lists them and
:func:`register` adds custom losses with the same signature.

Example:

```python
import numpy as np
import kdkeras

kl = kdkeras.losses.get("kl")
t = np.array([[2.0, 0.5, -1.0]], "float32")
s = np.array([[1.0, 1.0, 0.0]], "float32")
per_example = kl(t, s, 3.0)  # shape (1,), float32
```
"""

import inspect
import math
from typing import NamedTuple

import keras
import tensorflow as tf

from kdkeras import checks

__all__ = [
    "TopKTeacher",
    "kl_divergence",
    "generalized_jsd",
    "skew_kl",
    "skew_reverse_kl",
    "total_variation",
    "reverse_kl_divergence",
    "soft_target_cross_entropy",
    "logit_mse",
    "keras_loss_on_soft_targets",
    "decoupled_kd",
    "takes_labels",
    "kl_divergence_and_gradient",
    "cross_entropy_and_gradient",
    "get",
    "register",
    "available",
]


def _as_float32(teacher_logits, student_logits, temperature):
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    student_logits = tf.cast(student_logits, tf.float32)
    temperature = tf.cast(temperature, tf.float32)
    return teacher_logits, student_logits, temperature


def _non_negative(divergence):
    """Clamps float rounding (about -1e-7 near the optimum) to 0, keeping the exact gradient."""
    return divergence + tf.stop_gradient(tf.maximum(divergence, 0.0) - divergence)


def kl_divergence(teacher_logits, student_logits, temperature):
    """Forward KL divergence ``T**2 * KL(p_t || p_s)`` per example (Hinton KD).

    ``p_t = softmax(z_t / T)`` and ``p_s = softmax(z_s / T)``. The gradient
    with respect to the student logits is ``T * (p_s - p_t)``.

    Args:
        teacher_logits: Teacher logits, shape ``[batch, classes]``.
        student_logits: Student logits, same shape.
        temperature: Softmax temperature ``T > 0`` (scalar).

    Returns:
        Float32 tensor of shape ``[batch]``.
    """
    log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
    return _scaled_kl(log_pt, log_ps, t)


def kl_divergence_and_gradient(teacher_logits, student_logits, temperature):
    """:func:`kl_divergence` and its gradient with respect to the student logits, in one pass.

    Returns ``(values [...], T * (softmax(z_s / T) - softmax(z_t / T)) [..., V])``,
    float32, for full teacher logits. The fused language-model head forms the
    gradient in the forward pass with it (:mod:`kdkeras.token_chunks`).
    """
    zt, zs, t = _as_float32(teacher_logits, student_logits, temperature)
    log_pt, log_ps = tf.nn.log_softmax(zt / t, axis=-1), tf.nn.log_softmax(zs / t, axis=-1)
    p_t, p_s = tf.exp(log_pt), tf.exp(log_ps)
    kl = tf.reduce_sum(tf.math.multiply_no_nan(log_pt - log_ps, p_t), axis=-1)  # p_t = 0 adds 0, as in _kl
    return tf.maximum(tf.square(t) * kl, 0.0), t * (p_s - p_t)


def cross_entropy_and_gradient(labels, logits):
    """Sparse cross-entropy on logits ``logsumexp(z) - z_y`` and its gradient ``softmax(z) - onehot(y)``.

    ``labels`` ``[...]`` integer ids in ``[0, V)``, ``logits`` ``[..., V]``;
    both results float32. TensorFlow's fused kernel (the one
    ``tf.nn.sparse_softmax_cross_entropy_with_logits`` runs) gives both.
    """
    z = tf.cast(logits, tf.float32)
    shape = tf.shape(z)
    values, gradient = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
        features=tf.reshape(z, [-1, shape[-1]]), labels=tf.reshape(tf.cast(labels, tf.int32), [-1]))
    return tf.reshape(values, shape[:-1]), tf.reshape(gradient, shape)


def reverse_kl_divergence(teacher_logits, student_logits, temperature):
    """Reverse (mode-seeking) KL divergence ``T**2 * KL(p_s || p_t)`` per example.

    Arguments and result as in :func:`kl_divergence`.
    """
    log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
    return _scaled_kl(log_ps, log_pt, t)


def _softened(teacher_logits, student_logits, temperature):
    """``(log p_t, log p_s, T)``: both log-distributions at temperature ``T``, in float32.

    For a :class:`TopKTeacher` both are over its ``k`` tokens plus one tail bucket
    (see :func:`top_k_buckets`).
    """
    if isinstance(teacher_logits, TopKTeacher):
        return top_k_buckets(teacher_logits, student_logits, temperature)
    zt, zs, t = _as_float32(teacher_logits, student_logits, temperature)
    return tf.nn.log_softmax(zt / t, axis=-1), tf.nn.log_softmax(zs / t, axis=-1), t


class TopKTeacher(NamedTuple):
    """A teacher's distribution kept as its ``k`` most likely tokens and one tail bucket.

    This is the sparse form of a vocabulary-scale teacher that
    :func:`kdkeras.cache_teacher_logits` (``top_k=``) stores per token. Every
    loss here that works on log-probabilities (``kl``, ``reverse_kl``, ``jsd``,
    ``skew_kl``, ``skew_reverse_kl``, ``tv``, ``soft_ce``) accepts it in place of
    the teacher's logits.

    The tail is **one bucket**: the teacher's remaining mass ``1 - sum(top k)``
    is compared with the student's mass outside the same ``k`` tokens, so both
    sides are distributions over ``k + 1`` outcomes and every divergence stays a
    true divergence (it is 0 only when the student matches the teacher's top
    ``k`` and its tail mass). Dropping the tail (renormalising the top ``k``)
    would instead reward a student that moves mass into the tail for free.
    With ``k`` equal to the vocabulary there is no tail and the losses equal
    the full-logit losses.

    Attributes:
        log_probs: ``[..., k]`` the teacher's log-probabilities at the cache's
            temperature, largest first (any float dtype; used in float32).
        indices: ``[..., k]`` their token ids (any integer dtype).
        tail_log_mass: ``[...]`` the log of the teacher's mass outside the
            ``k`` tokens (computed exactly from the full logits when cached;
            ``-inf`` when ``k`` is the vocabulary size).
    """

    log_probs: object
    indices: object
    tail_log_mass: object


#: Smallest student tail mass used for a top-k teacher: float32 resolves ``1 - sum(top k)`` to about this.
STUDENT_TAIL_FLOOR = 1e-7


def top_k_buckets(teacher, student_logits, temperature):
    """``(log p_t, log p_s, T)`` over a :class:`TopKTeacher`'s ``k`` tokens and its tail bucket.

    The teacher's side is its stored top-k log-probabilities and tail log-mass
    (made at the temperature the cache records). The student's side is its
    log-softmax at ``T`` gathered at the teacher's token ids, and its tail
    ``log(1 - sum)`` of them, floored at :data:`STUDENT_TAIL_FLOOR` (the
    resolution of that difference in float32). When ``k`` is statically the
    vocabulary size there is no tail bucket.
    """
    zs = tf.cast(student_logits, tf.float32)
    t = tf.cast(temperature, tf.float32)
    log_ps_full = tf.nn.log_softmax(zs / t, axis=-1)
    indices = tf.cast(teacher.indices, tf.int32)
    log_pt = tf.cast(teacher.log_probs, tf.float32)
    log_ps = tf.gather(log_ps_full, indices, batch_dims=indices.shape.rank - 1)
    k, vocab = indices.shape[-1], zs.shape[-1]
    if k is not None and vocab is not None and k > vocab:
        raise ValueError(f"The top-k teacher keeps k = {k} tokens, more than the student's vocabulary of {vocab}.")
    if k is not None and k == vocab:
        return log_pt, log_ps, t
    top = tf.minimum(tf.reduce_logsumexp(log_ps, axis=-1), math.log1p(-STUDENT_TAIL_FLOOR))
    student_tail = _log1mexp(top)
    teacher_tail = tf.cast(teacher.tail_log_mass, tf.float32)
    return (tf.concat([log_pt, teacher_tail[..., None]], -1), tf.concat([log_ps, student_tail[..., None]], -1), t)


def _log1mexp(x):
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends (Maechler, 2012)."""
    return tf.where(x > -math.log(2.0), tf.math.log(-tf.math.expm1(x)), tf.math.log1p(-tf.exp(x)))


def _log_mixture(log_p, log_q, weight_p):
    """``log(weight_p * p + (1 - weight_p) * q)`` from log-probabilities, for ``0 < weight_p < 1``."""
    a = log_p + math.log(weight_p)
    b = log_q + math.log1p(-weight_p)
    high = tf.maximum(a, b)
    return high + tf.math.log1p(tf.exp(-tf.abs(a - b)))


def _check_mixing(name, value, upper_inclusive):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    ok = ok and (value <= 1 if upper_inclusive else value < 1)
    if not ok:
        bound = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name} must be a number in {bound}; received {value!r}.")
    return float(value)


def generalized_jsd(beta=0.5):
    """Makes the generalized Jensen-Shannon divergence loss of GKD, per token.

    Agarwal et al., "On-Policy Distillation of Language Models: Learning from
    Self-Generated Mistakes", ICLR 2024 (TRL's ``generalized_jsd_loss``)::

        m = beta * p_t + (1 - beta) * p_s
        JSD_beta = T**2 * (beta * KL(p_t || m) + (1 - beta) * KL(p_s || m))

    The mixture ``m`` is formed in log space. ``T**2`` applies (as for every
    divergence here). The endpoints are defined as in GKD and TRL: ``beta = 0``
    is the forward KL :func:`kl_divergence` and ``beta = 1`` the reverse KL
    :func:`reverse_kl_divergence` (the formula itself would give 0 there).

    Args:
        beta (float): Mixing weight of the teacher in ``[0, 1]``; 0.5 is the
            symmetric Jensen-Shannon divergence.

    Returns:
        ``f(teacher_logits, student_logits, temperature)`` returning float32
        values of shape ``teacher_logits.shape[:-1]``.
    """
    beta = _check_mixing("beta", beta, upper_inclusive=True)
    if beta == 0.0:
        return kl_divergence
    if beta == 1.0:
        return reverse_kl_divergence

    def jsd(teacher_logits, student_logits, temperature):
        log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
        log_m = _log_mixture(log_pt, log_ps, beta)
        value = beta * _kl(log_pt, log_m) + (1.0 - beta) * _kl(log_ps, log_m)
        return _non_negative(tf.square(t) * value)

    jsd.__name__ = f"jsd_{beta:g}"
    return jsd


def skew_kl(alpha=0.1):
    """Makes the skew KL divergence of DistiLLM, per token.

    Ko et al., "DistiLLM: Towards Streamlined Distillation for Large Language
    Models", ICML 2024::

        SKL_alpha = T**2 * KL(p_t || alpha * p_t + (1 - alpha) * p_s)

    ``T**2`` applies. ``alpha = 0`` is the forward KL; mixing in the teacher
    keeps the loss and its gradient bounded where the student gives a token
    almost no mass.

    Args:
        alpha (float): Skew in ``[0, 1)``; DistiLLM uses 0.1.

    Returns:
        ``f(teacher_logits, student_logits, temperature)``.
    """
    return _skewed(alpha, reverse=False)


def skew_reverse_kl(alpha=0.1):
    """Makes the skew reverse KL divergence of DistiLLM, per token.

    Ko et al., ICML 2024::

        SRKL_alpha = T**2 * KL(p_s || (1 - alpha) * p_t + alpha * p_s)

    ``T**2`` applies. ``alpha = 0`` is the reverse KL.

    Args:
        alpha (float): Skew in ``[0, 1)``; DistiLLM uses 0.1.

    Returns:
        ``f(teacher_logits, student_logits, temperature)``.
    """
    return _skewed(alpha, reverse=True)


def _skewed(alpha, reverse):
    """The skew KL (``reverse=False``: ``KL(p_t || mix)``) or skew reverse KL (``KL(p_s || mix)``), mix toward the first."""
    alpha = _check_mixing("alpha", alpha, upper_inclusive=False)
    if alpha == 0.0:
        return reverse_kl_divergence if reverse else kl_divergence

    def skewed(teacher_logits, student_logits, temperature):
        log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
        first, second = (log_ps, log_pt) if reverse else (log_pt, log_ps)
        return _non_negative(tf.square(t) * _kl(first, _log_mixture(first, second, alpha)))

    skewed.__name__ = f"skew_{'reverse_' if reverse else ''}kl_{alpha:g}"
    return skewed


def total_variation(teacher_logits, student_logits, temperature):
    """Total variation distance ``T**2 * 0.5 * sum_c |p_t[c] - p_s[c]|``, per token.

    Wen et al., "f-Divergence Minimization for Sequence-Level Knowledge
    Distillation", ACL 2023, use it among their f-divergences. ``T**2``
    applies, as for every divergence here (at ``T = 1`` it is the plain
    distance in ``[0, 1]``). Arguments and result as in :func:`kl_divergence`.
    """
    log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
    return tf.square(t) * 0.5 * tf.reduce_sum(tf.abs(tf.exp(log_pt) - tf.exp(log_ps)), axis=-1)


def _kl(log_p, log_q):
    """``KL(p || q)`` over the last axis, from log-probabilities (a bucket with ``p = 0`` adds 0)."""
    p = tf.exp(log_p)
    # Only p == 0 is zeroed: a NaN (from infinite logits) must stay visible.
    return tf.reduce_sum(tf.where(tf.equal(p, 0.0), tf.zeros_like(p), p * (log_p - log_q)), axis=-1)


def _scaled_kl(log_p, log_q, t):
    """``T**2 * KL(p || q)`` per example, from log-probabilities."""
    return _non_negative(tf.square(t) * _kl(log_p, log_q))


def soft_target_cross_entropy(teacher_logits, student_logits, temperature):
    """Soft-target cross-entropy ``-T**2 * sum_c p_t[c] log p_s[c]`` per example.

    It differs from :func:`kl_divergence` by ``T**2`` times the teacher's
    entropy, a constant for the student, so its gradient is the same.
    Arguments and result as in :func:`kl_divergence`.
    """
    log_pt, log_ps, t = _softened(teacher_logits, student_logits, temperature)
    return -tf.square(t) * tf.reduce_sum(tf.exp(log_pt) * log_ps, axis=-1)


def logit_mse(teacher_logits, student_logits, temperature):
    """Mean squared error between logits (Caruana-style logit matching).

    The temperature is accepted for a uniform signature and ignored: logit
    matching is the high-temperature limit of KD and needs no softening.

    Args:
        teacher_logits: Teacher logits, shape ``[batch, classes]``.
        student_logits: Student logits, same shape.
        temperature: Ignored.

    Returns:
        Float32 tensor of shape ``[batch]``: the mean over classes.
    """
    del temperature
    _refuse_top_k(teacher_logits, "mse")
    zt = tf.cast(teacher_logits, tf.float32)
    zs = tf.cast(student_logits, tf.float32)
    return tf.reduce_mean(tf.square(zs - zt), axis=-1)


def decoupled_kd(target_weight=1.0, non_target_weight=8.0):
    """Makes a DKD loss (decoupled knowledge distillation; Zhao et al., CVPR 2022).

    DKD splits the KL divergence into a target-class term (TCKD: KL between the
    binary distributions ``[p[target], 1 - p[target]]`` of teacher and student)
    and a non-target-class term (NCKD: KL between the distributions over the
    other classes, renormalised), and weighs them freely::

        T**2 * (target_weight * TCKD + non_target_weight * NCKD)

    ``target_weight`` and ``non_target_weight`` are the paper's alpha and beta
    (not the Distiller's ``alpha``, which still weighs the hard-label loss).
    The paper also warms the distillation term up linearly over the first
    epochs; use :func:`kdkeras.callbacks.linear_warmup` for that.

    The returned function takes the true ``labels`` (the Distiller passes
    them); without labels the teacher's top class is the target.

    Args:
        target_weight: Weight of TCKD (alpha in the paper; 1.0 there).
        non_target_weight: Weight of NCKD (beta in the paper; 8.0 for CIFAR-100,
            0.5 for ImageNet).

    Returns:
        ``f(teacher_logits, student_logits, temperature, labels=None)``.

    Example:

    ```python
    kdkeras.losses.register("dkd_b2", kdkeras.losses.decoupled_kd(1.0, 2.0))
    distiller.compile(..., distillation_loss_fn="dkd_b2")
    ```
    """
    for name, value in (("target_weight", target_weight), ("non_target_weight", non_target_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"DKD's {name} must be a finite number >= 0; received {value!r}.")

    def dkd(teacher_logits, student_logits, temperature, labels=None):
        _refuse_top_k(teacher_logits, "dkd")
        zt, zs, t = _as_float32(teacher_logits, student_logits, temperature)
        if labels is None:
            target = tf.argmax(zt, axis=-1)
        else:
            target = tf.reshape(tf.cast(labels, tf.int64), [-1])
        is_target = tf.one_hot(target, tf.shape(zs)[-1], on_value=True, off_value=False)
        log_pt = tf.nn.log_softmax(zt / t, axis=-1)
        log_ps = tf.nn.log_softmax(zs / t, axis=-1)
        neg_inf = tf.fill(tf.shape(log_pt), -float("inf"))

        def split(log_p):
            log_target = tf.reduce_sum(tf.where(is_target, log_p, tf.zeros_like(log_p)), axis=-1)
            log_rest = tf.reduce_logsumexp(tf.where(is_target, neg_inf, log_p), axis=-1)
            return log_target, log_rest

        t_tgt, t_rest = split(log_pt)
        s_tgt, s_rest = split(log_ps)
        tckd = tf.exp(t_tgt) * (t_tgt - s_tgt) + tf.exp(t_rest) * (t_rest - s_rest)
        # Over the other classes: log p_hat = log p - log(1 - p[target]). The target entry
        # is zeroed *before* exp: a where() after it would still send 0 * inf = NaN back
        # through the gradient when p[target] is close to 1.
        zeros = tf.zeros_like(log_pt)
        t_hat = tf.where(is_target, zeros, log_pt - t_rest[:, None])
        s_hat = tf.where(is_target, zeros, log_ps - s_rest[:, None])
        terms = tf.where(is_target, zeros, tf.exp(t_hat) * (t_hat - s_hat))
        nckd = tf.reduce_sum(terms, axis=-1)
        loss = tf.square(t) * (target_weight * tckd + non_target_weight * nckd)
        return _non_negative(loss)

    dkd.__name__ = f"dkd_{target_weight:g}_{non_target_weight:g}"
    return dkd


def _refuse_top_k(teacher_logits, name):
    if isinstance(teacher_logits, TopKTeacher):
        raise ValueError(
            f"The distillation loss {name} needs the teacher's full logits, but the batch carries a top-k "
            "teacher cache: use kl, reverse_kl, jsd, skew_kl, skew_reverse_kl, tv or soft_ce, or cache "
            "the full logits (top_k=None).")


def takes_labels(fn):
    """Whether a distillation loss accepts the true labels as ``labels=``."""
    try:
        return "labels" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def keras_loss_on_soft_targets(loss):
    """Wraps a Keras probability loss the way the keras.io KD example uses it.

    The keras.io "Knowledge Distillation" example calls
    ``loss(softmax(z_t / T), softmax(z_s / T)) * T**2``. This returns a
    function with the kdkeras signature that does exactly that, per example.
    Note that Keras' ``KLDivergence`` clips probabilities to ``[1e-7, 1]``; the
    registered ``"kl"`` loss does not need to and is preferred.

    Args:
        loss: A ``keras.losses.Loss`` instance, or a Keras loss function
            ``f(y_true, y_pred)`` that returns one value per example.

    Returns:
        A function ``f(teacher_logits, student_logits, temperature)``.
    """
    if isinstance(loss, keras.losses.Loss):
        per_example = loss.call  # unreduced, one value per example
    else:
        per_example = loss

    def distill(teacher_logits, student_logits, temperature):
        _refuse_top_k(teacher_logits, "a Keras loss on soft targets")
        zt, zs, t = _as_float32(teacher_logits, student_logits, temperature)
        values = per_example(
            tf.nn.softmax(zt / t, axis=-1), tf.nn.softmax(zs / t, axis=-1)
        )
        return tf.square(t) * tf.cast(values, tf.float32)

    distill.__name__ = f"soft_targets_{getattr(loss, 'name', None) or getattr(loss, '__name__', 'loss')}"
    distill.wrapped_keras_loss = loss
    return distill


_REGISTRY = {}
_ALIASES = {
    # Keras' own name resolves here to the correct, softened and T**2-scaled
    # formula (keras.distillation.LogitsDistillation resolves it to a raw
    # function applied to scaled logits, see DESIGN.md).
    "kl_divergence": "kl",
    "kld": "kl",
    "forward_kl": "kl",
    "reverse_kl_divergence": "reverse_kl",
    "cross_entropy": "soft_ce",
    "soft_cross_entropy": "soft_ce",
    "logit_mse": "mse",
    "mean_squared_error": "mse",
    "generalized_jsd": "jsd",
    "total_variation": "tv",
    "skl": "skew_kl",
    "srkl": "skew_reverse_kl",
}


def register(name, fn=None, *, overwrite=False):
    """Registers a distillation loss under ``name``.

    Can be used directly or as a decorator.

    Args:
        name: The name to select the loss by (lower case is recommended).
        fn: A function ``f(teacher_logits, student_logits, temperature)``
            returning a per-example float32 tensor of shape ``[batch]``.
        overwrite: Replace an existing registration instead of failing.

    Returns:
        ``fn`` (or a decorator when ``fn`` is omitted).

    Example:

    ```python
    @kdkeras.losses.register("half_kl")
    def half_kl(teacher_logits, student_logits, temperature):
        return 0.5 * kdkeras.losses.kl_divergence(
            teacher_logits, student_logits, temperature)
    ```
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"A loss name must be a non-empty string; received {name!r}.")

    def decorator(f):
        if not callable(f):
            raise TypeError(f"Only callables can be registered as losses; received {f!r}.")
        key = name.lower()
        if (key in _REGISTRY or key in _ALIASES) and not overwrite:
            raise ValueError(
                f"A distillation loss named {name!r} is already registered. "
                "Pass overwrite=True to replace it."
            )
        _REGISTRY[key] = f
        return f

    if fn is None:
        return decorator
    return decorator(fn)


def available():
    """Returns the sorted names of all registered distillation losses."""
    return sorted(_REGISTRY)


def _is_two_argument_loss(fn):
    """Whether ``fn`` is a Keras-style ``f(y_true, y_pred)``: two required positional arguments, no temperature.

    Keras' loss functions take optional extras (``categorical_crossentropy(y_true,
    y_pred, from_logits=False, ...)``), so only the required ones are counted.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params.values() if p.kind in kinds and p.default is inspect.Parameter.empty]
    return len(required) == 2 and "temperature" not in params


def get(identifier):
    """Returns a distillation loss function from a name, Keras loss or callable.

    Args:
        identifier: One of

            - a registered name (see :func:`available`), case-insensitive;
              ``"kl_divergence"`` is an alias of ``"kl"``;
            - a ``keras.losses.Loss`` instance such as
              ``keras.losses.KLDivergence()``, or a two-argument Keras loss
              function ``f(y_true, y_pred)``: applied keras.io-style to the
              softened distributions, times ``T**2``
              (see :func:`keras_loss_on_soft_targets`);
            - a function ``f(teacher_logits, student_logits, temperature)``,
              returned as it is.

    Returns:
        A function ``f(teacher_logits, student_logits, temperature)`` that
        returns a float32 tensor of shape ``[batch]``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for anything that is neither a name nor a callable.
    """
    if isinstance(identifier, str):
        key = identifier.lower()
        key = _ALIASES.get(key, key)
        if key not in _REGISTRY:
            raise ValueError(
                f"Unknown distillation loss {identifier!r}. Valid names: "
                f"{', '.join(available())} (aliases: {', '.join(sorted(_ALIASES))}). "
                "Pass one of these, a keras.losses.Loss instance, or a function "
                "f(teacher_logits, student_logits, temperature)."
            )
        return _REGISTRY[key]
    if isinstance(identifier, keras.losses.Loss):
        return keras_loss_on_soft_targets(identifier)
    if callable(identifier):
        if _is_two_argument_loss(identifier):
            return keras_loss_on_soft_targets(identifier)
        return identifier
    raise TypeError(
        "distillation_loss_fn must be a loss name, a keras.losses.Loss instance "
        f"or a callable; received {identifier!r} of type {type(identifier).__name__}. "
        f"Valid names: {', '.join(available())}."
    )


def name_of(fn):
    """Returns the registered name of ``fn``, or ``None`` if it is not registered."""
    for key, value in _REGISTRY.items():
        if value is fn:
            return key
    return None


register("kl", kl_divergence)
register("reverse_kl", reverse_kl_divergence)
register("soft_ce", soft_target_cross_entropy)
register("mse", logit_mse)
register("dkd", decoupled_kd())
register("jsd", generalized_jsd(0.5))
register("skew_kl", skew_kl(0.1))
register("skew_reverse_kl", skew_reverse_kl(0.1))
register("tv", total_variation)


# The checks of T and alpha live in kdkeras.checks; these names are kept for code that imports them from here.
check_temperature = checks.check_temperature
check_alpha = checks.check_alpha
