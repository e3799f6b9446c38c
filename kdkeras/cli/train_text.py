"""The text main job: distil a character-level GPT on Shakespeare (or your text), offline, in minutes.

``python scripts/train_text.py`` (or ``kdkeras train-text``) with no arguments
works offline on the bundled sample of eight plays. It trains a teacher
language model on the training text, a student from scratch (hard labels:
the next character) and the same student distilled from the teacher (same
initial weights, same batches), evaluates all three on the held-out test text
(whole plays) and writes into ``--out``: ``teacher.keras``, ``student.keras``,
``student_scratch.keras``, ``vocabulary.json``, ``metrics.json``,
``report.md``, ``samples.md`` (the same seeded prompts continued by each
model) and ``history.png``.
"""

import dataclasses
import json
import os
import sys
import time

from kdkeras.cli.common import (TrainingFailed, UserError, check_distillation_args, default_out, execute_job,
                                make_parser, prepare_corpus, dataclass_from_args, refuse_a_file, tensorboard_callbacks)

DESCRIPTION = __doc__.split("\n\n")[0]


def _defaults():
    # kdkeras.text.experiment imports TensorFlow; its defaults are repeated here so that --help stays fast,
    # and tests/test_text_job.py checks that the two agree.
    return dict(context=64, batch_size=16, teacher_steps=4000, student_steps=1500, temperature=1.0, alpha=0.0,
                loss="kl", transfer_fraction=1.0, top_k=32, on_policy_fraction=0.0, max_new_tokens=16,
                on_policy_warm_start=0.0, seed=0)


def build_parser():
    return make_parser("train_text", DESCRIPTION, configure)


def configure(p):
    """Adds the text job's flags to ``p``."""
    d = _defaults()
    p.add_argument("--data", default="sample",
                   help='"sample" (eight bundled plays), a UTF-8 text file (e.g. ../shared/data/shakespeare.txt) '
                        "or a folder of .txt files")
    p.add_argument("--teacher-steps", type=int, default=d["teacher_steps"], help="the teacher's budget (optimizer steps)")
    p.add_argument("--student-steps", type=int, default=d["student_steps"], help="each student's budget")
    p.add_argument("--context", type=int, default=d["context"], help="characters per training window")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--temperature", type=float, default=d["temperature"])
    p.add_argument("--alpha", type=float, default=d["alpha"], help="weight of the hard-label loss")
    p.add_argument("--loss", default=d["loss"], help="kl, reverse_kl, jsd, skew_kl, skew_reverse_kl, tv, ...")
    p.add_argument("--transfer-fraction", type=float, default=d["transfer_fraction"],
                   help="share of the training plays the students see (0.1: every 10th play; the teacher saw all)")
    p.add_argument("--top-k", type=int, default=d["top_k"],
                   help="cache the teacher's top k per character when the student sees its text more than once "
                        "(0: always online)")
    p.add_argument("--on-policy-fraction", type=float, default=d["on_policy_fraction"],
                   help="share of batches replaced by the student's own continuations, scored by the teacher")
    p.add_argument("--on-policy-warm-start", type=float, default=d["on_policy_warm_start"],
                   help="share of the student budget trained off-policy before on-policy batches begin")
    p.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"], help="on-policy continuation length")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--teacher", metavar="PATH", help="reuse a teacher .keras trained by this job on the same data")
    p.add_argument("--out", help="output folder (default: runs/text/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tensorboard", metavar="DIR", help="TensorBoard logs of every stage")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 a progress bar per stage, 2 one line per 100 steps")


def main(argv=None):
    """``scripts/train_text.py``; returns the exit status."""
    return execute(build_parser().parse_args(argv))


def execute(args, prog="train_text"):
    """Runs the text job with parsed arguments; returns the exit status."""
    return execute_job(args, prog, _check_args, _load_inputs, run, ("kdkeras.text.experiment",))


def _check_args(args):
    """Checks every flag before TensorFlow is imported; a ``UserError`` names the flag."""
    positive = {"--teacher-steps": args.teacher_steps, "--student-steps": args.student_steps,
                "--context": args.context, "--batch-size": args.batch_size, "--max-new-tokens": args.max_new_tokens}
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} must be a positive integer; received {value}.")
    if args.top_k < 0:
        raise UserError(f"--top-k must be 0 (online teacher) or positive; received {args.top_k}.")
    if not 0 < args.transfer_fraction <= 1:
        raise UserError(f"--transfer-fraction must be in (0, 1]; received {args.transfer_fraction}.")
    if not 0 <= args.on_policy_fraction <= 1:
        raise UserError(f"--on-policy-fraction must be in [0, 1]; received {args.on_policy_fraction}.")
    if not 0 <= args.on_policy_warm_start < 1:
        raise UserError(f"--on-policy-warm-start must be in [0, 1); received {args.on_policy_warm_start}.")
    if args.on_policy_fraction and args.max_new_tokens >= args.context:
        raise UserError(f"--max-new-tokens ({args.max_new_tokens}) must be smaller than --context ({args.context}).")
    if args.resume and args.out is None:
        raise UserError("--resume continues the run in --out DIR; pass the directory of the interrupted run.")
    if args.data != "sample" and not os.path.exists(args.data):
        raise UserError(f"--data {args.data!r} does not exist: give a UTF-8 text file, a folder of .txt files, "
                        "or sample.")
    if args.teacher is not None and not os.path.isfile(args.teacher):
        raise UserError(f"--teacher {args.teacher!r} is not a file.")
    refuse_a_file(args.out)
    args.out = args.out or default_out("text")


