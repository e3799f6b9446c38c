"""A GPT-style causal language model in plain Keras layers, and seeded sampling from it."""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["PositionEmbedding", "build_gpt", "generate"]


@keras.saving.register_keras_serializable(package="kdkeras")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position (``0 .. max_length - 1``) to its input ``[batch, steps, width]``."""

    def __init__(self, max_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.max_length = int(max_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.positions = self.add_weight(name="positions", shape=(self.max_length, input_shape[-1]),
                                         initializer=self.initializer)

    def call(self, inputs):
        steps = keras.ops.shape(inputs)[1]
        return inputs + keras.ops.cast(self.positions[:steps], inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "max_length": self.max_length,
                "initializer": keras.initializers.serialize(self.initializer)}


def build_gpt(vocabulary_size, context, layers=2, width=128, heads=4, seed=0, name="gpt"):
    """A decoder-only transformer (GPT-2's pre-norm block) mapping ids ``[batch, steps]`` to logits ``[batch, steps, vocab]``.

    Token and learned position embeddings; per block a causal multi-head
    self-attention and a 4x-wide GELU MLP, each behind a layer norm and inside
    a residual; a final layer norm and a dense layer to the logits (no
    softmax). Weights are seeded.

    Args:
        vocabulary_size: Number of token ids.
        context: The longest sequence (the position embedding's size).
        layers, width, heads: Transformer blocks, model width and attention heads.
        seed: Seed of every initializer.
        name: The model's name.
    """
    def init(i):
        return keras.initializers.GlorotUniform(seed=seed * 1000 + i)

    ids = keras.Input((None,), dtype="int32", name="token_ids")
    h = keras.layers.Embedding(vocabulary_size, width, embeddings_initializer=init(0), name="token_embedding")(ids)
    h = PositionEmbedding(context, initializer=init(1), name="position_embedding")(h)
    for block in range(layers):
        a = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{block}_norm1")(h)
        a = keras.layers.MultiHeadAttention(heads, width // heads, kernel_initializer=init(10 + block),
                                            name=f"block{block}_attention")(a, a, use_causal_mask=True)
        h = keras.layers.Add(name=f"block{block}_residual1")([h, a])
        m = keras.layers.LayerNormalization(epsilon=1e-5, name=f"block{block}_norm2")(h)
        m = keras.layers.Dense(4 * width, activation="gelu", kernel_initializer=init(20 + block),
                               name=f"block{block}_mlp_in")(m)
        m = keras.layers.Dense(width, kernel_initializer=init(30 + block), name=f"block{block}_mlp_out")(m)
        h = keras.layers.Add(name=f"block{block}_residual2")([h, m])
    h = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(h)
    logits = keras.layers.Dense(vocabulary_size, kernel_initializer=init(2), name="logits")(h)
    return keras.Model(ids, logits, name=name)


def generate(model, prompts, length, context, temperature=1.0, seed=0):
    """Continues each prompt (arrays of ids) by ``length`` sampled tokens; returns the new ids per prompt.

    The model sees at most its last ``context`` tokens; draws are stateless,
    fixed by ``seed`` and the position, so every model continues the same
    prompts with the same random numbers.
    """
    prompts = [np.asarray(p, np.int32) for p in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("Every prompt needs at least one token.")
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width + length), np.int32)
    lengths = np.array([len(p) for p in prompts])
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = p

    @tf.function(reduce_retracing=True)
    def next_logits(window, last):
        logits = model(window, training=False)
        return tf.gather(logits, last, batch_dims=1)

    rows = np.arange(len(prompts))
    for step in range(length):
        ends = lengths + step
        start = np.maximum(ends - context, 0)
        span = int((ends - start).max())
        window = np.zeros((len(prompts), span), np.int32)
        for i in rows:
            window[i, :ends[i] - start[i]] = ids[i, start[i]:ends[i]]
        logits = next_logits(tf.constant(window), tf.constant(ends - start - 1))
        token = tf.random.stateless_categorical(tf.cast(logits, tf.float32) / temperature, 1, seed=[seed, step])
        ids[rows, ends] = token.numpy()[:, 0]
    return [ids[i, lengths[i]:lengths[i] + length] for i in rows]
