"""The text-classification job's stages: a BERT teacher, a small student, and four ways to train the student.

The models are KerasHub ``BertTextClassifier``s trained from scratch here (no
download). The teacher has ``teacher_layers`` encoder layers of width
``width``; the job's student has a quarter of its layers and a quarter of its
width (``student_layers``, ``student_width``). A student of the teacher's width
takes the teacher's weights where the shapes allow (embeddings, evenly spaced
encoder layers, the pooler and the output layer: DistilBERT's initialisation);
a narrower one starts from its own seeded weights. The student is then trained
four ways from that same start, on the same batches:

- ``"hard"``: the labels only;
- ``"logits"``: Hinton's KD (``alpha`` hard + ``1 - alpha`` KL at ``T``);
- ``"hidden"``: logits KD plus hidden-state hints (each student layer's output,
  projected, against the teacher layer of :func:`kdkeras.features.uniform_layer_map`;
  ``hint_loss`` per token, ``"cosine"`` as DistilBERT or ``"mse"`` as TinyBERT);
- ``"attention"``: the same plus MiniLM-v2 self-attention relations between the
  same layer pairs.

Every hint and attention term is a per-token term over the passages' real
tokens (the ``padding_mask``).

Example:

```python
from kdkeras import text
from kdkeras.text import classifier

recipe = classifier.ClassifierRecipe(teacher_epochs=2, student_epochs=1)
data = classifier.prepare(text.load_corpus("sample"), recipe)
teacher = classifier.train_teacher(data, recipe).model
student = classifier.train_student("attention", teacher, data, recipe).model
print(classifier.evaluate(student, data.test, teacher))
```
"""

import dataclasses
import logging
import math

import keras
import numpy as np
import tensorflow as tf

from kdkeras.distiller import cached_batch
from kdkeras.evaluation import classification_metrics
from kdkeras.experiment import StageResult
from kdkeras.features import uniform_layer_map
from kdkeras.text.classification import classification_data
from kdkeras.text.encoder_job import distiller, warmup_cosine_adamw

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "ClassifierRecipe", "build_classifier", "chance_level", "evaluate", "near_chance", "prepare",
           "probabilities", "student_from_teacher", "train_student", "train_teacher"]

#: The student's training methods, in the order of the report.
METHODS = ("hard", "logits", "hidden", "attention")


@dataclasses.dataclass(frozen=True)
class ClassifierRecipe:
    """Every setting of the classification job (the defaults are the job's defaults).

    Attributes:
        sequence_length: Tokens per passage (``[CLS]`` and ``[SEP]`` included).
        train_stride: Words between training passages' starts (31: half a passage; ``None``: no overlap).
        teacher_layers, student_layers, width, heads, intermediate: The BERT shapes.
        student_width, student_heads: The student's width and heads (``None``: the teacher's, so that the
            teacher's weights can be copied; a narrower student starts from its own random weights and its
            intermediate width scales with it).
        dropout: Dropout of both models.
        batch_size, teacher_epochs, student_epochs: Training lengths.
        teacher_learning_rate, student_learning_rate: AdamW's peak rates (warm-up over the first 10 %
            of the steps, then cosine decay to 0). The teacher's 5e-4 trained on each of four seeds on the
            validation scenes; at 1e-3 one stayed at chance (``scripts/select_classifier_teacher.py``).
        temperature, alpha: Logits KD (``alpha`` weighs the hard labels).
        hint_loss, hint_weight: The hidden-state term (``"cosine"`` or ``"mse"``) and its weight.
        attention_weight, relation_heads: The MiniLM-v2 attention-relation term.
        seed: Seed of the weights, the batch order and dropout.
    """

    sequence_length: int = 64
    train_stride: int = 31
    teacher_layers: int = 4
    student_layers: int = 1
    width: int = 128
    heads: int = 4
    intermediate: int = 256
    student_width: int = 32
    student_heads: int = 2
    dropout: float = 0.1
    batch_size: int = 32
    teacher_epochs: int = 5
    student_epochs: int = 6
    teacher_learning_rate: float = 5e-4
    student_learning_rate: float = 3e-3
    temperature: float = 1.0
    alpha: float = 0.5
    hint_loss: str = "mse"
    hint_weight: float = 1.0
    attention_weight: float = 1.0
    relation_heads: int = 4
    seed: int = 0

    def layer_map(self):
        """``[(student layer, teacher layer)]`` of the hints and the attention transfer."""
        return uniform_layer_map(self.student_layers, self.teacher_layers)


def prepare(corpus, recipe):
    """The labelled passages of ``corpus`` (:func:`kdkeras.text.classification.classification_data`)."""
    return classification_data(corpus, recipe.sequence_length, recipe.train_stride)


