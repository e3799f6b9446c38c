"""Trains one epoch on one device and on a two-replica MirroredStrategy; prints max weight gaps.

Run as a subprocess: the two logical CPU devices must be configured before
TensorFlow initialises. Prints one JSON line.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kdkeras  # noqa: E402


class NaiveDistiller(kdkeras.Distiller):
    """The common mistake: a per-replica mean, which the optimizer then sums across replicas."""

    def term_values(self, batch, training=True):
        values = super().term_values(batch, training=training)
        return values._replace(gradient_loss=values.total)  # the local batch's mean


def train(strategy, cls, x, y, w):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        d = cls(student=kdkeras.build_student(seed=2), teacher=kdkeras.build_teacher(seed=1))
        d.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.3, temperature=2.0,
                  metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(32)  # batches of 32 and 7 (split 4/3)
    history = d.fit(ds, epochs=1, verbose=0)
    return [v.numpy() for v in d.student.trainable_variables], history.history["loss"][0]


def main():
    (x, y), _ = kdkeras.load_mnist_arrays("sample")
    idx = np.random.default_rng(0).choice(len(x), 39, replace=False)
    x, y = x[idx], y[idx]
    w = np.linspace(0.5, 1.5, len(y)).astype("float32")
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert two.num_replicas_in_sync == 2
    ref, ref_loss = train(one, kdkeras.Distiller, x, y, w)
    out = {}
    for name, cls in (("kdkeras", kdkeras.Distiller), ("naive", NaiveDistiller)):
        weights, loss = train(two, cls, x, y, w)
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, weights))
        change = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, train(one, cls, x, y, w)[0]))
        out[name] = {"max_weight_gap": gap, "loss_gap": abs(loss - ref_loss), "single_device_gap": change}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
