"""Token-level distillation of language models: masked losses, LM divergences, top-k cache, on-policy.

Every loss is checked against an independent NumPy implementation on padded
batches of sequences of different lengths.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdkeras
from kdkeras import losses

V, S = 13, 9


def log_softmax(z, t=1.0):
    z = np.asarray(z, np.float64) / t
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def kl_np(lp, lq):
    p = np.exp(lp)
    return np.where(p > 0, p * (lp - lq), 0.0).sum(-1)


def mix_np(lp, lq, w):
    return np.log(w * np.exp(lp) + (1 - w) * np.exp(lq))


def divergence_np(name, zt, zs, t, param=None):
    """The LM losses written out in NumPy (float64), independently of kdkeras."""
    lt, ls = log_softmax(zt, t), log_softmax(zs, t)
    return divergence_from_log_np(name, lt, ls, t, param)


def divergence_from_log_np(name, lt, ls, t, param=None):
    if name == "kl":
        v = kl_np(lt, ls)
    elif name == "reverse_kl":
        v = kl_np(ls, lt)
    elif name == "jsd":
        m = mix_np(lt, ls, param)
        v = param * kl_np(lt, m) + (1 - param) * kl_np(ls, m)
    elif name == "skew_kl":
        v = kl_np(lt, mix_np(lt, ls, param))
    elif name == "skew_reverse_kl":
        v = kl_np(ls, mix_np(lt, ls, 1 - param))
    elif name == "tv":
        v = 0.5 * np.abs(np.exp(lt) - np.exp(ls)).sum(-1)
    return t * t * v


LOSSES = [("kl", None, losses.get("kl")), ("reverse_kl", None, losses.get("reverse_kl")),
          ("jsd", 0.5, losses.get("jsd")), ("jsd", 0.2, losses.generalized_jsd(0.2)),
          ("skew_kl", 0.1, losses.get("skew_kl")), ("skew_reverse_kl", 0.3, losses.skew_reverse_kl(0.3)),
          ("tv", None, losses.get("tv"))]


def padded_batch(seed=0, batch=6, steps=S, vocab=V):
    """Sequences of lengths 1..steps (every length differs), left-aligned, in shuffled order."""
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.linspace(1, steps, batch).round().astype(int))
    ids = rng.integers(0, vocab, (batch, steps)).astype("int32")
    mask = np.arange(steps)[None, :] < lengths[:, None]
    ids = np.where(mask, ids, 0)
    y = np.where(mask, np.roll(ids, -1, 1), 0).astype("int32")
    return ids, mask, y, mask.astype("float32")


def tiny_lm(units, vocab, name, seed):
    """A causal 'language model' whose step t sees tokens <= t only (embedding, causal conv, dense)."""
    init = keras.initializers.GlorotUniform(seed)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="bool", name="padding_mask")
    h = keras.layers.Embedding(vocab, units, embeddings_initializer=init)(ids)
    h = keras.layers.Conv1D(units, 2, padding="causal", activation="tanh", kernel_initializer=init)(h)
    out = keras.layers.Dense(vocab, kernel_initializer=init)(h)
    return keras.Model({"token_ids": ids, "padding_mask": mask}, out, name=name)


# ---------------------------------------------------------------------- #
# The losses, per token, against NumPy
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("name,param,fn", LOSSES, ids=[f"{n}-{p}" for n, p, _ in LOSSES])
def test_lm_losses_match_numpy_per_token(name, param, fn):
    rng = np.random.default_rng(3)
    zt, zs = (rng.normal(scale=3.0, size=(4, 5, V)).astype("float32") for _ in range(2))
    for t in (1.0, 2.5):
        got = fn(zt, zs, t).numpy()
        assert got.shape == (4, 5) and got.dtype == np.float32
        np.testing.assert_allclose(got, divergence_np(name, zt, zs, t, param), rtol=2e-5, atol=1e-6)


def test_jsd_endpoints_and_skew_limits_are_the_kl_divergences():
    rng = np.random.default_rng(4)
    zt, zs = (rng.normal(scale=2.0, size=(3, 4, V)).astype("float32") for _ in range(2))
    fwd, rev = divergence_np("kl", zt, zs, 2.0), divergence_np("reverse_kl", zt, zs, 2.0)
    np.testing.assert_allclose(losses.generalized_jsd(0.0)(zt, zs, 2.0), fwd, rtol=1e-5)
    np.testing.assert_allclose(losses.generalized_jsd(1.0)(zt, zs, 2.0), rev, rtol=1e-5)
    # The skew losses tend to the KL divergences as alpha -> 0 (continuously, not just by definition).
    np.testing.assert_allclose(losses.skew_kl(1e-6)(zt, zs, 2.0), fwd, rtol=1e-3)
    np.testing.assert_allclose(losses.skew_reverse_kl(1e-6)(zt, zs, 2.0), rev, rtol=1e-3)
    assert losses.skew_kl(0.0) is losses.kl_divergence and losses.skew_reverse_kl(0.0) is losses.reverse_kl_divergence
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="beta"):
            losses.generalized_jsd(bad)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\)"):
        losses.skew_kl(1.0)


@pytest.mark.parametrize("name", ["jsd", "skew_kl", "skew_reverse_kl", "tv"])
def test_lm_loss_gradients_match_finite_differences(name):
    rng = np.random.default_rng(5)
    zt = rng.normal(size=(2, 3, 6))
    zs = rng.normal(size=(2, 3, 6))
    fn = losses.get(name)
    param = {"jsd": 0.5, "skew_kl": 0.1, "skew_reverse_kl": 0.1}.get(name)
    zs_t = tf.constant(zs, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(zs_t)
        total = tf.reduce_sum(fn(zt.astype("float32"), zs_t, 1.5))
    grad = tape.gradient(total, zs_t).numpy()
    numeric = np.zeros_like(zs)
    eps = 1e-6
    for idx in np.ndindex(zs.shape):
        up, down = zs.copy(), zs.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (divergence_np(name, zt, up, 1.5, param).sum() -
                        divergence_np(name, zt, down, 1.5, param).sum()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------- #
# Token weights: padding is not text
# ---------------------------------------------------------------------- #
def _cached_eval(distiller, ids, mask, y, w, zt):
    """evaluate() on one batch that carries the teacher's logits ``zt``."""
    x = kdkeras.distiller.cached_batch({"token_ids": ids, "padding_mask": mask}, zt)
    data = tf.data.Dataset.from_tensors((x, y) if w is None else (x, y, w))
    return distiller.evaluate(data, verbose=0, return_dict=True)