def build_classifier(vocabulary_size, num_classes, layers, recipe, name, width=None, heads=None):
    """A KerasHub ``BertTextClassifier`` (logits out, no preprocessor) with ``layers`` encoder layers, seeded.

    ``width`` and ``heads`` default to the recipe's (the teacher's); the intermediate width keeps its ratio.
    """
    import keras_hub

    width, heads = width or recipe.width, heads or recipe.heads
    keras.utils.set_random_seed(recipe.seed + 1000 * layers + width)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size, num_layers=layers, num_heads=heads, hidden_dim=width,
        intermediate_dim=recipe.intermediate * width // recipe.width, dropout=recipe.dropout,
        max_sequence_length=recipe.sequence_length)
    return keras_hub.models.BertTextClassifier(backbone, num_classes, preprocessor=None, dropout=recipe.dropout,
                                               name=name)


def student_from_teacher(teacher, layers, recipe, source_layers=None):
    """A BERT classifier with ``layers`` of the teacher's encoder layers and all its other weights (DistilBERT's start).

    A student narrower than the teacher (``recipe.student_width``) cannot take its
    weights and starts from its own seeded random weights.

    ``source_layers`` are the teacher layers copied (default: evenly spaced from
    the first, ``0, L/layers, ...``, as DistilBERT takes every other layer).
    """
    backbone = teacher.backbone
    if source_layers is None:
        source_layers = [i * backbone.num_layers // layers for i in range(layers)]
    if len(source_layers) != layers or not all(0 <= j < backbone.num_layers for j in source_layers):
        raise ValueError(f"source_layers must be {layers} teacher layers in [0, {backbone.num_layers}); "
                         f"received {source_layers}.")
    width = recipe.student_width or backbone.hidden_dim
    student = build_classifier(backbone.vocabulary_size, teacher.num_classes, layers, recipe, "student", width,
                               recipe.student_heads)
    if width != backbone.hidden_dim:
        logger.info("The student (width %d) is narrower than the teacher (%d): it starts from its own weights.",
                    width, backbone.hidden_dim)
        return student
    pairs = [(student.backbone.get_layer(n), backbone.get_layer(n)) for n in
             ("token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm", "pooled_dense")]
    pairs += [(student.backbone.get_layer(f"transformer_layer_{i}"), backbone.get_layer(f"transformer_layer_{j}"))
              for i, j in enumerate(source_layers)]
    pairs.append((student.output_dense, teacher.output_dense))
    for target, source in pairs:
        target.set_weights(source.get_weights())
    return student


def _dataset(passages, batch_size, seed, teacher_logits=None):
    """The training passages in a seeded order, reshuffled each epoch (the same for every student of a seed),
    with the teacher's cached logits in the Distiller's batch format when given."""
    x = passages.inputs() if teacher_logits is None else cached_batch(passages.inputs(), teacher_logits)
    ds = tf.data.Dataset.from_tensor_slices((x, passages.labels))
    return ds.shuffle(len(passages), seed=seed, reshuffle_each_iteration=True).batch(batch_size).prefetch(2)


def _fit(model, data, epochs, recipe, seed, verbose, callbacks, teacher_logits=None):
    """Trains ``model``; validates once, after the last epoch (the job reports the stage's end, not a curve)."""
    validation = tf.data.Dataset.from_tensor_slices((data.validation.inputs(), data.validation.labels)).batch(128)
    history = model.fit(_dataset(data.train, recipe.batch_size, seed, teacher_logits), epochs=epochs, shuffle=False,
                        validation_data=validation, validation_freq=epochs, verbose=verbose,
                        callbacks=list(callbacks))
    return history.history


def _metrics():
    return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]


def train_teacher(data, recipe, *, verbose=2, callbacks=()):
    """Trains the teacher on the training passages; returns a :class:`~kdkeras.experiment.StageResult`."""
    teacher = build_classifier(data.vocabulary.size, len(data.classes), recipe.teacher_layers, recipe, "teacher")
    steps = recipe.teacher_epochs * math.ceil(len(data.train) / recipe.batch_size)
    teacher.compile(optimizer=warmup_cosine_adamw(recipe.teacher_learning_rate, steps),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=_metrics())
    history = _fit(teacher, data, recipe.teacher_epochs, recipe, recipe.seed + 7919, verbose, callbacks)
    warning = near_chance(history, data.validation.labels, len(data.classes))
    if warning:
        logger.warning(warning)
    return StageResult(teacher, history)


