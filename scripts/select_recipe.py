"""Chooses the main job's distillation settings on a validation split, never on the test split.

    python scripts/select_recipe.py --data ../shared/data/mnist.npz --seeds 0 \\
        --temperatures 4 8 16 --alphas 0 0.5 --out docs/results/recipe_selection_full.json
    python scripts/select_recipe.py --data ../shared/data/mnist.npz --student-steps 6300 12600 ...

For each seed it carves a stratified validation split out of the training
digits (:func:`kdkeras.validation_split`), trains the main job's teacher on the
rest with the recipe's budget rule, then, for each student budget, a scratch
student and one distilled student per (temperature, alpha), and measures every
student on the validation split. The winner is the (budget, temperature,
alpha) with the best mean validation accuracy; each row also shows the scratch
student of its own budget, so a budget that helps both students alike is
visible as such. Writes the JSON (every number, the command, date, machine,
data) and a Markdown table next to it.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="sample", help='"sample" or an .npz path, as in train_mnist.py')
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--val-size", type=float, default=10000, help="validation digits (a count, or a fraction < 1)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--teacher-steps", type=int, default=None, help="default: the Recipe's")
    p.add_argument("--student-steps", type=int, nargs="+", default=[None],
                   help="student budgets to compare (default: the Recipe's)")
    p.add_argument("--out", default="docs/results/recipe_selection.json")
    args = p.parse_args(argv)
    if args.val_size >= 1:
        args.val_size = int(args.val_size)
    return args


def run(args, log=print):
    import keras

    import kdkeras
    from kdkeras import experiment
    from kdkeras.evaluation import accuracy
    from kdkeras.provenance import provenance

    (x, y), _ = kdkeras.load_mnist_arrays(args.data)  # the test split is not used here
    teacher_budget = {"teacher_steps": args.teacher_steps} if args.teacher_steps else {}
    budgets = [steps or kdkeras.Recipe().student_steps for steps in args.student_steps]
    seeds = []
    for seed in args.seeds:
        train, (x_val, y_val) = kdkeras.validation_split(x, y, size=args.val_size, seed=seed)
        recipe = kdkeras.Recipe(seed=seed, **teacher_budget)
        start, row = time.perf_counter(), {"seed": seed, "scratch": {}, "epochs": {}, "distilled": []}

        def fresh(builder, **kwargs):
            keras.utils.set_random_seed(seed)
            return builder(seed=seed, **kwargs)

        teacher = experiment.train_teacher(fresh(kdkeras.build_teacher), train, recipe, verbose=0).model
        row["teacher"] = accuracy(teacher, x_val, y_val)
        row["epochs"]["teacher"] = recipe.epochs("teacher", len(train[0]))
        log(f"seed {seed}: teacher {row['teacher']:.4f} on validation")
        for steps in budgets:
            budget = recipe.replace(student_steps=steps)
            row["epochs"][str(steps)] = budget.epochs("student", len(train[0]))
            scratch = experiment.train_scratch(fresh(kdkeras.build_student), train, budget, verbose=0).model
            row["scratch"][str(steps)] = accuracy(scratch, x_val, y_val)
            log(f"seed {seed}, {steps} student steps: scratch {row['scratch'][str(steps)]:.4f}")
            for temperature, alpha in itertools.product(args.temperatures, args.alphas):
                setting = budget.replace(temperature=temperature, alpha=alpha)
                student = experiment.distil(fresh(kdkeras.build_student), teacher, train, setting, verbose=0).model
                row["distilled"].append({"student_steps": steps, "temperature": temperature, "alpha": alpha,
                                         "val_accuracy": accuracy(student, x_val, y_val)})
                log(f"seed {seed}, {steps} student steps: T={temperature:g} alpha={alpha:g}: "
                    f"{row['distilled'][-1]['val_accuracy']:.4f}")
        row["minutes"] = (time.perf_counter() - start) / 60
        seeds.append(row)
    return {"provenance": provenance(data=f"{args.data}: {len(x):,} training digits, of which "
                                          f"{len(x_val):,} validation (test split unused)"),
            "settings": {k: v for k, v in vars(args).items() if k != "out"}, "seeds": seeds,
            **rank(seeds, budgets)}


def rank(seeds, budgets):
    """Mean validation accuracies over the seeds, and the settings ranked by the distilled student's."""
    means = {}
    for row in seeds:
        for d in row["distilled"]:
            means.setdefault((d["student_steps"], d["temperature"], d["alpha"]), []).append(d["val_accuracy"])
    scratch = {str(s): statistics.fmean(r["scratch"][str(s)] for r in seeds) for s in budgets}
    ranking = sorted(({"student_steps": s, "temperature": t, "alpha": a, "mean_val_accuracy": statistics.fmean(v),
                       "vs_scratch": statistics.fmean(v) - scratch[str(s)]}
                      for (s, t, a), v in means.items()), key=lambda r: -r["mean_val_accuracy"])
    return {"ranking": ranking, "chosen": ranking[0],
            "mean_val_accuracy": {"teacher": statistics.fmean(r["teacher"] for r in seeds), "scratch": scratch}}


def markdown(record):
    prov, seeds = record["provenance"], record["seeds"]
    lines = [f"# Distillation settings chosen on validation ({prov['data']})", "",
             f"Written by `scripts/select_recipe.py`: `{prov['command']}`; {prov['date']}; {prov['machine']}. "
             f"Validation accuracy, mean over seeds {', '.join(str(r['seed']) for r in seeds)}; "
             f"epochs (teacher, and per student budget): {seeds[0]['epochs']}.", "",
             f"Teacher {record['mean_val_accuracy']['teacher']:.4f}; scratch student, per budget: "
             + ", ".join(f"{s} steps {a:.4f}" for s, a in record["mean_val_accuracy"]["scratch"].items()) + ".", "",
             "| student steps | T | alpha | distilled student | scratch, same budget | vs scratch |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in record["ranking"]:
        lines.append(f"| {r['student_steps']} | {r['temperature']:g} | {r['alpha']:g} | {r['mean_val_accuracy']:.4f} | "
                     f"{record['mean_val_accuracy']['scratch'][str(r['student_steps'])]:.4f} | "
                     f"{r['vs_scratch']:+.4f} |")
    c = record["chosen"]
    lines += ["", f"Chosen: {c['student_steps']} student steps, T = {c['temperature']:g}, alpha = {c['alpha']:g}.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kdkeras.atomic import write_text

    from kdkeras.provenance import Stopwatch

    watch = Stopwatch()
    record = run(args, log=lambda m: print(watch.stamp(m), flush=True))
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    write_text(os.path.splitext(args.out)[0] + ".md", markdown(record))
    print(markdown(record))
    return record


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
