"""Wall-clock time until a distilled student first reaches a test accuracy, trainer against trainer.

    python scripts/time_to_accuracy.py --to-accuracy 0.985 --data ../shared/data/mnist.npz --seeds 0 1 2
    python scripts/time_to_accuracy.py --resummarize docs/results/time_to_accuracy_mlp.json

For every seed one teacher is trained (outside the clock) and one
student initialisation is drawn; then every trainer starts from those same
student weights and sees the same batches:

- ``student alone``: the student on hard labels (the reference; ``scratch`` in result files written
  before the name was shared with ``scripts/benchmark.py``, which are read either way);
- ``keras.distillation``: ``keras.distillation.Distiller`` with
  ``LogitsDistillation(loss=keras.losses.KLDivergence())``;
- ``keras.io example``: the keras.io "Knowledge Distillation" example's
  ``Distiller``, its ``train_step`` written the way the example writes it
  (teacher forward every step, softened softmaxes into ``KLDivergence``);
- ``kdkeras online``: :class:`kdkeras.Distiller`, teacher run every step;
- ``kdkeras cached``: the same on logits cached once (the cache build is on
  its clock; the teacher is called ``inference_batch_size`` digits at a time,
  the training batch when that is not set).

``--trainers`` picks others too (the levers, each one change to ``kdkeras
cached``): ``+spe`` (``steps_per_execution``: several steps per
``tf.function`` call), ``+jit`` (``jit_compile=True``), ``+bf16``
(``mixed_bfloat16``), ``+batch`` (a larger batch, learning rate scaled by the
square root of the batch ratio unless ``large_batch_learning_rate`` is given),
``+spe+jit``, ``+spe+bf16``, ``+spe+batch``; ``+spe+batch+cosine`` (the
same, with the rate decayed to zero along a cosine over ``decay_epochs``
epochs, as the main job's recipe does over its budget); ``keras.distillation
+batch`` and ``keras.distillation +batch+cosine`` (Keras' trainer with the
same larger batch and rate, and schedule, for a like-for-like comparison);
and ``bare step``, the student's train step (the same loss on the same cached
logits) called from a Python loop over in-memory tensors: no ``tf.data``, no
``fit``, no callbacks, the floor the cached Distiller's epoch is compared with.

The trainers take turns, one epoch each per round, so a slow patch of a shared
machine hits them alike. After every epoch each student is evaluated on the
test split (or, to choose a setting, on a validation split carved from the
training digits: ``settings["split"] == "validation"``) with the clock
stopped. The record keeps every epoch's time and accuracy, so the time to any
accuracy can be read from it afterwards.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

TRAINERS = ("student alone", "keras.distillation", "keras.io example", "kdkeras online", "kdkeras cached")
LEVERS = ("keras.distillation +batch", "keras.distillation +batch+cosine", "kdkeras cached +spe",
          "kdkeras cached +jit", "kdkeras cached +bf16", "kdkeras cached +batch", "kdkeras cached +spe+jit",
          "kdkeras cached +spe+bf16", "kdkeras cached +spe+batch", "kdkeras cached +spe+batch+cosine", "bare step")
ALL_TRAINERS = TRAINERS + LEVERS


def _keras_io_distiller():
    """The keras.io example's Distiller (classic ``train_step`` form), built on first use."""
    import keras
    import tensorflow as tf

    class KerasIoDistiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher = teacher
            self.student = student

        def compile(self, optimizer, student_loss_fn, distillation_loss_fn, alpha=0.1, temperature=3):
            super().compile(optimizer=optimizer)
            self.student_loss_fn = student_loss_fn
            self.distillation_loss_fn = distillation_loss_fn
            self.alpha = alpha
            self.temperature = temperature
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

        def train_step(self, data):
            x, y = data
            # Forward pass of teacher
            teacher_predictions = self.teacher(x, training=False)
            with tf.GradientTape() as tape:
                # Forward pass of student
                student_predictions = self.student(x, training=True)
                # Compute losses
                student_loss = self.student_loss_fn(y, student_predictions)
                distillation_loss = self.distillation_loss_fn(
                    tf.nn.softmax(teacher_predictions / self.temperature, axis=1),
                    tf.nn.softmax(student_predictions / self.temperature, axis=1),
                ) * self.temperature**2
                loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            # Compute gradients and update weights
            gradients = tape.gradient(loss, self.student.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, self.student.trainable_variables))
            self.accuracy.update_state(y, student_predictions)
            return {"accuracy": self.accuracy.result(), "student_loss": student_loss,
                    "distillation_loss": distillation_loss}

        def call(self, x):
            return self.student(x)

    return KerasIoDistiller


