"""Token-level terms over chunks of tokens (gradient formed in the forward pass): the same values and steps.

The unchunked computation is the reference (itself checked against NumPy in
test_language_models.py); here the chunked one is compared with it at chunk
sizes that leave a remainder, against a NumPy masked mean, and its gradient
against the analytic gradient of the loss.
"""

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import V, divergence_np, log_softmax, padded_batch, tiny_lm

import kdkeras
from kdkeras import losses, token_chunks
from kdkeras.terms import DistillationBatch, LossTerm, SoftTargetLoss, StudentLoss


def batch_data(seed=0, batch=6):
    ids, mask, y, w = padded_batch(seed, batch=batch)  # 6 x 9 = 54 positions, 30 real
    return {"token_ids": ids, "padding_mask": mask}, y, w


def make(chunk, loss="kl", jit=False, terms=(), **compile_kwargs):
    teacher, student = tiny_lm(16, V, "teacher", 1), tiny_lm(8, V, "student", 2)
    d = kdkeras.Distiller(student, teacher, loss_terms=list(terms))
    d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.3, temperature=2.0, distillation_loss_fn=loss,
              token_chunking=kdkeras.TokenChunking(chunk, fused_head=False), jit_compile=jit, **compile_kwargs)
    return d


def step_and_values(d, x, y, w):
    values = d.evaluate(x, y, sample_weight=w, batch_size=len(y), verbose=0, return_dict=True)
    d.fit(x, y, sample_weight=w, batch_size=len(y), epochs=1, verbose=0, shuffle=False)
    return values, [v.numpy() for v in d.student.trainable_variables]


def assert_same(reference, other, rtol=1e-5):
    (ref_values, ref_weights), (values, weights) = reference, other
    for key in ("loss", "student_loss", "distillation_loss", "agreement"):
        np.testing.assert_allclose(values[key], ref_values[key], rtol=rtol, atol=1e-7, err_msg=key)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(ref_weights, make(None).student.get_weights()))
    assert moved > 1e-3  # the step changed the weights, so equal weights say something
    for a, b in zip(ref_weights, weights):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("loss", ["kl", "jsd", *(pytest.param(n, marks=pytest.mark.slow)
                                                  for n in ("reverse_kl", "skew_reverse_kl", "tv"))])
def test_chunks_give_the_unchunked_values_and_step(loss):
    x, y, w = batch_data()
    reference = step_and_values(make(None, loss), x, y, w)
    for chunk in (4, 7, 1000):  # 54 = 13 * 4 + 2: a remainder; 54 / 7 leaves 5; one oversized chunk
        assert_same(reference, step_and_values(make(chunk, loss), x, y, w))


