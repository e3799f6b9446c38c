"""The main job's command line: train a teacher, a scratch student and a distilled student on MNIST.

``python scripts/train_mnist.py`` (or the installed ``kdkeras-train-mnist``)
with no arguments works offline on the bundled 5,000-digit sample. This module
parses and checks the arguments, runs the three stages of
:mod:`kdkeras.experiment` and writes the outputs; ``--help`` answers before
TensorFlow is imported, and TensorFlow's native start-up lines are hidden
(``KDKERAS_SHOW_TF_STARTUP=1`` shows them).
"""

import datetime
import json
import os
import shutil
import sys
import tempfile
import time

from kdkeras.cli.common import (EXIT_USAGE, TrainingFailed, UserError, check_distillation_args, check_out, default_out,
                                fields_from_args, import_tensorflow_quietly, make_parser, remove_if_new,
                                tensorboard_callbacks)
from kdkeras.recipe import Recipe

_DEFAULTS = Recipe()


DESCRIPTION = ("Knowledge distillation on MNIST: trains the article teacher CNN, a small student from scratch and "
               "the same student distilled from the teacher, then compares them and writes models, metrics.json, "
               "report.md and plots.")


def build_parser():
    """The job's argument parser (every flag, with its default)."""
    return make_parser("train_mnist", DESCRIPTION, configure)


def configure(p):
    """Adds the main job's flags to ``p`` (its own parser, or the ``kdkeras train-mnist`` subparser)."""
    p.add_argument("--data", default="auto",
                   help='"auto" (tfds MNIST if available, else the bundled 5,000-digit '
                        'sample), "tfds", "sample", or a path to an .npz file')
    p.add_argument("--teacher-steps", type=int, default=_DEFAULTS.teacher_steps,
                   help="the teacher's training budget in optimizer steps; its epochs are the budget divided "
                        "by the steps per epoch, rounded (100 on the sample, 7 on full MNIST by default)")
    p.add_argument("--student-steps", type=int, default=_DEFAULTS.student_steps,
                   help="the same budget for the scratch and the distilled student (each)")
    p.add_argument("--teacher-epochs", type=int, default=_DEFAULTS.teacher_epochs,
                   help="epochs to train the teacher; overrides --teacher-steps")
    p.add_argument("--student-epochs", type=int, default=_DEFAULTS.student_epochs,
                   help="epochs for the scratch and the distilled student (each); overrides --student-steps")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="batch size")
    p.add_argument("--temperature", type=float, default=_DEFAULTS.temperature, help="distillation temperature T > 0")
    p.add_argument("--alpha", type=float, default=_DEFAULTS.alpha,
                   help="weight of the hard-label loss in [0, 1]; 1 - alpha weighs the distillation loss")
    p.add_argument("--loss", default=_DEFAULTS.loss, help="distillation loss: a name from kdkeras.losses.available()")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (weights, shuffling)")
    p.add_argument("--out", default=None, help="output directory (default: runs/mnist/<timestamp>)")
    p.add_argument("--teacher", default=None, nargs="+", metavar="PATH",
                   help="load a trained teacher from this .keras file instead of training one; several files "
                        "are distilled as their ensemble (the mean of their logits)")
    _add_recipe_flags(p)
    _add_run_flags(p)


def _add_recipe_flags(p):
    """Flags of how the models train (augmentation, schedule, cache)."""
    p.add_argument("--shift", type=float, default=_DEFAULTS.shift, metavar="FRACTION",
                   help="random shift of every training image, up to this fraction of its height and "
                        "width (kdkeras.augment; all three models; 0 turns it off). With any augmentation "
                        "the teacher runs online on the students' augmented views")
    p.add_argument("--rotation", type=float, default=_DEFAULTS.rotation, metavar="DEGREES",
                   help="random rotation of every training image, up to this many degrees (0 turns it off)")
    p.add_argument("--mixup", type=float, default=_DEFAULTS.mixup, metavar="STRENGTH",
                   help="mixup for the students (Beta(STRENGTH, STRENGTH) blend of two images and their "
                        "one-hot labels; the teacher sees the blends online); 0 turns it off")
    p.add_argument("--lr-schedule", default=_DEFAULTS.lr_schedule, choices=("cosine", "constant"),
                   help="learning-rate schedule of every model: cosine decay to 0 over its epochs, or constant")
    p.add_argument("--steps-per-execution", type=int, default=_DEFAULTS.steps_per_execution, metavar="N",
                   help="at most N train steps per tf.function call (the largest divisor of the steps per epoch "
                        "not above N: the same updates, fewer Python round trips); 1 turns it off")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="run the teacher online every step instead of caching its logits once "
                        "(only without augmentation: augmented views always need the online teacher)")


