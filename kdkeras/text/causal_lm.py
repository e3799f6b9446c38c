"""Your own language models: KerasHub presets, documents, token windows, students made from a teacher.

The stages of ``kdkeras distill-lm`` and ``kdkeras cache-teacher`` as a public
API (the text twin of :mod:`kdkeras.experiment`):

- :func:`load_causal_lm`: any preset ``keras_hub.models.CausalLM.from_preset``
  takes (a directory saved with ``save_to_preset``, a Hugging Face checkpoint
  directory, a ``hf://`` or ``kaggle://`` handle), refused in one line when it
  is missing or not a causal language model;
- :func:`read_documents`: a UTF-8 ``.txt`` file (the plays of a Shakespeare
  file are documents), a folder of them, or ``.jsonl`` lines with ``"text"`` or
  ``"prompt"``/``"completion"``; :func:`hold_out` keeps a seeded 5 % of the
  documents for evaluation;
- :func:`token_windows`: the documents as ``[sequence_length]`` training
  windows, weights 0 on padding and on prompts;
- :func:`student_from_teacher`: a student of the teacher's architecture with
  fewer layers, initialised from every k-th teacher layer and its embeddings
  and head (DistilBERT's initialisation); :func:`merge_lora` folds LoRA
  adapters into the weights;
- :func:`fingerprint`: what a top-k cache records of its teacher and tokenizer.

keras-hub is imported where a KerasHub model is needed (``pip install "kdkeras[text]"``).
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from typing import NamedTuple

import keras
import numpy as np

from kdkeras.language import PROBE_TEXT
from kdkeras.text.corpus import load_corpus

logger = logging.getLogger(__name__)

#: The file of a top-k teacher cache that records what it was made with (``kdkeras cache-teacher``).
MANIFEST = "manifest.json"

__all__ = ["MANIFEST", "Documents", "LMData", "bytes_per_token", "check_cache", "check_sequence_length", "fingerprint", "load_cache", "hold_out", "load_causal_lm", "lm_data",
           "merge_lora", "with_checkpoint_norm_epsilon", "read_documents", "student_from_teacher", "texts_ids", "token_windows"]


class Documents(NamedTuple):
    """Documents of one source: ``items`` are texts, or ``(prompt, completion)`` pairs; ``names`` label them."""

    items: list
    names: list
    paired: bool


def read_documents(path, flag="--data"):
    """Reads ``path``: a ``.jsonl`` file, a UTF-8 ``.txt`` file, or a folder of ``.txt`` files.

    A ``.jsonl`` line holds ``{"text": ...}`` or ``{"prompt": ..., "completion": ...}``
    (one kind per file; the loss then covers the completions only). Raises
    ``ValueError`` naming the file and line for anything else, and for empty data.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{flag} {path!r} does not exist: give a .txt file, a folder of .txt files or a .jsonl file.")
    if path.endswith(".jsonl") and os.path.isfile(path):
        return _read_jsonl(path, flag)
    try:
        corpus = load_corpus(path)
    except ValueError as e:
        raise ValueError(str(e).replace("--data", flag)) from None
    return Documents([t for _, t in corpus.documents], [n for n, _ in corpus.documents], False)


def _read_jsonl(path, flag):
    items, names, kinds = [], [], set()
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{flag} {path!r} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{flag} {path!r} line {number} is not JSON ({e.msg}).") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            kinds.add("text")
            items.append(record["text"])
        elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and \
                isinstance(record.get("completion"), str):
            kinds.add("pairs")
            items.append((record["prompt"], record["completion"]))
        else:
            raise ValueError(f"{flag} {path!r} line {number} needs a string \"text\", or strings \"prompt\" and "
                             "\"completion\".")
        names.append(f"line {number}")
    if len(kinds) > 1:
        raise ValueError(f"{flag} {path!r} mixes \"text\" lines with \"prompt\"/\"completion\" lines: use one kind.")
    if not items or all(not (t if isinstance(t, str) else t[1]).strip() for t in items):
        raise ValueError(f"{flag} {path!r} holds no text.")
    return Documents(items, names, kinds == {"pairs"})


