"""Model comparison: accuracy, macro F1, agreement and KL to the teacher, size, latency.

:func:`compare` computes the numbers once; the main job, the notebook and
the README all use it, so they report the same thing.
"""

import logging
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kdkeras.distiller import split_cached_inputs

logger = logging.getLogger(__name__)

__all__ = ["accuracy", "classification_metrics", "compare", "gap_closed", "language_model_metrics", "macro_f1",
           "format_table", "METRIC_LABELS"]

#: Column headers for :func:`format_table`, in order.
METRIC_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "parameters": "parameters",
    "bytes_on_disk": "size on disk (KiB)",
    "latency_ms_per_image": "latency (ms/image)",
    "agreement": "agreement w/ teacher",
    "mean_kl_to_teacher": "KL to teacher",
}


def accuracy(model_or_logits, x=None, y=None, batch_size=256):
    """Top-1 accuracy of a model on ``(x, y)``, or of logits against ``y`` (``accuracy(logits, y=y)``).

    Labels may be integers or one-hot rows.
    """
    if isinstance(model_or_logits, keras.Model):
        logits = model_or_logits.predict(x, batch_size=batch_size, verbose=0)
    else:
        logits = model_or_logits
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[-1] > 1:
        y = y.argmax(-1)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == y.reshape(-1)))


def gap_closed(teacher, scratch, distilled):
    """The share of the scratch student's gap to the teacher that distillation closes, or ``None`` without a gap.

    ``(scratch - distilled) / (scratch - teacher)`` for a quantity where lower is
    better (errors, bits per character); the same formula holds for accuracies
    (both differences change sign).
    """
    return (scratch - distilled) / (scratch - teacher) if scratch != teacher else None


def macro_f1(y_true, y_pred, num_classes):
    """Unweighted mean of the per-class F1 scores (classes absent from both count as 0)."""
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    scores = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return float(np.mean(scores))


def _as_arrays(data):
    """Accepts (x, y) arrays or a dataset of (x, y[, w]) batches; returns arrays."""
    if isinstance(data, tf.data.Dataset):
        xs, ys = [], []
        for batch in data:
            x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
            x, _ = split_cached_inputs(x)
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        if not xs:
            raise ValueError("The evaluation dataset is empty: nothing to compare on.")
        return np.concatenate(xs), np.concatenate(ys)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if len(x) == 0:
            raise ValueError("The evaluation arrays are empty: nothing to compare on.")
        return x, y
    raise TypeError(
        "data must be a tf.data.Dataset of (x, y) batches or an (x, y) pair of arrays; "
        f"received {type(data).__name__}."
    )


def _log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kl_and_agreement(logits, teacher_logits):
    """``(mean KL(p_t || p) at T = 1 in nats, top-1 agreement)`` of ``logits`` against ``teacher_logits``."""
    log_pt, log_ps = _log_softmax(np.asarray(teacher_logits)), _log_softmax(np.asarray(logits))
    return (float(np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), -1))),
            float(np.mean(log_ps.argmax(-1) == log_pt.argmax(-1))))


def classification_metrics(logits, labels, teacher_logits=None):
    """Accuracy and macro F1 of ``logits`` against ``labels``; with ``teacher_logits`` the mean
    ``kl_to_teacher`` (KL(teacher || model) at T = 1, nats) and the top-1 ``agreement``."""
    logits = np.asarray(logits, np.float64)
    predicted = logits.argmax(-1)
    result = {"accuracy": float(np.mean(predicted == labels)),
              "macro_f1": macro_f1(labels, predicted, logits.shape[-1])}
    if teacher_logits is not None:
        result["kl_to_teacher"], result["agreement"] = _kl_and_agreement(logits, teacher_logits)
    return result


