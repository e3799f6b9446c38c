"""Epoch time of distillation against training the student alone, side by side in one run.

    python scripts/benchmark.py                       # CPU defaults, writes docs/benchmarks.md
    python scripts/benchmark.py --jit --precision mixed_bfloat16 --no-write

Time to accuracy (the wall-clock time until each trainer's student first reaches
a test accuracy, on real data) is ``scripts/time_to_accuracy.py``; both write
their sections into ``docs/benchmarks.md``.

Four trainers of the same article student CNN see the same batches of real MNIST
digits (the bundled sample's training split, tiled to ``--samples``):

1. the student alone (``fit`` on hard labels),
2. ``kdkeras.Distiller`` with the teacher online (run every step),
3. ``kdkeras.Distiller`` on cached teacher logits (cache build timed separately),
4. ``keras.distillation.Distiller`` (Keras' own, teacher every step, KL loss).

After one warm-up epoch each (tracing), the trainers take turns, one epoch each
per round, for ``--rounds`` rounds, so that a slow patch of a shared machine hits
all of them alike; the median epoch time is reported. With ``--memory``, each
trainer also runs one epoch in a fresh subprocess to measure its peak resident
memory. The ratios are checked against the speed targets listed in the report.
Timing does not depend on what the weights are, so the teacher is not trained.
"""

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONFIGS = ("student alone", "kdkeras online", "kdkeras cached", "keras.distillation")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--samples", type=int, default=20_000, help="training examples per epoch (the sample, tiled)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="timed epochs per trainer, taken in turns")
    p.add_argument("--jit", action="store_true", help="compile every train step with XLA (jit_compile=True)")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                   help="Keras global dtype policy")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure each trainer's peak memory in a fresh subprocess")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"), help="markdown report")
    p.add_argument("--no-write", dest="write", action="store_false", help="print only")
    p.add_argument("--json", default=None, help="result file (default: docs/results/benchmark_<date>.json)")
    p.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("samples", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def make_data(samples, batch_size):
    import numpy as np

    import kdkeras

    (x, y), _ = kdkeras.load_mnist_arrays("sample")
    reps = -(-samples // len(x))
    x, y = np.concatenate([x] * reps)[:samples], np.concatenate([y] * reps)[:samples]
    return kdkeras.make_dataset(x, y, batch_size, shuffle=True, seed=0), (x, y)


def make_trainer(name, teacher, ds, jit, arrays, batch_size):
    """Returns ``(model, dataset, cache_seconds)`` for one configuration."""
    import keras

    import kdkeras

    keras.utils.set_random_seed(1)
    student = kdkeras.build_student(seed=1)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    cache_seconds = None
    if name == "student alone":
        model = student
        model.compile(optimizer="adam", loss=ce, metrics=["accuracy"], jit_compile=jit)
    elif name in ("kdkeras online", "kdkeras cached"):
        model = kdkeras.Distiller(student=student, teacher=teacher)
        model.compile(optimizer="adam", metrics=["accuracy"], student_loss_fn=ce,
                      alpha=0.1, temperature=3.0, jit_compile=jit)
        if name == "kdkeras cached":
            start = time.perf_counter()
            # From the arrays: the images are not copied through tf.data.
            ds = kdkeras.cache_teacher_logits(teacher, arrays, batch_size=batch_size, seed=0)
            cache_seconds = time.perf_counter() - start
    else:
        from keras import distillation

        model = distillation.Distiller(
            teacher=teacher, student=student,
            distillation_losses=distillation.LogitsDistillation(
                temperature=3.0, loss=keras.losses.KLDivergence()),
            student_loss_weight=0.1,
        )
        model.compile(optimizer="adam", loss=ce, metrics=["accuracy"], jit_compile=jit)
    return model, ds, cache_seconds


def timed_epoch(model, ds):
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return time.perf_counter() - start


def setup(args):
    import warnings

    import keras

    import kdkeras

    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    keras.config.set_dtype_policy(args.precision)
    teacher = kdkeras.build_teacher(seed=0)
    return (teacher, *make_data(args.samples, args.batch_size))


def _rss_mib():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the high-water mark is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args):
    """Two epochs of one trainer in a fresh process; prints its peak memory as JSON."""
    import threading

    teacher, ds, arrays = setup(args)
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    model, data, _ = make_trainer(args.child, teacher, ds, args.jit, arrays, args.batch_size)
    timed_epoch(model, data)
    timed_epoch(model, data)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mib())
    print(json.dumps({"peak_mib": peak[0], "increase_mib": peak[0] - before}))


def measure_memory(args):
    peaks = {}
    for name in CONFIGS:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--samples", str(args.samples),
               "--batch-size", str(args.batch_size), "--precision", args.precision]
        if args.jit:
            cmd.append("--jit")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"memory run for {name!r} failed:\n{proc.stderr[-2000:]}")
        peaks[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  peak memory, {name}: {peaks[name]['peak_mib']:.0f} MiB "
              f"(+{peaks[name]['increase_mib']:.0f} MiB for the trainer and its epochs)", flush=True)
    return peaks


def machine():
    from kdkeras.provenance import provenance

    p = provenance()
    return f"{p['machine']}; Python {p['python']}, TensorFlow {p['tensorflow']}, Keras {p['keras']}"


