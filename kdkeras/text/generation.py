"""The teacher writes the data: sequence-level distillation (Kim & Rush, 2016), ``kdkeras generate``.

A teacher language model completes the user's prompts; the student is then
trained on the completions (``kdkeras distill-lm --data generated.jsonl``),
alone ("Seq-KD": the teacher's words are the labels) or with the teacher's
logits on the same text ("Seq-KD + Word-KD"). This is how most language models
are distilled today (DeepSeek's R1-Distill students were fine-tuned on the
teacher's answers).

- :class:`Sampling`: how the teacher samples (temperature, top-k, top-p,
  samples per prompt, new tokens, seed), checked on construction;
- :func:`read_prompts`: prompts from a UTF-8 ``.txt`` (one a line) or a
  ``.jsonl`` with ``"prompt"`` (other fields kept);
- :func:`generate`: the completions, written to a ``.jsonl`` in shards
  (atomically; ``resume=True`` continues an interrupted run) or returned;
- :func:`truncate_logits` and :func:`uniform_noise`: the sampler's parts, pure
  functions (top-k, then top-p, on temperature-scaled logits; one uniform
  number per draw, keyed by ``(seed, sample, new-token index)`` alone);
- :func:`score`: a model's mean log-probability of completions (how much a
  teacher likes a student's samples).

Sampling runs on the model's key/value cache (KerasHub's ``_build_cache`` and
``call_with_cache``, the functions its own ``generate`` uses), many prompts a
batch, inside one compiled loop; each sequence stops at the end token, which
is not part of its ``"completion"``. The token a sample draws at new position
``j`` depends on ``(seed, sample index, j)`` and the model only, so the same
command and seed write the same completions whatever the batch size (the
mean log-probability, rounded to 3 decimals, can move by its last digit).
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import weakref

import numpy as np
import tensorflow as tf

from kdkeras.atomic import write_text
from kdkeras.sampling import inverse_cdf_draw, kv_cache_steps, uniform_noise
from kdkeras.text.causal_lm import texts_ids

__all__ = ["Prompts", "Sampling", "generate", "output_state", "read_prompts", "score", "start_ids", "truncate_logits", "uniform_noise"]

#: Fields that :func:`generate` writes on each line (a prompt record's own fields of these names are replaced).
FIELDS = ("prompt", "completion", "sample", "tokens", "ended", "mean_logprob")
#: Samples per shard file (fixed, so shards do not depend on the batch size).
SHARD_SAMPLES = 512


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the teacher samples its completions.

    Attributes:
        max_new_tokens: Tokens generated at most per sample (the end token included).
        samples_per_prompt: Completions per prompt (``K``); each prompt's ``K``
            lines follow one another.
        temperature: Softmax temperature; ``0`` is greedy (argmax) decoding.
        top_p: Nucleus sampling: keep the smallest set of most likely tokens
            whose probability (after temperature and top-k) reaches ``top_p``;
            ``1`` keeps all.
        top_k: Keep the ``top_k`` most likely tokens (``0``: all).
        seed: Seed of the draws.
    """

    max_new_tokens: int = 128
    samples_per_prompt: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self):
        def integer(name, value, low):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"--{name} must be an integer >= {low}; received {value!r}.")

        integer("max-new-tokens", self.max_new_tokens, 1)
        integer("samples-per-prompt", self.samples_per_prompt, 1)
        integer("top-k", self.top_k, 0)
        integer("seed", self.seed, 0)
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or \
                self.temperature < 0:
            raise ValueError(f"--temperature must be a finite number >= 0 (0: greedy); received {self.temperature!r}.")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1]; received {self.top_p!r}.")


# ---------------------------------------------------------------------- #
# Prompts
# ---------------------------------------------------------------------- #
class Prompts(list):
    """A list of prompt records (dicts with ``"prompt"``) that remembers each one's line in its file."""

    def __init__(self, records, lines=None):
        super().__init__(records)
        self.lines = list(lines) if lines is not None else list(range(1, len(self) + 1))