def _deployable_size(model):
    """Bytes of the model saved as ``.keras`` without optimizer state.

    A compiled model's file also holds its optimizer's slots (Adam: twice the
    weights), which deployment does not need and which would make sizes
    incomparable between compiled and uncompiled models.
    """
    # Not keras.models.clone_model: since Keras 3.x it also copies the compile
    # state (optimizer included) of a compiled Sequential/Functional model.
    try:
        bare = type(model).from_config(model.get_config())
        bare.set_weights(model.get_weights())
    except Exception:  # noqa: BLE001 - a subclassed model may not rebuild from config
        logger.warning("Could not rebuild %r without its optimizer; its size on disk "
                       "includes any optimizer state.", model.name)
        bare = model
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, "model.keras")
        bare.save(tmp_path)
        return os.path.getsize(tmp_path)


def _latency_ms(model, example, repeats):
    """Median wall time of one single-image forward pass (compiled), in ms."""
    forward = tf.function(lambda x: model(x, training=False))
    example = tf.convert_to_tensor(example[None])
    for _ in range(3):
        forward(example)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(forward(example))
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def compare(models, data, teacher=None, batch_size=256, latency_repeats=50):
    """Evaluates several models on the same data and returns one dict per model.

    Args:
        models: Mapping ``name -> keras.Model`` (logits out).
        data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of ``(x, y)`` batches.
        teacher: Optional teacher; students are then also measured by their
            top-1 ``agreement`` with it and their mean ``KL(p_t || p_s)`` at T = 1.
            A model that *is* the teacher gets no agreement/KL entries.
        batch_size: Batch size for prediction.
        latency_repeats: Single-image forward passes timed per model.

    Returns:
        ``{name: {"accuracy", "macro_f1", "parameters", "bytes_on_disk",
        "latency_ms_per_image"[, "agreement", "mean_kl_to_teacher"]}}``.
        ``bytes_on_disk`` is the size of the ``.keras`` file without optimizer
        state (what a deployment ships); latency is the median of
        ``latency_repeats`` single-image forward passes.

    Example:

    ```python
    metrics = kdkeras.evaluation.compare(
        {"teacher": teacher, "student": distiller.student}, (x_test, y_test),
        teacher=teacher)
    print(kdkeras.evaluation.format_table(metrics))
    ```
    """
    if not models:
        raise ValueError("models is empty: pass a mapping name -> keras.Model.")
    x, y = _as_arrays(data)
    y = y.reshape(-1).astype(np.int64)
    teacher_logits = None
    if teacher is not None:
        teacher_logits = np.asarray(teacher.predict(x, batch_size=batch_size, verbose=0))
    results = {}
    for name, model in models.items():
        logits = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
        num_classes = logits.shape[-1]
        pred = logits.argmax(-1)
        entry = {
            "accuracy": accuracy(logits, y=y),
            "macro_f1": macro_f1(y, pred, num_classes),
            "parameters": int(model.count_params()),
            "bytes_on_disk": int(_deployable_size(model)),
            "latency_ms_per_image": _latency_ms(model, x[0], latency_repeats),
        }
        if teacher_logits is not None and model is not teacher:
            entry["mean_kl_to_teacher"], entry["agreement"] = _kl_and_agreement(logits, teacher_logits)
        results[name] = entry
        logger.info("%s: %s", name, entry)
    return results


def _format_value(key, value):
    if value is None:
        return "—"
    if key == "parameters":
        return f"{value:,}"
    if key == "bytes_on_disk":
        return f"{value / 1024:,.0f}"
    if key == "latency_ms_per_image":
        return f"{value:.3f}"
    if key == "mean_kl_to_teacher":
        return f"{value:.4f}"
    return f"{value:.4f}"


def format_table(metrics):
    """Formats :func:`compare`'s result as a Markdown table (one row per model)."""
    keys = [k for k in METRIC_LABELS if any(k in m for m in metrics.values())]
    header = "| model | " + " | ".join(METRIC_LABELS[k] for k in keys) + " |"
    rule = "|---|" + "|".join("---:" for _ in keys) + "|"
    rows = [
        f"| {name} | " + " | ".join(_format_value(k, m.get(k)) for k in keys) + " |"
        for name, m in metrics.items()
    ]
    return "\n".join([header, rule] + rows)


