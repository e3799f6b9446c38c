"""The stages of ``kdkeras distill-lm`` as a library: a recipe, then prepare, distil, evaluate, report.

:class:`LMRecipe` holds every setting (the command's flags are built from
it, :func:`add_arguments`); :func:`prepare` loads and checks the models and
data, :func:`distil_and_report` trains and writes the outputs.

Example:

```python
from kdkeras.text import lm_job
recipe = lm_job.LMRecipe(teacher="my_teacher_preset", student="from-teacher:2", data=("notes.txt",),
                         out="runs/notes", steps=500)
job = lm_job.prepare(recipe)
record = lm_job.distil_and_report(job, recipe)
```
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from kdkeras import evaluation, provenance
from kdkeras.atomic import write_text
from kdkeras.callbacks import tensorboard_stage
from kdkeras.distiller import Distiller
from kdkeras.experiment import RunState, fit_stage
from kdkeras.lm_recipe import LMRecipe, add_arguments
from kdkeras.sampling import OnPolicy
from kdkeras.text import causal_lm, generation, hf_export

__all__ = ["LMJob", "LMRecipe", "add_arguments", "distil_and_report", "evaluate", "prepare", "samples"]

#: Steps per Keras epoch of distill-lm (one backup and one log line each).
EPOCH_STEPS = 100


@dataclasses.dataclass
class LMJob:
    """Everything a run needs, loaded and checked: models, windows, the tokenizer's bytes per token."""

    teacher: object
    student: object
    student_before: object
    data: object
    bytes_per_token: object
    vocabulary_size: object
    cache: object = None
    strategy: object = None