def read_prompts(path):
    """:class:`Prompts` ``[{"prompt": str, ...}]`` from a UTF-8 ``.txt`` (one prompt a line) or a ``.jsonl`` (``"prompt"`` per line).

    Blank lines are skipped; a ``.jsonl`` line's other fields are kept.
    Raises ``ValueError`` naming the file (and line) for a missing or
    non-UTF-8 file, a line that is not a JSON object with a string
    ``"prompt"``, or no prompt at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"--prompts {path!r} is not a file: give a .txt file (one prompt a line) or a .jsonl file.")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"--prompts {path!r} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    records, numbers = [], []
    jsonl = path.endswith(".jsonl")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            records.append({"prompt": line.rstrip("\r")})
            numbers.append(number)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"--prompts {path!r} line {number} is not JSON ({e.msg}).") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"--prompts {path!r} line {number} needs a string \"prompt\".")
        if not record["prompt"].strip():
            raise ValueError(f"--prompts {path!r} line {number} has an empty \"prompt\".")
        records.append(record)
        numbers.append(number)
    if not records:
        raise ValueError(f"--prompts {path!r} holds no prompt.")
    return Prompts(records, numbers)


# ---------------------------------------------------------------------- #
# The sampler's parts (pure functions, tested against NumPy)
# ---------------------------------------------------------------------- #
def truncate_logits(logits, top_k=0, top_p=1.0):
    """``logits`` ``[batch, V]`` with the tokens outside top-k, then outside top-p, set to ``-inf``.

    Top-p keeps the smallest set of most likely tokens whose probability
    (softmax of ``logits``, after top-k) reaches ``top_p``: a token is kept when
    the probability of the tokens ranked above it is below ``top_p`` (the
    most likely token always stays). Tokens tied with the last kept one stay too.
    """
    logits = tf.convert_to_tensor(logits, tf.float32)
    vocabulary = logits.shape[-1]
    if top_k and top_k < vocabulary:
        kth = tf.math.top_k(logits, k=top_k, sorted=True).values[:, -1:]
        logits = tf.where(logits < kth, -np.inf, logits)
    if top_p < 1.0:
        ranked = tf.math.top_k(logits, k=min(top_k or vocabulary, vocabulary), sorted=True).values
        probabilities = tf.nn.softmax(ranked, axis=-1)
        above = tf.cumsum(probabilities, axis=-1, exclusive=True)
        kept = tf.reduce_sum(tf.cast(above < top_p, tf.int32), axis=-1)  # >= 1
        last = tf.gather(ranked, tf.maximum(kept, 1) - 1, batch_dims=1)[:, None]
        logits = tf.where(logits < last, -np.inf, logits)
    return logits


def choose_tokens(logits, sampling, seed, samples, positions):
    """The next token of each row: argmax at temperature 0, else a draw from the truncated softmax.

    The draw inverts the cumulative distribution at one :func:`uniform_noise`
    number per row: the first token whose cumulative probability reaches it.
    """
    logits = tf.cast(logits, tf.float32)
    if sampling.temperature == 0:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = truncate_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return inverse_cdf_draw(scaled, uniform_noise(seed, samples, positions))


# ---------------------------------------------------------------------- #
# Decoding on the KV cache
# ---------------------------------------------------------------------- #
class _Decoder:
    """One compiled decode loop of a KerasHub ``CausalLM`` for fixed ``[batch, length]`` buffers."""

    def __init__(self, model, sampling, vocabulary, end_token_id, jit_compile):
        self.model, self.sampling, self.vocabulary, self.end = model, sampling, vocabulary, end_token_id
        self.run = tf.function(self._decode, jit_compile=jit_compile, reduce_retracing=True)

    def _decode(self, ids, prompt, samples):
        """``ids`` [B, L] (prompts then padding), ``prompt`` [B] lengths, ``samples`` [B] sample indices."""
        model, sampling = self.model, self.sampling
        positions = tf.range(tf.shape(ids)[1])[None, :]
        steps = kv_cache_steps(model, ids)
        stop = prompt + sampling.max_new_tokens
        zeros = tf.zeros_like(prompt, tf.float32)

        def body(p, ids, cache, stop, ended, total):
            logits, cache = steps.next(p, ids, cache)
            logits = tf.cast(logits[:, :self.vocabulary], tf.float32)
            token = choose_tokens(logits, sampling, sampling.seed, samples, p - prompt)
            active = tf.logical_and(p >= prompt, p < stop)
            ids = tf.where(tf.logical_and(positions == p, active[:, None]), tf.cast(token, ids.dtype)[:, None], ids)
            log_p = tf.gather(logits, token, batch_dims=1) - tf.reduce_logsumexp(logits, axis=-1)
            total = total + tf.where(active, log_p, 0.0)
            if self.end is not None:
                stopping = tf.logical_and(active, tf.equal(token, self.end))
                stop = tf.where(stopping, p + 1, stop)
                ended = tf.logical_or(ended, stopping)
            return p + 1, ids, cache, stop, ended, total

        def more(p, ids, cache, stop, ended, total):
            return tf.reduce_any(p < stop)

        _, ids, _, stop, ended, total = tf.while_loop(
            more, body, (tf.reduce_min(prompt), ids, steps.initial, stop, tf.zeros_like(prompt, tf.bool), zeros),
            parallel_iterations=1)
        return ids, stop, ended, total


_DECODERS = weakref.WeakKeyDictionary()


def _decoder(model, sampling, vocabulary, end, jit_compile):
    """The model's compiled decode loop for these settings, made once and kept with the model (as KerasHub does)."""
    key = (sampling, vocabulary, end, jit_compile)
    kept = _DECODERS.get(model)
    if kept is None or kept[0] != key:
        kept = (key, _Decoder(model, sampling, vocabulary, end, jit_compile))
        _DECODERS[model] = kept
    return kept[1]


