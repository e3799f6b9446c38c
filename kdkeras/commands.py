"""The ``kdkeras`` command: ``kdkeras distill`` for your own models and data, ``kdkeras train-mnist``.

    kdkeras distill --teacher my_teacher.keras --student mlp:800,800 --data my_digits.npz --out runs/mine
    python -m kdkeras distill --teacher a.keras b.keras --student student.keras --data photos/ --epochs 5

``distill`` loads one trained teacher (several make an ensemble: the mean of
their logits), takes the student from an untrained ``.keras`` file or a
builder name, reads the data (``sample``, an ``.npz``, a folder of class
folders, or ``tfds:NAME[:SPLIT]``), fits the images to each model's input
shape (size and grey/RGB), trains the student from scratch as the baseline and
distils an identical copy, then writes the models, ``metrics.json``,
``report.md``, ``predictions.png`` and ``history.png`` like the main job. Every
mistake in the inputs is reported in one line with exit status 2.
"""

import argparse
import datetime
import json
import os
import sys

from kdkeras.cli import UserError, check_distillation_args, load_teachers, tensorboard_callbacks
from kdkeras.recipe import Recipe

_DEFAULTS = Recipe(shift=0.0, rotation=0.0, temperature=4.0, alpha=0.1)
BUILDERS = ("article", "tiny", "mlp:UNITS,...")


def build_distill_parser():
    p = argparse.ArgumentParser(prog="kdkeras distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--teacher", nargs="+", required=True, metavar="PATH",
                   help="trained teacher .keras file(s); several are distilled as their ensemble (mean logits). "
                        "Loaded with safe_mode on")
    p.add_argument("--teacher-outputs", default="logits", choices=("logits", "probabilities"),
                   help="probabilities: the teacher ends in a softmax (e.g. keras.applications defaults)")
    p.add_argument("--student", default="article",
                   help='an untrained .keras architecture, or a builder: "article", "tiny", "mlp:800,800"')
    p.add_argument("--data", default="sample",
                   help='"sample", an .npz (Keras layout or x/y), a folder of class folders, or tfds:NAME[:SPLIT]')
    p.add_argument("--steps", type=int, default=_DEFAULTS.student_steps,
                   help="training budget of each student in optimizer steps (epochs derived from the data size)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each student; overrides --steps")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size)
    p.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate, help="Adam, cosine decay")
    p.add_argument("--loss", default=_DEFAULTS.loss, help="distillation loss name (kdkeras.losses.available())")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    p.add_argument("--alpha", type=float, default=_DEFAULTS.alpha, help="weight of the hard-label loss")
    p.add_argument("--shift", type=float, default=0.0, help="random shift of training images (0: off)")
    p.add_argument("--rotation", type=float, default=0.0, help="random rotation in degrees (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output directory (default: runs/distill/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard logs of both students")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    return p


def _num_classes(teacher, input_shape):
    import numpy as np

    return int(np.asarray(teacher(np.zeros((1, *input_shape), "float32"))).shape[-1])


def _student(spec, input_shape, num_classes, seed):
    import keras

    import kdkeras

    if spec.endswith(".keras"):
        try:
            return keras.models.load_model(spec, compile=False)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"could not load --student {spec!r}: {e}") from None
    kwargs = dict(input_shape=input_shape, num_classes=num_classes, seed=seed)
    if spec == "article":
        return kdkeras.build_student(**kwargs)
    if spec == "tiny":
        return kdkeras.build_cnn((4,), 16, name="tiny", **kwargs)
    if spec.startswith("mlp:"):
        try:
            units = tuple(int(u) for u in spec[4:].split(","))
            return kdkeras.build_mlp(units, **kwargs)
        except ValueError:
            raise UserError(f"--student {spec!r}: expected mlp:UNITS,UNITS,... with positive integers.") from None
    raise UserError(f"--student {spec!r}: a .keras file or one of {', '.join(BUILDERS)}.")