def report(args, times, cache_seconds, peaks, when, where, command):
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    base = med["student alone"]
    lines = [
        "| configuration | s/epoch (median) | samples/s | vs student alone | best epoch (s) | best vs student's best "
        "| peak memory (MiB) | of which training (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in CONFIGS:
        peak = f"{peaks[name]['peak_mib']:.0f} | {peaks[name]['increase_mib']:.0f}" if peaks else "— | —"
        lines.append(f"| {name} | {med[name]:.3f} | {args.samples / med[name]:,.0f} | "
                     f"{med[name] / base:.2f} | {best[name]:.3f} | {best[name] / best['student alone']:.2f} "
                     f"| {peak} |")
    cached, online, keras_d = med["kdkeras cached"], med["kdkeras online"], med["keras.distillation"]
    checks = [
        ("kdkeras cached ≤ 1.05 × student alone", cached / base, cached <= 1.05 * base),
        ("keras.distillation ≥ 1.6 × kdkeras cached", keras_d / cached, keras_d >= 1.6 * cached),
        ("kdkeras online ≤ keras.distillation", online / keras_d, online <= keras_d),
    ]
    if peaks:
        ratio = peaks["kdkeras cached"]["peak_mib"] / peaks["kdkeras online"]["peak_mib"]
        checks.append(("peak memory cached ≤ 1.2 × online", ratio, ratio <= 1.2))
    lines += ["", "Targets (on the medians):", "",
              "| target | measured ratio | met |", "|---|---:|---|"]
    lines += [f"| {t} | {r:.2f} | {'yes' if ok else '**no**'} |" for t, r, ok in checks]
    lines += ["", f"Teacher-logit cache built once in {cache_seconds:.2f} s "
                  f"({cache_seconds / (online - base) if online > base else float('inf'):.1f} × the online teacher's "
                  "extra cost per epoch); not included in the epoch times."]
    header = [
        f"## {when} — {args.precision}{', XLA' if args.jit else ''}, batch {args.batch_size}",
        "",
        f"- command: `{command}`",
        f"- machine: {where}",
        f"- data: the bundled 5,000-digit MNIST sample's 4,000 training digits, tiled to {args.samples:,} "
        f"examples per epoch; article teacher (225,034 parameters) and student (87,050)",
        f"- method: one warm-up epoch per trainer, then {args.rounds} rounds of one epoch each, taken in "
        "turns; median epoch time. Peak memory: the largest resident set of a fresh process per "
        "trainer, sampled every 5 ms over building the trainer (the cache included) and two epochs; it "
        "includes TensorFlow and the data, the same for all; the last column is the part above the "
        "process' size before the trainer was built.",
        "",
    ]
    return "\n".join(header + lines) + "\n", checks


def _time_to_accuracy():
    """The sibling script module, whose report writer both scripts share (``prepend_section``)."""
    import importlib.util

    if "time_to_accuracy" not in sys.modules:  # loaded from its file: the scripts folder is no package
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "time_to_accuracy.py")
        spec = importlib.util.spec_from_file_location("time_to_accuracy", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["time_to_accuracy"] = module
        spec.loader.exec_module(module)
    return sys.modules["time_to_accuracy"]


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    teacher, ds, arrays = setup(args)
    print(f"Building trainers ({args.samples:,} examples per epoch, batch {args.batch_size}, "
          f"{args.precision}{', XLA' if args.jit else ''})", flush=True)
    trainers, cache_seconds = {}, None
    for name in CONFIGS:
        model, data, seconds = make_trainer(name, teacher, ds, args.jit, arrays, args.batch_size)
        trainers[name] = (model, data)
        cache_seconds = seconds if seconds is not None else cache_seconds
        timed_epoch(model, data)  # warm-up: tracing, and tf.data's .cache() filled
    times = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[: r % len(CONFIGS)]  # rotate who goes first
        for name in order:
            times[name].append(timed_epoch(*trainers[name]))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in CONFIGS),
              flush=True)
    peaks = measure_memory(args) if args.memory else None
    when = datetime.date.today().isoformat()
    command = "python scripts/benchmark.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    text, checks = report(args, times, cache_seconds, peaks, when, machine(), command)
    print("\n" + text)
    if args.write:
        from kdkeras.atomic import write_text
        from kdkeras.provenance import provenance

        path = args.json or os.path.join(ROOT, "docs", "results", f"benchmark_{when}.json")
        record = {"provenance": provenance(["scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])],
                                           data=f"bundled sample, tiled to {args.samples:,} examples per epoch"),
                  "settings": {k: v for k, v in vars(args).items() if k in ("samples", "batch_size", "rounds", "jit",
                                                                             "precision")},
                  "epoch_seconds": times, "cache_seconds": cache_seconds, "peak_memory": peaks,
                  "ratios": {target: ratio for target, ratio, _ in checks}}
        write_text(path, json.dumps(record, indent=2) + "\n")
        _time_to_accuracy().prepend_section(args.out, text.replace("\n- machine:", f"\n- result file: `{os.path.relpath(path, ROOT)}`"
                                                        "\n- machine:", 1))
        print(f"Wrote {path} and {args.out}")
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