def make_trainer(name, student, teacher, train, settings):
    """``(model_to_fit, dataset, seconds spent before the first epoch)`` for one trainer."""
    import keras

    import kdkeras

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t, alpha = settings["temperature"], settings["alpha"]
    batch, rate = settings["batch_size"], settings["learning_rate"]
    if "+batch" in name:
        batch = settings["large_batch"]
        rate = settings.get("large_batch_learning_rate") or rate * (batch / settings["batch_size"]) ** 0.5
    if "+cosine" in name:  # to zero over decay_epochs epochs of ceil(n / batch) steps, then held there
        steps = settings["decay_epochs"] * -(-len(train[0]) // batch)
        rate = keras.optimizers.schedules.CosineDecay(rate, steps)
    adam = keras.optimizers.Adam(rate)
    data = kdkeras.make_dataset(*train, batch, shuffle=True, seed=settings["seed"])
    if name in ("student alone", "scratch"):
        student.compile(optimizer=adam, loss=ce)
        return student, data, 0.0
    if name.startswith("keras.distillation"):
        from keras import distillation

        model = distillation.Distiller(
            teacher=teacher, student=student, student_loss_weight=alpha,
            distillation_losses=distillation.LogitsDistillation(temperature=t, loss=keras.losses.KLDivergence()))
        model.compile(optimizer=adam, loss=ce)
        return model, data, 0.0
    if name == "keras.io example":
        model = _keras_io_distiller()(student=student, teacher=teacher)
        model.compile(optimizer=adam, student_loss_fn=ce, distillation_loss_fn=keras.losses.KLDivergence(),
                      alpha=alpha, temperature=t)
        return model, data, 0.0
    if name == "bare step":
        return _bare_step(student, teacher, train, settings)
    model = kdkeras.Distiller(student=student, teacher=teacher)
    model.compile(optimizer=adam, student_loss_fn=ce, alpha=alpha, temperature=t, jit_compile="+jit" in name,
                  steps_per_execution=settings["steps_per_execution"] if "+spe" in name else 1)
    if name == "kdkeras online":
        return model, data, 0.0
    start = time.perf_counter()
    cached = kdkeras.cache_teacher_logits(teacher, train, batch_size=batch, shuffle=True, seed=settings["seed"],
                                          inference_batch_size=settings.get("inference_batch_size"))
    return model, cached, time.perf_counter() - start


class _BareStep:
    """The student's train step from a Python loop over in-memory batches; ``fit(_, epochs=1)`` runs one epoch."""

    def __init__(self, student, x, logits, y, settings):
        import keras
        import tensorflow as tf

        from kdkeras import losses

        self.student, self.settings = student, settings
        self.optimizer = keras.optimizers.Adam(settings["learning_rate"])
        self.optimizer.build(student.trainable_variables)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        t, alpha = settings["temperature"], settings["alpha"]
        self.x, self.logits, self.y = (tf.convert_to_tensor(a) for a in (x, logits, y))
        self.epoch = 0

        @tf.function(jit_compile=False, reduce_retracing=True)
        def step(xb, tb, yb):
            with tf.GradientTape() as tape:
                zs = student(xb, training=True)
                loss = alpha * ce(yb, zs) + (1 - alpha) * tf.reduce_mean(losses.kl_divergence(tb, zs, t))
            grads = tape.gradient(loss, student.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, student.trainable_variables))
            return loss

        self.step = step

    def fit(self, _data=None, epochs=1, verbose=0):
        import numpy as np
        import tensorflow as tf

        batch, n = self.settings["batch_size"], int(self.x.shape[0])
        for _ in range(epochs):
            order = tf.constant(np.random.default_rng((self.settings["seed"], self.epoch)).permutation(n))
            x, t, y = (tf.gather(a, order) for a in (self.x, self.logits, self.y))
            for start in range(0, n, batch):
                self.step(x[start:start + batch], t[start:start + batch], y[start:start + batch])
            self.epoch += 1


