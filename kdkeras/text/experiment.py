"""The text job's stages: a teacher language model, a scratch student and a distilled student.

Every model trains on fixed windows of characters for a budget of optimizer
steps, in an order fixed by ``(seed, pass)``, so that the scratch and the
distilled student see the same batches from the same initial weights, and a
resumed stage sees the batches the interrupted one would have seen. With a
:class:`kdkeras.experiment.RunState` each stage backs itself up after every
"epoch" (``TextRecipe.epoch_steps`` steps) and saves its model when done.

Example:

```python
from kdkeras import text
from kdkeras.text import experiment

recipe = experiment.TextRecipe(teacher_steps=400, student_steps=200)
data = experiment.prepare(text.load_corpus("sample"), recipe)
teacher = experiment.train_language_model("teacher", experiment.teacher_model(data, recipe),
                                          data.train, recipe.teacher_steps, recipe).model
student = experiment.distil(experiment.student_model(data, recipe), teacher, data.student_train, recipe).model
print(experiment.evaluate(student, data.test, teacher=teacher))
```
"""

import dataclasses
import logging
import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from kdkeras import evaluation
from kdkeras.data import top_k as top_k_cache
from kdkeras.distiller import Distiller
from kdkeras.sampling import OnPolicy
from kdkeras.experiment import StageResult, fit_stage
from kdkeras.text.corpus import CharVocabulary, split_corpus
from kdkeras.text.models import build_gpt, generate
from kdkeras.text.windows import windows

logger = logging.getLogger(__name__)

__all__ = ["TextData", "TextRecipe", "distil", "evaluate", "prepare", "student_model", "teacher_bits_on_samples",
           "teacher_model", "train_language_model", "training_order"]


@dataclasses.dataclass(frozen=True)
class TextRecipe:
    """Every setting of the text job (the defaults are the job's defaults).

    Attributes:
        context, batch_size: Window length (characters) and windows per batch.
        teacher_layers, teacher_width, student_layers, student_width, heads: The two GPT models.
        teacher_steps, student_steps: Training budgets in optimizer steps (each student gets ``student_steps``).
        epoch_steps: Steps per Keras epoch (one backup and one progress line each); budgets are
            rounded up to whole epochs.
        teacher_learning_rate, student_learning_rate: Adam's peak rates (cosine decay to 0 over the budget).
        temperature, alpha, loss: The distillation settings (``alpha`` weighs the hard labels).
        transfer_fraction: The share of the training documents the students see (1: all; the transfer-set
            setting: 0.1).
        top_k: Cache the teacher's top-k per token when each training window is seen at least
            ``cache_min_passes`` times; 0 keeps the teacher online.
        on_policy_fraction, max_new_tokens, sampling_temperature: On-policy distillation (0: off).
        on_policy_warm_start: The share of the student's budget trained off-policy before on-policy
            batches begin (GKD's warm start; 0: on-policy from the first step).
        seed: Seed of the weights, the batch order and every draw.
    """

    context: int = 64
    batch_size: int = 16
    teacher_layers: int = 2
    teacher_width: int = 128
    student_layers: int = 1
    student_width: int = 48
    heads: int = 4
    teacher_steps: int = 4000
    student_steps: int = 1500
    epoch_steps: int = 100
    teacher_learning_rate: float = 3e-3
    student_learning_rate: float = 3e-3
    temperature: float = 1.0
    alpha: float = 0.0
    loss: str = "kl"
    transfer_fraction: float = 1.0
    top_k: int = 32
    cache_min_passes: float = 1.5
    on_policy_fraction: float = 0.0
    max_new_tokens: int = 16
    sampling_temperature: float = 1.0
    on_policy_warm_start: float = 0.0
    seed: int = 0

    def schedule(self, steps):
        """``(epochs, steps per epoch)`` of a budget: whole epochs of at most ``epoch_steps`` steps.

        A budget that is not a multiple of ``epoch_steps`` is rounded up to whole epochs.
        """
        per_epoch = min(self.epoch_steps, steps)
        return math.ceil(steps / per_epoch), per_epoch


