"""Compares every kdkeras distillation method on the bundled MNIST sample; writes docs/results.md.

For each teacher/student pair and seed it trains the teacher once, then, from
the same initial student weights and the same data:

- scratch: the student alone on hard labels (the baseline);
- kd: Hinton KD (``kl``), teacher logits cached;
- dkd: decoupled KD (``dkd``, weights 1 and 8) with a linear warm-up;
- fitnets: KD plus a FitNets hint (student ``conv1`` -> teacher ``conv2`` via a 1x1 adapter);
- rkd: KD plus RKD distance and angle losses on the ``dense`` embeddings;
- dml: deep mutual learning of two students, no teacher (the first is reported);
- born-again: a new student distilled from the trained scratch student (same architecture).

All KD variants use T = 4 and alpha = 0.5 (hard-label weight); nothing is tuned
per method. Test accuracy on the 1,000-digit test split; mean +- std over seeds;
"gap closed" = (method - scratch) / (teacher - scratch).

    python scripts/compare_methods.py                 # both pairs, seeds 0 1 2, 20 epochs (about 9 min)
    python scripts/compare_methods.py --epochs 3 --seeds 0 --out -   # a quick look
"""

import argparse
import datetime
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

METHODS = ["scratch", "kd", "dkd", "fitnets", "rkd", "dml", "born-again"]
PAIRS = {
    "article": "article teacher (225,034 parameters) -> article student (87,050)",
    "tiny": "article teacher (225,034 parameters) -> tiny student, Conv2D(4) + Dense(16) (11,038)",
}
T, ALPHA = 4.0, 0.5


def build_student(pair, seed, name="student"):
    import kdkeras

    if pair == "article":
        return kdkeras.build_student(seed=seed, name=name)
    return kdkeras.build_cnn((4,), 16, seed=seed, name=name)


def run_pair_seed(pair, seed, epochs, teacher_epochs, arrays, log):
    """Every method on one pair and seed; returns ``{method: test accuracy}`` (and the teacher's)."""
    import keras

    import kdkeras
    from kdkeras import experiment
    from kdkeras.evaluation import accuracy

    (x, y), (xt, yt) = arrays
    recipe = kdkeras.Recipe(teacher_epochs=teacher_epochs, student_epochs=epochs, learning_rate=1e-3,
                            lr_schedule="constant", shift=0.0, rotation=0.0, temperature=T, alpha=ALPHA, seed=seed)

    def fresh(name="student"):
        keras.utils.set_random_seed(seed)
        return build_student(pair, seed, name)

    def distil(teacher, **kwargs):
        return experiment.distil(fresh(), teacher, (x, y), recipe, verbose=0, **kwargs).model

    results = {}
    start = time.monotonic()
    keras.utils.set_random_seed(seed)
    teacher = experiment.train_teacher(kdkeras.build_teacher(seed=seed), (x, y), recipe, verbose=0).model
    scratch = experiment.train_scratch(fresh(), (x, y), recipe, verbose=0).model
    warmup = kdkeras.callbacks.linear_warmup(ALPHA, max(1, epochs // 4))
    students = {
        "scratch": scratch,
        "kd": distil(teacher),
        "dkd": experiment.distil(fresh(), teacher, (x, y), recipe.replace(loss="dkd"), verbose=0,
                                 callbacks=[warmup]).model,
        "fitnets": distil(teacher, distiller_class=kdkeras.FeatureDistiller, hints=[("conv1", "conv2")]),
        "rkd": distil(teacher, distiller_class=kdkeras.FeatureDistiller, relation=("dense", "dense")),
    }
    peer = build_student(pair, seed + 1000, "peer")
    mutual = kdkeras.MutualLearning([fresh(), peer])
    mutual.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=ALPHA, temperature=T)
    mutual.fit(kdkeras.make_dataset(x, y, 64, shuffle=True, seed=seed), epochs=epochs, verbose=0)
    students["dml"] = mutual.students[0]
    students["born-again"] = distil(scratch)
    results["teacher"] = accuracy(teacher, xt, yt)
    results.update({name: accuracy(model, xt, yt) for name, model in students.items()})
    log(f"{pair:8s} seed {seed}: " + "  ".join(f"{k} {v:.3f}" for k, v in results.items())
        + f"  ({time.monotonic() - start:.0f} s)")
    return results


def summarise(pair, runs):
    import numpy as np

    teacher = np.mean([r["teacher"] for r in runs])
    scratch = np.mean([r["scratch"] for r in runs])
    rows = [f"### {PAIRS[pair]}", "",
            "| method | test accuracy (mean ± std) | per seed | gap closed | beats scratch? |",
            "|---|---:|---|---:|---|"]
    for name in ["teacher"] + METHODS:
        values = np.array([r[name] for r in runs])
        per_seed = " / ".join(f"{v:.3f}" for v in values)
        if name in ("teacher", "scratch"):
            gap, beats = ("—", "—") if name == "teacher" else ("0 %", "—")
        else:
            gap = f"{100 * (values.mean() - scratch) / (teacher - scratch):+.0f} %" if teacher > scratch else "n/a"
            beats = "yes" if values.mean() > scratch else "**no**"
        rows.append(f"| {name} | {values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0:.4f} | "
                    f"{per_seed} | {gap} | {beats} |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs for every student (the main job's default)")
    parser.add_argument("--teacher-epochs", type=int, default=12, help="epochs for the teacher")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS), help="pairs")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results.md"), help='report path ("-": print)')
    args = parser.parse_args(argv)

    import kdkeras
    from kdkeras.atomic import write_text
    from kdkeras.provenance import machine

    arrays = kdkeras.load_mnist_arrays("sample")
    start = time.monotonic()
    log = lambda line: print(line, flush=True)  # noqa: E731 - a script's progress lines
    runs = {pair: [run_pair_seed(pair, s, args.epochs, args.teacher_epochs, arrays, log) for s in args.seeds]
            for pair in args.pairs}
    minutes = (time.monotonic() - start) / 60
    command = "python scripts/compare_methods.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    text = "\n".join([
        "# Distillation methods compared",
        "",
        f"`{command}` on {datetime.date.today().isoformat()}, {machine()}; {minutes:.1f} minutes in all. Data: the **bundled 5,000-digit MNIST "
        "sample** (4,000 train / 1,000 test), not full MNIST. Teacher "
        f"{args.teacher_epochs} epochs; every student {args.epochs} epochs, batch 64, Adam 1e-3; T = {T:g}, "
        f"alpha = {ALPHA:g} (hard-label weight) for every KD variant, untuned; seeds {args.seeds}. "
        "Gap closed = (method − scratch) / (teacher − scratch), on the means.",
        "",
        *[summarise(pair, r) + "\n" for pair, r in runs.items()],
        "Methods: see `scripts/compare_methods.py`'s docstring. With 1,000 test digits one seed's accuracy moves "
        "in steps of 0.001 and seeds differ by up to 0.01: differences smaller than the std are noise.",
        "",
    ])
    if args.out == "-":
        print(text)
    else:
        write_text(args.out, text)
        record = {"command": command, "date": datetime.date.today().isoformat(),
                  "machine": machine(),
                  "data": "bundled 5,000-digit MNIST sample, 4,000 train / 1,000 test (not full MNIST)",
                  "teacher_epochs": args.teacher_epochs, "student_epochs": args.epochs, "temperature": T,
                  "alpha": ALPHA, "seeds": args.seeds, "minutes": round(minutes, 2), "test_accuracy": runs}
        write_text(os.path.splitext(args.out)[0] + ".json", json.dumps(record, indent=2) + "\n")
        print(f"Wrote {args.out} and its .json ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