def prepare(args):
    """Loads and checks everything before training: ``(teacher, student, scratch, train, test, recipe)``."""
    import keras

    from kdkeras import checks
    from kdkeras.data.images import fit_images, load_image_data, with_input_shape

    check_distillation_args(args)
    teacher = load_teachers(args.teacher, args.teacher_outputs)
    first = teacher.members[0] if hasattr(teacher, "members") else teacher
    first = getattr(first, "model", first)
    teacher_shape = tuple(getattr(first, "input_shape", (None,))[1:])
    try:
        (x, y), (x_test, y_test) = load_image_data(args.data, image_size=teacher_shape[:2] or None)
    except (ValueError, OSError) as e:
        raise UserError(f"could not load --data {args.data!r}: {e}") from None
    try:
        student_input = x.shape[1:] if not args.student.endswith(".keras") else None
        num_classes = _num_classes(teacher, teacher_shape)
        student = _student(args.student, tuple(student_input or ()), num_classes, args.seed)
        checks.check_model(student, "student")
        checks.check_same_outputs(teacher, student)
        x, x_test = fit_images(x, student, "student"), fit_images(x_test, student, "student")
        teacher = with_input_shape(teacher, x.shape[1:])
    except ValueError as e:
        raise UserError(str(e)) from None
    student_classes = _num_classes(student, x.shape[1:])
    if student_classes != num_classes:
        raise UserError(f"the teacher predicts {num_classes} classes but the student {student_classes}: "
                        "they must match.")
    top = int(max(y.max(), y_test.max()))
    if top >= num_classes:
        raise UserError(f"the data has labels up to {top}, but the teacher predicts {num_classes} classes.")
    scratch = keras.models.clone_model(student)
    scratch.set_weights(student.get_weights())  # the baseline starts from the same weights
    try:
        recipe = Recipe(student_steps=args.steps, student_epochs=args.epochs, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, loss=args.loss, temperature=args.temperature,
                        alpha=args.alpha, shift=args.shift, rotation=args.rotation, seed=args.seed,
                        num_classes=num_classes)
    except ValueError as e:
        raise UserError(str(e)) from None
    return teacher, student, scratch, (x, y), (x_test, y_test), recipe


def distill(args):
    """Runs ``kdkeras distill`` with parsed arguments; returns the metrics dict."""
    from kdkeras import evaluation, experiment, plotting
    from kdkeras.atomic import write_text
    from kdkeras.data import validation_split

    teacher, student, scratch_model, (x, y), test, recipe = prepare(args)
    train, val = validation_split(x, y, size=0.1, seed=args.seed)
    epochs = recipe.epochs("student", len(train[0]))
    print(f"Data: {args.data}: {len(train[0]):,} train, {len(val[0]):,} validation, {len(test[0]):,} test, "
          f"images {x.shape[1:]}, {recipe.num_classes} classes")
    print(f"Teacher: {' '.join(args.teacher)}; student: {args.student} ({student.count_params():,} parameters); "
          f"{epochs} epochs each")
    state = experiment.RunState(args.out, resume=args.resume)

    stage = dict(validation_data=val, state=state, verbose=args.verbose)
    print("Scratch student: hard labels")
    scratch = experiment.train_scratch(scratch_model, train, recipe, **stage,
                                       callbacks=tensorboard_callbacks(args, "scratch"))
    print(f"Distilled student: loss={recipe.loss}, T={recipe.temperature:g}, alpha={recipe.alpha:g}")
    distilled = experiment.distil(student, teacher, train, recipe, **stage,
                                  callbacks=tensorboard_callbacks(args, "distilled"))
    models = {"teacher": teacher, "student (distilled)": distilled.model, "student (scratch)": scratch.model}
    metrics = evaluation.compare(models, test, teacher=teacher)
    table = evaluation.format_table(metrics)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "data": args.data,
            "args": dict(vars(args)), "epochs": epochs}
    write_text(os.path.join(args.out, "metrics.json"), json.dumps({"run": meta, "models": metrics}, indent=2) + "\n")
    write_text(os.path.join(args.out, "report.md"),
               f"# kdkeras distill report\n\n- date: {meta['date']}\n- teacher: {', '.join(args.teacher)}\n"
               f"- student: {args.student}\n- data: {args.data} (metrics on its test split)\n- {epochs} epochs, "
               f"loss={recipe.loss}, T={recipe.temperature:g}, alpha={recipe.alpha:g}, seed={recipe.seed}\n\n"
               f"{table}\n")
    plotting.plot_predictions({"teacher": teacher, "distilled": distilled.model, "scratch": scratch.model},
                              *test, n=16, seed=recipe.seed, path=os.path.join(args.out, "predictions.png"))
    plotting.plot_history({"scratch student": scratch.history, "distilled student": distilled.history},
                          path=os.path.join(args.out, "history.png"))
    print("\n" + table + "\n")
    print(f"Wrote student.keras, student_scratch.keras, metrics.json, report.md, predictions.png and history.png "
          f"to {args.out}")
    return metrics


def main(argv=None):
    """``kdkeras distill ...`` or ``kdkeras train-mnist ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("distill", "train-mnist"):
        print("usage: kdkeras {distill,train-mnist} [options]\n\n"
              "  distill      distil your own trained teacher into a student on your data\n"
              "  train-mnist  the MNIST main job (the same as scripts/train_mnist.py)\n\n"
              "kdkeras COMMAND --help shows a command's options.", file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "train-mnist":
        from kdkeras import cli

        return cli.main(argv[1:])
    args = build_distill_parser().parse_args(argv[1:])
    args.out = args.out or os.path.join("runs", "distill", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kdkeras.cli import quiet_native_stderr

    with quiet_native_stderr():
        import tensorflow as tf

        import kdkeras.experiment  # noqa: F401 - TensorFlow and kdkeras load here, quietly
        import kdkeras.data.images  # noqa: F401

        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()  # device discovery logs stay hidden too
    try:
        distill(args)
    except UserError as e:
        print(f"kdkeras distill: error: {e}", file=sys.stderr)
        return 2
    return 0
