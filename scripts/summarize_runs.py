"""Collects the metrics.json of several main-job runs (one per seed) into one result file and a table.

    python scripts/train_mnist.py --data sample --seed 0 --out runs/s0   # ... seeds 1 and 2
    python scripts/summarize_runs.py runs/s0 runs/s1 runs/s2 --out docs/results/main_job_sample.json

The JSON keeps, per seed, every model's test accuracy, agreement with the
teacher, the wall-clock seconds of each stage and the run's settings and data,
plus the command, date and machine;
the table (printed) gives the mean and the share of the teacher-scratch gap
that the distilled student closes.
"""

import argparse
import datetime
import json
import os
import statistics
import sys

from kdkeras.provenance import machine

MODELS = ("teacher", "student (scratch)", "student (distilled)")


def summarize(run_dirs):
    """The result record of several runs: per-seed numbers and their means."""
    runs = []
    for path in run_dirs:
        with open(os.path.join(path, "metrics.json"), encoding="utf-8") as f:
            report = json.load(f)
        runs.append({
            "seed": report["run"]["args"]["seed"],
            "data": report["run"]["data"],
            "date": report["run"]["date"],
            "args": report["run"]["args"],
            "accuracy": {m: report["models"][m]["accuracy"] for m in MODELS},
            "agreement": {m: report["models"][m]["agreement"] for m in MODELS[1:]},
            "seconds": report["run"].get("seconds"),  # wall clock of each stage and of the training
        })
    mean = {m: statistics.fmean(r["accuracy"][m] for r in runs) for m in MODELS}
    gap = mean["teacher"] - mean["student (scratch)"]
    closed = (mean["student (distilled)"] - mean["student (scratch)"]) / gap if gap > 0 else None
    return {"runs": runs, "mean_accuracy": mean, "gap_closed": closed,
            "distilled_beats_scratch_on_every_seed": all(
                r["accuracy"]["student (distilled)"] > r["accuracy"]["student (scratch)"] for r in runs)}


def table(record):
    """A Markdown table: one row per model, one column per seed, and the mean."""
    seeds = [r["seed"] for r in record["runs"]]
    rows = ["| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
            "|---|" + "---:|" * (len(seeds) + 1)]
    for m in MODELS:
        values = [r["accuracy"][m] for r in record["runs"]]
        rows.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {record['mean_accuracy'][m]:.4f} |")
    closed = record["gap_closed"]
    rows.append("")
    rows.append(f"Gap closed: {closed:.0%}" if closed is not None else "Gap closed: n/a (no gap)")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="output directories of main-job runs")
    parser.add_argument("--out", required=True, help="the JSON result file to write")
    parser.add_argument("--command", default=None, help="the command each run used (recorded)")
    args = parser.parse_args(argv)
    record = summarize(args.runs)
    record.update(command=args.command, summarized=datetime.datetime.now().isoformat(timespec="seconds"),
                  machine=machine())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    from kdkeras.atomic import write_text  # written whole or not at all, like every other result file

    write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
