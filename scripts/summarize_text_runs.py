"""Collects text-job runs (their metrics.json) into one result file and a Markdown table.

    python scripts/summarize_text_runs.py --runs runs/text/full-s0 runs/text/full-s1 runs/text/full-s2 \\
        --transfer runs/text/transfer-s0 runs/text/transfer-s1 runs/text/transfer-s2 \\
        --json docs/results/text_main_job.json --md docs/results/text_main_job.md

Per setting: each seed's test bits per character of the teacher, the scratch
and the distilled student, the gap closed ((scratch - distilled) / (scratch -
teacher), on the means and per seed), KL to the teacher and agreement.
"""

import argparse
import json
import os
import sys

from kdkeras.evaluation import gap_closed

MODELS = ("teacher", "student (scratch)", "student (distilled)")


def load(folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def summarize(runs):
    """``{"seeds": [...], "mean": {...}, "gap_closed_of_means": g, "gap_closed_per_seed": [...]}`` of runs."""
    per_seed = []
    for r in runs:
        m = r["models"]
        per_seed.append({
            "seed": r["recipe"]["seed"], "teacher_reused": r.get("teacher_reused"),
            "seconds": r["seconds"],
            **{f"{name} bpc": m[name]["bits_per_character"] for name in MODELS},
            "distilled KL to teacher": m["student (distilled)"]["kl_to_teacher"],
            "scratch KL to teacher": m["student (scratch)"]["kl_to_teacher"],
            "distilled agreement": m["student (distilled)"]["agreement"],
            "scratch agreement": m["student (scratch)"]["agreement"],
            "gap_closed": r["gap_closed"],
        })
    keys = [k for k in per_seed[0] if k not in ("seed", "teacher_reused", "seconds")]
    mean = {k: sum(s[k] for s in per_seed) / len(per_seed) for k in keys}
    return {"seeds": per_seed, "mean": mean, "gap_closed_of_means": gap_closed(*(mean[f"{n} bpc"] for n in MODELS)),
            "recipe": runs[0]["recipe"], "data": runs[0]["data"], "documents": runs[0]["documents"],
            "characters": runs[0]["characters"], "provenance": runs[0]["provenance"]}


def table(name, summary):
    lines = [f"### {name}", "", "| seed | teacher | scratch | distilled | gap closed | KL to teacher (scratch / "
             "distilled) | agreement (scratch / distilled) |", "|---|---:|---:|---:|---:|---:|---:|"]
    rows = summary["seeds"] + [{"seed": "mean", **summary["mean"], "gap_closed": summary["gap_closed_of_means"]}]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['teacher bpc']:.3f} | {r['student (scratch) bpc']:.3f} | "
                     f"{r['student (distilled) bpc']:.3f} | {r['gap_closed']:.0%} | {r['scratch KL to teacher']:.3f} / "
                     f"{r['distilled KL to teacher']:.3f} | {r['scratch agreement']:.3f} / "
                     f"{r['distilled agreement']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="run folders of the equal-steps setting")
    p.add_argument("--transfer", nargs="*", default=[], help="run folders of the transfer-set setting")
    p.add_argument("--transfer-long", nargs="*", default=[],
                   help="run folders of the transfer-set setting with the longer student budget chosen on validation")
    p.add_argument("--json", required=True)
    p.add_argument("--md", required=True)
    args = p.parse_args(argv)
    from kdkeras.atomic import write_text

    record = {"equal_steps": summarize([load(f) for f in args.runs])}
    if args.transfer:
        record["transfer_set"] = summarize([load(f) for f in args.transfer])
    if args.transfer_long:
        record["transfer_set_long"] = summarize([load(f) for f in args.transfer_long])
    record["command"] = "python scripts/summarize_text_runs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_text(args.json, json.dumps(record, indent=2) + "\n")
    parts = ["Test bits per character (lower is better), gap closed = (scratch - distilled) / (scratch - teacher); "
             "mean row: gap closed of the means.", "", table("Equal steps, every training play", record["equal_steps"])]
    if args.transfer:
        parts += ["", table("Transfer set: the students see every 10th training play, the teacher saw all "
                            f"({record['transfer_set']['recipe']['student_steps']:,} student steps)",
                            record["transfer_set"])]
    if args.transfer_long:
        parts += ["", table("Transfer set, the student budget chosen on validation "
                            f"({record['transfer_set_long']['recipe']['student_steps']:,} steps)",
                            record["transfer_set_long"])]
    write_text(args.md, "\n".join(parts) + "\n")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
