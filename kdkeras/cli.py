"""The main job: train a teacher, a scratch student and a distilled student on MNIST.

Run ``python scripts/train_mnist.py`` (or the installed ``kdkeras-train-mnist``)
with no arguments: it works offline on the bundled 5,000-digit sample and
finishes in minutes on 2 CPU cores. Read top to bottom, this file is the whole
idea of knowledge distillation in Keras:

1. load MNIST (tfds if available, else the bundled sample),
2. train the teacher (or load it with ``--teacher``),
3. train a student from scratch on the hard labels (the baseline),
4. distil an identical student (same architecture, seed and batches) from the teacher,
5. compare all three on the test split and write the models, metrics and plots.
"""

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import tempfile

from kdkeras._atomic import atomic_path

EXIT_USAGE = 2

# The default recipe ("patient and consistent" distillation; see the README for the
# measurements behind every number): augmented views shared by teacher and student,
# long cosine schedules, pure distillation (alpha = 0) at temperature 16.
DEFAULT_TEACHER_EPOCHS = 100
DEFAULT_STUDENT_EPOCHS = 100
DEFAULT_TEMPERATURE = 16.0
DEFAULT_ALPHA = 0.0
DEFAULT_SHIFT = 0.05
DEFAULT_ROTATION = 5.0
DEFAULT_MIXUP = 0.0
DEFAULT_LEARNING_RATE = 3e-3


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a user mistake in one line, without the usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


def build_parser():
    p = _OneLineParser(
        prog="train_mnist",
        description=(
            "Knowledge distillation on MNIST: trains the article teacher CNN, a small "
            "student from scratch and the same student distilled from the teacher, "
            "then compares them and writes models, metrics.json, report.md and plots."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="auto",
                   help='"auto" (tfds MNIST if available, else the bundled 5,000-digit '
                        'sample), "tfds", "sample", or a path to an .npz file')
    p.add_argument("--teacher-epochs", type=int, default=DEFAULT_TEACHER_EPOCHS, help="epochs to train the teacher")
    p.add_argument("--student-epochs", type=int, default=DEFAULT_STUDENT_EPOCHS,
                   help="epochs for the scratch and the distilled student (each)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="distillation temperature T > 0")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="weight of the hard-label loss in [0, 1]; 1 - alpha weighs the distillation loss")
    p.add_argument("--loss", default="kl",
                   help="distillation loss: a name from kdkeras.losses.available()")
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, shuffling)")
    p.add_argument("--out", default=None,
                   help="output directory (default: runs/mnist/<timestamp>)")
    p.add_argument("--teacher", default=None, metavar="PATH",
                   help="load a trained teacher from this .keras file instead of training one")
    p.add_argument("--shift", type=float, default=DEFAULT_SHIFT, metavar="FRACTION",
                   help="random shift of every training image, up to this fraction of its height and "
                        "width (kdkeras.augment; all three models; 0 turns it off). With any augmentation "
                        "the teacher runs online on the students' augmented views")
    p.add_argument("--rotation", type=float, default=DEFAULT_ROTATION, metavar="DEGREES",
                   help="random rotation of every training image, up to this many degrees (0 turns it off)")
    p.add_argument("--mixup", type=float, default=DEFAULT_MIXUP, metavar="STRENGTH",
                   help="mixup for the students (Beta(STRENGTH, STRENGTH) blend of two images and their "
                        "one-hot labels; the teacher sees the blends online); 0 turns it off")
    p.add_argument("--lr-schedule", default="cosine", choices=("cosine", "constant"),
                   help="learning-rate schedule of every model: cosine decay to 0 over its epochs, or constant")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="run the teacher online every step instead of caching its logits once "
                        "(only without augmentation: augmented views always need the online teacher)")
    p.add_argument("--strategy", default="default", choices=("default", "mirrored", "multiworker"),
                   help="tf.distribute strategy: default (one device), mirrored (all local GPUs, "
                        "synchronous), multiworker (several machines; each runs this command "
                        "with its TF_CONFIG; the chief (worker 0) writes the outputs)")
    p.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                   help="Adam learning rate for the teacher and both students")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out: finished models are loaded, an "
                        "interrupted training continues from its last completed epoch")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism (bit-identical reruns and resumes; slower)")
    p.add_argument("--export", action="store_true",
                   help="also export the distilled student to export/ as a SavedModel and "
                        "TensorFlow Lite (float32 and dynamic-range int8), with their accuracy, "
                        "size and latency in metrics.json")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                   help="Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch")
    return p