def hold_out(documents, fraction=0.05, seed=0):
    """``(train, held_out)`` :class:`Documents`: a seeded ``fraction`` of the documents, whole (at least one).

    A single text document is cut at a line break instead: its last 5 % is held out.
    """
    n = len(documents.items)
    if n == 1 and not documents.paired:
        text = documents.items[0]
        cut = text.find("\n", int(len(text) * (1 - fraction)))
        cut = cut + 1 if 0 <= cut < len(text) - 1 else int(len(text) * (1 - fraction))
        return (Documents([text[:cut]], ["text[:95%]"], False), Documents([text[cut:]], ["text[95%:]"], False))
    if n < 2:
        raise ValueError("Holding out evaluation documents needs at least two documents (or pass --validation).")
    count = min(n - 1, max(1, round(fraction * n)))
    chosen = set(np.random.default_rng(seed).choice(n, count, replace=False).tolist())

    def pick(keep):
        idx = [i for i in range(n) if (i in chosen) != keep]
        return Documents([documents.items[i] for i in idx], [documents.names[i] for i in idx], documents.paired)

    return pick(True), pick(False)


class LMData(NamedTuple):
    """Token windows of the training and held-out documents (see :func:`token_windows`)."""

    train: tuple
    held_out: tuple
    documents: dict


def lm_data(tokenizer, data, sequence_length, validation=None, seed=0, start_ids=()):
    """Reads ``data`` (one path or several) and ``validation``, holds out documents, cuts both into token windows.

    Several ``data`` sources (your own text and a ``kdkeras generate`` file,
    say) are read each in its own way and their windows joined; without
    ``validation`` a seeded 5 % of each source's documents is held out.
    ``start_ids`` go before each prompt of prompt/completion data (the start
    token, where the model's preprocessor adds one).
    """
    sources = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    train, held = [], []
    for source in sources:
        documents = read_documents(source)
        if validation is None:
            part, out = hold_out(documents, seed=seed)
            held.append(out)
        else:
            part = documents
        train.append(part)
    if validation is not None:
        held = [read_documents(validation, "--validation")]
    windows = [_joined([token_windows(tokenizer, d, sequence_length, start_ids) for d in group])
               for group in (train, held)]
    if not windows[0][2].any():
        raise ValueError("The training data give no token to learn from.")
    names = {"train": [n for d in train for n in d.names], "held_out": [n for d in held for n in d.names]}
    return LMData(windows[0], windows[1], names)


