"""One SGD step with per-token sequence hints of a classifier on one device and on two replicas; prints the gap.

The replicas hold different numbers of real input tokens, so a per-replica
token mean would differ from the global one. Run as a subprocess (two logical
CPUs must be configured before TensorFlow initialises). Prints one JSON line.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kdkeras.features import FeatureDistiller  # noqa: E402

V, S = 11, 8


def classifier(width, name, seed):
    """Token ids -> hidden states (the hinted layer) -> masked mean -> 3 logits."""
    init = keras.initializers.GlorotUniform(seed)
    ids = keras.Input((S,), dtype="int32", name="token_ids")
    mask = keras.Input((S,), dtype="bool", name="padding_mask")
    h = keras.layers.Embedding(V, width, embeddings_initializer=init)(ids)
    h = keras.layers.Dense(width, activation="tanh", kernel_initializer=init, name="hidden")(h)
    pooled = keras.layers.GlobalAveragePooling1D()(h, mask=mask)
    return keras.Model({"token_ids": ids, "padding_mask": mask},
                       keras.layers.Dense(3, kernel_initializer=init)(pooled), name=name)


def train(strategy, data, hint_weight=5.0):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        d = FeatureDistiller(classifier(6, "student", 2), classifier(12, "teacher", 1), hints=[("hidden", "hidden")],
                             hint_weight=hint_weight, hint_loss="cosine")
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.5, temperature=2.0)
    d.fit(data, epochs=1, verbose=0)
    return [v.numpy() for v in d.student.trainable_variables + d.adapters[0].trainable_variables]


def main():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 3, 4), rng.integers(7, 9, 4)])  # replica 0 short, replica 1 long
    ids = rng.integers(0, V, (8, S)).astype("int32")
    mask = np.arange(S)[None] < lengths[:, None]
    y = rng.integers(0, 3, 8)
    data = tf.data.Dataset.from_tensor_slices(({"token_ids": ids, "padding_mask": mask}, y)).batch(8)
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), data)
    two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), data)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(one, two))
    without = train(tf.distribute.OneDeviceStrategy("/cpu:0"), data, hint_weight=0.0)
    effect = max(float(np.abs(a - b).max()) for a, b in zip(one[:4], without[:4]))
    print(json.dumps({"max_weight_gap": gap, "real_tokens_per_replica": [int(mask[:4].sum()), int(mask[4:].sum())],
                      "hint_effect": effect}))


if __name__ == "__main__":
    main()