def start_ids(model):
    """``[start_token_id]`` where the model's preprocessor adds a start token (KerasHub's ``generate`` does), else ``[]``."""
    preprocessor = getattr(model, "preprocessor", None)
    start = getattr(getattr(preprocessor, "tokenizer", None), "start_token_id", None)
    return [int(start)] if start is not None and getattr(preprocessor, "add_start_token", False) else []


def _detokenize(tokenizer, rows):
    """The texts of several id lists, in one tokenizer call."""
    texts = tokenizer.detokenize(tf.ragged.constant([list(r) for r in rows], dtype=tf.int32, ragged_rank=1))
    texts = np.asarray(texts.numpy() if hasattr(texts, "numpy") else texts).reshape(-1)
    out = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts]
    return [text if row else "" for text, row in zip(out, rows)]


def prompt_token_ids(model, records, max_new_tokens, lines=None):
    """Each record's prompt as token ids (start token first where the preprocessor adds one).

    Raises ``ValueError`` naming the line when a prompt and ``max_new_tokens``
    do not fit the model's maximum sequence length.
    """
    tokenizer = model.preprocessor.tokenizer
    start = start_ids(model)
    ids = [start + row.tolist() for row in texts_ids(tokenizer, [r["prompt"] for r in records])]
    limit = getattr(model.backbone, "max_sequence_length", None)
    for line, row in zip(lines or range(1, len(ids) + 1), ids):
        if limit is not None and len(row) + max_new_tokens > int(limit):
            raise ValueError(f"--prompts line {line}: a prompt of {len(row)} tokens and --max-new-tokens "
                             f"{max_new_tokens} exceed the model's maximum of {limit} tokens; shorten the prompt "
                             "or lower --max-new-tokens.")
    return ids


