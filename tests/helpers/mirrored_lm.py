"""distill-lm's training stage on one device and on a two-replica MirroredStrategy (two logical CPU devices).

Run as a subprocess: the logical devices must be configured before TensorFlow
initialises. A tiny GPT-2 teacher preset without dropout is saved to a
temporary folder; each run trains ``from-teacher:2`` for 4 steps of global
batch 4 with plain SGD (Adam's first steps turn rounding-level differences of
small gradients into whole steps). Prints one JSON line: the replicas and the
largest weight gap.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from test_distill_lm import PLAYS, gpt2_preset  # noqa: E402

import kdkeras  # noqa: E402
from kdkeras.text import lm_job  # noqa: E402


def main():
    root = tempfile.mkdtemp(prefix="kdkeras-mirrored-lm-")
    gpt2_preset(os.path.join(root, "teacher"), layers=4, seed=1, dropout=0.0)
    with open(os.path.join(root, "plays.txt"), "w") as f:
        f.write("".join(PLAYS))
    recipe = kdkeras.LMRecipe(teacher=os.path.join(root, "teacher"), student="from-teacher:2",
                              data=os.path.join(root, "plays.txt"), out=os.path.join(root, "run"), steps=4,
                              sequence_length=32, batch_size=4, alpha=0.3, temperature=2.0, verbose=0)
    weights, replicas = {}, {}
    for name, strategy in (("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        job = lm_job.prepare(recipe, strategy)
        initial = [w.numpy() for w in job.student.weights]
        student, _, _ = lm_job.distil(job, kdkeras.LMRecipe(**{**vars(recipe), "out": os.path.join(root, name)}),
                                      optimizer=lambda rate: keras.optimizers.SGD(0.5))
        weights[name] = [w.numpy() for w in student.weights]
        replicas[name] = strategy.num_replicas_in_sync
        moved = max(float(np.abs(a - b).max()) for a, b in zip(initial, weights[name]))
    gap = max(float(np.abs(a - b).max()) for a, b in zip(weights["one"], weights["two"]))
    print(json.dumps({"replicas": replicas, "max_weight_gap": gap, "moved": moved}))


if __name__ == "__main__":
    main()
