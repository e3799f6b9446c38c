"""The stages of ``kdkeras distill-classifier`` as a library: your encoder classifier, your labelled text, a student.

:class:`~kdkeras.encoder_recipe.EncoderRecipe` holds every setting;
:func:`prepare` loads and checks the teacher, the student and the data;
:func:`distil_and_report` trains, evaluates and writes the outputs. The
pieces the text-classification job shares are public: :func:`distiller`
(logits KD, hidden-state hints and MiniLM-v2 attention relations over a
layer map) and :func:`warmup_cosine_adamw`; both report with
:func:`kdkeras.evaluation.classification_metrics`.

Example:

```python
from kdkeras.encoder_recipe import EncoderRecipe
from kdkeras.text import encoder_job

recipe = EncoderRecipe(teacher="my_bert_classifier", student="from-teacher:2", data="reviews.jsonl",
                       out="runs/reviews", epochs=3)
job = encoder_job.prepare(recipe)
record = encoder_job.distil_and_report(job, recipe)
```
"""

import csv
import dataclasses
import json
import logging
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from kdkeras import language, provenance
from kdkeras.atomic import write_text
from kdkeras.distiller import Distiller, cached_batch
from kdkeras.encoder_recipe import EncoderRecipe
from kdkeras.evaluation import classification_metrics
from kdkeras.experiment import RunState, fit_stage
from kdkeras.features import FeatureDistiller, last_layers_map, uniform_layer_map
from kdkeras.text import causal_lm, hf_export

logger = logging.getLogger(__name__)

__all__ = ["CLASSES_FILE", "EncoderJob", "EncoderRecipe", "LabelledTexts", "class_names", "distil", "distil_and_report", "distiller", "label_ids", "layer_pairs", "load_text_classifier",
           "prepare", "read_labelled", "student_from_teacher", "tokenize", "warmup_cosine_adamw"]

#: The class names kdkeras writes next to a student preset (a Keras preset has no place for them).
CLASSES_FILE = "classes.json"


@dataclasses.dataclass
class LabelledTexts:
    """Texts, their class ids and the preprocessor's inputs of them (``{"token_ids", "padding_mask", ...}``)."""

    texts: list
    labels: np.ndarray
    inputs: dict

    def __len__(self):
        return len(self.texts)


@dataclasses.dataclass
class EncoderJob:
    """Everything a run needs, loaded and checked."""

    teacher: object
    student: object
    classes: list
    train: LabelledTexts
    validation: LabelledTexts
    pairs: list


# ---------------------------------------------------------------------- #
# Models
# ---------------------------------------------------------------------- #
def _read_json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_text_classifier(preset, flag="--teacher", num_classes=None):
    """A KerasHub ``TextClassifier`` with its preprocessor, from ``preset``; ``ValueError`` (one line) otherwise.

    ``preset``: a ``save_to_preset`` directory of a text classifier, a Hugging
    Face BERT ``...ForSequenceClassification`` directory (its classification
    head is read too), or a handle. With ``num_classes`` (a student) a backbone
    preset is taken too, with a new head of that many classes.
    """
    import keras_hub

    what = f"{flag} {preset!r}"
    head, options = None, {} if num_classes is None else {"num_classes": int(num_classes)}
    if os.path.isdir(preset):
        task = _read_json(preset, "task.json")
        config = _read_json(preset, "config.json") or {}
        if task is not None:
            name = str(task.get("registered_name") or task.get("class_name") or "")
            cls = keras.saving.get_registered_object(name)
            if not (isinstance(cls, type) and issubclass(cls, keras_hub.models.TextClassifier)):
                raise ValueError(f"{what} is not a text classifier (its task is {name.split('>')[-1] or 'unknown'}): "
                                 "give a preset saved from a keras_hub.models.TextClassifier.")
            options = {}  # its own head
        elif "architectures" in config:
            architecture = str((config.get("architectures") or ["?"])[0])
            if architecture.endswith("ForSequenceClassification"):
                if config.get("model_type") != "bert":
                    raise ValueError(f"{what}: kdkeras reads the classification head of Hugging Face BERT checkpoints "
                                     f"only (this one is {architecture}); save yours with save_to_preset.")
                head = _hf_head(preset, config)
                options = {"num_classes": int(head[1].shape[0])}
            elif num_classes is None:
                raise ValueError(f"{what} is not a text classifier ({architecture} has no classification head).")
        elif not config:
            raise ValueError(f"{what} is not a KerasHub or Hugging Face preset (no task.json or config.json).")
        elif num_classes is None:
            raise ValueError(f"{what} is a backbone without a classification head: give a text classifier.")
    elif os.path.exists(preset) or ("/" in preset and "://" not in preset):
        raise ValueError(f"{what} is not a preset directory or handle.")
    try:
        with causal_lm.readable_tokenizer_files(preset) as readable, warnings.catch_warnings():
            # A preset saved after training holds its optimizer's state, which distillation never uses.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model = keras_hub.models.TextClassifier.from_preset(readable, **options)
    except Exception as e:  # noqa: BLE001 - an unreadable preset is the user's input
        raise ValueError(f"{what} could not be loaded as a text classifier: {str(e).splitlines()[0]}") from None
    if model.preprocessor is None:
        raise ValueError(f"{what} has no preprocessor (tokenizer): save it with one.")
    limit = getattr(model.backbone, "max_sequence_length", None)
    if limit is not None and model.preprocessor.sequence_length > int(limit):  # a Hugging Face folder gets 512
        model.preprocessor.sequence_length = int(limit)
    _hf_accents(preset, model.preprocessor.tokenizer)
    if head is not None:
        kernel, bias = head
        model.output_dense.set_weights([np.transpose(kernel), bias])
    return model


