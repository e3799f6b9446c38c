#!/usr/bin/env python
"""Chooses the classification job's distillation settings on the validation scenes (never on test).

One teacher (``--seed``, trained here or reused with ``--teacher``), then the
students, greedily: the hard-label baseline; logits KD over temperature and
alpha; the hidden-state hints (loss and weight) on the best logits setting;
the attention relations (weight) on the best hidden setting. Every student
starts from the same weights and sees the same batches. Writes one JSON file
with every candidate's validation metrics and the chosen settings:

    python scripts/select_classifier_recipe.py --data ../shared/data/shakespeare.txt \\
        --out docs/results/classification_selection_seed0.json
"""

import argparse
import dataclasses
import json
import sys
import time

GRID = {
    "logits": [dict(temperature=1.0, alpha=0.5), dict(temperature=2.0, alpha=0.5), dict(temperature=4.0, alpha=0.5),
               dict(temperature=4.0, alpha=0.9)],
    "hidden": [dict(hint_loss="cosine", hint_weight=1.0), dict(hint_loss="mse", hint_weight=1.0)],
    "attention": [dict(attention_weight=1.0), dict(attention_weight=4.0)],
}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="a teacher .keras of this data, recipe and seed (else trained here)")
    p.add_argument("--student-epochs", type=int)
    p.add_argument("--out", default="classification_selection.json")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    import keras
    import keras_hub  # noqa: F401 - registers the BERT classes for loading

    from kdkeras import text
    from kdkeras.provenance import write_result
    from kdkeras.text import classifier

    base = classifier.ClassifierRecipe(seed=args.seed)
    if args.student_epochs:
        base = dataclasses.replace(base, student_epochs=args.student_epochs)
    data = classifier.prepare(text.load_corpus(args.data), base)
    start = time.time()
    teacher = keras.models.load_model(args.teacher, compile=False) if args.teacher else \
        classifier.train_teacher(data, base, verbose=2).model
    record = {"data": args.data, "split": "validation", "base": dataclasses.asdict(base),
              "teacher": {**classifier.evaluate(teacher, data.validation), "seconds": time.time() - start,
                          "reused": args.teacher}, "candidates": [], "chosen": {}}

    def score(method, settings):
        recipe = dataclasses.replace(base, **settings)
        t0 = time.time()
        student = classifier.train_student(method, teacher, data, recipe, verbose=0).model
        row = {"method": method, "settings": settings, "seconds": time.time() - t0,
               **classifier.evaluate(student, data.validation, teacher)}
        record["candidates"].append(row)
        print(json.dumps(row), flush=True)
        write_result(args.out, record)
        return row

    score("hard", {})
    chosen = {}
    for method in ("logits", "hidden", "attention"):
        rows = [score(method, {**chosen, **settings}) for settings in GRID[method]]
        best = max(rows, key=lambda r: (r["accuracy"], -r["kl_to_teacher"]))
        chosen = dict(best["settings"])
        record["chosen"][method] = {"settings": chosen, "accuracy": best["accuracy"]}
    logits = record["chosen"]["logits"]["accuracy"]
    record["inside_terms_beat_logits"] = {m: record["chosen"][m]["accuracy"] > logits for m in ("hidden", "attention")}
    write_result(args.out, record)
    print(json.dumps(record["chosen"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