# ---------------------------------------------------------------------- #
# generate: shards, resume, records
# ---------------------------------------------------------------------- #
def generate(teacher, prompts, out=None, sampling=Sampling(), batch_size=32, resume=False, verbose=0,
             jit_compile=True, shard_samples=SHARD_SAMPLES):
    """The teacher's completions of ``prompts``: one record per sample, written to ``out`` or returned.

    Args:
        teacher: A KerasHub ``CausalLM`` with its preprocessor (tokenizer).
        prompts: Records from :func:`read_prompts`, or a list of strings.
        out: A ``.jsonl`` path; ``None`` returns the records instead. Shards
            of ``shard_samples`` samples are written atomically to
            ``out + ".parts/"`` and joined into ``out`` at the end (the parts
            are then removed).
        sampling: A :class:`Sampling`.
        batch_size: Sequences per decode batch (changes speed, not the lines).
        resume: Continue an interrupted run: finished shards are kept, the
            missing ones generated. Without it an existing ``out`` (or its
            parts) is refused.
        verbose: 1 shows a progress bar with tokens a second.
        jit_compile: Compile the decode loop with XLA (default; about twice
            as fast on CPU as the plain graph).
        shard_samples: Samples per shard (the unit that ``resume`` keeps).

    Each record holds the prompt record's fields plus ``"prompt"``,
    ``"completion"`` (the text after the prompt, up to and without the end
    token), ``"sample"`` (``0..K-1``), ``"tokens"`` (tokens generated, the end
    token included), ``"ended"`` (whether it stopped at the end token) and
    ``"mean_logprob"`` (the teacher's mean natural-log probability of the
    generated tokens at temperature 1, rounded to 3 decimals). The same
    seed gives the same tokens whatever ``batch_size``; the log-probability
    can differ in its last digit, as the batch's shape changes the float
    rounding of the model's matrix products.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; received {batch_size!r}.")
    records = [{"prompt": p} if isinstance(p, str) else dict(p) for p in prompts]
    if not records:
        raise ValueError("There is no prompt to complete.")
    ids = prompt_token_ids(teacher, records, sampling.max_new_tokens, getattr(prompts, "lines", None))
    parts = None if out is None else _prepare_parts(out, records, ids, sampling, teacher, resume, shard_samples)
    plan = _Plan(teacher, ids, sampling, batch_size, jit_compile)
    shards = range(0, plan.total, shard_samples)
    bar = _progress(plan.total, verbose)
    lines, done, tokens, start = [], 0, 0, time.time()
    k = sampling.samples_per_prompt
    for shard, first in enumerate(shards):
        count = min(shard_samples, plan.total - first)
        path = None if parts is None else os.path.join(parts, f"shard-{shard:05d}.jsonl")
        if path is not None and os.path.exists(path):
            done += count
            continue
        rows = []
        for sample, row in plan.samples(first, count):
            tokens += row["tokens"]
            rows.append(_record(records[sample // k], sample % k, row))
            done += 1
            if bar is not None and done % batch_size == 0:
                bar.update(done, [("tokens/s", tokens / max(time.time() - start, 1e-9))])
        if path is None:
            lines.extend(rows)
        else:
            write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if bar is not None:
        bar.update(plan.total, [("tokens/s", tokens / max(time.time() - start, 1e-9))], finalize=True)
    if parts is None:
        return lines
    _join(parts, out, len(shards))
    return None


def _record(source, sample, row):
    record = {k: v for k, v in source.items() if k not in FIELDS}
    record.update({"prompt": source["prompt"], "completion": row["completion"],
                   "sample": sample, "tokens": row["tokens"], "ended": row["ended"],
                   "mean_logprob": row["mean_logprob"]})
    return record


class _Plan:
    """Samples in order (prompt ``i``'s ``K`` samples are ``i*K .. i*K+K-1``), decoded in padded batches."""

    def __init__(self, model, ids, sampling, batch_size, jit_compile):
        self.model, self.ids, self.sampling, self.batch = model, ids, sampling, int(batch_size)
        self.total = len(ids) * sampling.samples_per_prompt
        self.length = max(len(r) for r in ids) + sampling.max_new_tokens
        tokenizer = model.preprocessor.tokenizer
        self.tokenizer = tokenizer
        self.end = getattr(tokenizer, "end_token_id", None)
        self.pad = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.decoder = _decoder(model, sampling, int(tokenizer.vocabulary_size()), self.end, jit_compile)

    def samples(self, first, count):
        """Yields ``(sample index, result)`` for samples ``first .. first + count - 1``."""
        k = self.sampling.samples_per_prompt
        for begin in range(first, first + count, self.batch):
            chosen = list(range(begin, min(begin + self.batch, first + count)))
            rows = [self.ids[s // k] for s in chosen]
            filled = len(chosen)
            rows += [rows[0]] * (self.batch - filled)  # a short last batch keeps the compiled shape
            buffer = np.full((self.batch, self.length), self.pad, np.int32)
            for i, row in enumerate(rows):
                buffer[i, :len(row)] = row
            prompt = np.asarray([len(r) for r in rows], np.int32)
            index = np.asarray(chosen + [chosen[0]] * (self.batch - filled), np.int64)
            out, stop, ended, total = (np.asarray(t) for t in self.decoder.run(
                tf.constant(buffer), tf.constant(prompt), tf.constant(index.astype(np.uint32))))
            made = [out[i, prompt[i]:stop[i]].tolist() for i in range(filled)]
            texts = _detokenize(self.tokenizer, [m[:-1] if ended[i] else m for i, m in enumerate(made)])
            for i in range(filled):
                n = len(made[i])
                yield chosen[i], {"completion": texts[i], "tokens": n, "ended": bool(ended[i]),
                                  "mean_logprob": round(float(total[i]) / max(n, 1), 3)}


def _progress(total, verbose):
    if not verbose:
        return None
    import keras

    return keras.utils.Progbar(total, unit_name="sample", stateful_metrics=["tokens/s"])


def _manifest(records, ids, sampling, teacher, shard_samples):
    digest = hashlib.sha256()
    for row in ids:
        digest.update(np.asarray(row, np.int64).tobytes() + b"|")
    return {"sampling": dataclasses.asdict(sampling), "prompts": len(records), "prompt_ids_sha256": digest.hexdigest(),
            "teacher": {k: v for k, v in teacher.backbone.get_config().items() if k not in ("name", "dtype")},
            "shard_samples": shard_samples}


def output_state(out, resume):
    """Where a run writing ``out`` starts: ``"new"``, ``"resume"`` (its parts exist) or ``"complete"`` (``out`` exists).

    Raises ``ValueError`` for an existing ``out`` or parts without ``resume``.
    """
    out = os.fspath(out)
    for path, state, what in ((out + ".parts", "resume", " (an interrupted run)"), (out, "complete", "")):
        if os.path.exists(path):
            if not resume:
                raise ValueError(f"--out {out!r} exists{what}: pass --resume to continue it, or give another --out.")
            return state
    return "new"


def _prepare_parts(out, records, ids, sampling, teacher, resume, shard_samples):
    """The shard folder of ``out``: new, or (``resume``) an existing one made with the same settings."""
    out = os.fspath(out)
    parts = out + ".parts"
    manifest = json.loads(json.dumps(_manifest(records, ids, sampling, teacher, shard_samples), default=str))
    state = output_state(out, resume)
    if state == "complete":
        raise ValueError(f"--resume: {out!r} is already complete; give another --out to generate again.")
    if state == "resume":
        with open(os.path.join(parts, "manifest.json")) as f:
            if json.load(f) != manifest:
                raise ValueError(f"--resume: {parts!r} was made with other prompts, settings or teacher; "
                                 "give another --out.")
        return parts
    os.makedirs(parts)
    write_text(os.path.join(parts, "manifest.json"), json.dumps(manifest, indent=1) + "\n")
    return parts


def _join(parts, out, shards):
    """Joins the shards into ``out`` (atomically) and removes the parts."""
    text = []
    for shard in range(shards):
        with open(os.path.join(parts, f"shard-{shard:05d}.jsonl"), encoding="utf-8") as f:
            text.append(f.read())
    write_text(out, "".join(text))
    shutil.rmtree(parts)


# ---------------------------------------------------------------------- #
# Scoring
# ---------------------------------------------------------------------- #
def score(model, pairs, batch_size=32):
    """``model``'s mean natural-log probability per completion token of each ``(prompt, completion)`` pair.

    The prompt is given as :func:`generate` gives it (start token where the
    preprocessor adds one); the end token after the completion is not scored.
    Returns a ``[len(pairs)]`` NumPy array (``nan`` for an empty completion).
    """
    tokenizer = model.preprocessor.tokenizer
    start = start_ids(model)
    prompts = [p.tolist() for p in texts_ids(tokenizer, [p for p, _ in pairs])]
    completions = [c.tolist() for c in texts_ids(tokenizer, [c for _, c in pairs])]
    rows = [start + p + c for p, c in zip(prompts, completions)]
    length = max(len(r) for r in rows)
    pad = int(getattr(tokenizer, "pad_token_id", None) or 0)
    result = np.full(len(pairs), np.nan)
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin:begin + batch_size]
        ids = np.full((len(chunk), length), pad, np.int32)
        mask = np.zeros((len(chunk), length), bool)
        for i, row in enumerate(chunk):
            ids[i, :len(row)], mask[i, :len(row)] = row, True
        logits = model({"token_ids": ids, "padding_mask": mask}, training=False)
        vocabulary = int(tokenizer.vocabulary_size())
        log_p = tf.nn.log_softmax(tf.cast(logits[:, :, :vocabulary], tf.float32)).numpy()
        for i, row in enumerate(chunk):
            first = len(start) + len(prompts[begin + i])
            if len(row) > first:
                picked = log_p[i, np.arange(first - 1, len(row) - 1), row[first:]]
                result[begin + i] = float(picked.mean())
    return result
