"""Attention transfer: MiniLM-v2 relations and TinyBERT scores against NumPy, gradients, padding, KerasHub pairs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import padded_batch

from kdkeras.features import AttentionLoss, FeatureDistiller, attention_relation_kl, attention_score_mse

keras_hub = pytest.importorskip("keras_hub")

VOCAB, S = 30, 8


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def relations_np(x, heads, mask):
    """[batch, R, steps, steps] log-relations of x [batch, steps, H, d] in float64 (masked keys: excluded)."""
    b, s = x.shape[:2]
    x = x.reshape(b, s, heads, -1).transpose(0, 2, 1, 3).astype(np.float64)
    scores = x @ x.transpose(0, 1, 3, 2) / np.sqrt(x.shape[-1])
    scores = np.where(mask[:, None], scores, -np.inf)
    return log_softmax(scores)


def masks(lengths, steps, causal):
    keys = np.arange(steps)[None] < np.asarray(lengths)[:, None]
    mask = np.repeat(keys[:, None, :], steps, axis=1)
    if causal:
        mask &= np.tril(np.ones((steps, steps), bool))[None]
    return keys, mask


@pytest.mark.parametrize("causal", [False, True])
def test_relations_are_the_numpy_kl_per_query_over_real_keys(causal):
    rng = np.random.default_rng(0)
    lengths = [8, 3, 5, 1]
    teacher = rng.normal(size=(4, S, 4, 6)).astype("float32")  # 4 heads of 6: width 24
    student = rng.normal(size=(4, S, 2, 4)).astype("float32")  # 2 heads of 4: width 8
    keys, mask = masks(lengths, S, causal)
    got = attention_relation_kl(teacher, student, relation_heads=2, token_weights=keys.astype("float32"),
                                causal=causal).numpy()
    lt, ls = relations_np(teacher, 2, mask), relations_np(student, 2, mask)
    with np.errstate(invalid="ignore"):  # masked keys: -inf - -inf, dropped by the where
        kl = np.where(mask[:, None], np.exp(lt) * (lt - ls), 0.0).sum(-1).mean(1)
    real = keys  # queries that are real tokens
    np.testing.assert_allclose(got[real], kl[real], rtol=1e-4, atol=1e-6)
    assert np.isfinite(got).all()
    if causal:
        np.testing.assert_allclose(got[:, 0], 0.0, atol=1e-6)  # the first query sees one key: no relation to learn


def test_relation_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    teacher = tf.constant(rng.normal(size=(2, 5, 2, 3)), tf.float64)
    student = tf.Variable(rng.normal(size=(2, 5, 1, 4)), dtype=tf.float64)
    weights = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], tf.float64)

    def loss():
        return tf.reduce_sum(tf.cast(attention_relation_kl(tf.cast(teacher, tf.float32), tf.cast(student, tf.float32),
                                                           2, weights), tf.float64) * weights)

    with tf.GradientTape() as tape:
        value = loss()
    grad = tape.gradient(value, student).numpy()
    base = student.numpy()
    for index in [(0, 1, 0, 2), (1, 4, 0, 0), (0, 2, 0, 1)]:
        bumped = base.copy()
        bumped[index] += 1e-3
        student.assign(bumped)
        up = float(loss())
        bumped[index] -= 2e-3
        student.assign(bumped)
        down = float(loss())
        student.assign(base)
        np.testing.assert_allclose(grad[index], (up - down) / 2e-3, rtol=2e-2, atol=1e-4)


def test_scores_are_the_numpy_mse_over_real_keys_and_need_equal_heads():
    rng = np.random.default_rng(2)
    tq, tk, sq, sk = (rng.normal(size=(3, S, 2, d)).astype("float32") for d in (6, 6, 4, 4))
    keys, mask = masks([8, 4, 2], S, False)
    got = attention_score_mse(tq, tk, sq, sk, keys.astype("float32")).numpy()

    def scores(q, k):
        q, k = q.transpose(0, 2, 1, 3).astype(np.float64), k.transpose(0, 2, 1, 3).astype(np.float64)
        return q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])

    sq_err = (scores(sq, sk) - scores(tq, tk)) ** 2
    expected = (np.where(mask[:, None], sq_err, 0).sum(-1) / mask[:, None].sum(-1)).mean(1)
    np.testing.assert_allclose(got[keys], expected[keys], rtol=1e-4)
    with pytest.raises(ValueError, match="same number of heads"):
        attention_score_mse(rng.normal(size=(1, S, 4, 2)).astype("float32"), tk[:1], sq[:1], sk[:1])


def bert(seed, layers, hidden, heads):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=layers, num_heads=heads,
                                             hidden_dim=hidden, intermediate_dim=2 * hidden, max_sequence_length=S)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)


def gpt2(seed, layers, hidden):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=layers, num_heads=2, hidden_dim=hidden,
                                             intermediate_dim=2 * hidden, max_sequence_length=S)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def classifier_batch(seed, noise=False):
    ids, mask, _, _ = padded_batch(seed, batch=6, steps=S, vocab=VOCAB)
    if noise:
        ids = np.where(mask, ids, (ids + 11) % VOCAB)
    return {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}, np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("kind", ["relations", "scores"])
def test_a_bert_pair_distils_attention_and_padding_changes_nothing(kind):
    runs = []
    for noise in (False, True):
        teacher, student = bert(1, 2, 32, 4), bert(2, 1, 16, 2 if kind == "relations" else 4)
        d = FeatureDistiller(student, teacher, attention=[("transformer_layer_0", "transformer_layer_1")],
                             attention_kind=kind, relation_heads=2, attention_weight=5.0)
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.5, temperature=2.0)
        x, y = classifier_batch(4, noise)
        value = d.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)["attention_loss"]
        d.fit(x, y, batch_size=6, epochs=1, verbose=0)
        runs.append((value, [v.numpy() for v in student.trainable_variables]))
    assert runs[0][0] > 1e-4 and np.isfinite(runs[0][0])
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not d.loss_terms[0].causal[0]


def test_decoder_layers_compare_keys_up_to_the_query():
    teacher, student = gpt2(1, 2, 32), gpt2(2, 1, 16)
    term = AttentionLoss([("transformer_layer_0", "transformer_layer_1")], student, teacher, relation_heads=2)
    assert term.causal == [True]
    d = FeatureDistiller(student, teacher, attention=[("transformer_layer_0", "transformer_layer_1")],
                         relation_heads=2)
    d.compile(optimizer="sgd", alpha=0.5)
    ids, mask, y, w = padded_batch(5, batch=4, steps=S, vocab=VOCAB)
    values = d.evaluate({"token_ids": ids, "padding_mask": mask}, y, sample_weight=w, batch_size=4, verbose=0,
                        return_dict=True)
    assert values["attention_loss"] > 0 and np.isfinite(values["attention_loss"])
    with pytest.raises(ValueError, match="MultiHeadAttention or a KerasHub"):
        AttentionLoss([("token_embedding", "transformer_layer_1")], student, teacher)
