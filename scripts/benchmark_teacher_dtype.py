"""A teacher's memory and forward time in float32 and bfloat16 (``--teacher-dtype``), each in a fresh process.

A Qwen3-0.6B-shaped teacher built from its config (28 layers, hidden 1,024,
16 / 8 heads, tied embeddings, V = 151,936; no weights are downloaded). For
each dtype a subprocess builds it, runs ``--rounds`` forward passes over
``--batch-size`` x ``--sequence-length`` random tokens, and reports the bytes
of its weights, its peak resident memory and the median seconds a forward
pass. (How far a bfloat16 step lands from a float32 one is tested in
``tests/test_distill_lm.py``.)

    python scripts/benchmark_teacher_dtype.py --json docs/results/teacher_dtype.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DTYPES = ("float32", "bfloat16")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--sequence-length", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--one", choices=DTYPES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_one(args):
    """Builds the teacher in ``args.one`` and times its forward pass; prints JSON."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.Qwen3Backbone(vocabulary_size=151_936, num_layers=28, num_query_heads=16,
                                              num_key_value_heads=8, head_dim=128, hidden_dim=1024,
                                              intermediate_dim=3072, rope_max_wavelength=1_000_000,
                                              tie_word_embeddings=True, dtype=args.one)
    model = keras_hub.models.Qwen3CausalLM(backbone=backbone, preprocessor=None)
    ids = np.random.default_rng(0).integers(0, 151_936, (args.batch_size, args.sequence_length)).astype("int32")
    x = {"token_ids": tf.constant(ids), "padding_mask": tf.ones(ids.shape, tf.bool)}
    forward = tf.function(lambda inputs: tf.nn.log_softmax(tf.cast(model(inputs, training=False), tf.float32)))
    forward(x)
    seconds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        log_p = forward(x).numpy()
        seconds.append(time.perf_counter() - start)
    assert np.isfinite(log_p).all()
    print(json.dumps({"dtype": args.one, "parameters": int(model.count_params()),
                      "weight_bytes": int(sum(v.numpy().nbytes for v in model.weights)),
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "forward_seconds": float(np.median(seconds))}))


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        return run_one(args)
    from kdkeras import provenance

    rows = {}
    for dtype in DTYPES:
        command = [sys.executable, __file__, "--one", dtype, "--batch-size", str(args.batch_size),
                   "--sequence-length", str(args.sequence_length), "--rounds", str(args.rounds)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{dtype} failed:\n{proc.stderr[-3000:]}")
        rows[dtype] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{dtype:9s} weights {rows[dtype]['weight_bytes'] / 2 ** 30:.2f} GiB, peak {rows[dtype]['peak_mib']:.0f} "
              f"MiB, forward {rows[dtype]['forward_seconds']:.2f} s", flush=True)
    ratios = {key: rows["bfloat16"][key] / rows["float32"][key] for key in ("weight_bytes", "peak_mib",
                                                                            "forward_seconds")}
    print(f"bfloat16 / float32: weights {ratios['weight_bytes']:.2f}, peak memory {ratios['peak_mib']:.2f}, "
          f"forward time {ratios['forward_seconds']:.2f}")
    provenance.write_result(args.json, {
        "what": "a Qwen3-0.6B-shaped teacher from its config in float32 and bfloat16, fresh processes",
        "tokens": [args.batch_size, args.sequence_length], "rows": rows, "bfloat16_over_float32": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