@pytest.mark.parametrize("loss_name", ["kl", "jsd", "skew_reverse_kl", "tv"])
def test_every_term_is_the_masked_mean_over_real_tokens(loss_name):
    ids, mask, y, w = padded_batch()
    teacher, student = tiny_lm(16, V, "teacher", 1), tiny_lm(8, V, "student", 2)
    d = kdkeras.Distiller(student, teacher)
    d.compile(alpha=0.3, temperature=2.0, distillation_loss_fn=loss_name)
    zt = np.random.default_rng(9).normal(scale=2.0, size=(len(ids), S, V)).astype("float32")
    result = _cached_eval(d, ids, mask, y, w, zt)
    zs = student({"token_ids": ids, "padding_mask": mask}).numpy()
    param = {"jsd": 0.5, "skew_reverse_kl": 0.1}.get(loss_name)
    soft = divergence_np(loss_name, zt, zs, 2.0, param)
    hard = -np.take_along_axis(log_softmax(zs), y[..., None], -1)[..., 0]
    real = w > 0
    np.testing.assert_allclose(result["distillation_loss"], soft[real].mean(), rtol=1e-4)
    np.testing.assert_allclose(result["student_loss"], hard[real].mean(), rtol=1e-4)
    np.testing.assert_allclose(result["loss"], 0.3 * hard[real].mean() + 0.7 * soft[real].mean(), rtol=1e-4)
    agreement = (zt.argmax(-1) == zs.argmax(-1))[real].mean()
    np.testing.assert_allclose(result["agreement"], agreement, atol=1e-6)
    # Without sample_weight, the inputs' padding_mask is the weight (KerasHub's convention).
    np.testing.assert_allclose(_cached_eval(d, ids, mask, y, None, zt)["distillation_loss"], soft[real].mean(),
                               rtol=1e-4)


