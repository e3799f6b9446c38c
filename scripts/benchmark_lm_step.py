"""A language-model distillation step's time, side by side with the student's own step and keras.distillation's.

KerasHub pairs built from configs (no weights are downloaded), random token
ids, ``kl`` with alpha 0.5 and T = 1, plain SGD. Every trainer is built and
traced first; then, over ``--rounds`` rounds, each trainer runs ``--steps``
steps (``train_on_batch`` on one batch) in turn (interleaved, one process), so a noisy machine slows all of
them alike. The figure reported is each trainer's median seconds a step over
the rounds, and its ratio to the student's own hard-label step and to
``keras.distillation``'s.

Pairs (``--pairs``):

- ``gpt2-151936`` / ``gpt2-32000``: GPT-2 teacher 2 x 64, student 1 x 32, at
  Qwen3's and Llama 2's vocabularies, context 128, batch 4;
- ``qwen3-0.6b``: a Qwen3-0.6B-shaped teacher (28 layers, hidden 1,024,
  16 / 8 heads, tied embeddings, V = 151,936) and a 6-layer student of the
  same width, context 256, batch 2.

Trainers: ``student alone`` (``student.fit`` on hard labels), ``kdkeras
defaults`` (chunks + fused head), ``kdkeras, chunks, no fused head``,
``kdkeras, no chunks`` (``token_chunking=None``),
``keras.distillation`` (its ``Distiller``, student loss weight 0.5 and
``LogitsDistillation``).

    python scripts/benchmark_lm_step.py --json docs/results/lm_step_speed.json
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PAIRS = {
    "gpt2-151936": {"family": "gpt2", "vocabulary": 151_936, "length": 128, "batch": 4},
    "gpt2-32000": {"family": "gpt2", "vocabulary": 32_000, "length": 128, "batch": 4},
    "qwen3-0.6b": {"family": "qwen3", "vocabulary": 151_936, "length": 256, "batch": 2},
}
TRAINERS = {
    "student alone": None,
    "kdkeras defaults": {},
    "kdkeras, chunks, no fused head": {"token_chunking": "no fused head"},
    "kdkeras, no chunks": {"token_chunking": None},
    "keras.distillation": "keras",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="timed steps a trainer runs in each round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def build_model(pair, role):
    """The ``role`` (``"teacher"`` or ``"student"``) KerasHub causal LM of ``PAIRS[pair]``, fresh from a seed."""
    import keras
    import keras_hub

    spec = PAIRS[pair]
    vocabulary, length = spec["vocabulary"], spec["length"]
    keras.utils.set_random_seed(1 if role == "teacher" else 2)
    if spec["family"] == "gpt2":
        layers, hidden = (2, 64) if role == "teacher" else (1, 32)
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocabulary, num_layers=layers, num_heads=2,
                                                 hidden_dim=hidden, intermediate_dim=2 * hidden,
                                                 max_sequence_length=length)
        return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    backbone = keras_hub.models.Qwen3Backbone(vocabulary_size=vocabulary, num_layers=28 if role == "teacher" else 6,
                                              num_query_heads=16, num_key_value_heads=8, head_dim=128,
                                              hidden_dim=1024, intermediate_dim=3072, rope_max_wavelength=1_000_000,
                                              tie_word_embeddings=True)
    return keras_hub.models.Qwen3CausalLM(backbone=backbone, preprocessor=None)


def trainer_model(name, teacher, student):
    """The compiled model that ``fit`` trains for trainer ``name``."""
    import keras

    import kdkeras

    setting = TRAINERS[name]
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if setting is None:
        keras.Model.compile(student, optimizer=keras.optimizers.SGD(1e-3), loss=hard)
        return student
    if setting == "keras":
        model = keras.distillation.Distiller(
            teacher=teacher, student=student, student_loss_weight=0.5,
            # KLDivergence as an instance: the string "kl_divergence" would be applied to raw logits.
            distillation_losses=keras.distillation.LogitsDistillation(temperature=1.0,
                                                                      loss=keras.losses.KLDivergence()))
        model.compile(optimizer=keras.optimizers.SGD(1e-3), loss=hard)
        return model
    if setting.get("token_chunking") == "no fused head":
        setting = {"token_chunking": kdkeras.TokenChunking(fused_head=False)}
    model = kdkeras.Distiller(student, teacher)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), distillation_loss_fn="kl", alpha=0.5, temperature=1.0,
                  **setting)
    return model


def measure(pair, trainers, rounds, steps, seed):
    """``{trainer: {"seconds": [per round], "median_seconds": s}}`` for one pair."""
    import numpy as np
    import tensorflow as tf

    spec = PAIRS[pair]
    teacher = build_model(pair, "teacher")
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, spec["vocabulary"], (spec["batch"], spec["length"] + 1)).astype("int32")
    x = {"token_ids": tf.constant(ids[:, :-1]), "padding_mask": tf.ones(ids[:, :-1].shape, tf.bool)}
    y = tf.constant(ids[:, 1:])
    models = {}
    for name in trainers:
        models[name] = trainer_model(name, teacher, build_model(pair, "student"))
        models[name].train_on_batch(x, y)  # traces the step
    seconds = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(x, y)  # returns NumPy values: the step has finished
            seconds[name].append((time.perf_counter() - start) / steps)
    return {name: {"seconds": s, "median_seconds": float(np.median(s))} for name, s in seconds.items()}


def main(argv=None):
    args = parse_args(argv)
    from kdkeras import provenance

    results = {}
    for pair in args.pairs:
        rows = measure(pair, args.trainers, args.rounds, args.steps, args.seed)
        student = rows.get("student alone", {}).get("median_seconds")
        theirs = rows.get("keras.distillation", {}).get("median_seconds")
        unchunked = rows.get("kdkeras, no chunks", {}).get("median_seconds")
        print(f"\n{pair}: seconds a step (median of {args.rounds} rounds of {args.steps} steps)")
        for name, row in rows.items():
            for key, base in (("ratio_to_student", student), ("ratio_to_keras_distillation", theirs),
                              ("ratio_to_no_chunks", unchunked)):
                row[key] = row["median_seconds"] / base if base else None
            ratios = "  ".join(f"{label} {row[key]:.2f}x" for key, label in
                               (("ratio_to_student", "student"), ("ratio_to_keras_distillation", "keras.distillation"),
                                ("ratio_to_no_chunks", "no chunks")) if row[key] is not None)
            print(f"  {name:32s} {row['median_seconds']:8.3f} s   {ratios}", flush=True)
        results[pair] = {"spec": PAIRS[pair], "trainers": rows}
    provenance.write_result(args.json, {
        "what": "seconds a training step, trainers interleaved over rounds in one process",
        "loss": "kl, alpha 0.5, T 1, SGD", "rounds": args.rounds, "steps_per_round": args.steps, "pairs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