def test_chunked_values_are_the_numpy_masked_means():
    x, y, w = batch_data(seed=3)
    d = make(5, "jsd")
    values = d.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)
    zt, zs = d.teacher(x).numpy(), d.student(x).numpy()
    real = w > 0
    jsd = divergence_np("jsd", zt, zs, 2.0, 0.5)
    nll = -np.take_along_axis(log_softmax(zs), y[..., None], -1)[..., 0]
    np.testing.assert_allclose(values["distillation_loss"], jsd[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(values["student_loss"], nll[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(values["loss"], 0.3 * nll[real].mean() + 0.7 * jsd[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(values["agreement"], (zt.argmax(-1) == zs.argmax(-1))[real].mean(), rtol=1e-6)


def test_the_chunked_gradient_is_the_analytic_gradient_of_the_loss():
    """d/dz_s of  sum_w [a * CE + (1 - a) * T^2 KL] / sum w  is  w / sum w * [a (p_s - onehot) + (1 - a) T (p_s^T - p_t^T)]."""
    rng = np.random.default_rng(5)
    b, s, v, t, a = 3, 7, 11, 2.5, 0.4
    zs = tf.constant(rng.normal(size=(b, s, v)) * 2, tf.float32)
    zt = tf.constant(rng.normal(size=(b, s, v)) * 2, tf.float32)
    y = rng.integers(0, v, (b, s))
    w = (rng.random((b, s)) > 0.3).astype("float32")
    terms = [StudentLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
             SoftTargetLoss(losses.get("kl"), t)]
    batch = DistillationBatch(tf.constant(y), tf.constant(w), zt, zs)
    with tf.GradientTape() as tape:
        tape.watch(zs)
        # The gradient is formed in the forward pass at the loss scale 8; an upstream of 3 rescales it.
        result = token_chunks.chunked_terms(terms, batch, chunk_size=4, coefficients=[a / w.sum(), (1 - a) / w.sum()],
                                            loss_scale=8.0)
        loss = 3.0 * result.loss
    grad = tape.gradient(loss, zs).numpy() / 3.0
    ws = w.sum()
    np.testing.assert_allclose(float(result.loss), float(tf.reduce_sum(w * (a * result.values[0] + (1 - a) *
                                                                               result.values[1])) / ws), rtol=1e-6)
    ps, ps_t, pt_t = (np.exp(log_softmax(z, tt)) for z, tt in ((zs.numpy(), 1), (zs.numpy(), t), (zt.numpy(), t)))
    onehot = np.eye(v)[y]
    expected = (w / w.sum())[..., None] * (a * (ps - onehot) + (1 - a) * t * (ps_t - pt_t))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    assert np.array_equal(result.student_top1.numpy(), zs.numpy().argmax(-1))
    assert np.array_equal(result.teacher_top1.numpy(), zt.numpy().argmax(-1))


def test_a_top_k_cache_trains_the_same_over_chunks():
    x, y, w = batch_data(seed=1)
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(6)
    runs = []
    for chunk in (None, 4):
        d = make(chunk, "kl")
        cached = kdkeras.cache_teacher_logits(d.teacher, data, top_k=4, temperature=2.0, shuffle=False)
        values = d.evaluate(cached, verbose=0, return_dict=True)
        d.fit(cached, epochs=1, verbose=0)
        runs.append((values, [v.numpy() for v in d.student.trainable_variables]))
    assert_same(*runs)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["jit", "mixed_float16"])
def test_chunks_hold_under_xla_and_mixed_precision(setting):
    x, y, w = batch_data(seed=2)
    policy = keras.config.dtype_policy()
    try:
        if setting == "mixed_float16":
            keras.config.set_dtype_policy("mixed_float16")
        runs = [step_and_values(make(chunk, "jsd", jit=setting == "jit"), x, y, w) for chunk in (None, 4)]
    finally:
        keras.config.set_dtype_policy(policy)
    assert_same(*runs, rtol=1e-5 if setting == "jit" else 1e-3)


class Recorder(LossTerm):
    """A term that records the logits' shape it was given (and adds a small penalty on them)."""

    def __init__(self, name, chunkable):
        super().__init__(name, weight=1e-3)
        self.chunkable = chunkable
        self.seen = []

    def call(self, batch):
        self.seen.append(tuple(batch.student_logits.shape))
        return tf.reduce_mean(tf.square(batch.student_logits), axis=-1)


def test_chunkable_terms_see_one_chunk_and_the_others_the_whole_batch():
    x, y, w = batch_data()
    chunked, whole = Recorder("chunked", True), Recorder("whole", False)
    d = make(4, "kl", terms=[chunked, whole])
    values = d.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)
    assert (1, 4, V) in chunked.seen and (6, 9, V) not in chunked.seen
    assert whole.seen == [(6, 9, V)] * len(whole.seen) and whole.seen
    reference = make(None, "kl", terms=[Recorder("chunked", True), Recorder("whole", False)])
    expected = reference.evaluate(x, y, sample_weight=w, batch_size=6, verbose=0, return_dict=True)
    np.testing.assert_allclose(values["chunked"], expected["chunked"], rtol=1e-5)
    np.testing.assert_allclose(values["whole"], expected["whole"], rtol=1e-5)


def test_the_chunk_setting_is_checked_and_auto_scales_with_the_vocabulary():
    assert token_chunks.chunk_size_for("auto", 151_936) == 2 ** 24 // 151_936
    assert token_chunks.chunk_size_for("auto", 258) == 2 ** 24 // 258
    assert token_chunks.chunk_size_for("auto", 10 ** 9) == 8
    assert token_chunks.chunk_size_for(None, 151_936) is None
    # A fused head of width d: at least min(d, 512) tokens a chunk (the head's weights are read once a chunk).
    assert token_chunks.chunk_size_for("auto", 151_936, width=64) == 2 ** 24 // 151_936
    assert token_chunks.chunk_size_for("auto", 151_936, width=300) == 300
    assert token_chunks.chunk_size_for("auto", 151_936, width=1024) == 512
    assert token_chunks.chunk_size_for(7, 151_936, width=1024) == 7
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(ValueError, match="TokenChunking.size"):
            make(bad)


def test_the_path_is_logged_once(caplog):
    x, y, w = batch_data()
    d = make(4)
    with caplog.at_level(logging.INFO, logger="kdkeras.distiller"):
        d.fit(x, y, sample_weight=w, batch_size=3, epochs=2, verbose=0)
        d.evaluate(x, y, sample_weight=w, batch_size=3, verbose=0)
    lines = [r.getMessage() for r in caplog.records if "token-level losses" in r.getMessage()]
    assert len(lines) == 1 and "chunks of 4 tokens" in lines[0] and "no fused LM head" in lines[0], lines


@pytest.mark.slow
def test_replicas_with_uneven_real_tokens_update_as_one_device_over_chunks():
    helper = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_tokens.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, helper, "--chunk", "3"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    gaps = json.loads(out.stdout.strip().splitlines()[-1])
    assert gaps["token_chunk_size"] == 3
    assert gaps["max_weight_gap"] < 1e-6, gaps
    assert gaps["per_replica_mean_gap"] > 1e-4, gaps
