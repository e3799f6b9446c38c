"""Summarise ``kdkeras distill-lm`` runs: distilled against hard-label students, per seed and on average.

Each pair of runs shares a seed: ``DISTILLED`` (the default loss) and
``HARD`` (``--alpha 1``: the same student, data and steps, hard labels only).
The gap closed is ``(hard - distilled) / (hard - teacher)`` in held-out bits
per byte. Optional ``--cache-run`` adds a run trained from a
``kdkeras cache-teacher`` folder (its tokens a second and the cache's bytes
per token).

    python scripts/summarize_distill_lm.py --pairs runs/dlm/distilled-s0:runs/dlm/hard-s0 ... \\
        --cache-run runs/dlm/cached-s0 --cache runs/dlm/cache --json docs/results/distill_lm_shakespeare.json
"""

import argparse
import json
import os
import statistics
import sys


def load(run):
    with open(os.path.join(run, "metrics.json")) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", required=True, metavar="DISTILLED:HARD")
    p.add_argument("--cache-run", help="a run trained from --teacher-cache")
    p.add_argument("--cache", help="the cache-teacher folder of --cache-run")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    seeds = []
    for pair in args.pairs:
        distilled_dir, hard_dir = pair.split(":")
        distilled, hard = load(distilled_dir), load(hard_dir)
        teacher = distilled["teacher"]["bits_per_byte"]
        d, h = distilled["student_after"]["bits_per_byte"], hard["student_after"]["bits_per_byte"]
        seeds.append({"seed": distilled["settings"]["seed"], "teacher": teacher, "hard_labels": h, "distilled": d,
                      "gap_closed": (h - d) / (h - teacher), "student_before": distilled["student_before"]["bits_per_byte"],
                      "seconds": {"distilled": distilled["training_seconds"], "hard_labels": hard["training_seconds"]},
                      "tokens_per_second": {"online teacher": distilled["tokens_per_second"],
                                            "hard labels": hard["tokens_per_second"]},
                      "commands": [distilled["command"], hard["command"]],
                      "kl_to_teacher": {"distilled": distilled["student_after"]["kl_to_teacher"],
                                        "hard_labels": hard["student_after"]["kl_to_teacher"]}})
    mean = {k: statistics.mean(s[k] for s in seeds) for k in ("teacher", "hard_labels", "distilled")}
    mean["gap_closed"] = (mean["hard_labels"] - mean["distilled"]) / (mean["hard_labels"] - mean["teacher"])
    record = {"what": "held-out bits per byte of kdkeras distill-lm students (lower is better)", "seeds": seeds,
              "mean": mean, "documents": load(args.pairs[0].split(":")[0])["documents"],
              "provenance": load(args.pairs[0].split(":")[0])["provenance"]}
    if args.cache_run:
        cached = load(args.cache_run)
        record["cache_run"] = {"bits_per_byte": cached["student_after"]["bits_per_byte"],
                               "tokens_per_second": cached["tokens_per_second"], "command": cached["command"],
                               "seconds": cached["training_seconds"]}
        if args.cache:
            with open(os.path.join(args.cache, "manifest.json")) as f:
                manifest = json.load(f)
            nbytes = sum(os.path.getsize(os.path.join(r, n)) for r, _, names in os.walk(args.cache) for n in names)
            record["cache_run"]["top_k"] = manifest["top_k"]
            record["cache_run"]["cache_bytes_on_disk"] = nbytes
            record["cache_run"]["teacher_bytes_per_token"] = 4 * manifest["top_k"] + 4
    with open(args.json, "w") as f:
        json.dump(record, f, indent=2)
    for s in seeds:
        print(f"seed {s['seed']}: teacher {s['teacher']:.3f}, hard labels {s['hard_labels']:.3f}, distilled "
              f"{s['distilled']:.3f} bits/byte: gap closed {s['gap_closed']:.1%}")
    print(f"mean: teacher {mean['teacher']:.3f}, hard labels {mean['hard_labels']:.3f}, distilled "
          f"{mean['distilled']:.3f}: gap closed {mean['gap_closed']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