def _bare_step(student, teacher, train, settings):
    import kdkeras

    start = time.perf_counter()
    (cached, y) = kdkeras.data.teacher_logit_arrays(teacher, train, batch_size=settings["batch_size"])[:2]
    model = _BareStep(student, train[0], cached["teacher_logits"], y, settings)
    return model, None, time.perf_counter() - start


def first_reach(accuracies, seconds, target):
    """``(epochs, cumulative seconds)`` at the first epoch whose accuracy is >= target, or ``(None, None)``."""
    elapsed = np.cumsum(seconds)
    for epoch, accuracy in enumerate(accuracies):
        if accuracy >= target:
            return epoch + 1, float(elapsed[epoch])
    return None, None


def run_seed(seed, pair, arrays, settings, log, trainer_names=TRAINERS):
    """Trains every trainer for up to ``max_epochs`` in turns; returns their per-epoch records."""
    import keras

    import kdkeras
    from kdkeras import experiment
    from kdkeras.evaluation import accuracy

    (x, y), (x_eval, y_eval) = arrays  # the test split, or a validation split when choosing a setting
    start = time.perf_counter()
    recipe = kdkeras.Recipe(teacher_epochs=settings["teacher_epochs"], shift=0.0, rotation=0.0, seed=seed,
                            learning_rate=1e-3, lr_schedule="constant")
    teacher_model = pair["teacher"](seed)
    teacher = experiment.train_teacher(teacher_model, (x, y), recipe, verbose=0).model
    teacher_accuracy = accuracy(teacher, x_eval, y_eval)
    log(f"seed {seed}: teacher {teacher_accuracy:.4f} after {settings['teacher_epochs']} epochs "
        f"({(time.perf_counter() - start) / 60:.1f} min, outside the clock)")
    initial = pair["student"](seed).get_weights()
    trainers = {}
    for name in trainer_names:
        keras.utils.set_random_seed(seed)
        keras.config.set_dtype_policy("mixed_bfloat16" if "+bf16" in name else "float32")
        student = pair["student"](seed)  # mixed_bfloat16 keeps float32 variables: the same initial weights fit
        keras.config.set_dtype_policy("float32")
        student.set_weights(initial)
        model, data, setup = make_trainer(name, student, teacher, (x, y), {**settings, "seed": seed})
        trainers[name] = {"model": model, "student": student, "data": data, "setup_seconds": setup,
                          "epoch_seconds": [], "accuracy": []}
    for epoch in range(settings["max_epochs"]):
        names = tuple(trainer_names)
        order = names[epoch % len(names):] + names[: epoch % len(names)]
        for name in order:
            t = trainers[name]
            tick = time.perf_counter()
            t["model"].fit(t["data"], epochs=1, verbose=0)
            t["epoch_seconds"].append(time.perf_counter() - tick)
            t["accuracy"].append(accuracy(t["student"], x_eval, y_eval))  # clock stopped
        log(f"seed {seed} epoch {epoch + 1}: " + ", ".join(
            f"{n} {trainers[n]['accuracy'][-1]:.4f} ({trainers[n]['epoch_seconds'][-1]:.1f} s)" for n in trainer_names))
    return {"seed": seed, "teacher_accuracy": teacher_accuracy,
            "trainers": {n: {k: t[k] for k in ("setup_seconds", "epoch_seconds", "accuracy")}
                         for n, t in trainers.items()}}


