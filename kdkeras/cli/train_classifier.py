"""The text-classification job: which play is a passage from? A BERT teacher and a 1/4-size student, four ways.

``python scripts/train_text_classifier.py`` (or ``kdkeras train-classifier``)
with no arguments works offline on the bundled sample of eight plays (eight
classes); ``--data ../shared/data/shakespeare.txt`` classifies the 38 plays.
Passages are held out by whole scenes. It trains a KerasHub BERT teacher from
scratch, then a student with a quarter of its layers and of its width from one
seeded start, four ways (hard labels; logits KD; logits + hidden-state hints;
logits + hidden states + MiniLM attention relations), evaluates all on the test
scenes (``--split validation`` to choose settings) and writes into ``--out``:
``teacher.keras``, ``student_<method>.keras``, ``vocabulary.json``,
``metrics.json``, ``report.md`` (the table and the deployed students' T = 1
probabilities on a few passages), ``history.png`` and ``probabilities.png``.
"""

import dataclasses
import json
import os
import sys
import time

from kdkeras.cli.common import (TrainingFailed, UserError, default_out, execute_job, make_parser, prepare_corpus,
                                dataclass_from_args, refuse_a_file)

DESCRIPTION = __doc__.split("\n\n")[0]
METHODS = ("hard", "logits", "hidden", "attention")
LABELS = {"hard": "student (hard labels)", "logits": "student (logits KD)", "hidden": "student (logits + hidden)",
          "attention": "student (logits + hidden + attention)"}


def _defaults():
    # kdkeras.text.classifier imports TensorFlow; its defaults are repeated here so that --help stays fast, and
    # tests/test_classification_job.py checks that the two agree.
    return dict(sequence_length=64, batch_size=32, teacher_epochs=5, student_epochs=6, temperature=1.0, alpha=0.5,
                hint_loss="mse", hint_weight=1.0, attention_weight=1.0, seed=0)


def build_parser():
    return make_parser("train_text_classifier", DESCRIPTION, configure)


def configure(p):
    """Adds the classification job's flags to ``p``."""
    d = _defaults()
    p.add_argument("--data", default="sample",
                   help='"sample" (eight bundled plays) or a file of plays (e.g. ../shared/data/shakespeare.txt)')
    p.add_argument("--teacher-epochs", type=int, default=d["teacher_epochs"])
    p.add_argument("--student-epochs", type=int, default=d["student_epochs"], help="each student's epochs")
    p.add_argument("--sequence-length", type=int, default=d["sequence_length"],
                   help="tokens per passage, [CLS] and [SEP] included")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--temperature", type=float, default=d["temperature"])
    p.add_argument("--alpha", type=float, default=d["alpha"], help="weight of the hard-label loss")
    p.add_argument("--hint-loss", default=d["hint_loss"], choices=("cosine", "mse"),
                   help="hidden-state loss per token: cosine (DistilBERT) or mse (TinyBERT)")
    p.add_argument("--hint-weight", type=float, default=d["hint_weight"])
    p.add_argument("--attention-weight", type=float, default=d["attention_weight"])
    p.add_argument("--methods", default=",".join(METHODS), help=f"students to train, of {', '.join(METHODS)}")
    p.add_argument("--split", default="test", choices=("test", "validation"),
                   help="the held-out scenes to report on (validation: for choosing settings)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--teacher", metavar="PATH", help="reuse a teacher .keras trained by this job on the same data")
    p.add_argument("--out", help="output folder (default: runs/classifier/<timestamp>)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 a progress bar per epoch, 2 one line per epoch")


def main(argv=None):
    """``scripts/train_text_classifier.py``; returns the exit status."""
    return execute(build_parser().parse_args(argv))


def execute(args, prog="train_text_classifier"):
    """Runs the classification job with parsed arguments; returns the exit status."""
    return execute_job(args, prog, _check_args, _load_inputs, run, ("kdkeras.text.classifier",), resumable=False)


