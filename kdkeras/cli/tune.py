"""``kdkeras tune``: choose T, alpha, loss and learning rate on a validation split (KerasTuner).

    kdkeras tune --teacher my_teacher.keras --student tiny --data my_digits.npz --max-trials 8 --epochs 5

Carves a validation split out of the training data and runs a KerasTuner
search: every trial distils the student (on the teacher's logits, computed
once, when nothing is augmented) and is scored on the validation split. Only
the chosen trial's student meets the test split, once. Writes
``student.keras``, ``tuning.json``, ``report.md``, ``tuning.png`` and every
trial under ``trials/``.
"""

import datetime
import json
import os

from kdkeras.cli.common import UserError, make_parser
from kdkeras.cli.own_data import add_model_data_flags, prepare

HELP = "choose T, alpha, loss and learning rate on a validation split (KerasTuner)"


DESCRIPTION = ("Search temperature, alpha, loss and learning rate with KerasTuner: every trial distils the student on "
               "the training data less a validation split and is scored on that split; the chosen student is "
               "evaluated on the test split once.")


def configure(p):
    """Adds ``tune``'s flags to ``p``."""
    add_model_data_flags(p)
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


def build_parser():
    return make_parser("kdkeras tune", DESCRIPTION, configure)


def run(args):
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


