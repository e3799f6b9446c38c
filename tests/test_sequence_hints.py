"""Hidden-state hints between transformers: per token, over the real tokens of the global batch (NumPy reference)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import padded_batch

import kdkeras
from kdkeras.features import FeatureDistiller, last_layers_map, uniform_layer_map

keras_hub = pytest.importorskip("keras_hub")

VOCAB, S = 30, 10


def gpt2(seed, layers, hidden):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=layers, num_heads=2, hidden_dim=hidden,
                                             intermediate_dim=2 * hidden, max_sequence_length=S)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def batch(seed=0):
    ids, mask, y, w = padded_batch(seed, batch=6, steps=S, vocab=VOCAB)
    return {"token_ids": ids, "padding_mask": mask}, y, w


def hidden(model, layer, x):
    """The output of a backbone layer, by running a sub-model (independent of kdkeras' capture)."""
    backbone = model.backbone
    sub = keras.Model(backbone.input, backbone.get_layer(layer).output)
    return sub(x).numpy().astype(np.float64)


def make(loss, alpha=1.0, hint_weight=1.0):
    teacher, student = gpt2(1, 2, 32), gpt2(2, 1, 16)
    d = FeatureDistiller(student, teacher, hints=[("transformer_layer_0", "transformer_layer_1")],
                         hint_weight=hint_weight, hint_loss=loss)
    d.compile(optimizer=keras.optimizers.SGD(0.1), alpha=alpha, temperature=1.0, token_chunking=None)
    return d


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_sequence_hints_are_the_numpy_per_token_mean_over_real_tokens(loss):
    d = make(loss)
    x, y, w = batch()
    values = d.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)
    hs = hidden(d.student, "transformer_layer_0", x)
    ht = hidden(d.teacher, "transformer_layer_1", x)
    kernel, bias = (v.numpy().astype(np.float64) for v in d.adapters[0].project.weights)
    mapped = hs @ kernel + bias
    if loss == "mse":
        per_token = ((mapped - ht) ** 2).mean(-1)
    else:
        cos = (mapped * ht).sum(-1) / np.linalg.norm(mapped, axis=-1) / np.linalg.norm(ht, axis=-1)
        per_token = 1 - cos
    real = w > 0  # the causal LM's token weights
    np.testing.assert_allclose(values["hint_loss"], per_token[real].mean(), rtol=1e-4)
    assert not np.isclose(values["hint_loss"], per_token.mean(), rtol=1e-4)  # counting padding would show


def test_padding_changes_neither_the_hint_nor_the_step():
    x, y, w = batch(seed=2)
    noisy = dict(x)
    noisy["token_ids"] = np.where(x["padding_mask"], x["token_ids"], (x["token_ids"] + 7) % VOCAB)
    runs = []
    for inputs in (x, noisy):
        d = make("mse", alpha=1.0, hint_weight=10.0)
        value = d.evaluate(inputs, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)["hint_loss"]
        d.fit(inputs, y, sample_weight=w, batch_size=6, epochs=1, verbose=0)
        runs.append((value, [v.numpy() for v in d.student.trainable_variables + d.adapters[0].weights]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_text_classifier_hint_weighs_the_padding_mask():
    """Logits per example, hints per token: the hint is the mean over real input tokens of the whole batch."""
    def classifier(seed, layers, hidden):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=layers, num_heads=2,
                                                 hidden_dim=hidden, intermediate_dim=2 * hidden, max_sequence_length=S)
        return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)

    teacher, student = classifier(1, 2, 32), classifier(2, 1, 16)
    d = FeatureDistiller(student, teacher, hints=[("transformer_layer_0", "transformer_layer_1")], hint_weight=1.0)
    d.compile(optimizer="sgd", alpha=1.0)
    ids, mask, _, _ = padded_batch(3, batch=6, steps=S, vocab=VOCAB)
    x = {"token_ids": ids, "padding_mask": mask, "segment_ids": np.zeros_like(ids)}
    y = np.array([0, 1, 2, 0, 1, 2])
    values = d.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    hs = hidden(student, "transformer_layer_0", x)
    ht = hidden(teacher, "transformer_layer_1", x)
    kernel, bias = (v.numpy().astype(np.float64) for v in d.adapters[0].project.weights)
    per_token = ((hs @ kernel + bias - ht) ** 2).mean(-1)
    np.testing.assert_allclose(values["hint_loss"], per_token[mask].mean(), rtol=1e-4)


def test_layers_are_found_inside_nested_models_and_maps_follow_tinybert():
    d = make("mse")
    assert d.loss_terms[0].student_layers[0] is d.student.backbone.get_layer("transformer_layer_0")
    with pytest.raises(ValueError, match="no layer named 'transformer_layer_9', nested models included"):
        FeatureDistiller(gpt2(2, 1, 16), gpt2(1, 2, 32), hints=[("transformer_layer_0", "transformer_layer_9")])
    assert uniform_layer_map(4, 12) == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert uniform_layer_map(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert uniform_layer_map(1, 2) == [(0, 1)]
    assert last_layers_map(4, 12) == [(3, 11)] and last_layers_map(4, 12, 2) == [(2, 10), (3, 11)]
    with pytest.raises(ValueError):
        uniform_layer_map(5, 4)


@pytest.mark.slow
def test_uneven_replicas_update_as_one_device_with_sequence_hints():
    helper = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_hints.py")
    out = subprocess.run([sys.executable, helper], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["real_tokens_per_replica"][0] != result["real_tokens_per_replica"][1]
    assert result["hint_effect"] > 1e-3  # the hint moves the weights, so equal weights say something
    assert result["max_weight_gap"] < 1e-6, result


def test_hints_without_projection_compare_the_hidden_states_themselves():
    """hint_projection=False (DistilBERT's cosine): 1 - cos of the raw states, no adapter weights; widths must match."""
    teacher, student = gpt2(1, 2, 16), gpt2(2, 1, 16)
    d = FeatureDistiller(student, teacher, hints=[("transformer_layer_0", "transformer_layer_1")], hint_loss="cosine",
                         hint_projection=False)
    d.compile(optimizer=keras.optimizers.SGD(0.1), alpha=1.0, temperature=1.0)
    assert not d.adapters[0].weights
    x, y, w = batch(seed=4)
    value = d.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)["hint_loss"]
    hs, ht = hidden(student, "transformer_layer_0", x), hidden(teacher, "transformer_layer_1", x)
    cos = (hs * ht).sum(-1) / np.linalg.norm(hs, axis=-1) / np.linalg.norm(ht, axis=-1)
    np.testing.assert_allclose(value, (1 - cos)[w > 0].mean(), rtol=1e-4)
    again = FeatureDistiller.from_config(d.get_config())
    assert again.hint_projection is False and not again.adapters[0].weights
    with pytest.raises(ValueError, match="one shape"):
        FeatureDistiller(gpt2(3, 1, 8), teacher, hints=[("transformer_layer_0", "transformer_layer_1")],
                         hint_projection=False)