# --------------------------------------------------------------------------- #
# Argument checks: every user mistake is found before any training starts.
# --------------------------------------------------------------------------- #
def _readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _check_args(args):
    import kdkeras

    for name in ("teacher_epochs", "student_epochs", "batch_size"):
        value = getattr(args, name)
        if value < 1 and not (name == "teacher_epochs" and args.teacher):
            raise UserError(f"--{name.replace('_', '-')} must be >= 1; received {value}.")
    try:
        kdkeras.losses.check_temperature(args.temperature)
        kdkeras.losses.check_alpha(args.alpha)
        kdkeras.losses.get(args.loss)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    if not (math.isfinite(args.shift) and 0 <= args.shift <= 0.5):
        raise UserError(f"--shift must be a fraction in [0, 0.5]; received {args.shift}.")
    if not (math.isfinite(args.rotation) and 0 <= args.rotation <= 180):
        raise UserError(f"--rotation must be in [0, 180] degrees; received {args.rotation}.")
    if not (math.isfinite(args.mixup) and args.mixup >= 0):
        raise UserError(f"--mixup must be a number >= 0 (0 turns it off); received {args.mixup}.")
    if args.mixup > 0 and kdkeras.losses.takes_labels(kdkeras.losses.get(args.loss)):
        raise UserError(f"--loss {args.loss} needs each example's hard label, which mixup blends away; "
                        "pass --mixup 0 or another loss.")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UserError(f"--learning-rate must be a positive number; received {args.learning_rate}.")
    if args.resume and args.out is None:
        raise UserError("--resume continues the run in --out DIR; pass the directory of the interrupted run.")
    if args.resume and args.strategy == "multiworker":
        raise UserError("--resume is not supported with --strategy multiworker (only the chief keeps "
                        "files); rerun the workers from the start.")
    if args.data not in ("auto", "tfds", "sample") and not _readable_file(args.data):
        raise UserError(f"--data {args.data!r} is not a readable file (or auto, tfds, sample).")
    if args.teacher is not None and not _readable_file(args.teacher):
        raise UserError(f"--teacher {args.teacher!r} is not a readable .keras file.")
    if args.strategy == "multiworker":
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
            tf_config["cluster"], tf_config["task"]
        except (KeyError, TypeError, IndexError):
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                            "(cluster and task) on every worker; see the README.") from None
        except ValueError as e:
            raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join("runs", "mnist", stamp)
    try:
        os.makedirs(args.out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"--out {args.out!r} is not a writable directory ({e.strerror or e}).") from None


# --------------------------------------------------------------------------- #
# Atomic outputs: write to a temporary name in the same directory, then rename.
# --------------------------------------------------------------------------- #
def save_model(model, path):
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


class TrainingFailed(Exception):
    """Training stopped on a numerical fault: reported in one line, exit status 1."""


# --------------------------------------------------------------------------- #
# Stages: each model is trained with crash-safe backups and saved when done.
# --------------------------------------------------------------------------- #
STATE_DIR = ".kdkeras-state"
_MODEL_FILES = {"teacher": "teacher.keras", "scratch": "student_scratch.keras", "distilled": "student.keras"}
_HISTORY_NAMES = {"teacher": "teacher", "scratch": "scratch student", "distilled": "distilled student"}