def _hf_accents(preset, tokenizer):
    """Strips accents as a Hugging Face BERT tokenizer does (``strip_accents``, by default when it lowercases),
    which KerasHub's converter does not read."""
    settings = _read_json(preset, "tokenizer_config.json") if os.path.isdir(preset) else None
    if settings is None or not hasattr(tokenizer, "strip_accents") or "do_lower_case" not in settings:
        return
    strip = settings.get("strip_accents")
    tokenizer.strip_accents = bool(settings["do_lower_case"] if strip is None else strip)


def _hf_head(preset, config):
    """``(kernel [classes, width], bias)`` of a Hugging Face BERT sequence classifier."""
    from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader

    with SafetensorLoader(preset, prefix="") as loader:
        return np.asarray(loader.get_tensor("classifier.weight")), np.asarray(loader.get_tensor("classifier.bias"))


def class_names(preset, model):
    """The class names of a teacher: ``id2label`` of a Hugging Face checkpoint, the ``classes.json`` kdkeras
    writes beside its students, else ``"0" .. "C-1"``."""
    count = int(model.num_classes)
    if os.path.isdir(preset):
        names = _read_json(preset, CLASSES_FILE)
        config = _read_json(preset, "config.json") or {}
        if names is None and config.get("id2label"):
            names = [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
        if names is not None and len(names) == count:
            return [str(n) for n in names]
    return [str(i) for i in range(count)]


def student_from_teacher(teacher, layers):
    """The teacher classifier with ``layers`` encoder layers (every k-th), its embeddings, pooler and head
    (DistilBERT's initialisation); the teacher's preprocessor is shared."""
    small = causal_lm.shrunk_backbone(teacher.backbone, layers)
    config = teacher.get_config()
    config.update(backbone=small, preprocessor=teacher.preprocessor)
    student = type(teacher).from_config(config)
    for layer in student.layers:
        if layer is not student.backbone and layer.weights:
            layer.set_weights(teacher.get_layer(layer.name).get_weights())
    return student


def layer_pairs(student, teacher, layer_map="uniform"):
    """``[(student layer name, teacher layer name)]`` of the hints and relations (``"uniform"`` or ``"last"``)."""
    s_layers, t_layers = student.backbone.transformer_layers, teacher.backbone.transformer_layers
    if layer_map == "uniform":
        pairs = uniform_layer_map(len(s_layers), len(t_layers))
    else:
        pairs = last_layers_map(len(s_layers), len(t_layers))
        pairs = [(len(s_layers) + i if i < 0 else i, len(t_layers) + j if j < 0 else j) for i, j in pairs]
    return [(s_layers[i].name, t_layers[j].name) for i, j in pairs]


# ---------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------- #
def read_labelled(path, flag="--data"):
    """``[(text, label, line)]`` of a ``.jsonl`` (``{"text", "label"}`` per line) or ``.csv`` (``text,label``
    columns) file; a ``ValueError`` names the first bad line."""
    what = f"{flag} {path!r}"
    if not os.path.isfile(path):
        raise ValueError(f"{what} is not a file.")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith(".jsonl"):
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{what} line {number} is not JSON.") from None
                rows.append(_row(row, number, what))
        elif path.endswith(".csv"):
            reader = csv.DictReader(f)
            if not {"text", "label"} <= set(reader.fieldnames or ()):
                raise ValueError(f"{what}: a .csv file needs text and label columns (its header: "
                                 f"{','.join(reader.fieldnames or ()) or 'none'}).")
            for row in reader:
                rows.append(_row(row, reader.line_num, what))
        else:
            raise ValueError(f"{what}: give a .jsonl or a .csv file.")
    if not rows:
        raise ValueError(f"{what} holds no labelled text.")
    return rows


def _row(row, number, what):
    if not isinstance(row, dict):
        raise ValueError(f"{what} line {number} is not an object with \"text\" and \"label\".")
    for key in ("text", "label"):
        if row.get(key) is None or row.get(key) == "":
            raise ValueError(f"{what} line {number} has no \"{key}\".")
    if not isinstance(row["text"], str):
        raise ValueError(f"{what} line {number}: \"text\" is not a string.")
    return row["text"], row["label"], number


def label_ids(rows, classes, flag="--data"):
    """The class ids of ``rows``' labels: a class name, or an integer index into ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for _, label, number in rows:
        if isinstance(label, str) and label in index:
            out.append(index[label])
            continue
        as_int = label if isinstance(label, int) and not isinstance(label, bool) else \
            int(label) if isinstance(label, str) and label.strip().lstrip("-").isdigit() else None
        if as_int is None or not 0 <= as_int < len(classes):
            shown = ", ".join(classes[:8]) + (", ..." if len(classes) > 8 else "")
            raise ValueError(f"{flag} line {number}: label {label!r} is not one of the teacher's {len(classes)} "
                             f"classes ({shown}).")
        out.append(as_int)
    return np.asarray(out, np.int32)


def tokenize(preprocessor, texts, batch_size=256):
    """The preprocessor's inputs of ``texts`` as NumPy arrays (``{"token_ids": [n, L], ...}``)."""
    parts = [preprocessor(tf.constant(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def _split(count, seed):
    """Seeded ``(training rows, held-out rows)``: index arrays, a tenth (at least one) held out."""
    if count < 2:
        raise ValueError("--data needs at least 2 labelled texts to hold some out (or give --validation).")
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, round(0.1 * count))
    return np.sort(order[held:]), np.sort(order[:held])


# ---------------------------------------------------------------------- #
# Prepare, train, evaluate
# ---------------------------------------------------------------------- #
def prepare(recipe):
    """Loads the teacher and student of an :class:`EncoderRecipe`, reads, maps and splits the data, checks
    tokenizers, lengths, layer maps and export. Raises ``ValueError`` (one line) for anything the user gave wrong."""
    rows = read_labelled(recipe.data)
    validation_rows = read_labelled(recipe.validation, "--validation") if recipe.validation else None
    teacher = load_text_classifier(recipe.teacher)
    classes = class_names(recipe.teacher, teacher)
    labels = label_ids(rows, classes, f"--data {recipe.data!r}")
    held_labels = label_ids(validation_rows, classes, f"--validation {recipe.validation!r}") \
        if validation_rows is not None else None
    layers = recipe.student_layers
    keras.utils.set_random_seed(recipe.seed)  # a new head (or a projection) starts from the seed's weights
    if layers is not None:
        student = student_from_teacher(teacher, layers)
    else:
        student = load_text_classifier(recipe.student, "--student", num_classes=teacher.num_classes)
        if int(student.num_classes) != int(teacher.num_classes):
            raise ValueError(f"--student {recipe.student!r} has {student.num_classes} classes, the teacher "
                             f"{teacher.num_classes}.")
        language.check_same_tokenizer(language.tokenizer_of(teacher), language.tokenizer_of(student))
    if recipe.export == "hf":
        hf_export.check_exportable(student)  # refused before any training
    for model in (teacher, student):
        causal_lm.check_sequence_length(model, recipe.sequence_length)
        model.preprocessor.sequence_length = recipe.sequence_length
    pairs = layer_pairs(student, teacher, recipe.layer_map) if recipe.hidden_weight or recipe.attention_weight else []
    texts = [row[0] for row in rows]
    if validation_rows is None:
        parts = [([texts[i] for i in part], labels[part]) for part in _split(len(rows), recipe.seed)]
    else:
        parts = [(texts, labels), ([row[0] for row in validation_rows], held_labels)]
    sets = [LabelledTexts(part, y, tokenize(teacher.preprocessor, part)) for part, y in parts]
    return EncoderJob(teacher, student, classes, sets[0], sets[1], pairs)


def warmup_cosine_adamw(learning_rate, steps, weight_decay=0.01):
    """AdamW (clipped at norm 1) whose rate warms up over the first 10 % of ``steps``, then decays to 0 (cosine)."""
    warmup = max(1, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, max(1, steps - warmup), warmup_target=learning_rate,
                                                      warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, clipnorm=1.0)


def distiller(student, teacher, pairs=(), hidden_weight=1.0, attention_weight=1.0, hint_loss="mse",
              relation_heads=4, hint_projection=None):
    """The distiller of a student classifier: logits KD alone (no ``pairs`` or both weights 0), or a
    :class:`~kdkeras.features.FeatureDistiller` that adds hidden-state hints (``hidden_weight``) and
    MiniLM-v2 attention relations (``attention_weight``) between the layer ``pairs``.

    ``hint_projection``: ``None`` projects the student's states only where the widths differ.
    """
    hints = list(pairs) if hidden_weight else []
    attention = list(pairs) if attention_weight else []
    if not hints and not attention:
        return Distiller(student, teacher)
    if hint_projection is None:
        hint_projection = int(student.backbone.hidden_dim) != int(teacher.backbone.hidden_dim)
    return FeatureDistiller(student, teacher, hints=hints, hint_loss=hint_loss, hint_weight=hidden_weight,
                            attention=attention, attention_weight=attention_weight, relation_heads=relation_heads,
                            hint_projection=hint_projection)


def _logits(model, inputs, batch_size=128):
    """``model``'s logits of already preprocessed ``inputs`` (its own preprocessor is not applied), batched."""
    step = tf.function(lambda x: model(x, training=False))
    data = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size)
    return np.concatenate([np.asarray(step(x), np.float64) for x in data])


def _batches(job, recipe, start_epoch, teacher_logits=None):
    """The training batches of epochs ``start_epoch ..``: a NumPy permutation of the texts per epoch."""
    n = len(job.train)
    rng = np.random.default_rng(recipe.seed)
    table = np.stack([rng.permutation(n) for _ in range(recipe.epochs)]).astype("int64")
    x = job.train.inputs if teacher_logits is None else cached_batch(job.train.inputs, teacher_logits)
    data = (x, job.train.labels)
    return tf.data.Dataset.range(start_epoch, recipe.epochs).flat_map(
        lambda e: tf.data.Dataset.from_tensor_slices(tf.gather(table, e)).batch(recipe.batch_size)).map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), data)).prefetch(2)