def language_model_metrics(model, data, teacher=None, characters_per_token=None, vocabulary_size=None):
    """Token-level quality of a language model over the **real** tokens of token batches.

    Every number is a mean over the tokens whose weight is positive (the
    batches' ``sample_weight``, else the inputs' ``padding_mask``, else all),
    weighted by that weight; padding never counts.

    Args:
        model: The language model (``[batch, steps, vocab]`` logits).
        data: A dataset of ``(x, y[, sample_weight])`` token batches (``y`` the next token).
        teacher: Optional teacher: adds the mean ``KL(teacher || model)`` per
            token (nats, ``T = 1``) and top-1 agreement with it.
        characters_per_token: How many characters a token covers: a number,
            or an array indexed by token id (a byte or character tokenizer: 1
            for every id). With it, bits per character are reported too.
        vocabulary_size: Compare only the first ``vocabulary_size`` logits
            (vocabularies padded to different sizes).

    Returns:
        A dict: ``tokens`` (the weight sum), ``bits_per_token``, ``perplexity``,
        ``accuracy`` (next-token top-1), and where asked ``bits_per_character``,
        ``kl_to_teacher``, ``agreement``.
    """
    from kdkeras import language
    from kdkeras.terms import token_weights

    sums = {"nll": 0.0, "tokens": 0.0, "correct": 0.0, "characters": 0.0, "kl": 0.0, "agree": 0.0}
    table = None
    if characters_per_token is not None and np.ndim(characters_per_token) > 0:
        table = np.asarray(characters_per_token, dtype=np.float64)
    for batch in data:
        x, y, w = keras.utils.unpack_x_y_sample_weight(batch)
        x, _ = split_cached_inputs(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        if vocabulary_size is not None:
            logits = logits[..., :vocabulary_size]
        weights = token_weights(language.default_token_weights(x, w), logits).numpy().astype(np.float64)
        log_p = tf.nn.log_softmax(logits, axis=-1)
        y_np = np.asarray(y).astype(np.int64)
        nll = -tf.gather(log_p, tf.cast(y_np, tf.int32), batch_dims=2).numpy()
        sums["nll"] += float(np.sum(weights * nll))
        sums["tokens"] += float(weights.sum())
        predicted = np.argmax(logits.numpy(), -1)
        sums["correct"] += float(np.sum(weights * (predicted == y_np)))
        if characters_per_token is not None:
            chars = table[y_np] if table is not None else float(characters_per_token)
            sums["characters"] += float(np.sum(weights * chars))
        if teacher is not None:
            zt = tf.cast(teacher(x, training=False), tf.float32)
            if vocabulary_size is not None:
                zt = zt[..., :vocabulary_size]
            elif zt.shape[-1] != logits.shape[-1]:
                raise ValueError(
                    f"The teacher gives {zt.shape[-1]} logits per token and the model {logits.shape[-1]}: pass "
                    f"vocabulary_size=V (the real vocabulary, at most {min(zt.shape[-1], logits.shape[-1])}) to "
                    "compare their first V logits.")
            log_t = tf.nn.log_softmax(zt, axis=-1)
            kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_p), axis=-1).numpy()
            sums["kl"] += float(np.sum(weights * kl))
            sums["agree"] += float(np.sum(weights * (np.argmax(zt.numpy(), -1) == predicted)))
    n = sums["tokens"]
    if n <= 0:
        raise ValueError("The data hold no real token (every weight is 0): nothing to evaluate.")
    nats = sums["nll"] / n
    result = {"tokens": n, "bits_per_token": nats / np.log(2.0), "perplexity": float(np.exp(nats)),
              "accuracy": sums["correct"] / n}
    if characters_per_token is not None:
        result["bits_per_character"] = sums["nll"] / np.log(2.0) / sums["characters"]
    if teacher is not None:
        result["kl_to_teacher"] = sums["kl"] / n
        result["agreement"] = sums["agree"] / n
    return result
