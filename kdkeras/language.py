"""Language-model batches for the distillers: token weights, tokenizers, raw strings.

A language model's batch follows KerasHub's convention (any Keras model that
takes the same inputs works too)::

    ({"token_ids": ids, "padding_mask": mask}, y, sample_weight)

where ``y[:, t]`` is the token after ``ids[:, t]`` and ``sample_weight`` is
``[batch, steps]`` (KerasHub's ``CausalLMPreprocessor`` yields exactly that:
``y = ids[1:]``, ``sample_weight = mask[1:]``). Plain token tensors ``ids``
work as inputs as well.

- :func:`default_token_weights`: the per-token weights a batch carries, the
  ``padding_mask`` of dict inputs when no ``sample_weight`` is given.
- On-policy samples (the student continues each prompt, GKD, MiniLLM) live in
  :mod:`kdkeras.sampling`, which builds on this module; this module imports
  no other part of kdkeras.
- :func:`is_string_data` and :func:`preprocess_strings`: raw text through a
  KerasHub preprocessor.

This module is core: it imports TensorFlow and Keras only (never keras-hub).
"""

import numpy as np
import tensorflow as tf

__all__ = [
    "byte_level_gpt2_tokenizer",
    "check_same_tokenizer",
    "tokenizer_of",
    "PADDING_MASK_KEY",
    "TOKEN_IDS_KEY",
    "default_token_weights",
    "find_preprocessor",
    "is_string_data",
    "preprocess_strings",
    "token_ids_and_mask",
    "weights_or_ones",
]

#: KerasHub's key of the token ids in a language model's inputs.
TOKEN_IDS_KEY = "token_ids"
#: KerasHub's key of the padding mask (``True`` for real tokens).
PADDING_MASK_KEY = "padding_mask"


def default_token_weights(x, sample_weight):
    """The batch's weights: ``sample_weight``, else the ``padding_mask`` of dict inputs, else ``None``.

    The padding mask marks the *input* positions that are real; with labels
    ``y = ids[1:]`` the last real position predicts padding, which KerasHub's
    preprocessor excludes through its ``sample_weight`` (``mask[1:]``): pass
    that weight when you have it.
    """
    if sample_weight is not None:
        return sample_weight
    if isinstance(x, dict) and PADDING_MASK_KEY in x:
        return tf.cast(x[PADDING_MASK_KEY], tf.float32)
    return None


def weights_or_ones(x, y, sample_weight):
    """:func:`default_token_weights` as float32, or ones shaped like the labels ``y`` when the batch has none."""
    weights = default_token_weights(x, sample_weight)
    return tf.ones_like(y, tf.float32) if weights is None else tf.cast(weights, tf.float32)


def token_ids_and_mask(x):
    """``(token_ids, padding_mask or None)`` of a language model's inputs (a dict or a token tensor)."""
    if isinstance(x, dict):
        if TOKEN_IDS_KEY not in x:
            raise ValueError(
                f"On-policy distillation needs the token ids: dict inputs must hold {TOKEN_IDS_KEY!r} "
                f"(KerasHub's convention); received the keys {sorted(x)}.")
        return x[TOKEN_IDS_KEY], x.get(PADDING_MASK_KEY)
    return x, None


def with_tokens(x, ids, mask):
    """``x`` with its token ids (and padding mask, for dict inputs) replaced."""
    if not isinstance(x, dict):
        return ids
    x = dict(x)
    x[TOKEN_IDS_KEY] = ids
    if PADDING_MASK_KEY in x:
        x[PADDING_MASK_KEY] = tf.cast(mask, x[PADDING_MASK_KEY].dtype)
    return x


#: The text both tokenizers must turn into the same ids (letters, digits, punctuation, accents, CJK, spacing).
PROBE_TEXT = ("The quick brown fox jumps over the lazy dog. THE END? 0123456789 -- 3.14, 'quoted' \"double\"\n"
              "  indented\ttab; café naïve Übermaß señor; 日本語のテキスト; emoji \u2603 and sums: x+y=z.")


def tokenizer_of(model):
    """The ``tokenizer`` of a KerasHub task's ``preprocessor`` (or of a preprocessor itself), else ``None``."""
    preprocessor = getattr(model, "preprocessor", model)
    return getattr(preprocessor, "tokenizer", None)