def distil(job, recipe, callbacks=()):
    """Trains ``job.student`` for ``recipe.epochs`` epochs (resumable); returns ``(student, history, seconds)``."""
    keras.utils.set_random_seed(recipe.seed)
    steps = math.ceil(len(job.train) / recipe.batch_size)
    model = distiller(job.student, job.teacher, job.pairs, recipe.hidden_weight, recipe.attention_weight,
                      recipe.hint_loss)
    model.compile(optimizer=warmup_cosine_adamw(recipe.learning_rate, steps * recipe.epochs),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  distillation_loss_fn="kl", alpha=recipe.alpha, temperature=recipe.temperature)
    state = RunState(recipe.out, resume=recipe.resume, model_files={"distilled": ".kdkeras-state/student.keras"})
    if state.finished("distilled"):
        trained = state.load("distilled")
        return trained.model, trained.history, 0.0
    done = state.completed_epochs("distilled")
    # Logits KD needs only the teacher's logits: computed once (the texts are not augmented).
    cached = None if job.pairs else _logits(job.teacher, job.train.inputs).astype(np.float32)
    start = time.time()
    history = fit_stage(model, "distilled", _batches(job, recipe, done, cached), recipe.epochs, steps, done,
                        state=state, verbose=recipe.verbose, callbacks=callbacks, saved_model=job.student)
    return job.student, history, time.time() - start


