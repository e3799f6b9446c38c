"""On-policy sampling: the KV-cache path draws the generic path's tokens; sequences stop at the end token."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_language_models import V, padded_batch, tiny_lm

import kdkeras
from kdkeras import sampling

keras_hub = pytest.importorskip("keras_hub")

VOCAB, S = 40, 12


def gpt2(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=S)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def qwen3(seed=0):
    """Grouped-query attention (4 query heads, 2 key-value heads) and tied embeddings."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.Qwen3Backbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                              num_key_value_heads=2, head_dim=8, hidden_dim=16, intermediate_dim=32,
                                              tie_word_embeddings=True)
    return keras_hub.models.Qwen3CausalLM(backbone=backbone, preprocessor=None)


def prompts(seed=0, batch=6):
    ids, mask, _, _ = padded_batch(seed, batch=batch, steps=S, vocab=VOCAB)
    return {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}


class CallCounter:
    """Counts full forward passes (``model.call``) while the block runs."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __enter__(self):
        original = self.model.call

        def call(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        object.__setattr__(self.model, "call", call)
        return self

    def __exit__(self, *exc):
        object.__delattr__(self.model, "call")


@pytest.mark.parametrize("build", [gpt2, qwen3], ids=["gpt2", "qwen3"])
def test_the_kv_cache_path_draws_the_generic_paths_tokens(build):
    student = build()
    assert sampling.has_kv_cache(student)
    x = prompts(seed=1)
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=4, seed=3, temperature=1.5)
    with CallCounter(student) as counter:
        cached = sampling.sample_continuations(student, x, tf.constant(11), policy)
    assert counter.calls == 0  # no full forward pass: the cache was used
    generic = sampling.sample_continuations(student, x, tf.constant(11), policy, use_cache=False)
    for a, b in zip(tf.nest.flatten(cached), tf.nest.flatten(generic)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = sampling.sample_continuations(student, x, tf.constant(12), policy)
    assert not np.array_equal(cached[0]["token_ids"].numpy(), other[0]["token_ids"].numpy())
    # The drawn tokens follow the cached logits: compare each one with a full pass at its position.
    ids = cached[0]["token_ids"].numpy()
    assert (ids[cached[2].numpy() > 0.5] < VOCAB).all()


@pytest.mark.slow
def test_the_kv_cache_samples_inside_the_compiled_train_step():
    teacher, student = gpt2(1), gpt2(2)
    x = prompts(seed=2, batch=4)
    data = tf.data.Dataset.from_tensors((x, tf.zeros([4, S], tf.int32), tf.cast(x["padding_mask"], tf.float32)))
    runs = []
    for use_cache in (True, False):
        t, s = gpt2(1), gpt2(2)
        if not use_cache:
            object.__setattr__(s, "_build_cache", None)  # hides the cache: the generic path runs
        d = kdkeras.Distiller(s, t)
        d.compile(optimizer=keras.optimizers.SGD(0.1), on_policy=kdkeras.OnPolicy(1.0, max_new_tokens=3, seed=4),
                  alpha=0.5, temperature=1.0)
        logs = d.fit(data, epochs=1, verbose=0).history
        runs.append((logs, [v.numpy() for v in s.trainable_variables]))
    (cached_logs, cached_w), (generic_logs, generic_w) = runs
    np.testing.assert_allclose(cached_logs["distillation_loss"], generic_logs["distillation_loss"], rtol=1e-5)
    for a, b in zip(cached_w, generic_w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    del teacher, student


def sure_model(token, then=None, after=2):
    """Always predicts ``token`` (logit 30); with ``then``, predicts ``then`` from position ``after`` on."""
    ids = keras.Input((None,), dtype="int32")
    bias = np.where(np.arange(V) == token, 30.0, 0.0).astype("float32")
    one_hot = keras.ops.one_hot(token if then is None else then, V) * 60.0
    logits = keras.layers.Lambda(lambda i: tf.zeros(tf.concat([tf.shape(i), [V]], 0)) + bias)(ids)
    if then is not None:
        late = keras.layers.Lambda(lambda i: tf.cast(tf.range(tf.shape(i)[1]) >= after, tf.float32)[None, :, None])(
            ids)
        logits = logits + late * one_hot
    return keras.Model(ids, logits)


@pytest.mark.parametrize("pad_is_end", [False, True], ids=["pad-differs", "pad-is-end"])
def test_sampling_stops_at_the_end_token_which_keeps_its_weight(pad_is_end):
    ids, mask, _, _ = padded_batch(seed=5, batch=6, steps=S, vocab=V)
    end, pad = 3, (3 if pad_is_end else 0)
    # Predicts 7 at positions < 5, then the end token: every sequence ends at position 6 or at its prompt.
    model = sure_model(7, then=end, after=5)
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=4, seed=0, end_token_id=end, pad_token_id=pad)
    x = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask)}
    new_x, new_y, w = sampling.sample_continuations(lambda x, training: model(x["token_ids"]), x, tf.constant(0),
                                                    policy)
    new_ids, new_mask, w = new_x["token_ids"].numpy(), new_x["padding_mask"].numpy(), w.numpy()
    prompt = np.maximum(np.minimum(mask.sum(1), S - 4), 1)
    positions = np.arange(S)
    for b in range(len(ids)):
        p = prompt[b]
        generated = [7 if q < 6 else end for q in range(p, p + 4)]  # the token at q is predicted at q - 1 < 5
        stop = p + (generated.index(end) + 1 if end in generated else 4)
        np.testing.assert_array_equal(new_ids[b, :p], ids[b, :p])
        np.testing.assert_array_equal(new_ids[b, p:stop], generated[:stop - p])
        assert (new_ids[b, stop:] == pad).all()
        np.testing.assert_array_equal(new_mask[b], positions < stop)
        np.testing.assert_array_equal(w[b], ((positions >= p - 1) & (positions < stop - 1)).astype("float32"))
        if end in generated:
            assert new_y.numpy()[b, stop - 2] == end and w[b, stop - 2] == 1.0  # the end token is learned
    assert any(end in new_ids[b, prompt[b]:] for b in range(len(ids)))  # the end token was produced


def test_the_distiller_takes_the_end_token_from_the_tokenizer():
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=S)
    teacher, student = tiny_lm(8, 258, "teacher", 1), tiny_lm(8, 258, "student", 2)
    d = kdkeras.Distiller(student, teacher, preprocessor=preprocessor)
    d.compile(on_policy=kdkeras.OnPolicy(1.0, max_new_tokens=2))
    assert d._on_policy.end_token_id == tokenizer.end_token_id == 256
    assert d._on_policy.pad_token_id == tokenizer.pad_token_id
    d.compile(on_policy=kdkeras.OnPolicy(1.0, max_new_tokens=2, end_token_id=None))
    assert d._on_policy.end_token_id is None
    with pytest.raises(ValueError, match="end_token_id"):
        kdkeras.OnPolicy(1.0, max_new_tokens=2, end_token_id=-1)


def test_no_batch_is_on_policy_before_the_warm_start_ends():
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=2, start_step=5)
    coins = [bool(sampling.on_policy_coin(tf.constant(step, tf.int64), policy)) for step in range(10)]
    assert coins == [False] * 5 + [True] * 5
    half = kdkeras.OnPolicy(0.5, max_new_tokens=2, start_step=50, seed=1)
    late = [bool(sampling.on_policy_coin(tf.constant(step, tf.int64), half)) for step in range(50, 250)]
    assert not any(bool(sampling.on_policy_coin(tf.constant(s, tf.int64), half)) for s in range(50))
    assert 0.35 < np.mean(late) < 0.65
    with pytest.raises(ValueError, match="OnPolicy.start_step"):
        kdkeras.OnPolicy(0.5, max_new_tokens=2, start_step=-1)


@pytest.mark.parametrize("build", [gpt2, qwen3], ids=["gpt2", "qwen3"])
def test_the_kv_cache_gives_the_full_pass_logits_at_every_position(build):
    """Teacher-forced through the cache, position by position: a cache written a step early or late shows here.

    (Sampled tokens from a near-uniform random model hide such a bug: the noise decides the draw.)
    """
    model = build(4)
    rng = np.random.default_rng(7)
    ids = tf.constant(rng.integers(1, VOCAB, (3, S)), tf.int32)
    full = model({"token_ids": ids, "padding_mask": tf.ones_like(ids, tf.bool)}).numpy()
    prompt = 3
    seeded = tf.where(tf.range(S)[None] < prompt, ids, 0)  # the cache is seeded with the prompts and padding
    steps = sampling.kv_cache_steps(model, seeded)
    cache = steps.initial
    for p in range(prompt, S):
        logits, cache = steps.next(tf.constant(p), ids, cache)
        np.testing.assert_allclose(logits.numpy(), full[:, p - 1], rtol=1e-4, atol=1e-5, err_msg=f"position {p}")
    # The positions differ from each other, so an off-by-one could not agree by chance.
    assert np.abs(full[:, prompt] - full[:, prompt - 1]).max() > 1e-2


def test_rows_with_the_same_prompt_draw_different_continuations():
    """Each row has its own noise: four copies of one prompt give four different samples (not one repeated)."""
    student = gpt2(5)
    x = prompts(seed=2, batch=1)
    x = {key: tf.repeat(v, 4, axis=0) for key, v in x.items()}
    x["padding_mask"] = tf.ones_like(x["padding_mask"])
    policy = kdkeras.OnPolicy(1.0, max_new_tokens=6, seed=1, temperature=1.0)
    ids = sampling.sample_continuations(student, x, tf.constant(3), policy)[0]["token_ids"].numpy()
    assert len({tuple(row[-6:]) for row in ids}) == 4
    np.testing.assert_array_equal(ids[:, :-6], np.repeat(ids[:1, :-6], 4, axis=0))  # the prompts are kept
