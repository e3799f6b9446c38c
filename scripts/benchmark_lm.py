"""Language-model distillation speed, side by side in one run, and the padded-batch loss of keras.distillation.

A small KerasHub causal-LM pair (GPT-2 backbones from configs, byte-level
vocabulary of 258, context 64, batch 16) on real text. Trainers, each timed
over the same batches after a warm-up epoch:

- ``student alone``: the student's own hard-label training (``student.fit``);
- ``kdkeras top-k cache``: :class:`kdkeras.Distiller` on the teacher's cached
  top-k log-probabilities (``cache_teacher_logits(top_k=K)``);
- ``kdkeras online``: the Distiller with the teacher run every step;
- ``keras.distillation``: Keras' own ``Distiller`` (``LogitsDistillation``
  with ``KLDivergence``) on the same pair.

Speeds are real tokens a second (padding not counted), as ratios to the
student alone. The run also records the cache's bytes a token and, on one
padded batch, the distillation loss keras.distillation reports beside the
mean over real tokens (kdkeras' value) computed in NumPy.

    python scripts/benchmark_lm.py --data ../shared/data/shakespeare.txt --json docs/results/lm_benchmark.json
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import text_benchmark_args  # noqa: E402 (scripts/ is first on sys.path when a script runs)

TRAINERS = ("student alone", "kdkeras top-k cache", "kdkeras online", "keras.distillation")


def parse_args(argv=None):
    p = text_benchmark_args.parser(__doc__, sequence_length=64, batch_size=16)
    p.add_argument("--sequences", type=int, default=960, help="training sequences (default 960)")
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per trainer after one warm-up epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    return text_benchmark_args.parse(p, argv)


def main(argv=None):
    args = parse_args(argv)
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import kdkeras

    keras.utils.set_random_seed(args.seed)
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    vocab = tokenizer.vocabulary_size()
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer,
                                                             sequence_length=args.sequence_length)
    with open(args.data, encoding="utf-8") as f:
        lines = [line.strip() for line in f if len(line.strip()) > 8]
    rng = np.random.default_rng(args.seed)
    # Two to four consecutive lines per sequence: lengths vary, so batches hold padding.
    starts = rng.choice(len(lines) - 4, args.sequences, replace=False)
    texts = [" ".join(lines[s:s + int(rng.integers(1, 4))]) for s in starts]
    x, y, w = preprocessor(texts)
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(args.batch_size).cache()
    real_tokens = float(tf.reduce_sum(tf.cast(w, tf.float32)))

    def gpt2(layers, hidden, seed):
        keras.utils.set_random_seed(seed)
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=vocab, num_layers=layers, num_heads=4,
                                                 hidden_dim=hidden, intermediate_dim=4 * hidden,
                                                 max_sequence_length=args.sequence_length)
        return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

    teacher = gpt2(2, 128, 1)
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # A teacher with some knowledge (two epochs on the text), so that soft targets differ from uniform.
    keras.Model.compile(teacher, optimizer=keras.optimizers.Adam(3e-3), loss=hard)
    teacher.fit(data, epochs=2, verbose=0)

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    results = {}
    cache_seconds = None
    for name in TRAINERS:
        student = gpt2(1, 48, 2)
        train = data
        if name == "student alone":
            model = student
            keras.Model.compile(model, optimizer=keras.optimizers.Adam(1e-3), loss=hard)
        elif name == "keras.distillation":
            model = keras.distillation.Distiller(
                teacher=teacher, student=student, student_loss_weight=0.5,
                distillation_losses=keras.distillation.LogitsDistillation(
                    temperature=1.0, loss=keras.losses.KLDivergence()))
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=hard)
        else:
            model = kdkeras.Distiller(student, teacher)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), alpha=0.5, temperature=1.0)
            if name == "kdkeras top-k cache":
                start = time.perf_counter()
                train = kdkeras.cache_teacher_logits(teacher, data, top_k=args.top_k, seed=args.seed)
                cache_seconds = time.perf_counter() - start
        timer = EpochTimes()
        timer.times = []
        model.fit(train, epochs=1 + args.epochs, verbose=0, callbacks=[timer])
        seconds = float(np.median(timer.times[1:]))
        results[name] = {"epoch_seconds": timer.times, "median_epoch_seconds": seconds,
                         "real_tokens_per_second": real_tokens / seconds}
        print(f"{name:>22}: {real_tokens / seconds:9.0f} real tokens/s  (median epoch {seconds:.2f} s)", flush=True)
    results_student = student  # the last trainer's student, after its distillation epochs
    base = results["student alone"]["real_tokens_per_second"]
    for r in results.values():
        r["ratio_to_student_alone"] = r["real_tokens_per_second"] / base

    cache = kdkeras.data.top_k.teacher_top_k(teacher, data.take(4), args.top_k)
    padded = padded_batch_losses(keras, np, kdkeras, teacher, gpt2(1, 48, 2), x, y, w)
    top_k_error = top_k_errors(np, tf, kdkeras, teacher, results_student, x, w)
    record = kdkeras.provenance.provenance(data={
        "file": os.path.basename(args.data), "sequences": args.sequences, "real_tokens": real_tokens,
        "positions": float(np.prod(w.shape)), "sequence_length": args.sequence_length, "batch_size": args.batch_size})
    record.update({
        "keras_hub": keras_hub.__version__,
        "models": {"teacher_parameters": teacher.count_params(), "student_parameters": gpt2(1, 48, 2).count_params(),
                   "vocabulary": vocab},
        "top_k": args.top_k,
        "cache_bytes_per_token": cache.bytes_per_token,
        "full_logits_bytes_per_token": 4 * vocab,
        "cache_build_seconds": cache_seconds,
        "trainers": results,
        "padded_batch": padded,
        "top_k_error": top_k_error,
    })
    print(f"top-{args.top_k} cache: {cache.bytes_per_token:.0f} bytes a real token (full float32 logits: "
          f"{4 * vocab}); built in {cache_seconds:.1f} s")
    print(f"padded batch ({padded['real_token_share']:.0%} real tokens): keras.distillation's KL "
          f"{padded['keras_distillation_loss']:.4f}, kdkeras {padded['kdkeras_loss']:.4f}, "
          f"mean over real tokens (NumPy) {padded['masked_mean_numpy']:.4f}")
    for k, errors in top_k_error.items():
        print(f"top-{k} (float16) against full logits, mean over real tokens: " +
              ", ".join(f"{name} {e['relative_error']:+.2%}" for name, e in errors.items()))
    if args.json:
        from kdkeras.atomic import write_text

        write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0


def top_k_errors(np, tf, kdkeras, teacher, student, x, w, ks=(4, 8, 32, 128), batch=64):
    """The error of each LM loss from a top-k teacher (float16, as cached) against its full-logit value."""
    inputs = {key: v[:batch] for key, v in x.items()}
    real = tf.cast(w[:batch], tf.float32) > 0
    zt, zs = teacher(inputs), student(inputs)
    out = {}
    for k in ks:
        lp, idx, tail = kdkeras.data.top_k.top_k_log_probs(zt, k)
        sparse = kdkeras.losses.TopKTeacher(tf.cast(tf.cast(lp, tf.float16), tf.float32), idx, tail)
        out[k] = {}
        for name in ("kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv"):
            fn = kdkeras.losses.get(name)
            full = float(tf.reduce_mean(tf.boolean_mask(fn(zt, zs, 1.0), real)))
            approx = float(tf.reduce_mean(tf.boolean_mask(fn(sparse, zs, 1.0), real)))
            out[k][name] = {"full": full, "top_k": approx, "relative_error": (approx - full) / full}
    return out


def padded_batch_losses(keras, np, kdkeras, teacher, student, x, y, w):
    """The distillation loss of one padded batch: keras.distillation's, kdkeras', and the NumPy masked mean."""
    batch = {k: v[:16] for k, v in x.items()}
    y, w = y[:16], w[:16]
    zt = teacher(batch).numpy().astype(np.float64)
    zs = student(batch).numpy().astype(np.float64)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    lt, ls = log_softmax(zt), log_softmax(zs)
    kl = (np.exp(lt) * (lt - ls)).sum(-1)
    real = np.asarray(w) > 0
    theirs = keras.distillation.Distiller(
        teacher=teacher, student=student, student_loss_weight=0.0,
        distillation_losses=keras.distillation.LogitsDistillation(temperature=1.0, loss=keras.losses.KLDivergence()))
    theirs.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ours = kdkeras.Distiller(student, teacher)
    ours.compile(alpha=0.0, temperature=1.0)
    return {
        "real_token_share": float(real.mean()),
        "keras_distillation_loss": float(theirs.evaluate(batch, y, sample_weight=w, verbose=0, return_dict=True)
                                         ["loss"]),
        "kdkeras_loss": float(ours.evaluate(batch, y, sample_weight=w, verbose=0, return_dict=True)["loss"]),
        "masked_mean_numpy": float(kl[real].mean()),
        "mean_over_all_positions_numpy": float(kl.mean()),
    }


if __name__ == "__main__":
    sys.exit(main())
