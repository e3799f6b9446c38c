"""One quality table for every teacher/student pair, made from the committed result files.

    python scripts/quality_table.py      # writes docs/quality.md and docs/results/quality.json

For each pair it gives the teacher's, the scratch student's and the distilled
student's test errors (mean and per seed), the share of the teacher-scratch
gap that distillation closes, and the students' top-1 agreement with their
teacher. The numbers are read, never measured here:

- the main job's runs, collected by ``scripts/summarize_runs.py``
  (``docs/results/main_job_full.json``, ``docs/results/main_job_sample.json``):
  the article CNN teacher and student;
- ``docs/hinton_mnist.json`` from ``scripts/reproduce_hinton.py``: the
  784-800-800-10 MLP from scratch and distilled from the large MLP and from
  the article CNN.
"""

import argparse
import json
import re
import statistics
import sys

MAIN_JOBS = ("docs/results/main_job_full.json", "docs/results/main_job_sample.json")
HINTON = "docs/hinton_mnist.json"
#: (key in the Hinton record's per-seed ``keys``, teacher row, pair label)
HINTON_PAIRS = (("big T=20", "big teacher", "large MLP 784-1200-1200-10 -> MLP 784-800-800-10, T = 20"),
                ("cnn T=20", "cnn teacher", "article CNN -> MLP 784-800-800-10, T = 20"))


def stats(values):
    """``{"mean", "per_seed"}`` of a list of numbers (``None`` where any value is missing)."""
    if any(v is None for v in values):
        return {"mean": None, "per_seed": values}
    return {"mean": statistics.fmean(values), "per_seed": values}


def gap_closed(teacher, scratch, distilled):
    """See :func:`kdkeras.evaluation.gap_closed`."""
    from kdkeras.evaluation import gap_closed as gap

    return gap(teacher, scratch, distilled)


def pair_row(label, data, source, seeds, test_digits, errors, agreement):
    """One pair: ``errors`` and ``agreement`` map a model to its per-seed values."""
    e = {model: stats(values) for model, values in errors.items()}
    per_seed = [gap_closed(t, s, d) for t, s, d in zip(errors["teacher"], errors["scratch"], errors["distilled"])]
    return {"pair": label, "data": data, "source": source, "seeds": seeds, "test_digits": test_digits,
            "test_errors": e, "gap_closed": {
                "of_means": gap_closed(e["teacher"]["mean"], e["scratch"]["mean"], e["distilled"]["mean"]),
                "per_seed": per_seed},
            "agreement": {model: stats(values) for model, values in agreement.items()}}


def test_digits_of(label):
    """The test-split size named in a main-job data label (``"..., 4,000 train / 1,000 test"``)."""
    found = re.search(r"([\d,]+) test", label)
    if not found:
        raise ValueError(f"cannot read the test-split size from the data label {label!r}.")
    return int(found.group(1).replace(",", ""))


def main_job_pair(record, source):
    """The article pair from a ``summarize_runs.py`` record; accuracies become error counts."""
    runs = record["runs"]
    n = test_digits_of(runs[0]["data"])
    if any(test_digits_of(r["data"]) != n for r in runs):
        raise ValueError(f"{source}: the runs were tested on splits of different sizes.")
    errors = {short: [round((1 - r["accuracy"][model]) * n) for r in runs]
              for short, model in (("teacher", "teacher"), ("scratch", "student (scratch)"),
                                   ("distilled", "student (distilled)"))}
    agreement = {short: [r["agreement"][model] for r in runs]
                 for short, model in (("scratch", "student (scratch)"), ("distilled", "student (distilled)"))}
    return pair_row("article CNN -> article CNN student", runs[0]["data"], source, [r["seed"] for r in runs], n,
                    errors, agreement)


def hinton_pairs(record, source):
    """The MLP pairs of a ``reproduce_hinton.py`` record (the scratch MLP's agreement is not recorded)."""
    seeds = record["seeds"]
    rows = []
    for key, teacher, label in HINTON_PAIRS:
        distilled = [s["rows"][s["keys"][key]] for s in seeds]
        errors = {"teacher": [s["rows"][teacher]["test_errors"] for s in seeds],
                  "scratch": [s["rows"]["small scratch"]["test_errors"] for s in seeds],
                  "distilled": [d["test_errors"] for d in distilled]}
        agreement = {"scratch": [None] * len(seeds), "distilled": [d["test_agreement"] for d in distilled]}
        rows.append(pair_row(label, record["provenance"]["data"], source, [s["seed"] for s in seeds],
                             record["test_digits"], errors, agreement))
    return rows


def build(main_jobs=MAIN_JOBS, hinton=HINTON):
    """The quality record: one row per pair and data set, from the result files named (paths from the
    working directory: run it from the repository's root)."""
    pairs = []
    for path in main_jobs:
        with open(path, encoding="utf-8") as f:
            pairs.append(main_job_pair(json.load(f), path))
    if hinton:
        with open(hinton, encoding="utf-8") as f:
            pairs += hinton_pairs(json.load(f), hinton)
    return {"sources": list(main_jobs) + ([hinton] if hinton else []), "pairs": pairs}


def markdown(record):
    def cell(s, spec, mean_spec=None):
        per = ", ".join("—" if v is None else format(v, spec) for v in s["per_seed"])
        return "—" if s["mean"] is None else f"{format(s['mean'], mean_spec or spec)} ({per})"

    def closed(g):
        per = ", ".join("—" if v is None else f"{v:.0%}" for v in g["per_seed"])
        return ("—" if g["of_means"] is None else f"{g['of_means']:.0%}") + f" ({per})"

    lines = ["# Quality of distillation, pair by pair", "",
             "Written by `python scripts/quality_table.py` from the result files named in each row; nothing here "
             "is measured by that script. Test errors: mean over the seeds (each seed's value in brackets). Gap "
             "closed = (scratch − distilled) / (scratch − teacher), in errors, on the means (per seed in brackets). "
             "Agreement: top-1 agreement with the teacher on the test split. Settings were chosen on validation "
             "splits carved from the training digits; the sources say how.", "",
             "| pair | data | test digits | teacher | scratch | distilled | gap closed | agreement, scratch | "
             "agreement, distilled | source |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in record["pairs"]:
        e, a = p["test_errors"], p["agreement"]
        errors = " | ".join(cell(e[m], "d", ".1f") for m in ("teacher", "scratch", "distilled"))
        lines.append(f"| {p['pair']} | {p['data']} | {p['test_digits']:,} | {errors} | {closed(p['gap_closed'])} | "
                     f"{cell(a['scratch'], '.4f')} | {cell(a['distilled'], '.4f')} | `{p['source']}` |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--main-job", nargs="*", default=list(MAIN_JOBS), help="summarize_runs.py result files")
    p.add_argument("--hinton", default=HINTON, help="reproduce_hinton.py result file ('' to leave out)")
    p.add_argument("--json", default="docs/results/quality.json")
    p.add_argument("--md", default="docs/quality.md")
    args = p.parse_args(argv)
    from kdkeras.atomic import write_text
    from kdkeras.provenance import provenance

    record = {"provenance": provenance(), **build(args.main_job, args.hinton)}
    write_text(args.json, json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    write_text(args.md, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
