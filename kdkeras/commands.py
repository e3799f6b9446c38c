"""The ``kdkeras`` command: ``distill`` and ``tune`` for your own models and data, ``train-mnist``.

    kdkeras distill --teacher my_teacher.keras --student mlp:800,800 --data my_digits.npz --out runs/mine
    python -m kdkeras distill --teacher a.keras b.keras --student student.keras --data photos/ --epochs 5
    kdkeras tune --teacher my_teacher.keras --student tiny --data my_digits.npz --max-trials 8 --epochs 5

``distill`` loads one trained teacher (several make an ensemble: the mean of
their logits), takes the student from an untrained ``.keras`` file or a
builder name, reads the data (``sample``, an ``.npz``, a folder of class
folders, or ``tfds:NAME[:SPLIT]``), fits the images to each model's input
shape (size and grey/RGB), trains the student from scratch as the baseline and
distils an identical copy, then writes the models, ``metrics.json``,
``report.md``, ``predictions.png`` and ``history.png`` like the main job. Every
mistake in the inputs is reported in one line with exit status 2.

``tune`` takes the same models and data, carves a validation split out of the
training data, and runs a KerasTuner search over temperature, alpha, loss and
learning rate: every trial distils the student (on the teacher's logits,
computed once, when nothing is augmented) and is scored on the validation
split. Only the chosen trial's student meets the test split, once. It writes
``student.keras``, ``tuning.json``, ``report.md``, ``tuning.png`` and every
trial under ``trials/``.
"""

import argparse
import datetime
import json
import os
import sys

from kdkeras.cli import UserError, check_distillation_args, load_teachers, tensorboard_callbacks
from kdkeras.recipe import Recipe

_DEFAULTS = Recipe(student_steps=6300, shift=0.0, rotation=0.0, temperature=4.0, alpha=0.1)
BUILDERS = ("article", "tiny", "mlp:UNITS,...")


def _add_model_data_flags(p):
    """The flags ``distill`` and ``tune`` share: the models, the data, the budget and the augmentation."""
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
    p.add_argument("--shift", type=float, default=0.0, help="random shift of training images (0: off)")
    p.add_argument("--rotation", type=float, default=0.0, help="random rotation in degrees (0: off)")
    p.add_argument("--seed", type=int, default=0)


def build_distill_parser():
    p = argparse.ArgumentParser(prog="kdkeras distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_model_data_flags(p)
    p.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate, help="Adam, cosine decay")
    p.add_argument("--loss", default=_DEFAULTS.loss, help="distillation loss name (kdkeras.losses.available())")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    p.add_argument("--alpha", type=float, default=_DEFAULTS.alpha, help="weight of the hard-label loss")
    p.add_argument("--out", default=None, help="output directory (default: runs/distill/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard logs of both students")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    return p


def build_tune_parser():
    p = argparse.ArgumentParser(
        prog="kdkeras tune", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Search temperature, alpha, loss and learning rate with KerasTuner: every trial distils the "
                    "student on the training data less a validation split and is scored on that split; the chosen "
                    "student is evaluated on the test split once.")
    _add_model_data_flags(p)
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0, 16.0, 20.0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.5],
                   help="weights of the hard-label loss (1.0: the student on hard labels alone)")
    p.add_argument("--losses", nargs="+", default=["kl"], help="distillation loss names")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--algorithm", default="random", choices=("random", "bayesian", "grid"))
    p.add_argument("--max-trials", type=int, default=10, help="trials to run (grid: at most this many)")
    p.add_argument("--validation-size", type=float, default=0.1, help="fraction of the training data held out")
    p.add_argument("--out", default=None, help="output directory (default: runs/tune/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the search found in --out")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="1: KerasTuner's trial summaries; 2: also each trial's epochs")
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

    # distill fixes these four; tune searches them (its trials override the recipe's)
    distillation = {k: getattr(args, k) for k in ("learning_rate", "loss", "temperature", "alpha") if hasattr(args, k)}
    if distillation:
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
                        shift=args.shift, rotation=args.rotation, seed=args.seed, num_classes=num_classes,
                        **distillation)
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