class TextData(NamedTuple):
    """The windows of one corpus's splits and the vocabulary.

    Attributes:
        vocabulary: A :class:`kdkeras.text.CharVocabulary` of the training text.
        train: ``(x, y)`` windows of every training document (the teacher's data).
        student_train: The windows of the documents the students see.
        validation, test: ``(x, y)`` windows of the held-out documents.
        documents: ``{split: [names]}`` and ``{"students": [names]}``.
        characters: ``{split: number of characters}``.
    """

    vocabulary: object
    train: tuple
    student_train: tuple
    validation: tuple
    test: tuple
    documents: dict
    characters: dict


def prepare(corpus, recipe):
    """Splits a :class:`kdkeras.text.Corpus`, builds the vocabulary from the training text, cuts windows."""
    splits = split_corpus(corpus)
    train_docs = splits["train"]
    vocabulary = CharVocabulary.from_text("".join(t for _, t in train_docs))
    every = max(1, round(1 / recipe.transfer_fraction)) if recipe.transfer_fraction < 1 else 1
    if recipe.transfer_fraction < 1 and len(train_docs) < 2:
        raise ValueError("The transfer-set setting needs a corpus of several training documents (plays or files).")
    student_docs = train_docs[::every]

    def cut(docs):
        return windows([vocabulary.encode(t) for _, t in docs], recipe.context)

    return TextData(
        vocabulary=vocabulary, train=cut(train_docs), student_train=cut(student_docs),
        validation=cut(splits["validation"]), test=cut(splits["test"]),
        documents={**{k: [n for n, _ in v] for k, v in splits.items()}, "students": [n for n, _ in student_docs]},
        characters={**{k: sum(len(t) for _, t in v) for k, v in splits.items()},
                    "students": sum(len(t) for _, t in student_docs)},
    )


def teacher_model(data, recipe):
    return build_gpt(data.vocabulary.size, recipe.context, recipe.teacher_layers, recipe.teacher_width,
                     recipe.heads, seed=recipe.seed, name="teacher")


def student_model(data, recipe):
    """A fresh student; every call with the same recipe gives the same initial weights."""
    return build_gpt(data.vocabulary.size, recipe.context, recipe.student_layers, recipe.student_width,
                     recipe.heads, seed=recipe.seed + 1, name="student")


def training_order(n, steps, recipe, seed_offset=0):
    """The window indices of every step, ``[steps * batch_size]``: passes over the windows, each in a seeded order."""
    needed = steps * recipe.batch_size
    passes = -(-needed // n)
    seed = recipe.seed + seed_offset
    return np.concatenate([np.random.default_rng([seed, p]).permutation(n) for p in range(passes)])[:needed]


def _adam(learning_rate, steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps))