def evaluate(job, student, before=None):
    """``{"teacher", "student_before", "student_after"}`` metrics on the held-out texts."""
    held = job.validation
    teacher_logits = _logits(job.teacher, held.inputs)
    out = {"teacher": classification_metrics(teacher_logits, held.labels)}
    if before is not None:
        out["student_before"] = classification_metrics(before, held.labels, teacher_logits)
    out["student_after"] = classification_metrics(_logits(student, held.inputs), held.labels, teacher_logits)
    return out


def distil_and_report(job, recipe, command=""):
    """Evaluates before, distils, saves ``student/`` (with ``classes.json``), evaluates the saved preset on raw
    texts, writes ``metrics.json`` and ``report.md`` (and ``student-hf/``); returns the record."""
    import keras_hub

    before = _logits(job.student, job.validation.inputs)
    student, history, seconds = distil(job, recipe)
    metrics = evaluate(job, student, before)
    folder = os.path.join(recipe.out, "student")
    student.save_to_preset(folder)
    write_text(os.path.join(folder, CLASSES_FILE), json.dumps(job.classes) + "\n")
    if recipe.export == "hf":
        hf_export.export_hf(student, os.path.join(recipe.out, "student-hf"), classes=job.classes)
    deployed = keras_hub.models.TextClassifier.from_preset(folder)
    rows = np.random.default_rng(recipe.seed).choice(len(job.validation), min(4, len(job.validation)), replace=False)
    texts = [job.validation.texts[int(r)] for r in rows]
    probs = tf.nn.softmax(np.asarray(deployed.predict(texts, verbose=0), np.float32), -1).numpy()
    examples = [{"text": t, "label": job.classes[int(job.validation.labels[r])],
                 "top": [(job.classes[c], float(p[c])) for c in np.argsort(-p)[:3]]}
                for t, r, p in zip(texts, rows, probs)]
    record = {
        "command": command, "provenance": provenance.provenance(),
        "settings": dataclasses.asdict(recipe), "classes": job.classes,
        "texts": {"train": len(job.train), "validation": len(job.validation)},
        "layer_pairs": [list(p) for p in job.pairs], **metrics, "training_seconds": seconds, "history": history,
        "parameters": {"teacher": int(job.teacher.count_params()), "student": int(student.count_params())},
        "examples": examples,
    }
    write_text(os.path.join(recipe.out, "metrics.json"), json.dumps(record, indent=2, default=float) + "\n")
    write_text(os.path.join(recipe.out, "report.md"), _report_md(record))
    return record


