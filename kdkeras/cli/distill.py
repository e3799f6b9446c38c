"""``kdkeras distill``: distil your own trained teacher into a student on your data.

    kdkeras distill --teacher my_teacher.keras --student mlp:800,800 --data my_digits.npz --out runs/mine
    kdkeras distill --teacher a.keras b.keras --student student.keras --data photos/ --epochs 5

Trains the student from scratch as the baseline and distils an identical copy,
then writes ``student.keras``, ``student_scratch.keras``, ``metrics.json``,
``report.md``, ``predictions.png`` and ``history.png`` like the main job.
"""

import datetime
import json
import os

from kdkeras.cli.common import make_parser, tensorboard_callbacks
from kdkeras.cli.own_data import DEFAULTS, add_model_data_flags, prepare

HELP = "distil your own trained teacher into a student on your data"


def build_parser():
    return make_parser("kdkeras distill", __doc__.split("\n\n")[0], configure)


def configure(p):
    """Adds ``distill``'s flags to ``p``."""
    add_model_data_flags(p)
    p.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate, help="Adam, cosine decay")
    p.add_argument("--loss", default=DEFAULTS.loss, help="distillation loss name (kdkeras.losses.available())")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    p.add_argument("--alpha", type=float, default=DEFAULTS.alpha, help="weight of the hard-label loss")
    p.add_argument("--out", default=None, help="output directory (default: runs/distill/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard logs of both students")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 silent, 1 one progress bar per stage, 2 one line per epoch")


def run(args):
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