def summarize(runs, target):
    """Medians over seeds of the time and epochs to ``target`` and to the scratch student's best accuracy.

    Besides the clock, each seed's time to the target is also estimated as the setup plus the epochs to the
    target times the trainer's median epoch on that seed (``steady_seconds_to_target``): on a shared machine
    that stalls now and then, one stall in the epochs before the target otherwise decides the ratio.
    """
    summary = {}
    names = list(runs[0]["trainers"])
    for name in names:
        per_seed = []
        for run in runs:
            t = run["trainers"][name]
            seconds = [s + (t["setup_seconds"] if i == 0 else 0.0) for i, s in enumerate(t["epoch_seconds"])]
            scratch = run["trainers"].get("student alone") or run["trainers"].get("scratch")
            scratch_best = max(scratch["accuracy"]) if scratch else 2.0  # 2.0: never reached (no scratch run)
            epochs, clock = first_reach(t["accuracy"], seconds, target)
            epochs_best, clock_best = first_reach(t["accuracy"], seconds, scratch_best)
            typical = statistics.median(t["epoch_seconds"])
            per_seed.append({"epochs_to_target": epochs, "seconds_to_target": clock,
                             "steady_seconds_to_target": t["setup_seconds"] + epochs * typical if epochs else None,
                             "epochs_to_scratch_best": epochs_best, "seconds_to_scratch_best": clock_best,
                             "best_accuracy": max(t["accuracy"]), "median_epoch_seconds": typical,
                             "setup_seconds": t["setup_seconds"]})

        def median(key):
            values = [p[key] for p in per_seed]
            return statistics.median(values) if all(v is not None for v in values) else None

        summary[name] = {"per_seed": per_seed, **{f"median_{k}": median(k) for k in per_seed[0]}}
    for key, ratio in (("median_seconds_to_target", "vs_keras_distillation"),
                       ("median_steady_seconds_to_target", "steady_vs_keras_distillation")):
        reference = summary.get("keras.distillation", {}).get(key)
        for name in names:
            mine = summary[name][key]
            summary[name][ratio] = mine / reference if mine and reference else None
    if "bare step" in summary and "kdkeras cached" in summary:  # the Distiller's and tf.data's overhead
        bare = summary["bare step"]["median_median_epoch_seconds"]
        for name in names:
            summary[name]["epoch_vs_bare_step"] = summary[name]["median_median_epoch_seconds"] / bare
    return summary


def large_batch_rate(settings):
    """How the +batch levers set Adam's learning rate, in words."""
    rate = settings.get("large_batch_learning_rate")
    words = f"Adam {rate:g}" if rate else "learning rate x sqrt of the batch ratio"
    if settings.get("decay_epochs"):
        words += f"; +cosine: decayed to 0 over {settings['decay_epochs']} epochs"
    return words