def _add_run_flags(p):
    """Flags of where and how the job runs (strategy, resume, outputs)."""
    p.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute strategy: default (one device), mirrored (all local GPUs, or every "
                        "logical CPU device when there is none; synchronous), multiworker (several machines; "
                        "each runs this command with its TF_CONFIG; the chief (worker 0) writes the outputs)")
    p.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate,
                   help="Adam learning rate for the teacher and both students")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: finished models are loaded, an "
                        "interrupted training continues from its last completed epoch")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism (bit-identical reruns and resumes; slower)")
    p.add_argument("--export", action="store_true",
                   help="also export the distilled student to export/ as a SavedModel and "
                        "LiteRT (float32 and dynamic-range int8), with their accuracy, "
                        "size and latency in metrics.json")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also log every stage's losses, accuracy, agreement, temperature and alpha per epoch "
                        "for TensorBoard, to DIR/teacher, DIR/scratch and DIR/distilled")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 one progress bar per stage, 2 one line per epoch")



# --------------------------------------------------------------------------- #
# Argument checks: every user mistake is found before any training starts.
# --------------------------------------------------------------------------- #
def _readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def recipe_from_args(args):
    """The :class:`kdkeras.Recipe` the flags describe; a ``UserError`` names the bad flag."""
    fields = fields_from_args(Recipe, args)
    if args.teacher is None and args.teacher_epochs is not None and args.teacher_epochs < 1:
        raise UserError(f"--teacher-epochs must be >= 1; received {args.teacher_epochs}.")
    try:
        return Recipe(**fields)
    except ValueError as e:
        field = str(e).split(" ", 1)[0]
        raise UserError(f"--{field.replace('_', '-')} {str(e).split(' ', 1)[1]}") from None


def _check_args(args):
    import kdkeras

    recipe = recipe_from_args(args)
    loss = check_distillation_args(args)
    if recipe.soft_labels and kdkeras.losses.takes_labels(loss):
        raise UserError(f"--loss {args.loss} needs each example's hard label, which mixup blends away; "
                        "pass --mixup 0 or another loss.")
    if args.resume and args.out is None:
        raise UserError("--resume continues the run in --out DIR; pass the directory of the interrupted run.")
    if args.resume and args.strategy == "multiworker":
        raise UserError("--resume is not supported with --strategy multiworker (only the chief keeps "
                        "files); rerun the workers from the start.")
    if args.data not in ("auto", "tfds", "sample") and not _readable_file(args.data):
        raise UserError(f"--data {args.data!r} is not a readable file (or auto, tfds, sample).")
    for path in args.teacher or ():
        if not _readable_file(path):
            raise UserError(f"--teacher {path!r} is not a readable .keras file.")
    if args.strategy == "multiworker":
        check_tf_config()
    if args.out is None:
        args.out = default_out("mnist")
    args.out_is_new = check_out(args.out)
    return recipe


def check_tf_config():
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
        tf_config["cluster"], tf_config["task"]
    except (KeyError, TypeError, IndexError):
        raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                        "(cluster and task) on every worker; see the README.") from None
    except ValueError as e:
        raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None


