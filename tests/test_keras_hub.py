"""KerasHub models as teachers and students: tiny models from configs (no presets, no network)."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras

keras_hub = pytest.importorskip("keras_hub")

TEXT = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles",
    "And by opposing end them. To die: to sleep;",
    "No more; and by a sleep to say we end",
    "The heart-ache and the thousand natural shocks",
    "That flesh is heir to, 'tis a consummation",
]


def gpt2(vocabulary_size, layers, hidden, preprocessor=None, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocabulary_size, num_layers=layers, num_heads=2,
                                             hidden_dim=hidden, intermediate_dim=2 * hidden, max_sequence_length=64)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.slow
def test_a_causal_lm_pair_distils_on_raw_strings_and_on_tokens_with_padded_vocabularies():
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    assert np.asarray(tokenizer("hé!")).tolist() == list("hé!".encode("utf-8"))  # ids are the bytes
    real_vocab = tokenizer.vocabulary_size()
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=48)
    teacher = gpt2(320, 2, 32, seed=1)  # the teacher's embedding padded to a multiple of 64
    student = gpt2(real_vocab, 1, 16, preprocessor=preprocessor, seed=2)
    with pytest.raises(ValueError, match="vocabulary_size="):
        kdkeras.Distiller(student, teacher)
    d = kdkeras.Distiller(student, teacher, vocabulary_size=real_vocab)
    d.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=0.5, temperature=1.0, distillation_loss_fn="jsd")
    history = d.fit(np.array(TEXT), batch_size=4, epochs=2, verbose=0)  # through the student's preprocessor
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    x, y, w = preprocessor(TEXT)
    result = d.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    from_text = d.evaluate(np.array(TEXT), batch_size=8, verbose=0, return_dict=True)
    lt = log_softmax(teacher(x).numpy()[..., :real_vocab])
    ls = log_softmax(student(x).numpy())
    real = w.numpy() > 0
    m = np.log(0.5 * np.exp(lt) + 0.5 * np.exp(ls))
    jsd = 0.5 * (np.exp(lt) * (lt - m)).sum(-1) + 0.5 * (np.exp(ls) * (ls - m)).sum(-1)
    nll = -np.take_along_axis(ls, y.numpy()[..., None].astype(int), -1)[..., 0]
    for r in (result, from_text):
        np.testing.assert_allclose(r["distillation_loss"], jsd[real].mean(), rtol=1e-4)
        np.testing.assert_allclose(r["student_loss"], nll[real].mean(), rtol=1e-4)
    assert real.sum() < real.size  # the batch really is padded
    # The same pair from a top-k cache of the teacher's real vocabulary.
    cached = kdkeras.cache_teacher_logits(teacher, (x, y, w), top_k=8, vocabulary_size=real_vocab)
    assert d.fit(cached, epochs=1, verbose=0).history["loss"][0] > 0


def test_raw_strings_without_a_preprocessor_are_refused():
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    d = kdkeras.Distiller(gpt2(tokenizer.vocabulary_size(), 1, 16), gpt2(tokenizer.vocabulary_size(), 1, 16))
    d.compile()
    with pytest.raises(ValueError, match="raw strings, but neither the Distiller nor its student or teacher has a "
                                         "preprocessor"):
        d.fit(np.array(TEXT), epochs=1, verbose=0)


def test_a_bert_text_classifier_pair_distils_on_raw_strings():
    words = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(TEXT), vocabulary_size=120,
        reserved_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=words, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer=tokenizer, sequence_length=16)

    def classifier(layers, hidden, seed, with_preprocessor):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.BertBackbone(vocabulary_size=len(words), num_layers=layers, num_heads=2,
                                                 hidden_dim=hidden, intermediate_dim=2 * hidden,
                                                 max_sequence_length=16)
        return keras_hub.models.BertTextClassifier(backbone, num_classes=3, activation=None,
                                                   preprocessor=preprocessor if with_preprocessor else None)

    teacher, student = classifier(2, 32, 1, False), classifier(1, 16, 2, True)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1], "int32")[np.random.default_rng(0).permutation(8)]
    d = kdkeras.Distiller(student, teacher)
    d.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=0.5, temperature=0.5, metrics=["accuracy"])
    d.fit(np.array(TEXT), labels, batch_size=4, epochs=2, verbose=0)
    result = d.evaluate(np.array(TEXT), labels, batch_size=8, verbose=0, return_dict=True)
    x, _ = preprocessor(TEXT, labels)
    zt, zs = teacher(x, training=False).numpy(), student(x, training=False).numpy()
    lt, ls = log_softmax(zt / 0.5), log_softmax(zs / 0.5)
    expected = (0.25 * (np.exp(lt) * (lt - ls)).sum(-1)).mean()
    assert expected > 1e-6
    np.testing.assert_allclose(result["distillation_loss"], expected, rtol=2e-3)
    np.testing.assert_allclose(result["accuracy"], (zs.argmax(-1) == labels).mean())


def test_importing_kdkeras_does_not_import_keras_hub():
    code = "import sys, kdkeras, kdkeras.language, kdkeras.data.top_k; print('keras_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_the_language_model_benchmark_runs_and_writes_its_result_file(tmp_path):
    from helpers.shared import load_script

    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"{line} and the rest of line {i}" for i, line in enumerate(TEXT * 40)), "utf-8")
    bench = load_script("scripts/benchmark_lm.py")
    out = tmp_path / "bench.json"
    assert bench.main(["--data", str(text), "--sequences", "64", "--epochs", "1", "--json", str(out)]) == 0
    import json

    record = json.loads(out.read_text())
    assert set(record["trainers"]) == {"student alone", "kdkeras top-k cache", "kdkeras online", "keras.distillation"}
    assert record["padded_batch"]["kdkeras_loss"] == pytest.approx(record["padded_batch"]["masked_mean_numpy"],
                                                                   rel=1e-4)
    assert record["cache_bytes_per_token"] == 32 * 4 + 4
    assert set(record["top_k_error"]) == {"4", "8", "32", "128"} or set(record["top_k_error"]) == {4, 8, 32, 128}
