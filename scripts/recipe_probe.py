"""Trains one student the way the main job's recipe does, with one thing changed; prints a JSON line.

An experiment tool for the distillation recipe of ``scripts/train_mnist.py``. It
repeats only the student stage, with teachers loaded from earlier runs, so a
variant costs one student's training instead of a whole main job:

- the same data (bundled sample by default), seed handling, fixed batch order per
  (seed, epoch), augmentation (the teacher runs online on the student's views),
  Adam with cosine decay, and the same initial student weights as the main job;
- ``--student scratch`` trains the hard-label baseline instead;
- several ``--teacher`` paths make a teacher ensemble (the mean of their logits);
- ``--loss kl_standardized`` is logit-standardized KD (Sun et al., CVPR 2024): both
  logit vectors are z-scored over the classes before a KL at ``--temperature``
  (the paper's base temperature), so the student need not match the teacher's
  logit scale. It lives here, not in ``kdkeras.losses``, because it did not help
  the recipe on the bundled sample (README, "Results").

It trains through the same :mod:`kdkeras.experiment` stages as the main job,
so with the main job's defaults and that run's teacher, ``--student distilled``
gives the main job's distilled student and ``--student scratch`` its scratch
student, weight for weight (a test checks it).

    python scripts/train_mnist.py --data sample --seed 0 --out runs/s0
    python scripts/recipe_probe.py --teacher runs/s0/teacher.keras --seed 0                 # the recipe
    python scripts/recipe_probe.py --teacher runs/s0/teacher.keras --seed 0 --loss dkd --temperature 4
    python scripts/recipe_probe.py --teacher runs/s*/teacher.keras --seed 0                 # ensemble
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def standardized_kl(base_temperature):
    """Logit-standardized KD loss: ``tau**2 * KL(softmax(z(t)/tau) || softmax(z(s)/tau))``.

    ``z(v) = (v - mean(v)) / std(v)`` over the classes. The Distiller's temperature
    argument is ignored; ``base_temperature`` is ``tau``.
    """
    import tensorflow as tf

    from kdkeras.losses import kl_divergence

    def zscore(logits):
        logits = tf.cast(logits, tf.float32)
        mean, variance = tf.nn.moments(logits, axes=[-1], keepdims=True)
        return (logits - mean) / tf.sqrt(variance + 1e-7)

    def loss(teacher_logits, student_logits, temperature):
        del temperature
        return kl_divergence(zscore(teacher_logits), zscore(student_logits), base_temperature)

    return loss


def load_teacher(paths):
    """One loaded teacher, or a :class:`kdkeras.TeacherEnsemble` (the mean of their logits) of several."""
    import keras

    import kdkeras

    teachers = [keras.models.load_model(p) for p in paths]
    return teachers[0] if len(teachers) == 1 else kdkeras.TeacherEnsemble(teachers)


def main(argv=None):
    from kdkeras.recipe import Recipe

    defaults = Recipe()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", nargs="+", required=True, metavar="PATH",
                   help=".keras teacher(s); several make an ensemble (mean logits)")
    p.add_argument("--student", default="distilled", choices=("distilled", "scratch"))
    p.add_argument("--data", default="sample", help="as in train_mnist.py")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--epochs", type=int, default=defaults.student_epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--loss", default=defaults.loss, help="a registered loss name, or kl_standardized")
    p.add_argument("--temperature", type=float, default=defaults.temperature)
    p.add_argument("--alpha", type=float, default=defaults.alpha)
    p.add_argument("--shift", type=float, default=defaults.shift)
    p.add_argument("--rotation", type=float, default=defaults.rotation)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument("--out", default=None, help="also save the student to this .keras path")
    args = p.parse_args(argv)

    import kdkeras
    from kdkeras import experiment
    from kdkeras.evaluation import accuracy

    recipe = Recipe(student_epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                    loss="kl" if args.loss == "kl_standardized" else args.loss, temperature=args.temperature,
                    alpha=args.alpha, shift=args.shift, rotation=args.rotation, seed=args.seed)
    (x_train, y_train), (x_test, y_test) = kdkeras.load_mnist_arrays(args.data)
    teacher = load_teacher(args.teacher)
    start = time.perf_counter()
    import keras

    keras.utils.set_random_seed(args.seed)  # as the main job does before building each model
    if args.student == "scratch":
        student = kdkeras.build_student(seed=args.seed, name="student_scratch")
        experiment.train_scratch(student, (x_train, y_train), recipe, verbose=0)
    else:
        student = kdkeras.build_student(seed=args.seed, name="student")
        loss = standardized_kl(args.temperature) if args.loss == "kl_standardized" else None
        experiment.distil(student, teacher, (x_train, y_train), recipe, verbose=0, distillation_loss_fn=loss)
    if args.out:
        student.save(args.out)
    result = {
        "student": args.student, "seed": args.seed, "teachers": args.teacher, "loss": args.loss,
        "temperature": args.temperature, "alpha": args.alpha, "shift": args.shift, "rotation": args.rotation,
        "epochs": args.epochs, "learning_rate": args.learning_rate,
        "test_accuracy": accuracy(student, x_test, y_test),
        "train_accuracy": accuracy(student, x_train, y_train),
        "teacher_test_accuracy": accuracy(teacher, x_test, y_test),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