# --------------------------------------------------------------------------- #
# The job
# --------------------------------------------------------------------------- #
def run(args, recipe):
    """Runs the main job with parsed, checked arguments; returns the metrics dict."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the CLI's output is Keras' progress and the table
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy, is_chief = make_strategy(args.strategy)
    out_dir = args.out if is_chief else tempfile.mkdtemp(prefix="kdkeras-worker-")
    try:
        return _run(args, recipe, strategy, out_dir, is_chief)
    finally:
        if not is_chief:
            shutil.rmtree(out_dir, ignore_errors=True)


def make_strategy(name):
    """Returns ``(strategy, is_chief)`` for ``--strategy``.

    ``mirrored`` replicates the models on every local GPU (when there is none,
    on every logical CPU device: one unless the process configured more) and
    all-reduces the gradients. ``multiworker`` does the same across
    machines described by ``TF_CONFIG``; every worker runs the same command, and
    only the chief (worker 0, or the task of type ``chief``) keeps the outputs.
    The global batch is ``--batch-size`` in every case: each replica gets an
    equal share of it, and the Distiller divides the loss by the global batch.
    """
    import tensorflow as tf

    if name == "mirrored":
        cpus = tf.config.list_logical_devices("CPU")
        if not tf.config.list_logical_devices("GPU") and len(cpus) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in cpus]), True
        return tf.distribute.MirroredStrategy(), True
    if name == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        is_chief = resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict()
        )
        return strategy, is_chief
    return tf.distribute.get_strategy(), True


def _run(args, recipe, strategy, out_dir, is_chief):
    import kdkeras
    from kdkeras import experiment

    start = time.perf_counter()
    args.seconds = {}  # wall clock of each stage (filled by _stage) and of the whole training, for metrics.json
    (train, test), data_label = _load_data(args)
    print(f"Data: {data_label}")
    if strategy.num_replicas_in_sync > 1:
        print(f"Strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas, "
              f"global batch {args.batch_size}")
    state = experiment.RunState(out_dir, resume=args.resume)
    args.epochs = {key: recipe.epochs(key, len(train[0])) for key in ("teacher", "student")}
    stage = dict(validation_data=test, state=state, strategy=strategy, verbose=args.verbose)
    # 1. The teacher (or a trained one, loaded)
    teacher = _load_teacher(args, strategy) if args.teacher else _stage(
        "teacher", state, args, lambda: experiment.train_teacher(
            _built(kdkeras.build_teacher, recipe, strategy), train, recipe, **stage,
            callbacks=tensorboard_callbacks(args, "teacher")))
    # 2. The student from scratch, on hard labels: the baseline
    scratch = _stage("scratch", state, args, lambda: experiment.train_scratch(
        _built(kdkeras.build_student, recipe, strategy, name="student_scratch"), train, recipe, **stage,
        callbacks=tensorboard_callbacks(args, "scratch")))
    # 3. The same student, distilled from the teacher
    student = _stage("distilled", state, args, lambda: experiment.distil(
        _built(kdkeras.build_student, recipe, strategy, name="student"), teacher.model, train, recipe, **stage,
        callbacks=tensorboard_callbacks(args, "distilled", recipe)))
    # 4. Compare, write and plot
    models = {"teacher": teacher, "student (distilled)": student, "student (scratch)": scratch}
    args.seconds["training"] = time.perf_counter() - start
    return _write_outputs(args, recipe, models, test, data_label, out_dir, is_chief)


def _load_data(args):
    import kdkeras

    try:
        arrays, source = kdkeras.load_mnist_arrays(args.data, return_source=True)
    except (ValueError, OSError, kdkeras.DatasetUnavailableError) as e:
        raise UserError(f"could not load --data {args.data!r}: {e}") from None
    (x_train, _), (x_test, _) = arrays
    label = {
        "tfds": "full MNIST (tensorflow-datasets), 60,000 train / 10,000 test",
        "sample": "bundled 5,000-digit MNIST sample, 4,000 train / 1,000 test (not full MNIST)",
    }.get(source, f"{source}, {len(x_train):,} train / {len(x_test):,} test")
    return arrays, label


def _built(builder, recipe, strategy, **kwargs):
    """A fresh model from ``builder``, seeded, under the strategy's scope."""
    import keras

    keras.utils.set_random_seed(recipe.seed)
    with strategy.scope():
        return builder(seed=recipe.seed, **kwargs)


def load_teachers(paths, teacher_outputs="logits", wrap=None):
    """The trained teacher(s) in ``paths`` as one logits model; several become their ensemble.

    Each ``.keras`` file is loaded with ``safe_mode`` on and passed through
    ``wrap`` when given; ``teacher_outputs`` is as in :class:`kdkeras.Distiller`.
    Any problem is a one-line :class:`UserError` naming the file.
    """
    import keras

    from kdkeras.teachers import as_teacher

    members = []
    for path in paths:
        if not _readable_file(path):
            raise UserError(f"--teacher {path!r} is not a readable .keras file.")
        try:
            model = keras.models.load_model(path, compile=False)  # safe_mode on; a teacher needs no optimizer
        except Exception as e:  # noqa: BLE001 - any unreadable model is a user error here
            raise UserError(f"could not load --teacher {path!r}: {e}") from None
        members.append(wrap(model) if wrap else model)
    try:
        return as_teacher(members if len(members) > 1 else members[0], teacher_outputs)
    except (TypeError, ValueError) as e:
        raise UserError(f"--teacher: {e}") from None