def _report_md(record):
    rows = ["| model | accuracy | macro F1 | KL to teacher (T = 1) | agreement |", "|---|---:|---:|---:|---:|"]
    for key in ("teacher", "student_before", "student_after"):
        if key in record:
            m = record[key]
            kl, agree = (f"{m[k]:.3f}" if k in m else "—" for k in ("kl_to_teacher", "agreement"))
            rows.append(f"| {key.replace('_', ' ')} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {kl} | {agree} |")
    lines = ["# kdkeras distill-classifier report", "", f"- command: `{record['command']}`",
             f"- texts: {record['texts']['train']:,} training, {record['texts']['validation']:,} held out; "
             f"{len(record['classes'])} classes",
             f"- parameters: teacher {record['parameters']['teacher']:,}, student {record['parameters']['student']:,}",
             f"- layer pairs (student, teacher): {record['layer_pairs'] or 'none (logits only)'}",
             f"- training: {record['training_seconds']:.0f} s", "", *rows, "",
             "## The deployed student (student/ loaded from its preset, raw text in), T = 1, top 3 classes", ""]
    for ex in record["examples"]:
        text = ex["text"][:300] + (" ..." if len(ex["text"]) > 300 else "")
        lines += [f"> {text}", "", f"True class: **{ex['label']}**; student: "
                  + "; ".join(f"{c} {p:.2f}" for c, p in ex["top"]), ""]
    return "\n".join(lines)
