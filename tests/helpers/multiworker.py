"""One Distiller training run as a MultiWorkerMirroredStrategy worker, or as a single process.

    python multiworker.py OUT.npz [MODEL]                # single process (the reference)
    TF_CONFIG=... python multiworker.py OUT.npz [MODEL]  # one worker of a multi-worker cluster

MODEL is ``distiller`` (default), ``plain`` (the student alone on hard labels,
made ready by ``kdkeras.multiworker_compatible``) or ``unpatched`` (the same
plain model without it).

Both read the same 96 bundled-sample digits in the same global batches of 32
(SGD, so the update is exactly the mean gradient of the global batch) and save
the student's weights and the epoch loss to OUT.npz. With the loss divided by
the *global* batch size, every worker ends with the single-process weights.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 32


def _model(kind, strategy):
    import keras

    import kdkeras

    keras.utils.set_random_seed(0)
    with strategy.scope():
        if kind == "distiller":
            model = kdkeras.Distiller(student=kdkeras.build_student(seed=2), teacher=kdkeras.build_teacher(seed=1))
            model.compile(optimizer=keras.optimizers.SGD(0.5), alpha=0.3, temperature=2.0)
            return model, model.student
        model = kdkeras.build_student(seed=2)
        if kind == "plain":
            model = kdkeras.multiworker_compatible(model)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model, model


def main(out, kind="distiller"):
    import kdkeras

    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        if strategy.num_replicas_in_sync < 2:
            raise SystemExit("expected at least two workers")
    else:
        strategy = tf.distribute.get_strategy()  # the default strategy: one process, one device

    (x, y), _ = kdkeras.load_mnist_arrays("sample")
    idx = np.random.default_rng(0).choice(len(x), 96, replace=False)
    x, y = x[idx], y[idx]
    w = np.linspace(0.5, 1.5, len(y)).astype("float32")

    d, student = _model(kind, strategy)
    initial = {f"init{i}": v.numpy() for i, v in enumerate(student.trainable_variables)}
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(GLOBAL_BATCH)
    # Each worker takes its slice of every global batch (not whole batches of its own),
    # so the global batches are the single process' batches.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    history = d.fit(ds.with_options(options), epochs=2, verbose=0)
    weights = {f"w{i}": v.numpy() for i, v in enumerate(student.trainable_variables)}
    np.savez(out, loss=np.array(history.history["loss"]), replicas=strategy.num_replicas_in_sync, **weights, **initial)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