def _load_teacher(args, strategy):
    from kdkeras.distribute import multiworker_compatible
    from kdkeras.experiment import StageResult

    with strategy.scope():
        teacher = load_teachers(args.teacher, wrap=multiworker_compatible)
    n = len(args.teacher)
    print(f"Teacher: loaded from {' '.join(args.teacher)}"
          + (f" (an ensemble of {n}: the mean of their logits)" if n > 1 else ""))
    return StageResult(teacher, {})


_STAGE_NAMES = {"teacher": "teacher", "scratch": "scratch student", "distilled": "distilled student"}


def _stage(key, state, args, train):
    """Announces a stage, runs ``train()`` and turns a numerical fault into a one-line error."""
    from kdkeras.callbacks import NonFiniteLossError, latest_backup_epoch

    name = _STAGE_NAMES[key]
    if state.finished(key):
        print(f"{name.capitalize()}: finished earlier; loaded {state.model_path(key)}")
    else:
        print(f"{name.capitalize()}: {_stage_note(key, args)}")
        done = state.completed_epochs(key)
        if done:
            epochs = args.epochs["teacher" if key == "teacher" else "student"]
            print(f"  resuming at epoch {done + 1} of {epochs} from the backup in {state.backup_dir(key)}")
    start = time.perf_counter()
    try:
        result = train()
    except NonFiniteLossError as e:
        kept = latest_backup_epoch(state.backup_dir(key))
        where = f"The backup of epoch {kept} is in {state.backup_dir(key)}." if kept else "No epoch had completed."
        raise TrainingFailed(f"{name}: {e} {where}") from None
    args.seconds[key] = time.perf_counter() - start
    return result


def _stage_note(key, args):
    augmented = args.shift or args.rotation or args.mixup
    if key == "teacher":
        return f"training for {args.epochs['teacher']} epochs" + _augment_note(args, mixup=False)
    if key == "scratch":
        return f"training for {args.epochs['student']} epochs on hard labels" + _augment_note(args, mixup=True)
    return (f"{args.epochs['student']} epochs, loss={args.loss}, T={args.temperature:g}, alpha={args.alpha:g}"
            + (_augment_note(args, mixup=True) + "; the teacher runs online on the same views" if augmented
               else " (teacher logits cached once)" if args.cache else " (online teacher)"))


def _augment_note(args, mixup):
    parts = []
    if args.shift:
        parts.append(f"shift {args.shift:g}")
    if args.rotation:
        parts.append(f"rotation {args.rotation:g} deg")
    if mixup and args.mixup > 0:
        parts.append(f"mixup {args.mixup:g}")
    return f", augmented: {' + '.join(parts)}" if parts else ""


# --------------------------------------------------------------------------- #
# Outputs
# --------------------------------------------------------------------------- #
def _write_outputs(args, recipe, results, test, data_label, out_dir, is_chief):
    """Evaluates the three models on the test split; writes metrics.json, report.md and the figures."""
    from kdkeras import evaluation, plotting
    from kdkeras.atomic import save_model, write_text

    x_test, y_test = test
    models = {name: result.model for name, result in results.items()}
    teacher, student = models["teacher"], models["student (distilled)"]
    if args.teacher:
        save_model(teacher, os.path.join(out_dir, "teacher.keras"))
    metrics = evaluation.compare(models, (x_test, y_test), teacher=teacher)
    table = evaluation.format_table(metrics)
    exported = _export(student, out_dir, x_test, y_test) if args.export and is_chief else None
    run_args = {k: v for k, v in vars(args).items() if k != "seconds"}
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "data": data_label, "args": run_args,
            "seconds": {k: round(v, 1) for k, v in args.seconds.items()}}
    write_text(os.path.join(out_dir, "metrics.json"),
               json.dumps({"run": meta, "models": metrics, **({"export": exported} if exported else {})},
                          indent=2) + "\n")
    write_text(os.path.join(out_dir, "report.md"), _report(args, meta, table, exported))
    plotting.plot_predictions({"teacher": teacher, "distilled": student, "scratch": models["student (scratch)"]},
                              x_test, y_test, n=24, seed=recipe.seed, path=os.path.join(out_dir, "predictions.png"))
    histories = {_STAGE_NAMES[key]: results[name].history for key, name in
                 (("teacher", "teacher"), ("scratch", "student (scratch)"), ("distilled", "student (distilled)"))
                 if results[name].history}
    plotting.plot_history(histories, path=os.path.join(out_dir, "history.png"))
    print("\n" + table + "\n")
    if is_chief:
        print(f"Wrote models, metrics.json, report.md, predictions.png and history.png to {out_dir}")
    else:
        print("Worker done; the chief wrote the outputs.")
    return metrics