def _check_args(args):
    """Checks every flag before TensorFlow is imported; a ``UserError`` names the flag."""
    for flag, value in {"--teacher-epochs": args.teacher_epochs, "--student-epochs": args.student_epochs,
                        "--batch-size": args.batch_size}.items():
        if value < 1:
            raise UserError(f"{flag} must be a positive integer; received {value}.")
    if args.sequence_length < 8:
        raise UserError(f"--sequence-length must be at least 8; received {args.sequence_length}.")
    for flag, value in {"--hint-weight": args.hint_weight, "--attention-weight": args.attention_weight}.items():
        if not value >= 0:
            raise UserError(f"{flag} must be a number >= 0; received {value}.")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UserError(f"--methods takes a comma-separated list of {', '.join(METHODS)}; received {args.methods!r}.")
    args.methods = [m for m in METHODS if m in methods]
    if args.data != "sample" and not os.path.isfile(args.data):
        raise UserError(f"--data {args.data!r} is not a file: give a file of plays or sample.")
    if args.teacher is not None and not os.path.isfile(args.teacher):
        raise UserError(f"--teacher {args.teacher!r} is not a file.")
    refuse_a_file(args.out)
    args.out = args.out or default_out("classifier")


def _load_inputs(args):
    """The recipe, the labelled passages and the loaded teacher (or None), all checked before training."""
    from kdkeras import checks
    from kdkeras.text import classifier

    try:
        checks.check_temperature(args.temperature)
        checks.check_alpha(args.alpha)
    except ValueError as e:
        raise UserError(str(e)) from None
    recipe = dataclass_from_args(classifier.ClassifierRecipe, args)
    data = prepare_corpus(classifier.prepare, args, recipe)
    teacher = None
    if args.teacher:
        teacher = _load_teacher(args.teacher, data, recipe)
    return recipe, data, teacher


def _load_teacher(path, data, recipe):
    import keras
    import keras_hub  # noqa: F401 - registers the BERT classes for loading

    try:
        teacher = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"could not load --teacher {path!r}: {e}") from None
    backbone = getattr(teacher, "backbone", None)
    found = (getattr(teacher, "num_classes", None), getattr(backbone, "vocabulary_size", None),
             getattr(backbone, "hidden_dim", None), getattr(backbone, "max_sequence_length", None))
    wanted = (len(data.classes), data.vocabulary.size, recipe.width, recipe.sequence_length)
    if found != wanted:
        raise UserError(f"--teacher {path!r} has (classes, vocabulary, width, sequence length) {found}, but this "
                        f"data and recipe need {wanted}: reuse a teacher trained by this job on the same data.")
    return teacher


def run(args, recipe, data, teacher=None):
    """The teacher (unless reused), the students, the evaluation and the outputs; returns the metrics record."""
    from kdkeras.atomic import write_text

    write_text(os.path.join(args.out, "vocabulary.json"),
               json.dumps({**data.vocabulary.to_json(), "classes": data.classes}) + "\n")
    print(f"Data: {args.data}: {len(data.classes)} plays (classes); passages of {recipe.sequence_length} tokens: "
          f"train {len(data.train):,} ({data.scenes['train']} scenes), validation {len(data.validation):,} "
          f"({data.scenes['validation']} scenes), test {len(data.test):,} ({data.scenes['test']} scenes); "
          f"{data.vocabulary.size:,} word ids")
    models, histories, timings = _train_stages(args, recipe, data, teacher)
    return _write_outputs(args, recipe, data, models, histories, timings)


def _train_stages(args, recipe, data, teacher):
    """``({label: model}, {label: history}, {key: seconds})`` of the teacher and each student."""
    from kdkeras.text import classifier

    timings, histories, verbose = {}, {}, args.verbose
    start = time.time()
    if teacher is None:
        print(f"Teacher: BERT, {recipe.teacher_layers} layers x {recipe.width}, {recipe.teacher_epochs} epochs")
        result = classifier.train_teacher(data, recipe, verbose=verbose)
        teacher, histories["teacher"] = result.model, result.history
        teacher.save(os.path.join(args.out, "teacher.keras"))
        timings["teacher"] = time.time() - start
    else:
        print(f"Teacher: {args.teacher} (reused)")
    models = {"teacher": teacher}
    for method in args.methods:
        print(f"{LABELS[method]}: BERT, {recipe.student_layers} layer(s) x {recipe.student_width or recipe.width}, "
              f"{recipe.student_epochs} epochs")
        start = time.time()
        result = classifier.train_student(method, teacher, data, recipe, verbose=verbose)
        if not all(_finite(v) for v in result.history.get("loss", [])):
            raise TrainingFailed(f"{LABELS[method]}: the loss is not finite; lower the learning rate or the weights.")
        result.model.save(os.path.join(args.out, f"student_{method}.keras"))
        models[LABELS[method]], histories[LABELS[method]] = result.model, result.history
        timings[method] = time.time() - start
    return models, histories, timings