def prepare(settings, strategy=None):
    """Loads the teacher and student of an :class:`LMRecipe`, reads and splits the data, checks tokenizers,
    lengths and a cache. The models are made under ``strategy`` (a ``tf.distribute`` strategy; default: the
    current one), which :func:`distil` then trains with.

    Raises ``ValueError`` (one line) for anything the user gave wrong.
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        return _prepare(settings, strategy)


def _prepare(settings, strategy):
    teacher = causal_lm.load_causal_lm(settings.teacher, dtype=settings.teacher_dtype)
    student_dtype = settings.dtype_policy
    layers = settings.student_layers

    def make_student():
        if layers is not None:
            return causal_lm.student_from_teacher(teacher, layers, dtype=student_dtype)
        return causal_lm.load_causal_lm(settings.student, "--student", dtype=student_dtype)

    student, before = make_student(), make_student()
    if settings.export == "hf":
        hf_export.check_exportable(student)  # refused before any training
    for model in (teacher, student):
        causal_lm.check_sequence_length(model, settings.sequence_length)
    tokenizer = teacher.preprocessor.tokenizer
    vocabulary = None
    sizes = {int(m.backbone.token_embedding.input_dim) for m in (teacher, student)}
    if len(sizes) > 1:
        vocabulary = int(tokenizer.vocabulary_size())
    Distiller(student, teacher, vocabulary_size=vocabulary)  # refuses tokenizers that disagree
    data = causal_lm.lm_data(tokenizer, settings.data, settings.sequence_length, settings.validation, settings.seed,
                             start_ids=generation.start_ids(teacher))
    cache = None
    if settings.teacher_cache:
        causal_lm.check_cache(settings.teacher_cache, teacher, settings)
        cache = settings.teacher_cache
    table = causal_lm.bytes_per_token(tokenizer, min(sizes))
    return LMJob(teacher, student, before, data, table, vocabulary, cache, strategy)


def evaluate(model, job, teacher=None, batch_size=16):
    """Held-out bits per token and per byte, perplexity, accuracy (and KL / agreement to ``teacher``)."""
    held = tf.data.Dataset.from_tensor_slices(job.data.held_out).batch(batch_size)
    vocabulary = job.vocabulary_size or int(job.bytes_per_token.shape[0])
    result = evaluation.language_model_metrics(model, held, teacher=teacher, characters_per_token=job.bytes_per_token,
                                               vocabulary_size=vocabulary)
    result["bits_per_byte"] = result.pop("bits_per_character")
    return {k: float(v) for k, v in result.items()}


def _training_data(job, settings):
    from kdkeras.data import top_k

    batch = settings.batch_size
    if job.cache is not None:
        rows = causal_lm.load_cache(job.cache, batch, shuffle=True, seed=settings.seed)
        return rows.repeat().batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    if settings.top_k:
        windows = tf.data.Dataset.from_tensor_slices(job.data.train)
        cache = top_k.teacher_top_k(job.teacher, windows.batch(32), settings.top_k,
                                    temperature=settings.temperature, vocabulary_size=job.vocabulary_size)
        return cache.dataset(batch, shuffle=True, seed=settings.seed).unbatch().repeat().batch(
            batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    # The order: a NumPy permutation of the windows per pass, so that it is the same under every
    # tf.distribute strategy (TensorFlow's seeded shuffle drew another order on MultiWorkerMirroredStrategy).
    n = int(job.data.train[2].shape[0])
    passes = math.ceil(settings.steps * batch / n) + 1
    rng = np.random.default_rng(settings.seed)
    order = np.concatenate([rng.permutation(n) for _ in range(passes)]).astype("int64")
    return tf.data.Dataset.from_tensor_slices(order).map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), job.data.train)).batch(
        batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def distil(job, settings, callbacks=(), optimizer=keras.optimizers.Adam):
    """Trains ``job.student`` for ``settings.steps`` steps; returns ``(student, history, seconds)``.

    ``optimizer``: a function of the learning rate (a cosine decay from
    ``settings.learning_rate`` to 0 over the steps) that returns a Keras
    optimizer; Adam by default.
    """
    keras.utils.set_random_seed(settings.seed)
    student = job.student
    if settings.lora_rank:
        student.backbone.enable_lora(settings.lora_rank)
    epochs = math.ceil(settings.steps / min(EPOCH_STEPS, settings.steps))
    per_epoch = min(EPOCH_STEPS, settings.steps)
    with (job.strategy or tf.distribute.get_strategy()).scope():
        distiller = Distiller(student, job.teacher, vocabulary_size=job.vocabulary_size)
        schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, epochs * per_epoch)
        distiller.compile(optimizer=optimizer(schedule), distillation_loss_fn=settings.loss,
                          alpha=settings.alpha, temperature=settings.temperature,
                          on_policy=OnPolicy(settings.on_policy_fraction, settings.max_new_tokens, seed=settings.seed))
    state = RunState(settings.out, resume=settings.resume, model_files={"distilled": ".kdkeras-state/student.keras"})
    if state.finished("distilled"):
        trained = state.load("distilled")
        return trained.model, trained.history, 0.0
    done = state.completed_epochs("distilled")
    data = _training_data(job, settings).with_options(_data_options())
    start = time.time()
    callbacks = [*callbacks, *tensorboard_stage(settings.tensorboard, "distilled", settings.temperature,
                                                settings.alpha)]
    history = fit_stage(distiller, "distilled", data.skip(done * per_epoch), epochs, per_epoch, done, state=state,
                        verbose=settings.verbose, callbacks=callbacks, saved_model=student)
    return student, history, time.time() - start


def _data_options():
    options = tf.data.Options()
    # In-memory windows cannot be split by file: every worker takes its share of each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def samples(models, job, count=3, length=64, seed=0):
    """``{name: [continuation]}``: the same seeded held-out prompts continued by each model (top-k sampler, seeded)."""
    import keras_hub

    tokenizer = job.teacher.preprocessor.tokenizer
    x = job.data.held_out[0]
    rows = np.random.default_rng(seed).choice(len(x["token_ids"]), min(count, len(x["token_ids"])), replace=False)
    prompts = []
    for r in rows:
        real = int(x["padding_mask"][r].sum())
        text = tokenizer.detokenize(x["token_ids"][r, :max(1, min(real, 24))])
        text = text.numpy() if hasattr(text, "numpy") else text
        prompts.append(text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text))
    out = {}
    for name, model in models.items():
        model.compile(sampler=keras_hub.samplers.TopKSampler(k=10, seed=seed))
        texts = model.generate(prompts, max_length=length)
        out[name] = [str(t) for t in texts]
    return prompts, out


def distil_and_report(job, settings, command=""):
    """Evaluates before, distils, evaluates after, saves ``student/`` and writes the reports; returns the record."""
    before = {"teacher": evaluate(job.teacher, job), "student_before": evaluate(job.student_before, job, job.teacher)}
    student, history, seconds = distil(job, settings)
    if settings.lora_rank:
        student = causal_lm.merge_lora(student)
    after = evaluate(student, job, job.teacher)
    student.save_to_preset(os.path.join(settings.out, "student"))
    if settings.export == "hf":
        hf_export.export_hf(student, os.path.join(settings.out, "student-hf"))
    tokens = float(min(settings.steps * settings.batch_size, 10 ** 12) * settings.sequence_length)
    weights = job.data.train[2]
    real_share = float(weights.sum() / weights.size)
    record = {
        "command": command, "provenance": provenance.provenance(), "settings": _jsonable(dataclasses.asdict(settings)),
        "documents": job.data.documents, **before, "student_after": after,
        "gap_closed_bits_per_byte": evaluation.gap_closed(before["teacher"]["bits_per_byte"],
                                                          before["student_before"]["bits_per_byte"],
                                                          after["bits_per_byte"]),
        "replicas": int((job.strategy or tf.distribute.get_strategy()).num_replicas_in_sync),
        "training_seconds": seconds, "tokens_per_second": tokens * real_share / seconds if seconds else None,
        "history": history, "parameters": {"teacher": int(job.teacher.count_params()),
                                           "student": int(student.count_params())},
    }
    write_text(os.path.join(settings.out, "metrics.json"), json.dumps(record, indent=2, default=float) + "\n")
    prompts, texts = samples({"teacher": job.teacher, "student before": job.student_before,
                              "student after": student}, job, length=settings.sequence_length, seed=settings.seed)
    write_text(os.path.join(settings.out, "samples.md"), _samples_md(prompts, texts))
    write_text(os.path.join(settings.out, "report.md"), _report_md(record))
    return record


def _jsonable(values):
    scalar = (str, int, float, bool, type(None))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()
            if isinstance(v, scalar) or (isinstance(v, (list, tuple)) and all(isinstance(i, scalar) for i in v))}


def _samples_md(prompts, texts):
    lines = ["# Samples", "", "Seeded held-out prompts, continued by each model (top-10 sampling, the same seed).", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"## Prompt {i + 1}", "", "```", prompt, "```", ""]
        for name, outputs in texts.items():
            lines += [f"**{name}**", "", "```", outputs[i], "```", ""]
    return "\n".join(lines)


def _report_md(record):
    rows = ["| model | bits / byte | bits / token | perplexity | KL to teacher | agreement |", "|---|---:|---:|---:|---:|---:|"]
    for key in ("teacher", "student_before", "student_after"):
        m = record[key]
        kl, agree = (f"{m[k]:.3f}" if k in m else "—" for k in ("kl_to_teacher", "agreement"))
        rows.append(f"| {key.replace('_', ' ')} | {m['bits_per_byte']:.3f} | {m['bits_per_token']:.3f} | "
                    f"{m['perplexity']:.2f} | {kl} | {agree} |")
    gap = record["gap_closed_bits_per_byte"]
    return "\n".join([
        "# kdkeras distill-lm report", "", f"- command: `{record['command']}`",
        f"- held out: {', '.join(record['documents']['held_out'][:6])}",
        f"- parameters: teacher {record['parameters']['teacher']:,}, student {record['parameters']['student']:,}",
        f"- training: {record['training_seconds']:.0f} s, {record['tokens_per_second'] or 0:.0f} real tokens a second",
        "", *rows, "", f"Gap closed in held-out bits per byte (before to after, against the teacher): "
        f"{'—' if gap is None else f'{gap:.1%}'}", ""])
