"""Peak memory per token of a language-model distillation step against the student's own training step.

At a real vocabulary the logits dominate a step's memory. For each trainer
and each batch size (tokens a step) a fresh process builds the models, runs
three training steps and reports its peak resident memory; the memory *per
token* is the slope between the two batch sizes (constant costs such as
TensorFlow itself and the weights cancel). Every trainer is reported as a
ratio to the student's own hard-label training step (``student.fit``) of the
same family, measured in the same run.

Families (vocabulary ``--vocabulary``, 151,936 by default: Qwen3's):

- ``plain``: Keras language models (embedding, one hidden ``Dense``, a
  ``Dense`` head over the vocabulary); the ``fused`` trainer gives them a
  ``distillation_head()``;
- ``gpt2``: a KerasHub ``GPT2CausalLM`` pair from configs (tied embeddings).

Trainers: ``student alone``; the Distiller with ``kl`` and ``jsd`` with
chunks off (``token_chunking=None``), with chunks
(``"auto"``), and with chunks and the fused head.

    python scripts/benchmark_lm_memory.py --json docs/results/lm_memory.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TRAINERS = {
    "student alone": None,
    "kl, no chunks": ("kl", None, False),
    "kl, chunks": ("kl", "auto", False),
    "kl, chunks + fused head": ("kl", "auto", True),
    "jsd, no chunks": ("jsd", None, False),
    "jsd, chunks": ("jsd", "auto", False),
    "jsd, chunks + fused head": ("jsd", "auto", True),
}
FAMILIES = ("plain", "gpt2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocabulary", type=int, default=151_936)
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--batches", type=int, nargs=2, default=(2, 8), help="sequences a step, small and large")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--one", nargs=3, metavar=("FAMILY", "TRAINER", "BATCH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _models(family, vocabulary, length):
    import keras

    if family == "gpt2":
        import keras_hub

        def gpt2(layers, hidden, seed):
            keras.utils.set_random_seed(seed)
            backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocabulary, num_layers=layers, num_heads=2,
                                                     hidden_dim=hidden, intermediate_dim=2 * hidden,
                                                     max_sequence_length=length)
            return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

        return gpt2(2, 64, 1), gpt2(1, 32, 2)

    class PlainLM(keras.Model):
        """Embedding -> Dense -> Dense head; ``distillation_head()`` exposes body and head."""

        def __init__(self, width, **kwargs):
            super().__init__(**kwargs)
            self.embed = keras.layers.Embedding(vocabulary, width)
            self.hidden = keras.layers.Dense(width, activation="relu")
            self.head = keras.layers.Dense(vocabulary)

        def body(self, x, training=None):
            return self.hidden(self.embed(x))

        def call(self, x, training=None):
            return self.head(self.body(x))

        def distillation_head(self):
            return self.body, self.head

    teacher, student = PlainLM(64, name="teacher"), PlainLM(32, name="student")
    for model in (teacher, student):
        model.build((None, length))
    return teacher, student


def run_one(family, trainer, batch, args):
    """Three training steps of one trainer in this process; prints its peak memory as JSON."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kdkeras

    before = _peak_mib()
    teacher, student = _models(family, args.vocabulary, args.sequence_length)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.vocabulary, (batch, args.sequence_length + 1))
    x = ids[:, :-1].astype("int32")
    if family == "gpt2":
        x = {"token_ids": x, "padding_mask": np.ones_like(x, bool)}
    y = ids[:, 1:].astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat(3)
    setting = TRAINERS[trainer]
    if setting is None:
        student.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model = student
    else:
        loss, chunks, fused = setting
        if not fused and hasattr(student, "distillation_head"):
            for m in (teacher, student):
                m.distillation_head = None  # hide the protocol: the models run as they are
        model = kdkeras.Distiller(student=student, teacher=teacher)
        model.compile(optimizer="sgd", distillation_loss_fn=loss, alpha=0.5, temperature=2.0,
                      token_chunking=kdkeras.TokenChunking(chunks, fused))
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": _peak_mib(), "before_mib": before, "seconds": seconds}))


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        family, trainer, batch = args.one
        return run_one(family, trainer, int(batch), args)
    from kdkeras import provenance

    tokens = [b * args.sequence_length for b in args.batches]
    rows = {}
    for family in args.families:
        for trainer in TRAINERS:
            peaks = []
            for batch in args.batches:
                command = [sys.executable, __file__, "--vocabulary", str(args.vocabulary), "--sequence-length",
                           str(args.sequence_length), "--one", family, trainer, str(batch)]
                proc = subprocess.run(command, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{family} / {trainer} / batch {batch} failed:\n{proc.stderr[-3000:]}")
                peaks.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            per_token = (peaks[1]["peak_mib"] - peaks[0]["peak_mib"]) * 1024 / (tokens[1] - tokens[0])
            rows[f"{family} / {trainer}"] = {"family": family, "trainer": trainer, "peaks": peaks,
                                             "kib_per_token": per_token}
            print(f"{family:6s} {trainer:28s} {per_token:9.0f} KiB/token  "
                  f"(peaks {peaks[0]['peak_mib']:.0f} / {peaks[1]['peak_mib']:.0f} MiB)", flush=True)
    for row in rows.values():
        base = rows[f"{row['family']} / student alone"]["kib_per_token"]
        row["ratio_to_student_alone"] = row["kib_per_token"] / base
    print("\nratio of memory per token to the student's own step:")
    for name, row in rows.items():
        print(f"  {name:40s} {row['ratio_to_student_alone']:5.2f}x")
    provenance.write_result(args.json, {
        "what": "peak resident memory per token (slope between two batch sizes), separate processes",
        "vocabulary": args.vocabulary, "sequence_length": args.sequence_length, "tokens_per_step": tokens,
        "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