def markdown(record):
    s, target = record["summary"], record["settings"]["target"]
    split = record["settings"].get("split", "test")
    prov = record["provenance"]
    ran = set(record["runs"][0]["trainers"])
    # A missing value is "not reached", or "—" in a column whose reference trainer did not run.
    fmt = lambda v, spec, missing="not reached": missing if v is None else format(v, spec)  # noqa: E731
    scratch_missing, bare_missing = ("not reached" if ran & set(n) else "—"
                                     for n in (("student alone", "scratch"), ("bare step",)))
    lines = [
        f"## {prov['date'][:10]} — time to {target:g} {split} accuracy, {record['settings']['pair']} pair",
        "",
        f"- command: `{prov['command']}`",
        f"- machine: {prov['machine']}; TensorFlow {prov['tensorflow']}, Keras {prov['keras']}",
        f"- data: {prov['data']}",
        f"- method: per seed one teacher ({record['settings']['teacher_epochs']} epochs, outside the clock) and "
        "one student initialisation shared by every trainer; trainers take turns one epoch each; the "
        f"{split} split is evaluated after every epoch with the clock stopped; cache building is on the cached "
        "trainer's clock" + (f" (teacher calls of {record['settings']['inference_batch_size']} digits). "
                             if record["settings"].get("inference_batch_size") else ". ") +
        f"Batch {record['settings']['batch_size']}, Adam {record['settings']['learning_rate']:g}, "
        f"T = {record['settings']['temperature']:g}, alpha = {record['settings']['alpha']:g}, no augmentation; "
        f"levers: steps_per_execution {record['settings'].get('steps_per_execution')}, larger batch "
        f"{record['settings'].get('large_batch')} ({large_batch_rate(record['settings'])}); "
        f"medians over seeds {', '.join(str(r['seed']) for r in record['runs'])}; at most "
        f"{record['settings']['max_epochs']} epochs.",
        "",
        f"| trainer | s to {target:g} | epochs to {target:g} | vs keras.distillation | same, at median epoch "
        "time | s to scratch's best | best accuracy | s/epoch | epoch / bare step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in s.items():
        lines.append(f"| {name} | {fmt(v['median_seconds_to_target'], '.1f')} | "
                     f"{fmt(v['median_epochs_to_target'], 'g')} | {fmt(v['vs_keras_distillation'], '.2f')} | "
                     f"{fmt(v.get('steady_vs_keras_distillation'), '.2f')} | "
                     f"{fmt(v['median_seconds_to_scratch_best'], '.1f', scratch_missing)} | {v['median_best_accuracy']:.4f} | "
                     f"{v['median_median_epoch_seconds']:.2f} | {fmt(v.get('epoch_vs_bare_step'), '.2f', bare_missing)} |")
    teachers = ", ".join(f"{r['teacher_accuracy']:.4f}" for r in record["runs"])
    lines += ["", f"Teacher {split} accuracy per seed: {teachers}. A median is \"not reached\" when any seed did not "
                  "reach the accuracy within the epochs allowed. \"At median epoch time\": each seed's epochs to the "
                  "target times that trainer's median epoch on that seed, plus its setup, so that a stall of the "
                  "shared machine during one epoch does not decide the ratio.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# The command line
# --------------------------------------------------------------------------- #
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--to-accuracy", type=float, default=None, metavar="A",
                   help="the accuracy to reach (required unless --resummarize)")
    p.add_argument("--data", default="sample", help="sample, or an .npz in Keras' layout")
    p.add_argument("--pair", default="article", choices=("article", "mlp"),
                   help="article CNN teacher -> article student, or article CNN teacher -> "
                        "Hinton et al.'s 784-800-800-10 MLP")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=12, help="epochs per trainer at most")
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, constant")
    p.add_argument("--trainers", nargs="+", default=None, metavar="NAME",
                   help="the trainers to run (default: the five of the comparison; the levers: "
                        "'kdkeras cached +spe', '+jit', '+bf16', '+batch', '+spe+jit', '+spe+bf16', '+spe+batch', "
                        "'+spe+batch+cosine', 'keras.distillation +batch', 'keras.distillation +batch+cosine' and "
                        "'bare step')")
    p.add_argument("--steps-per-execution", type=int, default=16, help="for the +spe levers")
    p.add_argument("--large-batch", type=int, default=256, help="for the +batch levers")
    p.add_argument("--large-batch-learning-rate", type=float, default=None,
                   help="Adam's rate for the +batch levers (default: --learning-rate x the "
                        "square root of the batch ratio)")
    p.add_argument("--inference-batch-size", type=int, default=1024,
                   help="digits per teacher call while the cached trainers build their cache")
    p.add_argument("--decay-epochs", type=int, default=None,
                   help="the +cosine levers decay the rate to 0 over this many epochs "
                        "(default: --max-epochs)")
    p.add_argument("--validation-size", type=float, default=None, metavar="N",
                   help="evaluate on a seeded, stratified validation split of N training digits "
                        "(a count, or a fraction < 1) instead of the test split, to choose a setting")
    p.add_argument("--resummarize", nargs="+", default=None, metavar="JSON",
                   help="recompute the summary of earlier --to-accuracy result files from their stored epochs "
                        "(rewrites each file's summary, keeps its runs and provenance) and print their tables")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"), help="markdown report")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only")
    p.add_argument("--json", default=None, help="result file (default: docs/results/time_to_accuracy_<pair>.json)")
    args = p.parse_args(argv)
    if args.to_accuracy is None and not args.resummarize:
        p.error("--to-accuracy A is required (or --resummarize JSON...)")
    if args.decay_epochs is not None and args.decay_epochs < 1:
        p.error("--decay-epochs must be >= 1")
    if args.validation_size and args.validation_size >= 1:
        args.validation_size = int(args.validation_size)  # a count; below 1, a fraction
    for name in ("batch_size", "inference_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _pair(name):
    import kdkeras

    if name == "article":
        return {"teacher": lambda seed: kdkeras.build_teacher(seed=seed),
                "student": lambda seed: kdkeras.build_student(seed=seed + 1)}
    return {"teacher": lambda seed: kdkeras.build_teacher(seed=seed),
            "student": lambda seed: kdkeras.build_mlp((800, 800), seed=seed + 1)}


def _evaluated_on(arrays, validation_size, seed):
    """``(train, evaluated)``: the test split, or a seeded validation split carved from the training digits."""
    import kdkeras

    if not validation_size:
        return arrays
    return kdkeras.validation_split(*arrays[0], size=validation_size, seed=seed)


def to_accuracy(args, argv):
    """The time-to-accuracy mode: writes the JSON and prepends its section to the report."""
    import tensorflow as tf

    import kdkeras
    from kdkeras.atomic import write_text
    from kdkeras.provenance import provenance

    import warnings

    tf.get_logger().setLevel("ERROR")
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    arrays = kdkeras.load_mnist_arrays(args.data)
    cosine = any("+cosine" in n for n in (args.trainers or ()))  # only those trainers read decay_epochs
    settings = {"target": args.to_accuracy, "pair": args.pair, "max_epochs": args.max_epochs,
                "teacher_epochs": args.teacher_epochs, "batch_size": args.batch_size,
                "learning_rate": args.learning_rate, "temperature": args.temperature, "alpha": args.alpha,
                "steps_per_execution": args.steps_per_execution, "large_batch": args.large_batch,
                "large_batch_learning_rate": args.large_batch_learning_rate,
                "inference_batch_size": args.inference_batch_size,
                "decay_epochs": (args.decay_epochs or args.max_epochs) if cosine else None,
                "split": "validation" if args.validation_size else "test"}
    names = tuple(args.trainers or TRAINERS)
    unknown = [n for n in names if n not in ALL_TRAINERS]
    if unknown:
        raise SystemExit(f"time_to_accuracy.py: error: unknown trainer(s) {unknown}; choose from {list(ALL_TRAINERS)}")
    from kdkeras.provenance import Stopwatch

    watch = Stopwatch()
    log = lambda m: print(watch.stamp(m), flush=True)  # noqa: E731
    splits = {seed: _evaluated_on(arrays, args.validation_size, seed) for seed in args.seeds}
    runs = [run_seed(seed, _pair(args.pair), splits[seed], settings, log, names) for seed in args.seeds]
    command = ["scripts/time_to_accuracy.py", *(argv if argv is not None else sys.argv[1:])]
    if args.validation_size:
        n_val = len(splits[args.seeds[0]][1][0])
        data = (f"{args.data}: {len(arrays[0][0]) - n_val:,} training digits, {n_val:,} validation digits carved "
                "from the training split per seed (test split unused)")
    else:
        data = f"{args.data}: {len(arrays[0][0]):,} training digits, {len(arrays[1][0]):,} test digits"
    record = {"provenance": provenance(command, data=data),
              "settings": settings, "runs": runs, "summary": summarize(runs, args.to_accuracy)}
    text = markdown(record)
    print(text)
    if args.write:
        path = args.json or os.path.join(ROOT, "docs", "results", f"time_to_accuracy_{args.pair}.json")
        write_text(path, json.dumps(record, indent=2) + "\n")
        prepend_section(args.out, text)
        print(f"Wrote {path} and {args.out}")
    return 0


_INTRO = ("# Benchmarks\n\nWritten by `scripts/benchmark.py` and `scripts/time_to_accuracy.py` (newest run first). "
          "Ratios are measured side "
          "by side in one run; absolute times depend on the machine. Each run's numbers are also in the JSON "
          "named in its section, under `docs/results/`.\n\n")


def prepend_section(path, text):
    """Puts a new run's section at the top of the report, keeping the earlier ones."""
    from kdkeras.atomic import write_text

    previous = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        previous = old.split("\n## ", 1)[1] if "\n## " in old else ""
    write_text(path, _INTRO + text + ("\n## " + previous if previous else ""))


def resummarize(paths, argv):
    """Recomputes each result file's summary from its stored per-epoch records; prints its table."""
    from kdkeras.atomic import write_text

    for path in paths:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        record["summary"] = summarize(record["runs"], record["settings"]["target"])
        record["resummarized"] = {"date": datetime.date.today().isoformat(), "command": " ".join(
            ["python", "scripts/time_to_accuracy.py", *(argv if argv is not None else sys.argv[1:])])}
        write_text(path, json.dumps(record, indent=2) + "\n")
        print(f"{path}\n\n{markdown(record)}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.resummarize:
        return resummarize(args.resummarize, argv)
    return to_accuracy(args, argv)


if __name__ == "__main__":
    sys.exit(main())