def _batches(order, first_step, recipe, gather):
    index = tf.data.Dataset.from_tensor_slices(order[first_step * recipe.batch_size:])
    return index.batch(recipe.batch_size, drop_remainder=True).map(
        gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def _fit(model, key, n, seed_offset, gather, steps, recipe, state, verbose, callbacks, saved_model):
    done = state.completed_epochs(key) if state is not None else 0
    epochs, per_epoch = recipe.schedule(steps)
    order = training_order(n, epochs * per_epoch, recipe, seed_offset)
    first = min(done, epochs - 1)
    data = _batches(order, first * per_epoch, recipe, gather)
    return fit_stage(model, key, data, epochs, per_epoch, done, state=state, verbose=verbose, callbacks=callbacks,
                     saved_model=saved_model)


def _gather(windows_xy):
    xt, yt = (tf.constant(a) for a in windows_xy)
    return lambda i: (tf.gather(xt, i), tf.gather(yt, i))


def train_language_model(key, model, train, steps, recipe, *, learning_rate=None, state=None, verbose=2,
                         callbacks=()):
    """Trains a language model on next-character labels for ``steps`` steps (a teacher, or a scratch student).

    Students' orders are the same in :func:`distil` (same windows, same seed).
    """
    if state is not None and state.finished(key):
        return state.load(key)
    lr = learning_rate or (recipe.teacher_learning_rate if key == "teacher" else recipe.student_learning_rate)
    keras.utils.set_random_seed(recipe.seed)
    model.compile(optimizer=_adam(lr, steps), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    seed_offset = 0 if key != "teacher" else 7919  # the students share one order, the teacher has its own
    history = _fit(model, key, len(train[0]), seed_offset, _gather(train), steps, recipe, state, verbose, callbacks,
                   model)
    return StageResult(model, history)


def distil(student, teacher, train, recipe, *, state=None, verbose=2, callbacks=(), key="distilled",
           distillation_loss_fn=None):
    """Distils ``teacher`` into ``student`` on the windows ``train`` with the same batches as the scratch student.

    The teacher's top ``recipe.top_k`` per token is cached once when the
    budget visits each window at least ``recipe.cache_min_passes`` times
    (and on-policy distillation is off); otherwise the teacher runs online.
    """
    if state is not None and state.finished(key):
        return state.load(key)
    keras.utils.set_random_seed(recipe.seed)
    steps = recipe.student_steps
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=_adam(recipe.student_learning_rate, steps),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                      distillation_loss_fn=distillation_loss_fn or recipe.loss, alpha=recipe.alpha,
                      temperature=recipe.temperature,
                      on_policy=OnPolicy(recipe.on_policy_fraction, recipe.max_new_tokens,
                                         recipe.sampling_temperature, recipe.seed,
                                         start_step=int(round(recipe.on_policy_warm_start * steps))))
    n = len(train[0])
    passes = steps * recipe.batch_size / n
    if recipe.top_k and not recipe.on_policy_fraction and passes >= recipe.cache_min_passes:
        k = min(recipe.top_k, int(teacher.outputs[0].shape[-1]))
        windows_ds = tf.data.Dataset.from_tensor_slices(train).batch(256)
        cache = top_k_cache.teacher_top_k(teacher, windows_ds, k, temperature=recipe.temperature)
        logger.info("Distilling from the teacher's top %d (%.0f bytes a token): %.1f passes over %d windows.",
                    k, cache.bytes_per_token, passes, n)
        gather = cache.batch
    else:
        gather = _gather(train)
    history = _fit(distiller, key, n, 0, gather, steps, recipe, state, verbose, callbacks, student)
    return StageResult(student, history)


def evaluate(model, data, teacher=None, batch_size=64):
    """Bits per character (one token is one character), perplexity, accuracy, and KL / agreement to a teacher."""
    ds = tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    result = evaluation.language_model_metrics(model, ds, teacher=teacher, characters_per_token=1)
    result.pop("bits_per_token")
    return result


def teacher_bits_on_samples(teacher, student, prompts, length, recipe, seed=0):
    """The teacher's bits per character on the student's sampled continuations of ``prompts`` (GKD/MiniLLM's measure).

    Lower is better: the student's own text is likely under the teacher.
    """
    continuations = generate(student, prompts, length, recipe.context, recipe.sampling_temperature, seed)
    total, count = 0.0, 0
    for prompt, cont in zip(prompts, continuations):
        ids = np.concatenate([prompt, cont])[-(recipe.context + 1):]
        x, y = ids[:-1][None], ids[1:][None]
        log_p = tf.nn.log_softmax(tf.cast(teacher(tf.constant(x), training=False), tf.float32), -1).numpy()[0]
        tail = len(cont)
        nll = -log_p[np.arange(len(y[0])), y[0]][-tail:]
        total += float(nll.sum())
        count += tail
    return total / count / np.log(2.0)
