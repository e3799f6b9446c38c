"""Choose the text job's distillation settings on the validation plays (the test plays are not read by default).

Trains (or loads, ``--teacher``) one teacher on the training plays, then for
each setting a scratch student and a distilled student with the same initial
weights and batches, and scores all of them on the validation text: bits per
character, KL to the teacher, agreement, and the teacher's bits per character
on each student's sampled continuations of validation prompts (the GKD /
MiniLLM measure of generation quality). Writes a JSON result file.
A setting ``kl:T1:a0:on0.5:w0.5`` is on-policy with lambda 0.5 after an
off-policy warm start of half the budget. ``--split test`` scores on the
test plays instead: for reporting settings chosen on validation, once.

    python scripts/select_text_recipe.py --data ../shared/data/shakespeare.txt --json docs/results/text_selection.json \\
        --settings kl:T1:a0 reverse_kl:T1:a0 jsd:T1:a0 skew_kl:T1:a0 kl:T1:a0:on0.5 kl:T1:a0:on0.5:w0.5
"""

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_setting(spec):
    """``loss:T<temperature>:a<alpha>[:on<fraction>[:w<warm-start share>]]`` -> dict."""
    parts = spec.split(":")
    out = {"loss": parts[0], "temperature": 1.0, "alpha": 0.0, "on_policy_fraction": 0.0}
    for part in parts[1:]:
        if part.startswith("T"):
            out["temperature"] = float(part[1:])
        elif part.startswith("on"):
            out["on_policy_fraction"] = float(part[2:])
        elif part.startswith("w"):
            out["on_policy_warm_start"] = float(part[1:])
        elif part.startswith("a"):
            out["alpha"] = float(part[1:])
        else:
            raise argparse.ArgumentTypeError(f"bad setting part {part!r} in {spec!r}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample")
    p.add_argument("--teacher", help="a teacher .keras trained on the same data's training plays")
    p.add_argument("--save-teacher", help="save the trained teacher here")
    p.add_argument("--teacher-steps", type=int, default=4000)
    p.add_argument("--student-steps", type=int, default=1500)
    p.add_argument("--transfer-fraction", type=float, default=1.0)
    p.add_argument("--settings", nargs="+", type=parse_setting, default=[parse_setting("kl:T1:a0")])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=32, help="validation prompts continued by each student")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="the held-out plays that score the students: choose settings on validation, then report "
                        "the chosen ones once on test")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    import keras
    import numpy as np

    import kdkeras
    from kdkeras import text
    from kdkeras.atomic import write_text
    from kdkeras.text import experiment as ex

    recipe = ex.TextRecipe(teacher_steps=args.teacher_steps, student_steps=args.student_steps,
                           transfer_fraction=args.transfer_fraction, seed=args.seed)
    data = ex.prepare(text.load_corpus(args.data), recipe)
    start = time.time()
    if args.teacher:
        teacher = keras.models.load_model(args.teacher)
    else:
        teacher = ex.train_language_model("teacher", ex.teacher_model(data, recipe), data.train, recipe.teacher_steps,
                                          recipe, verbose=0).model
        if args.save_teacher:
            kdkeras.atomic.save_model(teacher, args.save_teacher)
    teacher_seconds = time.time() - start
    rng = np.random.default_rng(args.seed)
    held_out = data.validation if args.split == "validation" else data.test
    vx = held_out[0]
    prompts = [vx[i, :32] for i in rng.choice(len(vx), args.samples, replace=False)]

    def score(model, with_teacher=True):
        out = ex.evaluate(model, held_out, teacher=teacher if with_teacher else None)
        out["teacher_bits_on_samples"] = ex.teacher_bits_on_samples(teacher, model, prompts, 32, recipe,
                                                                    seed=args.seed)
        return {k: float(v) for k, v in out.items()}

    record = {"provenance": kdkeras.provenance.provenance(), "recipe": dataclasses.asdict(recipe), "split": args.split,
              "documents": data.documents, "characters": data.characters,
              "teacher": {**score(teacher, False), "seconds": teacher_seconds}, "runs": []}
    start = time.time()
    scratch = ex.train_language_model("scratch", ex.student_model(data, recipe), data.student_train,
                                      recipe.student_steps, recipe, verbose=0).model
    record["scratch"] = {**score(scratch), "seconds": time.time() - start}
    print(f"teacher {record['teacher']['bits_per_character']:.3f} bpc, scratch "
          f"{record['scratch']['bits_per_character']:.3f}", flush=True)
    for setting in args.settings:
        r = dataclasses.replace(recipe, **setting)
        start = time.time()
        student = ex.distil(ex.student_model(data, r), teacher, data.student_train, r, verbose=0).model
        result = {**setting, **score(student), "seconds": time.time() - start}
        t, s = record["teacher"]["bits_per_character"], record["scratch"]["bits_per_character"]
        result["gap_closed"] = (s - result["bits_per_character"]) / (s - t)
        record["runs"].append(result)
        print(f"{setting}: {result['bits_per_character']:.3f} bpc, gap closed {result['gap_closed']:.0%}, "
              f"teacher bpc on samples {result['teacher_bits_on_samples']:.3f}", flush=True)
        write_text(args.json, json.dumps(record, indent=2) + "\n")
    write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
