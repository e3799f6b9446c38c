#!/usr/bin/env python
"""``kdkeras distill-classifier`` on real labelled text: which play is a passage from, through presets and files.

What a user of the command does, end to end: a KerasHub BERT teacher with its
own WordPiece tokenizer (the training scenes' words) is trained on the
classification job's passages (its best epoch on the validation scenes is
kept) and saved as a preset with ``classes.json``; the passages are written
as ``.jsonl`` files (``{"text", "label"}``, labels the plays' names); a
narrow student preset (1 layer of 32, the same tokenizer, seeded random
weights) is distilled by the command twice, from the same start on the same
batches: as fine-tuning (``--alpha 1 --hidden-weight 0 --attention-weight
0``) and with the command's defaults (logits + hidden states + attention
relations). The students' settings are the classification job's, chosen on
its validation scenes; the command reports on the validation scenes; the
test scenes are read once, at the end, from the deployed presets on raw text:

    python scripts/distill_classifier_plays.py --data ../shared/data/shakespeare.txt --dir runs/dc-plays \\
        --json docs/results/distill_classifier_plays.json
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time

RUNS = {"fine-tuning": ["--alpha", "1", "--hidden-weight", "0", "--attention-weight", "0"], "defaults": []}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="sample")
    p.add_argument("--dir", default="runs/dc-plays")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-epochs", type=int, help="override the job's (a quick check)")
    p.add_argument("--student-epochs", type=int, help="override the job's (a quick check)")
    p.add_argument("--json")
    return p.parse_args(argv)


def _jsonl(path, passages, classes):
    with open(path, "w", encoding="utf-8") as f:
        for text, label in zip(passages.texts, passages.labels):
            f.write(json.dumps({"text": text, "label": classes[int(label)]}) + "\n")
    return path


def make_teacher(data, recipe, folder, seed):
    """A BERT teacher preset (the job's shape and recipe) with a WordPiece tokenizer of the training words."""
    import keras
    import keras_hub
    import tensorflow as tf

    from kdkeras.text.encoder_job import CLASSES_FILE, tokenize, warmup_cosine_adamw

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *data.vocabulary.words, "[MASK]"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=recipe.sequence_length)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=recipe.teacher_layers, num_heads=recipe.heads,
        hidden_dim=recipe.width, intermediate_dim=recipe.intermediate, dropout=recipe.dropout,
        max_sequence_length=recipe.sequence_length)
    bare = keras_hub.models.BertTextClassifier(backbone, len(data.classes), preprocessor=None, dropout=recipe.dropout)
    x = tokenize(preprocessor, data.train.texts)
    held = (tokenize(preprocessor, data.validation.texts), data.validation.labels)
    steps = recipe.teacher_epochs * math.ceil(len(data.train) / recipe.batch_size)
    bare.compile(optimizer=warmup_cosine_adamw(recipe.teacher_learning_rate, steps),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    # The teacher kept is its best epoch on the validation scenes (a from-scratch BERT can diverge late).
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=recipe.teacher_epochs,
                                         restore_best_weights=True)
    # A KerasHub task turns arrays into a tf.data pipeline and then ignores fit's shuffle: the passages, which
    # come play by play, are shuffled here (seeded, every epoch).
    train = tf.data.Dataset.from_tensor_slices((x, data.train.labels)).shuffle(
        len(data.train), seed=seed, reshuffle_each_iteration=True).batch(recipe.batch_size)
    history = bare.fit(train, epochs=recipe.teacher_epochs, shuffle=False, verbose=2, validation_data=held,
                       callbacks=[best])
    teacher = keras_hub.models.BertTextClassifier(backbone, len(data.classes), preprocessor=preprocessor,
                                                  dropout=recipe.dropout)
    teacher.output_dense.set_weights(bare.output_dense.get_weights())
    teacher.save_to_preset(folder)
    with open(os.path.join(folder, CLASSES_FILE), "w") as f:
        json.dump(data.classes, f)
    return teacher, tokenizer, history.history


def make_student_start(tokenizer, recipe, folder, seed):
    """A narrow BERT backbone preset (1 layer of 32, the teacher's tokenizer), seeded random weights."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed + 1)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=recipe.student_layers, num_heads=recipe.student_heads,
        hidden_dim=recipe.student_width, intermediate_dim=recipe.intermediate * recipe.student_width // recipe.width,
        dropout=recipe.dropout, max_sequence_length=recipe.sequence_length)
    backbone.save_to_preset(folder)
    tokenizer.save_to_preset(folder)


def main(argv=None):
    args = parse(argv)
    import keras_hub
    import numpy as np

    from kdkeras import text
    from kdkeras.cli.dispatch import main as kdkeras
    from kdkeras.provenance import write_result
    from kdkeras.text import classifier
    from kdkeras.evaluation import classification_metrics

    overrides = {k: v for k, v in (("teacher_epochs", args.teacher_epochs), ("student_epochs", args.student_epochs))
                 if v}
    recipe = classifier.ClassifierRecipe(seed=args.seed, **overrides)
    data = classifier.prepare(text.load_corpus(args.data), recipe)
    os.makedirs(args.dir, exist_ok=True)
    files = {split: _jsonl(os.path.join(args.dir, f"{split}.jsonl"), getattr(data, split), data.classes)
             for split in ("train", "validation", "test")}
    start = time.time()
    teacher_dir, student_dir = os.path.join(args.dir, "teacher"), os.path.join(args.dir, "student_start")
    teacher, tokenizer, teacher_history = make_teacher(data, recipe, teacher_dir, args.seed)
    teacher_seconds = time.time() - start
    make_student_start(tokenizer, recipe, student_dir, args.seed)
    common = ["--teacher", teacher_dir, "--student", student_dir, "--data", files["train"], "--validation",
              files["validation"], "--epochs", str(recipe.student_epochs), "--batch-size", str(recipe.batch_size),
              "--learning-rate", str(recipe.student_learning_rate), "--sequence-length", str(recipe.sequence_length),
              "--seed", str(args.seed), "--verbose", "2"]
    record = {"command": " ".join(["python", *sys.argv]), "data": args.data, "recipe": dataclasses.asdict(recipe),
              "passages": {k: len(getattr(data, k)) for k in ("train", "validation", "test")},
              "teacher_seconds": teacher_seconds, "teacher_history": teacher_history, "runs": {}}
    t_logits = np.asarray(teacher.predict(data.test.texts, batch_size=256, verbose=0), np.float64)
    record["test"] = {"teacher": classification_metrics(t_logits, data.test.labels)}
    for name, flags in RUNS.items():
        out = os.path.join(args.dir, name)
        t0 = time.time()
        if kdkeras(["distill-classifier", *common, "--out", out, *flags]) != 0:
            raise SystemExit(f"distill-classifier {name} failed")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        record["runs"][name] = {"flags": flags, "seconds": time.time() - t0, "validation": {
            k: metrics[k] for k in ("teacher", "student_before", "student_after")}}
        deployed = keras_hub.models.TextClassifier.from_preset(os.path.join(out, "student"))
        logits = deployed.predict(data.test.texts, batch_size=256, verbose=0)
        record["test"][name] = classification_metrics(logits, data.test.labels, t_logits)
        print(name, json.dumps(record["test"][name]), flush=True)
    hard, kd, top = (record["test"][k]["accuracy"] for k in ("fine-tuning", "defaults", "teacher"))
    record["test"]["gap_closed"] = (kd - hard) / (top - hard) if top != hard else None
    write_result(args.json, record)
    print(json.dumps(record["test"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
