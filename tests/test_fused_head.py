"""The fused LM head: logits formed per chunk from hidden states give the unfused values and steps.

KerasHub pairs from tiny configs (GPT-2: learned positions, tied embedding;
Qwen3: grouped-query attention, tied embedding), and a plain Keras model that
exposes ``distillation_head()``; each setting compared with ``TokenChunking(fused_head=False)``.
"""

import functools
import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import padded_batch

import kdkeras
from kdkeras import token_chunks

keras_hub = pytest.importorskip("keras_hub")

VOCAB, S = 40, 10


def gpt2(seed, layers=1, hidden=16, vocab=VOCAB):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocab, num_layers=layers, num_heads=2, hidden_dim=hidden,
                                             intermediate_dim=2 * hidden, max_sequence_length=S)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def qwen3(seed, layers=1, hidden=16, vocab=VOCAB, tied=True):
    """Tied embeddings, or (``tied=False``) a separate output matrix (``reverse_embeddings``, stored ``[d, V]``)."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Qwen3Backbone(vocabulary_size=vocab, num_layers=layers, num_query_heads=4,
                                              num_key_value_heads=2, head_dim=8, hidden_dim=hidden,
                                              intermediate_dim=2 * hidden, tie_word_embeddings=tied)
    return keras_hub.models.Qwen3CausalLM(backbone=backbone, preprocessor=None)


qwen3_untied = functools.partial(qwen3, tied=False)


def gemma_soft_cap(seed, layers=1, hidden=16, vocab=VOCAB):
    """A tied head whose logits are soft-capped (``cap * tanh(z / cap)``, Gemma 2's final cap)."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GemmaBackbone(vocabulary_size=vocab, num_layers=layers, num_query_heads=2,
                                              num_key_value_heads=1, hidden_dim=hidden, intermediate_dim=2 * hidden,
                                              head_dim=8, final_logit_soft_cap=0.5)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def data(seed=0):
    ids, mask, y, w = padded_batch(seed, batch=6, steps=S, vocab=VOCAB)
    return tf.data.Dataset.from_tensors(({"token_ids": ids, "padding_mask": mask}, y, w))


def run(build, fused, teacher_vocab=VOCAB, cache=False, on_policy=0.0, loss="jsd", chunk=7, learning_rate=0.2):
    teacher, student = build(1, layers=2, hidden=32, vocab=teacher_vocab), build(2)
    d = kdkeras.Distiller(student, teacher, vocabulary_size=VOCAB if teacher_vocab != VOCAB else None)
    d.compile(optimizer=keras.optimizers.SGD(learning_rate), alpha=0.4, temperature=2.0, distillation_loss_fn=loss,
              metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
              token_chunking=kdkeras.TokenChunking(chunk, fused),
              on_policy=kdkeras.OnPolicy(on_policy, max_new_tokens=3) if on_policy else None)
    batches = data()
    if cache:
        batches = kdkeras.cache_teacher_logits(teacher, batches, top_k=6, temperature=2.0, shuffle=False,
                                               vocabulary_size=d.vocabulary_size)
    before = [v.numpy() for v in student.trainable_variables]
    values = d.evaluate(batches, verbose=0, return_dict=True)
    logs = d.fit(batches, epochs=1, verbose=0).history
    after = [v.numpy() for v in student.trainable_variables]
    assert max(float(np.abs(a - b).max()) for a, b in zip(before, after)) > 1e-4  # the step moved the weights
    return values, logs, after, d


def assert_same(a, b, rtol=1e-5, weight_atol=1e-6):
    for key in ("loss", "student_loss", "distillation_loss", "agreement", "accuracy"):
        np.testing.assert_allclose(a[0][key], b[0][key], rtol=rtol, atol=1e-7, err_msg=f"evaluate {key}")
        np.testing.assert_allclose(a[1][key], b[1][key], rtol=rtol, atol=1e-7, err_msg=f"fit {key}")
    for x, y in zip(a[2], b[2]):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=weight_atol)


@pytest.mark.parametrize("build", [gpt2, qwen3, qwen3_untied, gemma_soft_cap],
                         ids=["gpt2", "qwen3", "qwen3-untied", "gemma-soft-cap"])
def test_the_fused_head_gives_the_unfused_values_and_step(build, caplog):
    with caplog.at_level(logging.INFO, logger="kdkeras.distiller"):
        fused = run(build, True)
    unfused = run(build, False)
    assert set(fused[3]._heads) == {"student_layers", "teacher_layers"} and not unfused[3]._heads
    assert_same(fused, unfused)
    lines = [r.getMessage() for r in caplog.records if "token-level losses" in r.getMessage()]
    assert len(lines) == 1 and "fused LM head for the student and teacher" in lines[0]


@pytest.mark.slow
def test_the_fused_head_with_a_padded_teacher_vocabulary():
    assert_same(run(qwen3, True, teacher_vocab=64), run(qwen3, False, teacher_vocab=64))


@pytest.mark.slow
def test_the_fused_student_trains_from_a_top_k_cache_as_unfused():
    assert_same(run(gpt2, True, cache=True, loss="kl"), run(gpt2, False, cache=True, loss="kl"))


@pytest.mark.slow
def test_the_fused_head_on_on_policy_batches():
    assert_same(run(qwen3, True, on_policy=1.0, learning_rate=5.0), run(qwen3, False, on_policy=1.0, learning_rate=5.0))


@pytest.mark.slow
def test_the_fused_head_under_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        fused, unfused = run(gpt2, True), run(gpt2, False)
    finally:
        keras.config.set_dtype_policy(policy)
    assert fused[3].student.compute_dtype == "float16"
    # float16 logits: the fused head sums the kernel's gradient over chunks in float32, the unfused
    # one in a single float16 matmul, so single weights may differ by float16 rounding (1e-5 here).
    assert_same(fused, unfused, rtol=2e-3, weight_atol=3e-5)


class PlainLM(keras.Model):
    """A plain Keras language model (embedding, hidden Dense, Dense head) exposing its head."""

    def __init__(self, width, seed, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.GlorotUniform(seed)
        self.embed = keras.layers.Embedding(VOCAB, width, embeddings_initializer=init)
        self.hidden = keras.layers.Dense(width, activation="tanh", kernel_initializer=init)
        self.head = keras.layers.Dense(VOCAB, kernel_initializer=init)

    def body(self, x, training=None):
        return self.hidden(self.embed(x["token_ids"]))

    def call(self, x, training=None):
        return self.head(self.body(x))

    def distillation_head(self):
        return self.body, self.head


def test_a_plain_keras_model_gets_the_fused_path_through_distillation_head():
    runs = []
    for fused in (True, False):
        teacher, student = PlainLM(16, 1, name="teacher"), PlainLM(8, 2, name="student")
        d = kdkeras.Distiller(student, teacher)
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.3, temperature=2.0,
                  token_chunking=kdkeras.TokenChunking(4, fused))
        head = d._heads.get("student_layers")
        assert (head is not None and head.vocabulary == VOCAB) == fused
        values = d.evaluate(data(), verbose=0, return_dict=True)
        d.fit(data(), epochs=1, verbose=0)
        runs.append((values, [v.numpy() for v in student.trainable_variables]))
    for key in ("loss", "agreement"):
        np.testing.assert_allclose(runs[0][0][key], runs[1][0][key], rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_head_of_recognises_causal_lms_only():
    assert token_chunks.head_of(gpt2(0)).vocabulary == VOCAB
    plain = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(VOCAB, 4),
                              keras.layers.Dense(VOCAB)])
    assert token_chunks.head_of(plain) is None
