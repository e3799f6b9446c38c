#!/usr/bin/env python
"""Collects classification-job runs (their metrics.json, one per seed) into one result file and a Markdown table.

    python scripts/summarize_classification.py --runs runs/classifier/s0 runs/classifier/s1 runs/classifier/s2 \\
        --json docs/results/classification_test.json --md docs/results/classification_test.md

Per model: each seed's accuracy, macro F1, KL to the teacher and agreement,
their means, and per method the share of the hard-label student's accuracy gap
to the teacher that it closes (on the means, and per seed).
"""

import argparse
import json
import os
import sys

from kdkeras.evaluation import gap_closed

HARD = "student (hard labels)"
KEYS = ("accuracy", "macro_f1", "kl_to_teacher", "agreement")


def load(folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def summarize(runs):
    """``{"models": {name: {"per_seed": [...], "mean": {...}}}, "gap_closed_of_means": {...}, ...}``."""
    names = list(runs[0]["models"])
    models = {}
    for name in names:
        per_seed = [{"seed": r["recipe"]["seed"], **{k: r["models"][name][k] for k in KEYS if k in r["models"][name]}}
                    for r in runs]
        mean = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in KEYS if k in per_seed[0]}
        models[name] = {"per_seed": per_seed, "mean": mean, "parameters": runs[0]["models"][name]["parameters"]}
    teacher, hard = models["teacher"]["mean"]["accuracy"], models[HARD]["mean"]["accuracy"]
    gaps = {n: gap_closed(teacher, hard, m["mean"]["accuracy"]) for n, m in models.items() if n not in ("teacher", HARD)}
    per_seed = {n: [r["gap_closed"][n] for r in runs] for n in gaps}
    return {"models": models, "gap_closed_of_means": gaps, "gap_closed_per_seed": per_seed,
            "seconds_per_run": [sum(r["seconds"].values()) for r in runs], "recipe": runs[0]["recipe"],
            "data": runs[0]["data"], "split": runs[0]["split"], "passages": runs[0]["passages"],
            "scenes": runs[0]["scenes"], "provenance": runs[0]["provenance"]}


def table(summary):
    lines = ["| model | parameters | accuracy (mean; seeds) | macro F1 | KL to teacher | agreement | gap closed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in summary["models"].items():
        mean, gap = m["mean"], summary["gap_closed_of_means"].get(name)
        seeds = ", ".join(f"{s['accuracy']:.3f}" for s in m["per_seed"])
        kl, agree = (f"{mean[k]:.3f}" if k in mean else "—" for k in ("kl_to_teacher", "agreement"))
        lines.append(f"| {name} | {m['parameters']:,} | {mean['accuracy']:.3f} ({seeds}) | {mean['macro_f1']:.3f} | "
                     f"{kl} | {agree} | {'—' if gap is None else f'{gap:.0%}'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run folders, one per seed")
    p.add_argument("--json", required=True)
    p.add_argument("--md", required=True)
    args = p.parse_args(argv)
    from kdkeras.atomic import write_text

    record = summarize([load(f) for f in args.runs])
    record["command"] = "python scripts/summarize_classification.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    write_text(args.json, json.dumps(record, indent=2) + "\n")
    md = (f"Test split ({record['passages']['test']:,} passages of {record['scenes']['test']} held-out scenes), "
          f"{len(args.runs)} seeds; gap closed = (method - hard) / (teacher - hard) in accuracy, on the means.\n\n"
          + table(record) + "\n")
    write_text(args.md, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