def _one_sgd_step(ids, mask, y, w, zt):
    keras.utils.set_random_seed(0)
    d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.4, temperature=2.0)
    x = kdkeras.distiller.cached_batch({"token_ids": ids, "padding_mask": mask}, zt)
    d.fit(tf.data.Dataset.from_tensors((x, y, w)), epochs=1, verbose=0)
    return [v.numpy() for v in d.student.trainable_variables]


def test_padding_content_changes_neither_loss_nor_gradients():
    ids, mask, y, w = padded_batch(seed=1)
    rng = np.random.default_rng(2)
    zt = rng.normal(size=(len(ids), S, V)).astype("float32")
    # Other token ids, labels and teacher logits at every padded position.
    ids2 = np.where(mask, ids, rng.integers(0, V, ids.shape)).astype("int32")
    y2 = np.where(mask, y, rng.integers(0, V, y.shape)).astype("int32")
    zt2 = np.where(mask[..., None], zt, rng.normal(scale=5.0, size=zt.shape)).astype("float32")
    before, after = _one_sgd_step(ids, mask, y, w, zt), _one_sgd_step(ids2, mask, y2, w, zt2)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, _one_sgd_step(ids, mask, y, np.ones_like(w), zt)))
    assert moved > 1e-4  # the test can see padding when it is counted
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_an_all_padding_batch_adds_nothing_and_no_nan():
    ids, mask, y, w = padded_batch(seed=2)
    zt = np.random.default_rng(0).normal(size=(len(ids), S, V)).astype("float32")
    initial = _weights_after(None)
    after = _one_sgd_step(ids, mask, y, np.zeros_like(w), zt)
    for a, b in zip(initial, after):
        assert np.isfinite(b).all()
        np.testing.assert_allclose(a, b, atol=0)


def _weights_after(_):
    keras.utils.set_random_seed(0)
    student = tiny_lm(8, V, "student", 2)
    return [v.numpy() for v in student.trainable_variables]


def test_a_mask_of_the_wrong_shape_is_refused_with_both_shapes():
    ids, mask, y, w = padded_batch()
    d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    d.compile()
    with pytest.raises(ValueError, match=r"have shape \(None, 4\).*one weight per token, shape \(None, 9\)"):
        d.evaluate({"token_ids": ids, "padding_mask": mask}, y, sample_weight=w[:, :4], verbose=0)


