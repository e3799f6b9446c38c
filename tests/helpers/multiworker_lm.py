"""distill-lm's training stage as one MultiWorkerMirroredStrategy worker, or as a single process.

    python multiworker_lm.py TEACHER_PRESET TEXT OUT.npz                # single process (the reference)
    TF_CONFIG=... python multiworker_lm.py TEACHER_PRESET TEXT OUT.npz  # one worker of a cluster

``from-teacher:2`` trained 4 steps of global batch 4 with plain SGD (Adam's
first steps turn rounding-level differences of small gradients into whole
steps); the preset must have no dropout. Saves the student's weights and the
number of replicas to OUT.npz.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402


def main(teacher, text, out):
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ else \
        tf.distribute.get_strategy()
    import keras
    import numpy as np

    import kdkeras
    from kdkeras.text import lm_job

    recipe = kdkeras.LMRecipe(teacher=teacher, student="from-teacher:2", data=text, out=out + ".run", steps=4,
                              sequence_length=32, batch_size=4, alpha=0.3, temperature=2.0, verbose=0)
    job = lm_job.prepare(recipe, strategy)
    student, _, _ = lm_job.distil(job, recipe, optimizer=lambda rate: keras.optimizers.SGD(0.5))
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": w.numpy() for i, w in enumerate(student.weights)})


if __name__ == "__main__":
    main(*sys.argv[1:4])