def _epoch_log(path, previous):
    """A Keras callback that keeps the per-epoch logs in a JSON file, rewritten atomically."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.history = {k: list(v) for k, v in previous.items()}

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            write_text(path, json.dumps(self.history))

    return EpochLog()


class _Stages:
    """Trains, saves and (with --resume) reloads the three models of the job.

    Per stage, ``OUT/.kdkeras-state/`` holds the backup of the last completed
    epoch (``<stage>/``, see ``kdkeras.callbacks.AtomicBackupAndRestore``), the
    per-epoch logs so far (``<stage>.epochs.json``) and, once the model is saved
    in ``OUT``, ``<stage>.done.json`` with its history. A new run (no --resume)
    clears this directory first.
    """

    def __init__(self, args, out_dir, validation_data, options):
        self.args, self.out_dir, self.validation_data = args, out_dir, validation_data
        self.options = options
        self.root = os.path.join(out_dir, STATE_DIR)
        if not args.resume:
            shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)
        self.histories = {}

    def _path(self, key, suffix):
        return os.path.join(self.root, key + suffix)

    def finished(self, key):
        return (self.args.resume and os.path.exists(self._path(key, ".done.json"))
                and os.path.exists(os.path.join(self.out_dir, _MODEL_FILES[key])))

    def load(self, key, strategy):
        import keras

        from kdkeras.distribute import multiworker_compatible

        path = os.path.join(self.out_dir, _MODEL_FILES[key])
        with strategy.scope():
            model = multiworker_compatible(keras.models.load_model(path))
        with open(self._path(key, ".done.json"), encoding="utf-8") as f:
            self.histories[_HISTORY_NAMES[key]] = json.load(f)
        print(f"{_HISTORY_NAMES[key].capitalize()}: finished earlier; loaded {path}")
        return model

    def train(self, key, fit_model, saved_model, data, epochs, augment=None):
        """Fits ``fit_model`` for ``epochs`` (continuing from a backup), then saves ``saved_model``.

        ``augment(dataset, initial_step)``, if given, augments the ordered batches
        (its random numbers depend on the step only, so a resume sees the same views).
        """
        from kdkeras.callbacks import (
            AtomicBackupAndRestore, NonFiniteLossError, StopOnNonFinite, latest_backup_epoch)

        from kdkeras.data import fixed_epoch_order

        backup = self._path(key, "")
        done = latest_backup_epoch(backup) if self.args.resume else 0
        # Every epoch's order is a function of (seed, epoch): a resumed run sees the
        # batches that the interrupted run would have seen.
        first_epoch = min(done, epochs - 1)
        data, steps = fixed_epoch_order(data, epochs, self.args.seed, initial_epoch=first_epoch)
        if augment is not None:
            data = augment(data, first_epoch * steps)
        data = data.with_options(self.options)
        previous = {}
        if done:
            print(f"  resuming at epoch {done + 1} of {epochs} from the backup in {backup}")
            with open(self._path(key, ".epochs.json"), encoding="utf-8") as f:
                previous = {k: v[:done] for k, v in json.load(f).items()}
        log = _epoch_log(self._path(key, ".epochs.json"), previous)
        # Order matters: the epoch log is written before the backup that vouches for it.
        callbacks = [log, AtomicBackupAndRestore(backup), StopOnNonFinite()]
        try:
            fit_model.fit(data, epochs=epochs, steps_per_epoch=steps, validation_data=self.validation_data,
                          verbose=self.args.verbose, callbacks=callbacks,
                          shuffle=False)  # the datasets reshuffle themselves, with their seed
        except NonFiniteLossError as e:
            kept = latest_backup_epoch(backup)
            raise TrainingFailed(
                f"{_HISTORY_NAMES[key]}: {e} "
                + (f"The backup of epoch {kept} is in {backup}." if kept else "No epoch had completed.")
            ) from None
        save_model(saved_model, os.path.join(self.out_dir, _MODEL_FILES[key]))
        write_text(self._path(key, ".done.json"), json.dumps(log.history))
        shutil.rmtree(backup, ignore_errors=True)
        os.remove(self._path(key, ".epochs.json"))
        self.histories[_HISTORY_NAMES[key]] = log.history


# --------------------------------------------------------------------------- #
# Export
# --------------------------------------------------------------------------- #
def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _export(student, out_dir, x_test, y_test):
    """Exports the distilled student and measures each format on the test split."""
    import numpy as np

    from kdkeras import export

    paths = export.export_student(student, os.path.join(out_dir, "export"))
    keras_logits = student.predict(x_test, batch_size=256, verbose=0)
    keras_accuracy = float(np.mean(np.argmax(keras_logits, -1) == y_test))
    results = {"saved_model": {"path": os.path.relpath(paths["saved_model"], out_dir),
                               "bytes": _dir_bytes(paths["saved_model"])}}
    for key in ("tflite_float32", "tflite_int8"):
        logits = export.tflite_predict(paths[key], x_test)
        results[key] = {
            "path": os.path.relpath(paths[key], out_dir),
            "bytes": os.path.getsize(paths[key]),
            "accuracy": float(np.mean(np.argmax(logits, -1) == y_test)),
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
# The job
# --------------------------------------------------------------------------- #
def run(args):
    """Runs the main job with parsed, checked arguments; returns the metrics dict."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the CLI's output is Keras' progress and the table
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF work.
    strategy, is_chief = make_strategy(args.strategy)
    out_dir = args.out if is_chief else tempfile.mkdtemp(prefix="kdkeras-worker-")
    try:
        return _run(args, strategy, out_dir, is_chief)
    finally:
        if not is_chief:
            shutil.rmtree(out_dir, ignore_errors=True)


