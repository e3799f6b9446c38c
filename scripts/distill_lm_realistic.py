"""distill-lm where users are: a teacher that knows more than your data, and a tenth of the plays as your text.

A KerasHub GPT-2 teacher trained on all the training plays (``scripts/make_gpt2_teacher.py``) is distilled
into a ``from-teacher:1`` student (a sixth of its layers, a fifth of its parameters) that may only see "your
data": one training play in ten. Five methods, each from the same student start and for the same number of
optimizer steps (``kdkeras distill-lm`` runs):

- ``hard``: fine-tuning on your data (``--alpha 1``);
- ``kd``: token-level distillation on your data (the teacher's logits);
- ``seqkd``: sequence-level distillation (Kim & Rush, 2016): fine-tuning on the teacher's completions of
  prompts taken from your data (``kdkeras generate``), ``--alpha 1``;
- ``seqkd+kd``: the generated text (and your data), with the teacher's logits too ("Seq-KD + Word-KD");
- ``defaults``: ``kdkeras distill-lm`` with the winner's data and no setting flag.

Stages (each skips what is already done, so an interrupted run continues):

    python scripts/make_gpt2_teacher.py --data ../shared/data/shakespeare.txt --out runs/realistic \\
        --layers 6 --width 128 --heads 4 --batch-size 32 --steps 6000
    python scripts/distill_lm_realistic.py prepare --dir runs/realistic
    python scripts/distill_lm_realistic.py generate --dir runs/realistic
    python scripts/distill_lm_realistic.py select --dir runs/realistic \\
        --json docs/results/distill_lm_realistic_selection.json
    python scripts/distill_lm_realistic.py test --dir runs/realistic --seeds 0 1 2 \\
        --selection docs/results/distill_lm_realistic_selection.json --json docs/results/distill_lm_realistic.json

Settings are chosen on the validation plays (seed 0) and reported once on the test plays. Also measured:
the teacher's mean log-probability of each student's samples (64 held-out prompts, 64 new tokens each).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

#: What every run shares.
COMMON = ["--student", "from-teacher:1", "--batch-size", "16", "--sequence-length", "128", "--verbose", "0"]
#: Generation: prompts of at most PROMPT_CHARS characters from your data, SAMPLES completions each.
PROMPT_CHARS, NEW_TOKENS, PROMPTS, SAMPLES = 32, 95, 8000, 2
#: Validation candidates: method -> {name: flags}; YOURS and GENERATED stand for the two data files.
MINE, BOTH, GEN = ["--data", "YOURS"], ["--data", "YOURS", "--data", "GENERATED"], ["--data", "GENERATED"]
CANDIDATES = {
    "hard": {"alpha=1": MINE + ["--alpha", "1"]},
    "kd": {f"alpha={a},T={t}": MINE + ["--alpha", a, "--temperature", t]
           for a, t in (("0", "1"), ("0.5", "1"), ("0", "2"), ("0.5", "2"))},
    "seqkd": {"generated,alpha=1": GEN + ["--alpha", "1"], "yours+generated,alpha=1": BOTH + ["--alpha", "1"]},
    "seqkd+kd": {"generated,alpha=0,T=1": GEN + ["--alpha", "0", "--temperature", "1"],
                 "yours+generated,alpha=0,T=1": BOTH + ["--alpha", "0", "--temperature", "1"],
                 "yours+generated,alpha=0.5,T=1": BOTH + ["--alpha", "0.5", "--temperature", "1"]},
}


def paths(root):
    return {"teacher": os.path.join(root, "teacher"), "yours": os.path.join(root, "yours.txt"),
            "prompts": os.path.join(root, "prompts.jsonl"), "generated": os.path.join(root, "generated.jsonl"),
            "validation": os.path.join(root, "validation.txt"), "test": os.path.join(root, "test.txt")}


def with_files(flags, p):
    """``flags`` with YOURS and GENERATED replaced by the files."""
    return [{"YOURS": p["yours"], "GENERATED": p["generated"]}.get(f, f) for f in flags]


def line_starts(text):
    """Where the non-blank lines of ``text`` start (prompts start there)."""
    return [i for i in range(len(text)) if (i == 0 or text[i - 1] == "\n") and text[i] != "\n" and
            text[i:i + 8].strip()]


def prepare(args):
    """Writes ``yours.txt`` (training plays 0, 10, 20, ...) and ``prompts.jsonl`` (line starts of it)."""
    from kdkeras.text import load_corpus

    p = paths(args.dir)
    plays = load_corpus(os.path.join(args.dir, "train.txt")).documents
    yours = plays[::10]
    with open(p["yours"], "w", encoding="utf-8") as f:
        f.write("".join(text for _, text in yours))
    text = "".join(t for _, t in yours)
    starts = line_starts(text)
    chosen = sorted(random.Random(0).sample(starts, min(PROMPTS, len(starts))))
    with open(p["prompts"], "w", encoding="utf-8") as f:
        for i in chosen:
            f.write(json.dumps({"prompt": text[i:i + PROMPT_CHARS]}) + "\n")
    record = {"your_plays": [n for n, _ in yours], "training_plays": len(plays), "your_characters": len(text),
              "all_training_characters": sum(len(t) for _, t in plays), "prompts": len(chosen)}
    with open(os.path.join(args.dir, "yours.json"), "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record))


def generate(args):
    p = paths(args.dir)
    command = ["kdkeras", "generate", "--teacher", p["teacher"], "--prompts", p["prompts"], "--out", p["generated"],
               "--max-new-tokens", str(NEW_TOKENS), "--samples-per-prompt", str(SAMPLES), "--batch-size", "128",
               "--seed", "0", "--verbose", str(args.verbose)]
    if os.path.exists(p["generated"] + ".parts"):
        command.append("--resume")
    start = time.time()
    subprocess.run(command, check=True)
    with open(os.path.join(args.dir, "generated.json"), "w") as f:
        json.dump({"command": " ".join(command), "seconds": time.time() - start}, f, indent=1)


def run(args, method, flags, split, seed, name):
    """One ``kdkeras distill-lm`` run (skipped when its metrics exist); returns its metrics."""
    p = paths(args.dir)
    out = os.path.join(args.dir, "runs", split, f"{name}-steps{args.steps}-s{seed}")
    metrics = os.path.join(out, "metrics.json")
    if not os.path.exists(metrics):
        command = ["kdkeras", "distill-lm", "--teacher", p["teacher"], *with_files(flags, p), *COMMON, "--steps", str(args.steps),
                   "--validation", p[split], "--seed", str(seed), "--out", out]
        if os.path.isdir(out):
            command.append("--resume")
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    with open(metrics) as f:
        record = json.load(f)
    record["teacher_logprob_of_samples"] = teacher_logprob(args, out, split, seed)
    return record


def teacher_logprob(args, out, split, seed):
    """The teacher's mean log-probability per token of the student's samples on 64 held-out prompts."""
    cached = os.path.join(out, "teacher_logprob.json")
    if os.path.exists(cached):
        with open(cached) as f:
            return json.load(f)["mean"]
    import numpy as np

    from kdkeras.text import causal_lm, generation

    p = paths(args.dir)
    with open(p[split], encoding="utf-8") as f:
        text = f.read()
    starts = line_starts(text)
    prompts = [text[i:i + PROMPT_CHARS] for i in sorted(random.Random(1).sample(starts, 64))]
    student = causal_lm.load_causal_lm(os.path.join(out, "student"), "--student")
    teacher = causal_lm.load_causal_lm(p["teacher"])
    samples = generation.generate(student, prompts, sampling=generation.Sampling(max_new_tokens=64, seed=seed),
                                  batch_size=64)
    scores = generation.score(teacher, [(r["prompt"], r["completion"]) for r in samples])
    mean = float(np.nanmean(scores))
    with open(cached, "w") as f:
        json.dump({"mean": mean, "per_sample": [None if np.isnan(s) else float(s) for s in scores]}, f)
    return mean


def select(args):
    results, best = {}, {}
    for method, candidates in CANDIDATES.items():
        results[method] = {}
        for name, flags in candidates.items():
            if args.only and f"{method}={name}" not in args.only:
                continue
            metrics = run(args, method, flags, "validation", 0, f"{method}-{name}")
            results[method][name] = {"bits_per_byte": metrics["student_after"]["bits_per_byte"], "flags": flags,
                                     "teacher_bits_per_byte": metrics["teacher"]["bits_per_byte"]}
        if results[method]:
            best[method] = min(results[method], key=lambda n: results[method][n]["bits_per_byte"])
    winner = min(best, key=lambda m: results[m][best[m]]["bits_per_byte"])
    record = {"what": "validation bits per byte of each candidate (seed 0); the lowest per method is chosen",
              "results": results, "chosen": best, "winner": {"method": winner, "setting": best[winner]},
              "common_flags": COMMON + ["--steps", str(args.steps)]}
    write(args.json, record)


def test(args):
    with open(args.selection) as f:
        selection = json.load(f)
    methods = {m: CANDIDATES[m][s] for m, s in selection["chosen"].items()}
    winner = selection["winner"]
    methods["defaults"] = [f for f in CANDIDATES[winner["method"]][winner["setting"]] if f in ("--data", "YOURS", "GENERATED")]
    per = {m: [] for m in methods}
    teacher = parameters = None
    order = [(seed, m) for seed in args.seeds for m in methods if m != "defaults"] + \
            [(seed, "defaults") for seed in args.seeds]  # the defaults last: they repeat the winner's settings
    for seed, method in order:
        done = os.path.exists(os.path.join(args.dir, "runs", "test", f"{method}-steps{args.steps}-s{seed}",
                                           "metrics.json"))
        if args.no_run and not done:
            continue
        metrics = run(args, method, methods[method], "test", seed, method)
        teacher, parameters = metrics["teacher"]["bits_per_byte"], metrics["parameters"]
        per[method].append({"seed": seed, "bits_per_byte": metrics["student_after"]["bits_per_byte"],
                            "kl_to_teacher": metrics["student_after"]["kl_to_teacher"],
                            "teacher_logprob_of_samples": metrics["teacher_logprob_of_samples"],
                            "training_seconds": metrics["training_seconds"], "command": metrics["command"],
                            "student_before": metrics["student_before"]["bits_per_byte"]})
    per = {m: rows for m, rows in per.items() if rows}
    hard = statistics.mean(r["bits_per_byte"] for r in per["hard"])
    out = {}
    for method, rows in per.items():
        mean = statistics.mean(r["bits_per_byte"] for r in rows)
        out[method] = {"seeds": [r["seed"] for r in rows],
                       "bits_per_byte": {"per_seed": [r["bits_per_byte"] for r in rows], "mean": mean},
                       "gap_closed": (hard - mean) / (hard - teacher),
                       "teacher_logprob_of_samples": statistics.mean(r["teacher_logprob_of_samples"] for r in rows),
                       "settings": selection["chosen"].get(method, "no setting flag"), "runs": rows}
    with open(os.path.join(args.dir, "teacher.json")) as f:
        made = json.load(f)
    extra = {}
    for name in ("yours.json", "generated.json"):
        with open(os.path.join(args.dir, name)) as f:
            extra[name.split(".")[0]] = json.load(f)
    with open(paths(args.dir)["generated"], encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    tokens = sum(r["tokens"] for r in samples)
    extra["generated"].update({"samples": len(samples), "tokens": tokens,
                               "tokens_per_second": tokens / extra["generated"]["seconds"],
                               "ended": sum(r["ended"] for r in samples),
                               "mean_logprob": statistics.mean(r["mean_logprob"] for r in samples)})
    record = {"what": "held-out (test plays) bits per byte of distill-lm students; gap_closed = (hard - method) / "
                      "(hard - teacher) on the means", "seeds": args.seeds,
              "teacher": {"bits_per_byte": teacher, "parameters": made["parameters"], "training_seconds": made["seconds"],
                          "command": made["command"]},
              "student": {"spec": "from-teacher:1", "parameters": parameters["student"]},
              "your_data": extra["yours"], "generation": extra["generated"], "methods": out,
              "common_flags": COMMON + ["--steps", str(args.steps)], "date": time.strftime("%Y-%m-%d"), "machine": made["provenance"]["machine"]}
    write(args.json, record)
    for method, row in out.items():
        print(f"{method:10s} {row['bits_per_byte']['mean']:.4f}  gap closed {row['gap_closed']:+.1%}  "
              f"teacher log-prob of samples {row['teacher_logprob_of_samples']:.3f}")


def write(path, record):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=("prepare", "generate", "select", "test"))
    p.add_argument("--dir", required=True, help="the folder of make_gpt2_teacher.py")
    p.add_argument("--json", help="the result file (select, test)")
    p.add_argument("--selection", help="select's result file (test)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps of every run")
    p.add_argument("--no-run", action="store_true", help="test: summarise the finished runs only")
    p.add_argument("--only", nargs="+", metavar="METHOD=SETTING", help="select: run only these candidates")
    p.add_argument("--verbose", type=int, default=1)
    args = p.parse_args(argv)
    {"prepare": prepare, "generate": generate, "select": select, "test": test}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