def _finite(value):
    return value == value and abs(value) != float("inf")


def _write_outputs(args, recipe, data, models, histories, timings):
    """metrics.json, report.md, history.png and probabilities.png; prints the table; returns the record."""
    import numpy as np

    from kdkeras import plotting
    from kdkeras.atomic import write_text
    from kdkeras.evaluation import classification_metrics, gap_closed
    from kdkeras.provenance import provenance
    from kdkeras.text import classifier

    passages = getattr(data, args.split)
    teacher_logits = models["teacher"].predict(passages.inputs(), batch_size=256, verbose=0)  # once, not per student
    metrics = {"teacher": {**classification_metrics(teacher_logits, passages.labels),
                           "parameters": int(models["teacher"].count_params())}}
    metrics.update({name: classifier.evaluate(m, passages, teacher_logits=teacher_logits)
                    for name, m in models.items() if name != "teacher"})
    hard = metrics.get(LABELS["hard"])
    gaps = {name: gap_closed(metrics["teacher"]["accuracy"], hard["accuracy"], m["accuracy"])
            for name, m in metrics.items() if hard is not None and name not in ("teacher", LABELS["hard"])}
    rows = np.random.default_rng(recipe.seed).choice(len(passages), min(4, len(passages)), replace=False)
    examples = classifier.probabilities(models, passages, [int(r) for r in rows], data.classes)
    record = {"provenance": provenance(), "recipe": dataclasses.asdict(recipe), "data": args.data,
              "split": args.split, "classes": data.classes, "passages": {k: len(getattr(data, k)) for k in
                                                                          ("train", "validation", "test")},
              "scenes": data.scenes, "seconds": timings, "teacher_reused": args.teacher, "models": metrics,
              "gap_closed": gaps, "examples": examples}
    write_text(os.path.join(args.out, "metrics.json"), json.dumps(record, indent=2, default=float) + "\n")
    table = _table(metrics, gaps)
    write_text(os.path.join(args.out, "report.md"), _report(args, recipe, data, table, timings, examples))
    plotting.plot_history(histories, path=os.path.join(args.out, "history.png"))
    plotting.plot_class_probabilities([{**ex, "classes": data.classes} for ex in examples], path=os.path.join(args.out, "probabilities.png"))
    print("\n" + table + "\n")
    print(f"Wrote the models, vocabulary.json, metrics.json, report.md, history.png and probabilities.png to "
          f"{args.out}")
    return record


def _table(metrics, gaps):
    lines = ["| model | parameters | accuracy | macro F1 | KL to teacher (T = 1) | agreement | gap closed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        kl = f"{m['kl_to_teacher']:.3f}" if "kl_to_teacher" in m else "—"
        agree = f"{m['agreement']:.3f}" if "agreement" in m else "—"
        gap = f"{gaps[name]:.0%}" if gaps.get(name) is not None else "—"
        lines.append(f"| {name} | {m['parameters']:,} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {kl} | {agree} | "
                     f"{gap} |")
    return "\n".join(lines)


def _report(args, recipe, data, table, timings, examples):
    out = [f"# kdkeras classification report\n",
           f"- data: {args.data}; {len(data.classes)} plays; split reported: {args.split} "
           f"({len(getattr(data, args.split)):,} passages of {recipe.sequence_length} tokens, whole scenes held out)",
           f"- teacher: BERT {recipe.teacher_layers} x {recipe.width}"
           f"{' (reused: ' + args.teacher + ')' if args.teacher else f', {recipe.teacher_epochs} epochs'}; students: "
           f"{recipe.student_layers} layer(s) x {recipe.student_width or recipe.width}, {recipe.student_epochs} epochs each",
           f"- distillation: T={recipe.temperature:g}, alpha={recipe.alpha:g}, hints {recipe.hint_loss} x "
           f"{recipe.hint_weight:g}, attention relations x {recipe.attention_weight:g}; seed {recipe.seed}",
           "- seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), "", table, "",
           "Gap closed: the share of the hard-label student's accuracy gap to the teacher that the method closes.", "",
           "## The deployed models at T = 1 (softmax of the logits), top 3 plays", ""]
    for ex in examples:
        out += [f"> {ex['text'][:300]}{' ...' if len(ex['text']) > 300 else ''}", "", f"True play: **{ex['label']}**", ""]
        out += [f"- {name}: " + "; ".join(f"{c} {p:.2f}" for c, p in top) for name, top in ex["models"].items()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
