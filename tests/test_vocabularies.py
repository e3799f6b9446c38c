"""Teacher and student must share a tokenizer; padded vocabularies need vocabulary_size, everywhere."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import padded_batch, tiny_lm

import kdkeras

keras_hub = pytest.importorskip("keras_hub")


def byte_tokenizer(reverse=False):
    """The byte-level GPT-2 tokenizer; ``reverse=True`` numbers the bytes the other way round (same size)."""
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    byte_values, characters = bytes_to_unicode()
    order = sorted(zip(byte_values, characters), reverse=reverse)
    vocabulary = {c: i for i, (_, c) in enumerate(order)}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    vocabulary["Ġt"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=["Ġ t"])


def causal_lm(vocab, tokenizer, seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocab, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=16)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=16)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def test_the_same_tokenizer_with_padded_vocabularies_is_accepted():
    d = kdkeras.Distiller(causal_lm(258, byte_tokenizer(), 2), causal_lm(320, byte_tokenizer(), 1),
                          vocabulary_size=258)
    assert d.vocabulary_size == 258


def test_different_tokenizers_are_refused_even_at_equal_sizes():
    with pytest.raises(ValueError, match=r"tokenizers differ.*first differing at position 0.*not supported"):
        kdkeras.Distiller(causal_lm(258, byte_tokenizer(), 2), causal_lm(258, byte_tokenizer(reverse=True), 1))


def test_a_vocabulary_size_below_the_tokenizers_is_refused():
    with pytest.raises(ValueError, match=r"tokenizer has 258 token ids, more than vocabulary_size=200"):
        kdkeras.Distiller(causal_lm(258, byte_tokenizer(), 2), causal_lm(320, byte_tokenizer(), 1),
                          vocabulary_size=200)


def test_a_check_needs_both_tokenizers():
    student = causal_lm(258, byte_tokenizer(), 2)
    teacher = causal_lm(258, byte_tokenizer(reverse=True), 1)
    teacher.preprocessor = None  # unknown tokenizer: nothing to compare
    kdkeras.Distiller(student, teacher)


def test_language_model_metrics_refuse_a_wider_teacher_naming_vocabulary_size():
    ids, mask, y, w = padded_batch(0, batch=4, steps=6, vocab=11)
    data = tf.data.Dataset.from_tensors(({"token_ids": ids, "padding_mask": mask}, y, w))
    student, teacher = tiny_lm(4, 11, "student", 1), tiny_lm(4, 16, "teacher", 2)
    with pytest.raises(ValueError, match=r"teacher gives 16 logits per token and the model 11: pass vocabulary_size="):
        kdkeras.evaluation.language_model_metrics(student, data, teacher=teacher)
    result = kdkeras.evaluation.language_model_metrics(student, data, teacher=teacher, vocabulary_size=11)
    assert np.isfinite(result["kl_to_teacher"])
