#!/usr/bin/env python
"""Chooses the classification job's teacher learning rate on the validation scenes, over several seeds.

A teacher recipe is useful only if it trains on every seed: each candidate peak
learning rate trains a teacher per seed (the job's other settings), and the
validation accuracy of each is recorded next to chance. The chosen rate is the
one whose worst seed is best (then the best mean). Never reads the test scenes:

    python scripts/select_classifier_teacher.py --data ../shared/data/shakespeare.txt \\
        --learning-rates 1e-3 5e-4 --seeds 0 1 2 3 --json docs/results/classification_teacher_selection.json
"""

import argparse
import dataclasses
import json
import sys
import time


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 5e-4])
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--json", default="classification_teacher_selection.json")
    p.add_argument("--summarize", action="store_true", help="only summarize the runs already in --json")
    return p.parse_args(argv)


def summarize(record):
    """Adds each rate's worst and mean validation accuracy over its seeds, and the chosen rate (best worst seed,
    then best mean), to ``record``."""
    import numpy as np

    summary = {}
    for lr in dict.fromkeys(r["teacher_learning_rate"] for r in record["runs"]):
        accs = [r["accuracy"] for r in record["runs"] if r["teacher_learning_rate"] == lr]
        summary[str(lr)] = {"worst": min(accs), "mean": float(np.mean(accs)), "seeds": len(accs),
                            "near_chance": sum(a <= record["near_chance_below"] for a in accs)}
    record["summary"] = summary
    record["chosen"] = float(max(summary, key=lambda k: (summary[k]["worst"], summary[k]["mean"])))
    return record


def main(argv=None):
    args = parse(argv)
    from kdkeras import text
    from kdkeras.provenance import write_result
    from kdkeras.text import classifier

    base = classifier.ClassifierRecipe()
    if args.teacher_epochs:
        base = dataclasses.replace(base, teacher_epochs=args.teacher_epochs)
    data = classifier.prepare(text.load_corpus(args.data), base)
    chance, near = classifier.chance_level(data.validation.labels, len(data.classes))
    limits = {"chance": chance, "near_chance_below": near}
    if args.summarize:  # the runs were stopped early (a rate had already lost on one seed): summarize them
        with open(args.json) as f:
            record = {**json.load(f), **limits}
    else:
        record = {"command": " ".join(["python", *sys.argv]), "data": args.data, "split": "validation",
                  "base": dataclasses.asdict(base), **limits, "runs": [], "chosen": None}
        for lr in args.learning_rates:
            for seed in args.seeds:
                recipe = dataclasses.replace(base, teacher_learning_rate=lr, seed=seed)
                start = time.time()
                teacher = classifier.train_teacher(data, recipe, verbose=2).model
                row = {"teacher_learning_rate": lr, "seed": seed, "seconds": time.time() - start,
                       **classifier.evaluate(teacher, data.validation)}
                record["runs"].append(row)
                print(json.dumps(row), flush=True)
                write_result(args.json, record)
    summarize(record)
    write_result(args.json, record)
    print(json.dumps(record["summary"], indent=1), "\nchosen:", record["chosen"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