def _joined(parts):
    """Token windows of several sources as one ``(x, y, weights)``."""
    if len(parts) == 1:
        return parts[0]
    x = {key: np.concatenate([p[0][key] for p in parts]) for key in parts[0][0]}
    return x, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def token_windows(tokenizer, documents, sequence_length, start_ids=()):
    """``(x, y, weights)`` NumPy windows: ``x = {"token_ids", "padding_mask"}`` ``[n, L]``, ``y`` the next token.

    Each text document is its token ids followed by the end token, cut into
    windows of ``L + 1`` ids that overlap by one (every id is predicted once);
    the last window is padded with weight 0. A ``(prompt, completion)`` pair is
    one window, cut at ``L + 1`` ids, weighing only the positions that predict
    the completion and its end token; ``start_ids`` go before its prompt.
    """
    length = int(sequence_length)
    end = getattr(tokenizer, "end_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    rows, weights = [], []
    if documents.paired:
        prompts = texts_ids(tokenizer, [p for p, _ in documents.items])
        completions = texts_ids(tokenizer, [c for _, c in documents.items])
        for prompt, completion in zip(prompts, completions):
            prompt = np.concatenate([np.asarray(start_ids, np.int64), prompt])
            ids = np.concatenate([prompt, completion, [end] if end is not None else []]).astype(np.int64)
            w = np.zeros(len(ids) - 1, np.float32)
            w[max(len(prompt) - 1, 0):] = 1.0
            rows.append(ids[:length + 1])
            weights.append(w[:length])
    else:
        for text in texts_ids(tokenizer, documents.items):
            ids = np.concatenate([text, [end] if end is not None else []]).astype(np.int64)
            for start in range(0, max(len(ids) - 1, 1), length):
                rows.append(ids[start:start + length + 1])
                weights.append(np.ones(len(rows[-1]) - 1, np.float32))
    n = len(rows)
    ids = np.full((n, length + 1), pad, np.int32)
    w = np.zeros((n, length), np.float32)
    for i, (row, weight) in enumerate(zip(rows, weights)):
        ids[i, :len(row)] = row
        w[i, :len(weight)] = weight
    mask = np.zeros((n, length), bool)
    for i, row in enumerate(rows):
        mask[i, :min(len(row), length)] = True
    return {"token_ids": ids[:, :-1], "padding_mask": mask}, ids[:, 1:], w


def texts_ids(tokenizer, texts):
    """Token ids of each text (``[n]`` int64 arrays), tokenized line by line, 4,096 lines a call.

    A whole book in one call is slow for BPE; lines of every text share the
    calls, so many short texts (prompts) cost few calls. ``kdkeras generate``
    tokenizes its prompts with this function too, so training windows see the
    ids that generation conditioned on.
    """
    lines, owners = [], []
    for i, text in enumerate(texts):
        parts = text.splitlines(keepends=True) or [""]
        lines.extend(parts)
        owners.extend([i] * len(parts))
    out = [[] for _ in texts]
    for start in range(0, len(lines), 4096):
        rows = tokenizer(lines[start:start + 4096])
        rows = rows.to_list() if hasattr(rows, "to_list") else rows  # KerasHub gives lists for Python inputs
        for owner, row in zip(owners[start:start + 4096], rows):
            out[owner].append(np.asarray(row, np.int64).reshape(-1))
    return [np.concatenate(parts) if parts else np.zeros([0], np.int64) for parts in out]


def bytes_per_token(tokenizer, vocabulary):
    """UTF-8 bytes of each token id's text, ``[vocabulary]`` (special tokens count 0): for bits per byte."""
    table = np.zeros(vocabulary, np.float64)
    size = min(vocabulary, int(tokenizer.vocabulary_size()))
    specials = set(getattr(tokenizer, "special_token_ids", []) or [])
    for start in range(0, size, 8192):
        ids = np.arange(start, min(size, start + 8192))
        texts = tokenizer.detokenize(ids[:, None])
        for i, t in zip(ids, np.asarray(texts).reshape(-1)):
            table[i] = 0.0 if int(i) in specials else len(t if isinstance(t, bytes) else str(t).encode("utf-8"))
    return table


# ---------------------------------------------------------------------- #
# Models
# ---------------------------------------------------------------------- #
def load_causal_lm(preset, role="--teacher", dtype=None):
    """``keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)``; a ``ValueError`` in one line when that fails.

    ``dtype``: a dtype policy name for the model's weights and computation
    (``"bfloat16"``: half the memory of float32 weights; ``"mixed_bfloat16"``:
    float32 weights, bfloat16 computation), ``None``: the preset's own.
    """
    import keras_hub

    if "://" not in str(preset) and not os.path.isdir(os.fspath(preset)):
        raise ValueError(f"{role} {preset!r} is not a preset: give a directory saved with save_to_preset, a Hugging "
                         "Face checkpoint directory, or a hf:// or kaggle:// handle.")
    try:
        with readable_tokenizer_files(preset) as readable:
            model = keras_hub.models.CausalLM.from_preset(readable, **({"dtype": dtype} if dtype else {}))
    except Exception as e:  # noqa: BLE001 - any failure is the user's preset
        message = " ".join(str(e).split())[:300]
        raise ValueError(f"{role} {preset!r} could not be loaded as a causal language model: {message}") from None
    if getattr(model, "preprocessor", None) is None or getattr(model.preprocessor, "tokenizer", None) is None:
        raise ValueError(f"{role} {preset!r} has no tokenizer: save the preset with its preprocessor.")
    return with_checkpoint_norm_epsilon(model, preset)


def _hf_config(preset):
    """A Hugging Face checkpoint folder's ``config.json`` (``{}`` for anything else)."""
    path = os.path.join(os.fspath(preset), "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def readable_tokenizer_files(preset):
    """``preset``, or, for a Hugging Face checkpoint that carries only ``tokenizer.json`` (as transformers 5 saves
    them), a temporary mirror of it with the files KerasHub's converters read, built from ``tokenizer.json``: GPT-2's
    ``vocab.json`` and ``merges.txt``, BERT's ``vocab.txt``. The user's folder is not written to."""
    folder = os.fspath(preset)
    files = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    kind = _hf_config(preset).get("model_type")
    needed = {"gpt2": ("BPE", {"vocab.json", "merges.txt"}), "bert": ("WordPiece", {"vocab.txt"})}.get(kind)
    if "tokenizer.json" not in files or needed is None or needed[1] <= files:
        yield preset
        return
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        model = json.load(f).get("model", {})
    if model.get("type") != needed[0] or "vocab" not in model:
        yield preset
        return
    with tempfile.TemporaryDirectory(prefix=f"kdkeras-{kind}-") as mirror:
        for name in files:
            os.symlink(os.path.join(os.path.abspath(folder), name), os.path.join(mirror, name))
        if kind == "bert":
            with open(os.path.join(mirror, "vocab.txt"), "w", encoding="utf-8") as f:
                f.write("".join(t + "\n" for t in sorted(model["vocab"], key=model["vocab"].get)))
        else:
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            with open(os.path.join(mirror, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(model["vocab"], f, ensure_ascii=False)
            with open(os.path.join(mirror, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
        yield mirror


def with_checkpoint_norm_epsilon(model, preset):
    """``model`` with the RMS-norm epsilon of a Hugging Face checkpoint's ``config.json`` (``rms_norm_eps``).

    KerasHub 0.32's Llama 3 converter drops it (a checkpoint made with 1e-5
    loads with the backbone's default 1e-6, and its logits move); where the
    loaded backbone's ``layer_norm_epsilon`` differs, the backbone is rebuilt
    with the checkpoint's value and the same weights. Other presets are
    returned as they are.
    """
    eps = _hf_config(preset).get("rms_norm_eps")
    config = model.backbone.get_config()
    if eps is None or "layer_norm_epsilon" not in config or float(config["layer_norm_epsilon"]) == float(eps):
        return model
    logger.info("kdkeras: %s: layer_norm_epsilon %s from the checkpoint's rms_norm_eps (the converter gave %s).",
                preset, eps, config["layer_norm_epsilon"])
    config["layer_norm_epsilon"] = float(eps)
    backbone = type(model.backbone).from_config(config)
    backbone.set_weights(model.backbone.get_weights())
    return type(model)(backbone=backbone, preprocessor=model.preprocessor)


def check_sequence_length(model, length):
    """A ``ValueError`` when ``length`` tokens are beyond the model's maximum sequence length (where it has one)."""
    limit = getattr(model.backbone, "max_sequence_length", None)
    if limit is not None and length > int(limit):
        raise ValueError(f"--sequence-length {length} is beyond the maximum of {limit} tokens of {model.name!r}.")


def student_from_teacher(teacher, layers, dtype=None):
    """A student of ``teacher``'s architecture with ``layers`` transformer layers, initialised from the teacher.

    Student layer ``i`` starts as teacher layer ``i * k`` with ``k = L_t // layers``
    (every k-th layer, as DistilBERT), and every other weight (embeddings,
    final norm, head) is the teacher's. The teacher's preprocessor is shared.
    ``dtype``: the student's dtype policy name (default: the teacher's).
    """
    return type(teacher)(backbone=shrunk_backbone(teacher.backbone, layers, dtype),
                         preprocessor=teacher.preprocessor)


def shrunk_backbone(backbone, layers, dtype=None):
    """A KerasHub backbone of ``backbone``'s config with ``layers`` of its ``transformer_layers``, its weights copied:
    layer ``i`` from layer ``i * (L // layers)``, every other layer (embeddings, norms, pooler) by name."""
    total = int(backbone.num_layers)
    if not 1 <= layers <= total:
        raise ValueError(f"from-teacher:{layers} needs 1 to {total} layers (the teacher has {total}).")
    config = backbone.get_config()
    config["num_layers"] = int(layers)
    if dtype is not None:
        config["dtype"] = dtype
    small = type(backbone).from_config(config)
    step = total // layers
    source = {layer.name: layer for layer in backbone.layers}
    for layer in small.layers:
        match = re.fullmatch(r"(.*_)(\d+)", layer.name)
        name = layer.name
        if match and layer in getattr(small, "transformer_layers", []):
            name = f"{match.group(1)}{int(match.group(2)) * step}"
        if layer.weights:
            layer.set_weights(source[name].get_weights())
    return small


def merge_lora(model):
    """``model`` with every LoRA adapter folded into its kernel, as a model without LoRA (same config)."""
    merged = {}
    for layer in model._flatten_layers():
        if getattr(layer, "lora_enabled", False):
            kernel = getattr(layer, "_kernel", None)
            if kernel is not None:
                merged[kernel.path] = keras.ops.convert_to_numpy(layer.kernel)
    if not merged:
        return model
    backbone = type(model.backbone).from_config(model.backbone.get_config())
    fresh = type(model)(backbone=backbone, preprocessor=model.preprocessor)
    values = {v.path: v for v in model.weights}
    for variable in fresh.weights:
        variable.assign(merged[variable.path] if variable.path in merged else values[variable.path])
    return fresh


def fingerprint(model):
    """``{"model": sha256 of its config (not its name) and weights, "tokenizer": sha256 of its ids on a probe text}``."""
    config = {k: v for k, v in model.backbone.get_config().items() if k not in ("name", "trainable", "dtype")}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for weight in model.backbone.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight).astype(np.float32))
        digest.update(str(value.shape).encode() + value.tobytes())
    tokenizer = model.preprocessor.tokenizer
    ids = np.asarray(tokenizer(PROBE_TEXT)).reshape(-1).astype(np.int64)
    probe = hashlib.sha256(ids.tobytes() + str(tokenizer.vocabulary_size()).encode()).hexdigest()
    return {"model": digest.hexdigest(), "tokenizer": probe}


# ---------------------------------------------------------------------- #
# The top-k teacher cache on disk (kdkeras cache-teacher)
# ---------------------------------------------------------------------- #
def load_cache(directory, batch_size, shuffle=True, seed=None):
    """The cache's top-k batches, every shard in order (shuffled within a buffer when ``shuffle``)."""
    from kdkeras.data import top_k

    shards = sorted(n for n in os.listdir(directory) if n.startswith("shard-"))
    if not shards:
        raise ValueError(f"--teacher-cache {directory!r} holds no shard: run kdkeras cache-teacher first.")
    datasets = [top_k.load_top_k(os.path.join(directory, n), batch_size, shuffle=shuffle, seed=seed).unbatch()
                for n in shards]
    data = datasets[0]
    for more in datasets[1:]:
        data = data.concatenate(more)
    return data


def check_cache(directory, teacher, settings):
    """Refuses (``ValueError``) a cache made with another teacher, tokenizer, sequence length or temperature, or
    one that misses a shard (a part of ``cache-teacher --shard I/N`` not run)."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"--teacher-cache {directory!r} has no {MANIFEST}: make it with kdkeras cache-teacher.")
    with open(path) as f:
        made = json.load(f)
    prints = fingerprint(teacher)
    wanted = {"teacher_fingerprint": prints["model"], "tokenizer_fingerprint": prints["tokenizer"],
              "sequence_length": settings.sequence_length, "temperature": float(settings.temperature)}
    for key, value in wanted.items():
        if made.get(key) != value:
            what = key.replace("_", " ")
            raise ValueError(f"--teacher-cache {directory!r} was made with another {what} "
                            f"({made.get(key)!r}, this run {value!r}): make the cache again with kdkeras cache-teacher.")
    present = {n for n in os.listdir(directory) if n.startswith("shard-")}
    missing = sorted({f"shard-{i:05d}" for i in range(made.get("shards") or 0)} - present)
    if missing:
        raise ValueError(f"--teacher-cache {directory!r} misses {len(missing)} of its {made['shards']} shards (first: "
                         f"{missing[0]}): run the kdkeras cache-teacher parts (--shard I/N) that write them.")
    return made