def _report(args, meta, table, exported):
    teacher = args.epochs["teacher"] if not args.teacher else "loaded: " + ", ".join(args.teacher)
    return (
        "# kdkeras MNIST distillation report\n\n"
        f"- date: {meta['date']}\n- data: {meta['data']} (metrics on the test split)\n"
        f"- teacher epochs: {teacher}, student epochs: {args.epochs['student']}, batch size: {args.batch_size}\n"
        f"- distillation: loss={args.loss}, T={args.temperature:g}, alpha={args.alpha:g}, seed={args.seed}\n"
        f"- augmentation (training batches): shift {args.shift:g}, rotation {args.rotation:g} degrees (all "
        f"models), mixup {args.mixup:g} (students); the teacher runs online on the students' views when "
        f"augmenting; learning rate {args.learning_rate:g}, schedule: {args.lr_schedule}\n\n"
        f"{table}\n\n"
        "Size on disk: the .keras file without optimizer state. "
        "Latency: median of 50 single-image forward passes on this machine. "
        "Agreement and KL (T = 1) are measured against the teacher.\n\n"
        + (_export_table(exported) if exported else "")
        + "![predictions](predictions.png)\n\n![history](history.png)\n"
    )


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _export(student, out_dir, x_test, y_test):
    """Exports the distilled student and measures each format on the test split."""
    import numpy as np

    from kdkeras import export
    from kdkeras.evaluation import accuracy

    paths = export.export_student(student, os.path.join(out_dir, "export"))
    keras_logits = student.predict(x_test, batch_size=256, verbose=0)
    keras_accuracy = accuracy(keras_logits, y=y_test)
    results = {"saved_model": {"path": os.path.relpath(paths["saved_model"], out_dir),
                               "bytes": _dir_bytes(paths["saved_model"])}}
    for key in ("tflite_float32", "tflite_int8"):
        logits = export.tflite_predict(paths[key], x_test)
        results[key] = {
            "path": os.path.relpath(paths[key], out_dir),
            "bytes": os.path.getsize(paths[key]),
            "accuracy": accuracy(logits, y=y_test),
            "accuracy_keras": keras_accuracy,
            "max_abs_logit_diff_vs_keras": float(np.max(np.abs(logits - keras_logits))),
            "latency_ms_per_image": export.tflite_latency_ms(paths[key], x_test[0]),
        }
    return results


def _export_table(exported):
    rows = ["| format | size | test accuracy | max abs logit diff vs Keras | latency (ms/image) |",
            "|---|---|---|---|---|",
            f"| SavedModel (`{exported['saved_model']['path']}`) | "
            f"{exported['saved_model']['bytes'] / 1024:,.0f} KiB | — | — | — |"]
    for key, label in (("tflite_float32", "TFLite float32"), ("tflite_int8", "TFLite int8 (dynamic range)")):
        e = exported[key]
        rows.append(f"| {label} (`{e['path']}`) | {e['bytes'] / 1024:,.0f} KiB | {e['accuracy']:.4f} | "
                    f"{e['max_abs_logit_diff_vs_keras']:.2e} | {e['latency_ms_per_image']:.3f} |")
    return "## Exported student\n\n" + "\n".join(rows) + "\n\n"




# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #
def main(argv=None):
    """Console entry point (``kdkeras-train-mnist``, ``scripts/train_mnist.py``). Returns the exit status."""
    return execute(build_parser().parse_args(argv))


def execute(args, prog="train_mnist"):
    """Runs the job with parsed arguments; returns the exit status."""
    import_tensorflow_quietly("kdkeras.experiment")
    try:
        recipe = _check_args(args)
        run(args, recipe)
    except UserError as e:
        remove_if_new(args.out, getattr(args, "out_is_new", False))
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingFailed as e:
        print(f"{prog}: error: {e} (--resume --out {args.out} continues from the last completed epoch.)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; files already written are complete (--resume --out {args.out} continues).",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
