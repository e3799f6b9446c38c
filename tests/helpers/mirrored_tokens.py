"""One SGD epoch of token-level distillation on one device and on two replicas; prints the weight gap.

The two replicas hold different numbers of real tokens (short sequences in one
half of each batch, long in the other), so a per-replica mean would differ from
the global mean over real tokens. Run as a subprocess: the two logical CPUs
must be configured before TensorFlow initialises. Prints one JSON line.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdkeras  # noqa: E402

V, S = 11, 8
# ``--chunk N``: token-level terms over chunks of N tokens; ``--chunk none``: on full logits (default: "auto").
_CHUNK = sys.argv[sys.argv.index("--chunk") + 1] if "--chunk" in sys.argv else "auto"
CHUNK = None if _CHUNK == "none" else _CHUNK if _CHUNK == "auto" else int(_CHUNK)


class PerReplicaMean(kdkeras.Distiller):
    """The mistake to rule out: each replica divides by its own real tokens."""

    def term_values(self, batch, training=True):
        values = super().term_values(batch, training=training)
        # gradient_loss = local sum / global weight; the mistake divides the local sum by the local weight
        context = tf.distribute.get_replica_context()
        global_n = context.all_reduce(tf.distribute.ReduceOp.SUM, values.local_n)
        return values._replace(gradient_loss=values.gradient_loss * tf.math.divide_no_nan(global_n, values.local_n)
                               / context.num_replicas_in_sync)


def lm(units, name, seed):
    init = keras.initializers.GlorotUniform(seed)
    ids = keras.Input((S,), dtype="int32", name="token_ids")
    mask = keras.Input((S,), dtype="bool", name="padding_mask")
    h = keras.layers.Embedding(V, units, embeddings_initializer=init)(ids)
    h = keras.layers.Conv1D(units, 2, padding="causal", activation="tanh", kernel_initializer=init)(h)
    return keras.Model({"token_ids": ids, "padding_mask": mask}, keras.layers.Dense(V, kernel_initializer=init)(h),
                       name=name)


def train(strategy, cls, data):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        d = cls(student=lm(6, "student", 2), teacher=lm(12, "teacher", 1))
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.3, temperature=2.0, distillation_loss_fn="jsd",
                  token_chunking=kdkeras.TokenChunking(CHUNK, fused_head=False))
    d.fit(data, epochs=1, verbose=0)
    return [v.numpy() for v in d.student.trainable_variables]


def main():
    rng = np.random.default_rng(0)
    n = 16
    # Batches of 8 split 4/4 over the replicas: the first half short (1-2 real tokens), the second long (7-8).
    lengths = np.concatenate([rng.integers(1, 3, 4), rng.integers(7, 9, 4), rng.integers(1, 3, 4),
                              rng.integers(7, 9, 4)])
    ids = rng.integers(0, V, (n, S)).astype("int32")
    mask = np.arange(S)[None] < lengths[:, None]
    y = np.roll(ids, -1, 1)
    w = mask.astype("float32")
    data = tf.data.Dataset.from_tensor_slices(({"token_ids": ids, "padding_mask": mask}, y, w)).batch(8)
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert two.num_replicas_in_sync == 2
    ref = train(one, kdkeras.Distiller, data)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(ref, train(two, kdkeras.Distiller, data)))
    naive = max(float(np.abs(a - b).max()) for a, b in zip(ref, train(two, PerReplicaMean, data)))
    print(json.dumps({"max_weight_gap": gap, "per_replica_mean_gap": naive,
                      "real_tokens_per_replica": [int(w[:4].sum()), int(w[4:8].sum())],
                      "token_chunk_size": CHUNK}))


if __name__ == "__main__":
    main()