def check_same_tokenizer(teacher_tokenizer, student_tokenizer, vocabulary_size=None):
    """Refuses teacher and student tokenizers that could make their logits disagree (one ``ValueError``).

    Token-level distillation compares logit ``i`` of the teacher with logit
    ``i`` of the student, so both must mean the same token: the two tokenizers
    must give the same ids on :data:`PROBE_TEXT`, and with ``vocabulary_size``
    (padded vocabularies) neither may produce an id at or beyond it, which
    would be compared on no logit. Either tokenizer ``None`` (unknown): no check.
    """
    if teacher_tokenizer is None or student_tokenizer is None:
        return
    ids = {}
    for role, tokenizer in (("teacher", teacher_tokenizer), ("student", student_tokenizer)):
        ids[role] = np.asarray(tokenizer(PROBE_TEXT)).reshape(-1).tolist()
        size = _tokenizer_size(tokenizer)
        if vocabulary_size is not None and size is not None and size > vocabulary_size:
            raise ValueError(
                f"The {role}'s tokenizer has {size} token ids, more than vocabulary_size={vocabulary_size}: ids "
                f"{vocabulary_size}..{size - 1} would be compared on no logit. vocabulary_size must cover the "
                "tokenizer's vocabulary (the padding rows of the embeddings are the ones to drop).")
    if ids["teacher"] != ids["student"]:
        first = next((i for i, (a, b) in enumerate(zip(ids["teacher"], ids["student"])) if a != b),
                     min(len(ids["teacher"]), len(ids["student"])))
        raise ValueError(
            "Teacher and student tokenizers differ: on the same probe text the teacher gives "
            f"{len(ids['teacher'])} ids and the student {len(ids['student'])}, first differing at position {first} "
            f"(teacher {ids['teacher'][first:first + 5]}, student {ids['student'][first:first + 5]}). "
            "Token-level distillation needs one tokenizer for both models (distillation across different "
            "tokenizers is not supported): use a student built on the teacher's tokenizer.")


def _tokenizer_size(tokenizer):
    size = getattr(tokenizer, "vocabulary_size", None)
    try:
        return int(size()) if callable(size) else None
    except (TypeError, ValueError, AttributeError):
        return None


def byte_level_gpt2_tokenizer():
    """A KerasHub ``GPT2Tokenizer`` whose ids are the bytes of the text (0-255), then ``<|endoftext|>`` (256).

    A byte vocabulary needs no download: tiny GPT-2 models from configs can
    be distilled offline on any text. One merge (``"Ġ t"``, id 257) is
    included because the tokenizer needs at least one. Requires keras-hub
    (``pip install "kdkeras[text]"``).
    """
    import keras_hub
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    byte_values, characters = bytes_to_unicode()
    vocabulary = {c: i for i, (_, c) in enumerate(sorted(zip(byte_values, characters)))}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    vocabulary["Ġt"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])


# ---------------------------------------------------------------------- #
# Raw strings
# ---------------------------------------------------------------------- #
def is_string_data(x):
    """Whether ``x`` is raw text: strings, a NumPy/tensor array of them, or a dataset whose inputs are strings."""
    if isinstance(x, str):
        return True
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        if isinstance(spec, tuple) and spec:
            spec = spec[0]
        return isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string
    if isinstance(x, tf.Tensor):
        return x.dtype == tf.string
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(v, (str, bytes)) for v in x)
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "US" or (x.dtype.kind == "O" and x.size > 0 and isinstance(x.flat[0], (str, bytes)))
    return False


def find_preprocessor(*models):
    """The first ``preprocessor`` attribute (KerasHub tasks have one) that is set, or ``None``."""
    for model in models:
        preprocessor = getattr(model, "preprocessor", None)
        if preprocessor is not None:
            return preprocessor
    return None


def preprocess_strings(preprocessor, x, y=None, sample_weight=None, batch_size=None):
    """Raw text as a batched dataset of token batches: ``preprocessor`` mapped over it.

    Args:
        preprocessor: A callable ``(x[, y[, sample_weight]]) -> (x, y, w)``,
            such as a KerasHub ``CausalLMPreprocessor`` or
            ``TextClassifierPreprocessor``, or ``None`` (refused).
        x: Strings, or a dataset whose elements are (batched) strings.
        y, sample_weight: Labels and weights for arrays of strings (a text
            classifier's classes); ``None`` for a causal LM.
        batch_size: Strings per batch for arrays (default 32).
    """
    if preprocessor is None:
        raise ValueError(
            "The data are raw strings, but neither the Distiller nor its student or teacher has a "
            "preprocessor to turn them into token ids. Pass Distiller(..., preprocessor=...) (for example "
            "the student's KerasHub CausalLMPreprocessor), build the student with one, or pass token "
            "tensors ({'token_ids', 'padding_mask'}, y, sample_weight).")
    if isinstance(x, tf.data.Dataset):
        return x.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    if isinstance(x, str):
        x = [x]
    parts = tuple(p for p in (np.asarray(x), y, sample_weight) if p is not None)
    data = tf.data.Dataset.from_tensor_slices(parts[0] if len(parts) == 1 else parts)
    data = data.batch(batch_size or 32)
    if len(parts) == 1:
        return data.map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return data.map(lambda *a: preprocessor(*a), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