def tune(args):
    """Runs ``kdkeras tune`` with parsed arguments; returns the output dict written to ``tuning.json``."""
    from kdkeras import evaluation, plotting
    from kdkeras.atomic import save_model, write_text
    from kdkeras.data import validation_split
    from kdkeras.provenance import provenance

    try:
        from kdkeras import tuning
    except ImportError as e:
        raise UserError(str(e)) from None
    if not 0 < args.validation_size < 1:
        raise UserError(f"--validation-size must be a fraction in (0, 1); received {args.validation_size!r}.")
    teacher, student, _, (x, y), test, recipe = prepare(args)
    train, val = validation_split(x, y, size=args.validation_size, seed=args.seed)
    try:
        hypermodel = tuning.DistillationHyperModel(student, teacher, recipe, temperatures=args.temperatures,
                                                   alphas=args.alphas, losses=args.losses,
                                                   learning_rates=args.learning_rates)
        tuner = tuning.DistillationTuner(hypermodel, algorithm=args.algorithm, max_trials=args.max_trials,
                                         directory=args.out, project_name="trials", overwrite=not args.resume)
    except ValueError as e:
        raise UserError(str(e)) from None
    epochs = recipe.epochs("student", len(train[0]))
    print(f"Data: {args.data}: {len(train[0]):,} train, {len(val[0]):,} validation (scores the trials), "
          f"{len(test[0]):,} test (the chosen student, once)")
    print(f"Search: {args.algorithm}, at most {args.max_trials} trials of {epochs} epochs; T in {hypermodel.temperatures}, "
          f"alpha in {hypermodel.alphas}, loss in {hypermodel.losses}, learning rate in {hypermodel.learning_rates}")
    tuner.search(train, validation_data=val, verbose=args.verbose)
    rows = tuning.trial_table(tuner)
    chosen = tuner.get_best_hyperparameters(1)[0].values
    best = tuner.get_best_models(1)[0]
    save_model(best, os.path.join(args.out, "student.keras"))
    metrics = evaluation.compare({"teacher": teacher, "student (chosen trial)": best}, test, teacher=teacher)
    table = evaluation.format_table(metrics)
    result = {"provenance": provenance(["-m", "kdkeras", *args.argv], data=args.data),
              "run": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "data": args.data,
                      "args": dict(vars(args)), "epochs": epochs, "train_examples": len(train[0]),
                      "validation_examples": len(val[0]), "test_examples": len(test[0]),
                      "teacher_cache_seconds": getattr(tuner, "cache_seconds", None)},
              "chosen": {**chosen, "val_accuracy": rows[0]["val_accuracy"]}, "trials": rows, "test": metrics}
    write_text(os.path.join(args.out, "tuning.json"), json.dumps(result, indent=2) + "\n")
    write_text(os.path.join(args.out, "report.md"), _tune_report(args, result, table))
    plotting.plot_trials(rows, path=os.path.join(args.out, "tuning.png"))
    print("\n" + _trials_markdown(rows[:10]) + "\n")
    print(f"Chosen on validation: {_settings(chosen)}. On the test split:\n\n{table}\n")
    print(f"Wrote student.keras (the chosen trial's student), tuning.json, report.md and tuning.png to {args.out}; "
          f"every trial in {os.path.join(args.out, 'trials')}")
    return result


def _settings(values):
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _trials_markdown(rows):
    lines = ["| trial | T | alpha | loss | learning rate | val accuracy | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{r['val_accuracy']:.4f}" if r.get("val_accuracy") is not None else r["status"].lower()
        secs = f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else ""
        lines.append(f"| {r['trial']} | {r['temperature']:g} | {r['alpha']:g} | {r['loss']} | "
                     f"{r['learning_rate']:g} | {acc} | {secs} |")
    return "\n".join(lines)


def _tune_report(args, result, table):
    run = result["run"]
    return (f"# kdkeras tune report\n\n- date: {run['date']}\n- teacher: {', '.join(args.teacher)}\n"
            f"- student: {args.student}\n- data: {args.data}: {run['train_examples']:,} train, "
            f"{run['validation_examples']:,} validation (scores every trial), {run['test_examples']:,} test "
            f"(the chosen trial only)\n- search: {args.algorithm}, {len(result['trials'])} trials of {run['epochs']} "
            f"epochs, seed {args.seed}\n\n## Trials, best first\n\n{_trials_markdown(result['trials'])}\n\n"
            f"## The chosen trial on the test split\n\n{_settings(result['chosen'])}\n\n{table}\n")


def main(argv=None):
    """``kdkeras distill ...``, ``kdkeras tune ...`` or ``kdkeras train-mnist ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("distill", "tune", "train-mnist"):
        print("usage: kdkeras {distill,tune,train-mnist} [options]\n\n"
              "  distill      distil your own trained teacher into a student on your data\n"
              "  tune         choose T, alpha, loss and learning rate on a validation split (KerasTuner)\n"
              "  train-mnist  the MNIST main job (the same as scripts/train_mnist.py)\n\n"
              "kdkeras COMMAND --help shows a command's options.", file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "train-mnist":
        from kdkeras import cli

        return cli.main(argv[1:])
    command = argv[0]
    args = (build_distill_parser() if command == "distill" else build_tune_parser()).parse_args(argv[1:])
    args.argv = argv  # the command line, for the result file's provenance
    if args.resume and args.out is None:
        print(f"kdkeras {command}: error: --resume continues the run in --out DIR; pass its directory.",
              file=sys.stderr)
        return 2
    args.out = args.out or os.path.join("runs", command, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kdkeras.cli import quiet_native_stderr

    with quiet_native_stderr():
        import tensorflow as tf

        import kdkeras.experiment  # noqa: F401 - TensorFlow and kdkeras load here, quietly
        import kdkeras.data.images  # noqa: F401

        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()  # device discovery logs stay hidden too
    try:
        (distill if command == "distill" else tune)(args)
    except UserError as e:
        print(f"kdkeras {command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # a search in which no trial completed
        print(f"kdkeras {command}: {e}", file=sys.stderr)
        return 1
    return 0