def _load_inputs(args):
    """The recipe, the split corpus's windows and the loaded teacher (or None), all checked before training."""
    import keras

    from kdkeras.text import experiment

    check_distillation_args(args)
    recipe = dataclass_from_args(experiment.TextRecipe, args)
    data = prepare_corpus(experiment.prepare, args, recipe)
    teacher = None
    if args.teacher:
        try:
            teacher = keras.models.load_model(args.teacher, compile=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
            raise UserError(f"could not load --teacher {args.teacher!r}: {e}") from None
        size = teacher.outputs[0].shape[-1] if teacher.outputs else None
        if size != data.vocabulary.size:
            raise UserError(f"--teacher {args.teacher!r} predicts {size} characters, but the training text of "
                            f"--data {args.data!r} has {data.vocabulary.size} (with the unknown id): reuse a teacher "
                            "trained by this job on the same data.")
    return recipe, data, teacher


def run(args, recipe, data, teacher=None):
    """The three stages, the evaluation and the outputs; returns the metrics dict."""
    from kdkeras.atomic import write_text
    from kdkeras.experiment import RunState

    state = RunState(args.out, resume=args.resume)
    write_text(os.path.join(args.out, "vocabulary.json"), json.dumps(data.vocabulary.to_json()) + "\n")
    print(f"Data: {args.data}: {data.characters['train']:,} training characters "
          f"({len(data.documents['train'])} document(s)), validation {', '.join(data.documents['validation'])}, "
          f"test {', '.join(data.documents['test'])}; {data.vocabulary.size} character ids")
    if recipe.transfer_fraction < 1:
        print(f"Students see {len(data.documents['students'])} training document(s), "
              f"{data.characters['students']:,} characters: {', '.join(data.documents['students'])}")
    models, histories, timings = _train_stages(args, recipe, data, teacher, state)
    return _write_outputs(args, recipe, data, models, histories, timings)


def _train_stages(args, recipe, data, teacher, state):
    """Teacher (unless reused), scratch and distilled student: ``(models, histories, seconds)``."""
    from kdkeras.text import experiment

    timings, stage = {}, dict(state=state, verbose=args.verbose)

    def timed(key, fn):
        start = time.time()
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - a non-finite loss stops a stage
            if type(e).__name__ == "NonFiniteLossError":
                raise TrainingFailed(f"{key}: {e}") from None
            raise
        timings[key] = time.time() - start
        return result

    teacher_history = {}
    if teacher is None:
        print(f"Teacher: {recipe.teacher_layers} x {recipe.teacher_width}, {recipe.teacher_steps} steps")
        teacher_run = timed("teacher", lambda: experiment.train_language_model(
            "teacher", experiment.teacher_model(data, recipe), data.train, recipe.teacher_steps, recipe,
            callbacks=tensorboard_callbacks(args, "teacher"), **stage))
        teacher, teacher_history = teacher_run.model, teacher_run.history
    else:
        print(f"Teacher: {args.teacher} (reused)")
    print(f"Scratch student: {recipe.student_layers} x {recipe.student_width}, {recipe.student_steps} steps")
    scratch = timed("scratch", lambda: experiment.train_language_model(
        "scratch", experiment.student_model(data, recipe), data.student_train, recipe.student_steps, recipe,
        callbacks=tensorboard_callbacks(args, "scratch"), **stage))
    print(f"Distilled student: loss={recipe.loss}, T={recipe.temperature:g}, alpha={recipe.alpha:g}"
          + (f", on-policy {recipe.on_policy_fraction:g}" if recipe.on_policy_fraction else ""))
    distilled = timed("distilled", lambda: experiment.distil(
        experiment.student_model(data, recipe), teacher, data.student_train, recipe,
        callbacks=tensorboard_callbacks(args, "distilled"), **stage))
    models = {"teacher": teacher, "student (distilled)": distilled.model, "student (scratch)": scratch.model}
    histories = {k: v for k, v in (("teacher", teacher_history), ("scratch student", scratch.history),
                                   ("distilled student", distilled.history)) if v}
    return models, histories, timings


def _write_outputs(args, recipe, data, models, histories, timings):
    """Test metrics, samples, metrics.json, report.md, samples.md and history.png; returns the record."""
    import numpy as np

    from kdkeras import plotting
    from kdkeras.atomic import write_text
    from kdkeras.evaluation import gap_closed
    from kdkeras.provenance import provenance
    from kdkeras.text import experiment, generate

    teacher, metrics = models["teacher"], {}
    for name, model in models.items():
        metrics[name] = experiment.evaluate(model, data.test, teacher=None if name == "teacher" else teacher)
        metrics[name]["parameters"] = int(model.count_params())
    gap = gap_closed(*(metrics[k]["bits_per_character"] for k in ("teacher", "student (scratch)",
                                                                  "student (distilled)")))
    rng = np.random.default_rng(recipe.seed)
    tx = data.test[0]
    prompts = [tx[i, :32] for i in rng.choice(len(tx), 3, replace=False)]
    samples = {name: generate(model, prompts, 160, recipe.context, 0.8, seed=recipe.seed)
               for name, model in models.items()}
    record = {"provenance": provenance(), "recipe": dataclasses.asdict(recipe), "data": args.data,
              "documents": data.documents, "characters": data.characters, "seconds": timings,
              "teacher_reused": args.teacher, "models": metrics, "gap_closed": gap}
    write_text(os.path.join(args.out, "metrics.json"), json.dumps(record, indent=2, default=float) + "\n")
    table = _table(metrics)
    write_text(os.path.join(args.out, "report.md"), _report(args, recipe, data, table, gap, timings))
    write_text(os.path.join(args.out, "samples.md"), _samples(data.vocabulary, prompts, samples))
    plotting.plot_history(histories, path=os.path.join(args.out, "history.png"))
    print("\n" + table + f"\n\nGap closed in test bits per character: {_percent(gap)}\n")
    print(f"Wrote teacher.keras, student.keras, student_scratch.keras, vocabulary.json, metrics.json, report.md, "
          f"samples.md and history.png to {args.out}")
    return record


def _percent(share):
    return "— (the scratch student matches the teacher)" if share is None else f"{share:.1%}"


def _table(metrics):
    lines = ["| model | parameters | test bits / character | perplexity | next-character accuracy | KL to teacher | "
             "agreement |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        kl = f"{m['kl_to_teacher']:.3f}" if "kl_to_teacher" in m else "—"
        agree = f"{m['agreement']:.3f}" if "agreement" in m else "—"
        lines.append(f"| {name} | {m['parameters']:,} | {m['bits_per_character']:.3f} | {m['perplexity']:.2f} | "
                     f"{m['accuracy']:.3f} | {kl} | {agree} |")
    return "\n".join(lines)


def _report(args, recipe, data, table, gap, timings):
    return (f"# kdkeras text report\n\n- data: {args.data}; training {', '.join(data.documents['train'][:6])}"
            f"{' ...' if len(data.documents['train']) > 6 else ''} ({data.characters['train']:,} characters); "
            f"validation {', '.join(data.documents['validation'])}; test {', '.join(data.documents['test'])} "
            f"({data.characters['test']:,} characters)\n"
            f"- students see: {len(data.documents['students'])} training document(s), "
            f"{data.characters['students']:,} characters\n"
            f"- teacher: {recipe.teacher_layers} x {recipe.teacher_width}"
            f"{' (reused: ' + args.teacher + ')' if args.teacher else f', {recipe.teacher_steps} steps'}; students: "
            f"{recipe.student_layers} x {recipe.student_width}, {recipe.student_steps} steps each; context "
            f"{recipe.context}, batch {recipe.batch_size}\n"
            f"- distillation: loss={recipe.loss}, T={recipe.temperature:g}, alpha={recipe.alpha:g}, "
            f"on-policy fraction {recipe.on_policy_fraction:g}; seed {recipe.seed}\n"
            f"- seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + "\n\n"
            f"{table}\n\nGap closed in test bits per character: {_percent(gap)}\n")


def _samples(vocabulary, prompts, samples):
    out = ["# Samples", "", "The same prompts from the test text, continued by each model (160 characters, "
           "temperature 0.8, the same random numbers).", ""]
    for i, prompt in enumerate(prompts):
        out += [f"## Prompt {i + 1}", "", "```", vocabulary.decode(prompt) + "|", "```", ""]
        for name, continuations in samples.items():
            out += [f"**{name}**", "", "```", vocabulary.decode(prompt) + "|" + vocabulary.decode(continuations[i]),
                    "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