def test_replicas_with_different_real_token_counts_update_as_one_device():
    helper = os.path.join(os.path.dirname(__file__), "helpers", "mirrored_tokens.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # On full logits (the chunked path has its own test in test_token_chunks.py)
    out = subprocess.run([sys.executable, helper, "--chunk", "none"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    gaps = json.loads(out.stdout.strip().splitlines()[-1])
    assert gaps["real_tokens_per_replica"][0] != gaps["real_tokens_per_replica"][1]
    assert gaps["max_weight_gap"] < 1e-6, gaps
    assert gaps["per_replica_mean_gap"] > 1e-4, gaps  # averaging per replica would be visibly wrong here


# ---------------------------------------------------------------------- #
# Vocabularies padded to different sizes
# ---------------------------------------------------------------------- #
def test_padded_vocabularies_need_vocabulary_size_and_compare_its_first_entries():
    teacher, student = tiny_lm(16, V + 3, "teacher", 1), tiny_lm(8, V, "student", 2)
    with pytest.raises(ValueError, match=rf"teacher 'teacher' outputs {V + 3} logits, student 'student' outputs {V}"
                                         r".*vocabulary_size="):
        kdkeras.Distiller(student, teacher)
    with pytest.raises(ValueError, match="vocabulary_size=20 is larger"):
        kdkeras.Distiller(student, teacher, vocabulary_size=20)
    d = kdkeras.Distiller(student, teacher, vocabulary_size=V)
    d.compile(alpha=0.0, temperature=1.0)
    ids, mask, y, w = padded_batch()
    x = {"token_ids": ids, "padding_mask": mask}
    result = d.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    zt, zs = teacher(x).numpy()[..., :V], student(x).numpy()
    np.testing.assert_allclose(result["distillation_loss"], divergence_np("kl", zt, zs, 1.0)[w > 0].mean(),
                               rtol=1e-4)


# ---------------------------------------------------------------------- #
# The top-k teacher cache
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("name,param,fn", LOSSES, ids=[f"{n}-{p}" for n, p, _ in LOSSES])
def test_top_k_equal_to_the_vocabulary_is_the_full_loss(name, param, fn):
    rng = np.random.default_rng(6)
    zt, zs = (rng.normal(scale=3.0, size=(3, 4, V)).astype("float32") for _ in range(2))
    teacher = losses.TopKTeacher(*kdkeras.data.top_k.top_k_log_probs(zt, V, 2.0))
    np.testing.assert_allclose(fn(teacher, zs, 2.0), fn(zt, zs, 2.0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,param,fn", LOSSES, ids=[f"{n}-{p}" for n, p, _ in LOSSES])
def test_top_k_losses_treat_the_tail_as_one_bucket(name, param, fn):
    rng = np.random.default_rng(7)
    k = 4
    zt, zs = (rng.normal(scale=2.0, size=(3, 4, V)).astype("float32") for _ in range(2))
    lt, ls = log_softmax(zt, 1.5), log_softmax(zs, 1.5)
    top = np.argsort(-lt, axis=-1)[..., :k]
    rest = np.ones_like(lt, bool)
    np.put_along_axis(rest, top, False, -1)

    def buckets(lp):
        kept = np.take_along_axis(lp, top, -1)
        tail = np.log(np.where(rest, np.exp(lp), 0).sum(-1))
        return np.concatenate([kept, tail[..., None]], -1)

    expected = divergence_from_log_np(name, buckets(lt), buckets(ls), 1.5, param)
    teacher = losses.TopKTeacher(*kdkeras.data.top_k.top_k_log_probs(zt, k, 1.5))
    np.testing.assert_allclose(fn(teacher, zs, 1.5), expected, rtol=1e-4, atol=1e-6)


def test_cache_stores_real_tokens_only_and_trains_like_the_online_teacher(tmp_path):
    ids, mask, y, w = padded_batch(seed=3, batch=8)
    teacher = tiny_lm(16, V, "teacher", 1)
    data = tf.data.Dataset.from_tensor_slices(({"token_ids": ids, "padding_mask": mask}, y, w)).batch(4)
    cache = kdkeras.data.top_k.teacher_top_k(teacher, data, 3, temperature=2.0)
    assert cache.tokens == int(w.sum())
    assert cache.log_probs.flat_values.dtype == tf.float16 and cache.indices.flat_values.dtype == tf.uint16
    assert cache.bytes_per_token == 3 * 2 + 3 * 2 + 4
    lt = log_softmax(teacher({"token_ids": ids, "padding_mask": mask}).numpy(), 2.0)
    real = w > 0
    np.testing.assert_array_equal(cache.indices.flat_values.numpy().astype(int),
                                  np.argsort(-lt, -1)[..., :3][real])
    np.testing.assert_allclose(cache.log_probs.flat_values.numpy(), np.sort(lt, -1)[..., ::-1][..., :3][real],
                               rtol=1e-3)
    np.testing.assert_allclose(cache.tail_log_mass.flat_values.numpy(),
                               np.log(np.sort(np.exp(lt), -1)[..., :-3].sum(-1))[real], rtol=1e-5)
    # K = V in float32: evaluate() gives the online teacher's numbers; on disk too.
    d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), teacher)
    d.compile(alpha=0.2, temperature=2.0, distillation_loss_fn="skew_kl")
    online = d.evaluate(data, verbose=0, return_dict=True)
    for directory in (None, tmp_path / "cache"):
        cached = kdkeras.cache_teacher_logits(teacher, data, top_k=V, temperature=2.0, dtype="float32",
                                              shuffle=False, directory=directory)
        result = d.evaluate(cached, verbose=0, return_dict=True)
        for key in ("loss", "distillation_loss", "student_loss", "agreement"):
            np.testing.assert_allclose(result[key], online[key], rtol=1e-5, atol=1e-7)
    d.compile(temperature=1.0)
    with pytest.raises(ValueError, match="cache was made at temperature 2 but the Distiller trains at 1"):
        d.evaluate(cached, verbose=0)


# ---------------------------------------------------------------------- #
# On-policy distillation
# ---------------------------------------------------------------------- #
def test_sampled_continuations_keep_prompts_and_weigh_generated_tokens_only():
    ids, mask, y, w = padded_batch(seed=4)
    student = tiny_lm(8, V, "student", 2)
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=3, seed=5)
    x = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}
    new_x, new_y, new_w = kdkeras.sampling.sample_continuations(student, x, tf.constant(7), policy)
    again = kdkeras.sampling.sample_continuations(student, x, tf.constant(7), policy)[0]["token_ids"]
    other = kdkeras.sampling.sample_continuations(student, x, tf.constant(8), policy)[0]["token_ids"]
    new_ids, new_mask = new_x["token_ids"].numpy(), new_x["padding_mask"].numpy()
    np.testing.assert_array_equal(new_ids, again.numpy())  # the same (seed, step): the same samples
    assert not np.array_equal(new_ids, other.numpy())
    lengths = mask.sum(1)
    prompt = np.maximum(np.minimum(lengths, S - 3), 1)
    for b in range(len(ids)):
        p = prompt[b]
        np.testing.assert_array_equal(new_ids[b, :p], ids[b, :p])
        np.testing.assert_array_equal(new_mask[b], np.arange(S) < p + 3)
        expected_w = ((np.arange(S) >= p - 1) & (np.arange(S) < p + 2)).astype("float32")
        np.testing.assert_array_equal(new_w.numpy()[b], expected_w)
        np.testing.assert_array_equal(new_y.numpy()[b, p - 1:p + 2], new_ids[b, p:p + 3])


def test_sampling_follows_the_students_distribution():
    """A student that puts (almost) all mass on token 7 generates 7s; the vocabulary limit is respected."""
    ids, mask, _, _ = padded_batch(seed=5)
    sure = keras.Sequential([keras.Input((None,), dtype="int32"),
                             keras.layers.Embedding(V, 2, embeddings_initializer="zeros"),
                             keras.layers.Dense(V, bias_initializer=keras.initializers.Constant(
                                 np.where(np.arange(V) == 7, 30.0, 0.0)))])
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=4, seed=0)
    new_ids, _, w = kdkeras.sampling.sample_continuations(sure, tf.constant(ids), tf.constant(0), policy)
    generated = np.roll(new_ids.numpy(), -1, 1)[w.numpy() > 0]
    assert (generated == 7).all()
    limited = kdkeras.sampling.sample_continuations(sure, tf.constant(ids), tf.constant(0), policy,
                                                    vocabulary_size=5)[0].numpy()
    assert np.roll(limited, -1, 1)[w.numpy() > 0].max() < 5