def make_strategy(name):
    """Returns ``(strategy, is_chief)`` for ``--strategy``.

    ``mirrored`` replicates the models on every local GPU (or the CPU when there
    is none) and all-reduces the gradients. ``multiworker`` does the same across
    machines described by ``TF_CONFIG``; every worker runs the same command, and
    only the chief (worker 0, or the task of type ``chief``) keeps the outputs.
    The global batch is ``--batch-size`` in every case: each replica gets an
    equal share of it, and the Distiller divides the loss by the global batch.
    """
    import tensorflow as tf

    if name == "mirrored":
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


def _run(args, strategy, out_dir, is_chief):
    import keras
    import numpy as np
    import tensorflow as tf

    import kdkeras
    from kdkeras import evaluation, plotting
    from kdkeras.data import NUM_CLASSES
    from kdkeras.distribute import multiworker_compatible

    # With mixup the training labels are blends of one-hot labels, so every label is
    # one-hot (the test split too) and the losses and accuracies are categorical.
    soft_labels = args.mixup > 0

    def logits_loss():
        if soft_labels:
            return keras.losses.CategoricalCrossentropy(from_logits=True)
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def accuracy():
        if soft_labels:
            return keras.metrics.CategoricalAccuracy(name="accuracy")
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # 1. Data -----------------------------------------------------------------
    try:
        arrays, source = kdkeras.load_mnist_arrays(args.data, return_source=True)
    except (ValueError, OSError, kdkeras.DatasetUnavailableError) as e:
        raise UserError(f"could not load --data {args.data!r}: {e}") from None
    (x_train, y_train), (x_test, y_test) = arrays
    data_label = {
        "tfds": "full MNIST (tensorflow-datasets), 60,000 train / 10,000 test",
        "sample": "bundled 5,000-digit MNIST sample, 4,000 train / 1,000 test (not full MNIST)",
    }.get(source, f"{source}, {len(x_train):,} train / {len(x_test):,} test")
    print(f"Data: {data_label}")

    options = tf.data.Options()
    # In-memory arrays cannot be split by file: every worker takes its share of each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    # Labels as the losses see them (integer, or one-hot with mixup; also for the teacher and
    # the test split). compare(), the export and the plots use the integer y_test.
    fit_y_train, fit_y_test = y_train, y_test
    if soft_labels:
        fit_y_train, fit_y_test = (np.eye(NUM_CLASSES, dtype="float32")[y] for y in (y_train, y_test))

    def train_ds():
        return kdkeras.make_dataset(x_train, fit_y_train, args.batch_size, shuffle=True, seed=args.seed)

    test_ds = kdkeras.make_dataset(x_test, fit_y_test, args.batch_size).with_options(options)

    def augment(mixup):
        """The training-batch augmentation of a stage (None: no augmentation)."""
        if not (args.shift or args.rotation or mixup):
            return None
        return lambda ds, initial_step: kdkeras.augment.augment(
            ds, args.seed, max_shift=args.shift, max_rotation=args.rotation,
            mixup_strength=mixup or None, num_classes=NUM_CLASSES, initial_step=initial_step)

    augmented = augment(args.mixup) is not None  # the students' views are random: the teacher must run online
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    if strategy.num_replicas_in_sync > 1:
        print(f"Strategy: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replicas, "
              f"global batch {args.batch_size}")
    stages = _Stages(args, out_dir, test_ds, options)

    def adam(epochs):
        if args.lr_schedule == "cosine":
            return keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(args.learning_rate, epochs * steps_per_epoch))
        return keras.optimizers.Adam(args.learning_rate)

    # 2. Teacher --------------------------------------------------------------
    keras.utils.set_random_seed(args.seed)
    if args.teacher:
        try:
            with strategy.scope():
                teacher = multiworker_compatible(keras.models.load_model(args.teacher))  # safe_mode on
        except Exception as e:  # noqa: BLE001 - any unreadable model is a user error here
            raise UserError(f"could not load --teacher {args.teacher!r}: {e}") from None
        print(f"Teacher: loaded from {args.teacher}")
    elif stages.finished("teacher"):
        teacher = stages.load("teacher", strategy)
    else:
        print(f"Teacher: training for {args.teacher_epochs} epochs" + _augment_note(args, mixup=False))
        with strategy.scope():
            teacher = multiworker_compatible(kdkeras.build_teacher(seed=args.seed))
            teacher.compile(optimizer=adam(args.teacher_epochs), loss=logits_loss(), metrics=[accuracy()])
        stages.train("teacher", teacher, teacher, train_ds(), args.teacher_epochs, augment(0.0))

    # 3. Student from scratch (hard labels only): the baseline ------------------
    keras.utils.set_random_seed(args.seed)
    if stages.finished("scratch"):
        scratch = stages.load("scratch", strategy)
    else:
        print(f"Scratch student: training for {args.student_epochs} epochs on hard labels"
              + _augment_note(args, mixup=True))
        with strategy.scope():
            scratch = multiworker_compatible(kdkeras.build_student(seed=args.seed, name="student_scratch"))
            scratch.compile(optimizer=adam(args.student_epochs), loss=logits_loss(), metrics=[accuracy()])
        stages.train("scratch", scratch, scratch, train_ds(), args.student_epochs, augment(args.mixup))

    # 4. The same student, distilled from the teacher ---------------------------
    keras.utils.set_random_seed(args.seed)
    if stages.finished("distilled"):
        student = stages.load("distilled", strategy)
    else:
        print(
            f"Distilled student: {args.student_epochs} epochs, loss={args.loss}, "
            f"T={args.temperature:g}, alpha={args.alpha:g}"
            + (_augment_note(args, mixup=True) + "; the teacher runs online on the same views"
               if augmented else " (teacher logits cached once)" if args.cache else " (online teacher)")
        )
        with strategy.scope():
            student = kdkeras.build_student(seed=args.seed, name="student")
            distiller = kdkeras.Distiller(student=student, teacher=teacher)
            distiller.compile(
                optimizer=adam(args.student_epochs),
                metrics=[accuracy()],
                student_loss_fn=logits_loss(),
                distillation_loss_fn=args.loss,
                alpha=args.alpha,
                temperature=args.temperature,
            )
        data = train_ds()
        if args.cache and not augmented:
            data = kdkeras.cache_teacher_logits(teacher, data, shuffle=True, seed=args.seed)
        stages.train("distilled", distiller, student, data, args.student_epochs, augment(args.mixup))
    histories = stages.histories

    # 5. Save, compare, plot ------------------------------------------------------
    # (Each model was saved when its training finished; --teacher is copied here.)
    if args.teacher:
        save_model(teacher, os.path.join(out_dir, "teacher.keras"))
    models = {"teacher": teacher, "student (distilled)": student, "student (scratch)": scratch}
    metrics = evaluation.compare(models, (x_test, y_test), teacher=teacher)
    table = evaluation.format_table(metrics)
    exported = _export(student, out_dir, x_test, y_test) if args.export and is_chief else None
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "data": data_label,
        "args": dict(vars(args)),
    }
    write_text(
        os.path.join(out_dir, "metrics.json"),
        json.dumps({"run": meta, "models": metrics, **({"export": exported} if exported else {})},
                   indent=2) + "\n",
    )
    write_text(
        os.path.join(out_dir, "report.md"),
        "# kdkeras MNIST distillation report\n\n"
        f"- date: {meta['date']}\n- data: {data_label} (metrics on the test split)\n"
        f"- teacher epochs: {args.teacher_epochs if not args.teacher else 'loaded: ' + args.teacher}, "
        f"student epochs: {args.student_epochs}, batch size: {args.batch_size}\n"
        f"- distillation: loss={args.loss}, T={args.temperature:g}, alpha={args.alpha:g}, seed={args.seed}\n"
        f"- augmentation (training batches): shift {args.shift:g}, rotation {args.rotation:g} degrees (all "
        f"models), mixup {args.mixup:g} (students); the teacher runs online on the students' views when "
        f"augmenting; learning rate {args.learning_rate:g}, schedule: {args.lr_schedule}\n\n"
        f"{table}\n\n"
        "Size on disk: the .keras file without optimizer state. "
        "Latency: median of 50 single-image forward passes on this machine. "
        "Agreement and KL (T = 1) are measured against the teacher.\n\n"
        + (_export_table(exported) if exported else "")
        +
        "![predictions](predictions.png)\n\n![history](history.png)\n",
    )
    plotting.plot_predictions(
        {"teacher": teacher, "distilled": student, "scratch": scratch},
        x_test, y_test, n=24, seed=args.seed, path=os.path.join(out_dir, "predictions.png"),
    )
    plotting.plot_history(histories, path=os.path.join(out_dir, "history.png"))

    print("\n" + table + "\n")
    if is_chief:
        print(f"Wrote models, metrics.json, report.md, predictions.png and history.png to {out_dir}")
    else:
        print("Worker done; the chief wrote the outputs.")
    return metrics


def main(argv=None):
    """Console entry point (``kdkeras-train-mnist``). Returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        _check_args(args)
        run(args)
    except UserError as e:
        print(f"train_mnist: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingFailed as e:
        print(f"train_mnist: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train_mnist: interrupted; files already written are complete.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
