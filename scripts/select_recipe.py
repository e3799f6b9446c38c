"""Chooses the main job's distillation settings on a validation split, never on the test split.

    python scripts/select_recipe.py --data ../shared/data/mnist.npz --seeds 0 \\
        --temperatures 4 8 16 --alphas 0 0.5 --out docs/results/recipe_selection_full.json

For each seed it carves a stratified validation split out of the training
digits (:func:`kdkeras.validation_split`), trains the main job's teacher and
scratch student on the rest with the recipe's budget rule, then distils the
student once per (temperature, alpha) and measures every student on the
validation split. The winner is the setting with the best mean validation
accuracy. Writes the JSON (every number, the command, date, machine, data) and
a Markdown table next to it.
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
    p.add_argument("--student-steps", type=int, default=None, help="default: the Recipe's")
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
    budget = {k: getattr(args, k) for k in ("teacher_steps", "student_steps") if getattr(args, k)}
    seeds = []
    for seed in args.seeds:
        train, (x_val, y_val) = kdkeras.validation_split(x, y, size=args.val_size, seed=seed)
        recipe = kdkeras.Recipe(seed=seed, **budget)
        start, row = time.perf_counter(), {"seed": seed, "distilled": []}

        def fresh(builder, **kwargs):
            keras.utils.set_random_seed(seed)
            return builder(seed=seed, **kwargs)

        teacher = experiment.train_teacher(fresh(kdkeras.build_teacher), train, recipe, verbose=0).model
        row["teacher"] = accuracy(teacher, x_val, y_val)
        scratch = experiment.train_scratch(fresh(kdkeras.build_student), train, recipe, verbose=0).model
        row["scratch"] = accuracy(scratch, x_val, y_val)
        log(f"seed {seed}: teacher {row['teacher']:.4f}, scratch {row['scratch']:.4f} on validation")
        for temperature, alpha in itertools.product(args.temperatures, args.alphas):
            setting = recipe.replace(temperature=temperature, alpha=alpha)
            student = experiment.distil(fresh(kdkeras.build_student), teacher, train, setting, verbose=0).model
            row["distilled"].append({"temperature": temperature, "alpha": alpha,
                                     "val_accuracy": accuracy(student, x_val, y_val)})
            log(f"seed {seed}: T={temperature:g} alpha={alpha:g}: {row['distilled'][-1]['val_accuracy']:.4f}")
        row["minutes"] = (time.perf_counter() - start) / 60
        row["epochs"] = {stage: recipe.epochs(stage, len(train[0])) for stage in ("teacher", "student")}
        seeds.append(row)
    means = {}
    for row in seeds:
        for d in row["distilled"]:
            means.setdefault((d["temperature"], d["alpha"]), []).append(d["val_accuracy"])
    ranking = sorted(({"temperature": t, "alpha": a, "mean_val_accuracy": statistics.fmean(v)}
                      for (t, a), v in means.items()), key=lambda r: -r["mean_val_accuracy"])
    return {"provenance": provenance(data=f"{args.data}: {len(x):,} training digits, of which "
                                          f"{len(x_val):,} validation (test split unused)"),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
            "seeds": seeds, "ranking": ranking, "chosen": ranking[0],
            "mean_val_accuracy": {m: statistics.fmean(r[m] for r in seeds) for m in ("teacher", "scratch")}}


def markdown(record):
    prov, seeds = record["provenance"], record["seeds"]
    lines = [f"# Distillation settings chosen on validation ({prov['data']})", "",
             f"Written by `scripts/select_recipe.py`: `{prov['command']}`; {prov['date']}; {prov['machine']}. "
             f"Validation accuracy, mean over seeds {', '.join(str(r['seed']) for r in seeds)}; "
             f"epochs per stage: {seeds[0]['epochs']}.", "",
             f"Teacher {record['mean_val_accuracy']['teacher']:.4f}, scratch student "
             f"{record['mean_val_accuracy']['scratch']:.4f}.", "",
             "| T | alpha | distilled student | vs scratch |", "|---:|---:|---:|---:|"]
    for r in record["ranking"]:
        lines.append(f"| {r['temperature']:g} | {r['alpha']:g} | {r['mean_val_accuracy']:.4f} | "
                     f"{r['mean_val_accuracy'] - record['mean_val_accuracy']['scratch']:+.4f} |")
    c = record["chosen"]
    lines += ["", f"Chosen: T = {c['temperature']:g}, alpha = {c['alpha']:g}.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kdkeras.atomic import write_text

    start = time.perf_counter()
    record = run(args, log=lambda m: print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {m}", flush=True))
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    write_text(os.path.splitext(args.out)[0] + ".md", markdown(record))
    print(markdown(record))
    return record


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