@pytest.mark.slow
def test_on_policy_training_is_seeded_and_resumes_with_the_same_samples(tmp_path):
    ids, mask, y, w = padded_batch(seed=6, batch=8)
    data = tf.data.Dataset.from_tensor_slices(({"token_ids": ids, "padding_mask": mask}, y, w)).batch(4)

    def run(epochs, seed=3, resume_from=None):
        keras.utils.set_random_seed(0)
        d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
        d.compile(optimizer=keras.optimizers.Adam(0.05), alpha=0.5, temperature=1.0,
                  on_policy=kdkeras.OnPolicy(0.5, max_new_tokens=3, seed=seed))
        initial = 0
        if resume_from is not None:
            d.fit(data.take(1), epochs=1, verbose=0)  # builds the optimizer
            d.load_weights(resume_from)
            initial = 1
        history = d.fit(data, epochs=epochs, initial_epoch=initial, verbose=0)
        return d, history

    full, history = run(2)
    assert 0.0 in history.history["student_loss"] or min(history.history["student_loss"]) < max(
        history.history["student_loss"])
    one, _ = run(1)
    one.save_weights(tmp_path / "one.weights.h5")
    resumed, _ = run(2, resume_from=tmp_path / "one.weights.h5")
    for a, b in zip(full.student.trainable_variables, resumed.student.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    other, _ = run(2, seed=4)
    gap = max(float(np.abs(a.numpy() - b.numpy()).max())
              for a, b in zip(full.student.trainable_variables, other.student.trainable_variables))
    assert gap > 1e-4


def test_on_policy_arguments_are_checked():
    d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    with pytest.raises(TypeError, match="max_new_tokens"):
        kdkeras.OnPolicy(0.5)
    with pytest.raises(ValueError, match="OnPolicy.fraction must be a number in"):
        kdkeras.OnPolicy(1.5, max_new_tokens=2)
    with pytest.raises(ValueError, match="OnPolicy.temperature"):
        kdkeras.OnPolicy(0.5, max_new_tokens=2, temperature=0)
    with pytest.raises(TypeError, match="on_policy must be a kdkeras.OnPolicy"):
        d.compile(on_policy=0.5)
    with pytest.raises(ValueError, match="TokenChunking.size must be"):
        d.compile(token_chunking=kdkeras.TokenChunking(size=0))


# ---------------------------------------------------------------------- #
# Token-level evaluation
# ---------------------------------------------------------------------- #
def test_language_model_metrics_count_real_tokens_only():
    ids, mask, y, w = padded_batch(seed=7)
    teacher, student = tiny_lm(16, V, "teacher", 1), tiny_lm(8, V, "student", 2)
    x = {"token_ids": ids, "padding_mask": mask}
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(4)
    chars = np.arange(V) % 3 + 1  # tokens of 1-3 characters
    m = kdkeras.evaluation.language_model_metrics(student, data, teacher=teacher, characters_per_token=chars)
    ls, lt = log_softmax(student(x).numpy()), log_softmax(teacher(x).numpy())
    real = w > 0
    nll = -np.take_along_axis(ls, y[..., None], -1)[..., 0][real]
    np.testing.assert_allclose(m["bits_per_token"], nll.mean() / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(m["perplexity"], np.exp(nll.mean()), rtol=1e-5)
    np.testing.assert_allclose(m["bits_per_character"], nll.sum() / np.log(2) / chars[y][real].sum(), rtol=1e-5)
    np.testing.assert_allclose(m["kl_to_teacher"], kl_np(lt, ls)[real].mean(), rtol=1e-4)
    np.testing.assert_allclose(m["agreement"], (lt.argmax(-1) == ls.argmax(-1))[real].mean())
    assert m["tokens"] == real.sum()


def test_the_language_model_options_survive_the_compile_config():
    """``on_policy`` and ``token_chunking`` are saved with the compile config and restored by compile_from_config."""
    d = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    d.compile(optimizer="sgd", alpha=0.2, temperature=1.5,
              on_policy=kdkeras.OnPolicy(0.25, max_new_tokens=3, temperature=0.7, seed=9, end_token_id=4, start_step=2),
              token_chunking=kdkeras.TokenChunking(7, fused_head=False))
    config = json.loads(json.dumps(d.get_compile_config()))  # as a .keras file stores it
    again = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    again.compile_from_config(config)
    assert again._on_policy == d._on_policy == kdkeras.OnPolicy(0.25, 3, 0.7, 9, 4, 0, 2)
    assert again._chunk_setting == 7 and not again._heads
    off = kdkeras.Distiller(tiny_lm(8, V, "student", 2), tiny_lm(16, V, "teacher", 1))
    off.compile(token_chunking=None)
    assert off._chunk_setting is None and off._on_policy is None
