"""On-policy distillation speed: a training step on the student's own samples against a teacher-forced step.

A KerasHub GPT-2 pair from configs (byte-level vocabulary of 258; teacher
2 layers x 128, student 1 x 64), context ``--sequence-length`` (128),
batches of ``--batch-size`` (8), ``--max-new-tokens`` (32) sampled per
sequence. Trainers, timed side by side over the same batches after a
warm-up (median seconds a step, the first step of each round left out):

- ``teacher-forced``: ``on_policy=None`` (the plain Distiller step);
- ``on-policy, KV cache``: ``OnPolicy(1.0, ...)``, the student samples on
  its cache (``call_with_cache``), the default for KerasHub CausalLMs;
- ``on-policy, full passes``: the same with the cache hidden, one full
  forward pass per new token (the path for other Keras models).

    python scripts/benchmark_on_policy.py --data ../shared/data/shakespeare.txt --json docs/results/on_policy_speed.json
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import text_benchmark_args  # noqa: E402 (scripts/ is first on sys.path when a script runs)

TRAINERS = ("teacher-forced", "on-policy, KV cache", "on-policy, full passes")


def parse_args(argv=None):
    p = text_benchmark_args.parser(__doc__, sequence_length=128, batch_size=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="timed steps per trainer and round")
    p.add_argument("--rounds", type=int, default=4, help="rounds over the trainers, interleaved")
    p.add_argument("--json", help="write the results here")
    return text_benchmark_args.parse(p, argv)


def main(argv=None):
    args = parse_args(argv)
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import kdkeras
    from kdkeras import provenance

    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer,
                                                             sequence_length=args.sequence_length)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    rng = np.random.default_rng(0)
    size = args.sequence_length * 4
    starts = rng.integers(0, len(text) - size, args.batch_size * (args.steps + 1))
    x, y, w = preprocessor([text[s:s + size] for s in starts])
    batches = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(args.batch_size).cache()

    def gpt2(layers, hidden, seed):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=layers,
                                                 num_heads=4, hidden_dim=hidden, intermediate_dim=4 * hidden,
                                                 max_sequence_length=args.sequence_length)
        return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

    teacher = gpt2(2, 128, 1)

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if batch > 0:  # the first step of each fit also sets up its iterator
                self.times.append(time.perf_counter() - self.start)

    distillers = {}
    for name in TRAINERS:
        student = gpt2(1, 64, 2)
        if name == "on-policy, full passes":
            object.__setattr__(student, "_build_cache", None)  # hides the cache: one full pass per token
        d = kdkeras.Distiller(student, teacher)
        d.compile(optimizer="adam", alpha=0.0, temperature=1.0,
                  on_policy=None if name == "teacher-forced" else kdkeras.OnPolicy(
                      1.0, max_new_tokens=args.max_new_tokens, end_token_id=None))
        d.fit(batches.take(1), epochs=1, verbose=0)  # traces the step
        distillers[name] = d
    times = {name: [] for name in TRAINERS}
    for _ in range(args.rounds):
        for name, d in distillers.items():
            timer = StepTimes()
            timer.times = times[name]
            d.fit(batches.skip(1).take(args.steps), epochs=1, verbose=0, callbacks=[timer])
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["teacher-forced"]
    for name, seconds in medians.items():
        print(f"{name:24s} {seconds * 1000:8.1f} ms a step  ({seconds / base:.2f}x the teacher-forced step)")
    result = {
        "what": "median seconds per training step, trainers interleaved in one process",
        "pair": "KerasHub GPT-2, teacher 2x128, student 1x64, byte vocabulary 258",
        "sequence_length": args.sequence_length, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "steps_timed": {n: len(t) for n, t in times.items()},
        "median_seconds": medians, "ratio_to_teacher_forced": {n: s / base for n, s in medians.items()},
        "cache_speedup_over_full_passes": medians["on-policy, full passes"] / medians["on-policy, KV cache"],
        "command": "python scripts/benchmark_on_policy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": provenance.cpu(),
    }
    if args.json:
        from kdkeras.atomic import write_text

        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
