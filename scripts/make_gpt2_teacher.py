"""Train a byte-level KerasHub GPT-2 teacher on the training plays and save it as a preset, with the split files.

The corpus is split as the text job splits it (whole plays held out, see
``kdkeras.text.split_corpus``); the script writes ``OUT/train.txt``,
``OUT/validation.txt`` and ``OUT/test.txt`` and trains the teacher on
``train.txt`` only, so that ``kdkeras distill-lm --data OUT/train.txt
--validation OUT/test.txt`` evaluates on plays the teacher never saw.
``OUT/teacher/`` is a preset (``keras_hub.models.CausalLM.from_preset``)
with the byte-level tokenizer of ``kdkeras.language.byte_level_gpt2_tokenizer``.

    python scripts/make_gpt2_teacher.py --data ../shared/data/shakespeare.txt --out runs/gpt2-teacher
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample", help="a UTF-8 text file, a folder of them, or sample")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import keras
    import keras_hub
    import tensorflow as tf

    import kdkeras
    from kdkeras.text import causal_lm, load_corpus, split_corpus

    splits = split_corpus(load_corpus(args.data))
    os.makedirs(args.out, exist_ok=True)
    for name, docs in splits.items():
        with open(os.path.join(args.out, f"{name}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(text for _, text in docs))
    tokenizer = kdkeras.language.byte_level_gpt2_tokenizer()
    train_docs = causal_lm.read_documents(os.path.join(args.out, "train.txt"))
    x, y, w = causal_lm.token_windows(tokenizer, train_docs, args.sequence_length)
    keras.utils.set_random_seed(args.seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=tokenizer.vocabulary_size(), num_layers=args.layers,
                                             num_heads=args.heads, hidden_dim=args.width,
                                             intermediate_dim=4 * args.width,
                                             max_sequence_length=args.sequence_length)
    preprocessor = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer=tokenizer,
                                                             sequence_length=args.sequence_length)
    teacher = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)  # trained on token windows
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.steps)
    teacher.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    data = tf.data.Dataset.from_tensor_slices((x, y, w)).shuffle(len(y), seed=args.seed).repeat().batch(
        args.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    per_epoch = min(500, args.steps)
    start = time.time()
    history = teacher.fit(data, epochs=-(-args.steps // per_epoch), steps_per_epoch=per_epoch, verbose=2)
    seconds = time.time() - start
    teacher = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)  # saved with its tokenizer
    teacher.save_to_preset(os.path.join(args.out, "teacher"))
    record = {"command": "python scripts/make_gpt2_teacher.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "settings": vars(args), "documents": {k: [n for n, _ in v] for k, v in splits.items()},
              "training_windows": int(len(y)), "seconds": seconds, "parameters": int(teacher.count_params()),
              "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
              "provenance": kdkeras.provenance.provenance()}
    with open(os.path.join(args.out, "teacher.json"), "w") as f:
        json.dump(record, f, indent=2)
    print(f"Saved the teacher preset to {os.path.join(args.out, 'teacher')} ({seconds:.0f} s of training).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