def chance_level(labels, num_classes):
    """``(chance, near)``: the better of guessing the most frequent of ``labels`` and ``1 / num_classes``, and the
    accuracy up to which a model counts as near it (half of ``1 / num_classes`` above)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    chance = float(max(counts.max() / max(counts.sum(), 1), 1.0 / num_classes))
    return chance, chance + 0.5 / num_classes


def near_chance(history, labels, num_classes):
    """A warning (or ``None``) when a model's best validation accuracy in ``history`` stays near chance.

    Chance and "near" are :func:`chance_level`'s.
    A teacher that learned nothing teaches nothing: the students' comparison
    then says nothing about distillation.
    """
    accuracies = history.get("val_accuracy") or []
    if not accuracies:
        return None
    chance, near = chance_level(labels, num_classes)
    best = max(accuracies)
    if best > near:
        return None
    return (f"The teacher's best validation accuracy, {best:.3f}, is near chance ({chance:.3f} for "
            f"{num_classes} classes): it has learned little to teach. Train it longer, with another "
            "--seed, or give a trained teacher (--teacher).")


def _distiller(method, student, teacher, recipe):
    """The method's distiller: the same one ``kdkeras distill-classifier`` trains (:func:`encoder_job.distiller`)."""
    pairs = [(f"transformer_layer_{i}", f"transformer_layer_{j}") for i, j in recipe.layer_map()]
    return distiller(student, teacher, pairs if method != "logits" else (), recipe.hint_weight,
                     recipe.attention_weight if method == "attention" else 0.0, recipe.hint_loss,
                     recipe.relation_heads, hint_projection=True)


def train_student(method, teacher, data, recipe, *, verbose=2, callbacks=()):
    """Trains a student initialised from ``teacher`` by ``method`` (one of :data:`METHODS`); returns a StageResult.

    Every method starts from the same weights and sees the same batches (the
    recipe's seed fixes both). For ``"logits"`` the teacher's logits are computed
    once and cached; the inside terms need the teacher online.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; received {method!r}.")
    student = student_from_teacher(teacher, recipe.student_layers, recipe)
    keras.utils.set_random_seed(recipe.seed)
    steps = recipe.student_epochs * math.ceil(len(data.train) / recipe.batch_size)
    optimizer = warmup_cosine_adamw(recipe.student_learning_rate, steps)
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if method == "hard":
        student.compile(optimizer=optimizer, loss=hard, metrics=_metrics())
        model = student
    else:
        model = _distiller(method, student, teacher, recipe)
        model.compile(optimizer=optimizer, metrics=_metrics(), student_loss_fn=hard, distillation_loss_fn="kl",
                      alpha=recipe.alpha, temperature=recipe.temperature)
    # Logits KD needs only the teacher's logits: computed once, not every epoch (the inputs are not augmented).
    cached = np.asarray(teacher.predict(data.train.inputs(), batch_size=256, verbose=0), np.float32) \
        if method == "logits" else None
    history = _fit(model, data, recipe.student_epochs, recipe, recipe.seed, verbose, callbacks, cached)
    return StageResult(student, history)


def _logits(model, passages, batch_size=256):
    return np.asarray(model.predict(passages.inputs(), batch_size=batch_size, verbose=0), np.float64)


def evaluate(model, passages, teacher=None, teacher_logits=None):
    """Accuracy, macro F1 and, with a teacher, the mean KL(teacher || model) at T = 1 and the top-1 agreement
    (:func:`kdkeras.evaluation.classification_metrics`).

    ``teacher_logits`` (the teacher's logits on ``passages``) spares running the teacher again.
    """
    if teacher is not None and teacher_logits is None:
        teacher_logits = _logits(teacher, passages)
    return {**classification_metrics(_logits(model, passages), passages.labels, teacher_logits),
            "parameters": int(model.count_params())}


def probabilities(models, passages, rows, classes, top=3):
    """Each model's top ``top`` classes at T = 1 (softmax of its logits) on the passages ``rows``.

    Returns ``[{"text", "label", "models": {name: [(class, probability), ...]}, "probabilities": {name: [p per
    class]}}]``.
    """
    out = []
    subset = {k: v[rows] for k, v in passages.inputs().items()}
    probs = {name: tf.nn.softmax(np.asarray(m.predict(subset, verbose=0), np.float32), -1).numpy()
             for name, m in models.items()}
    for i, row in enumerate(rows):
        ranked = {name: [(classes[c], float(p[i, c])) for c in np.argsort(-p[i])[:top]] for name, p in probs.items()}
        out.append({"text": passages.texts[row], "label": classes[int(passages.labels[row])], "models": ranked,
                    "probabilities": {name: [round(float(v), 5) for v in p[i]] for name, p in probs.items()}})
    return out
