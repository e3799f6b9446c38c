"""``kdkeras cache-teacher``: run a KerasHub teacher once over your text and keep its top-k per real token on disk.

    kdkeras cache-teacher --teacher PRESET --data DATA --top-k K --sequence-length L --out CACHE

The cache holds the training windows of ``DATA`` (the same seeded hold-out as
``kdkeras distill-lm``) in shards of ``--shard-batches`` batches; an
interrupted run continues where it stopped when run again with the same
arguments. ``manifest.json`` records the teacher's and tokenizer's
fingerprints, the sequence length, ``k``, the temperature and the number of
shards, and ``kdkeras distill-lm --teacher-cache CACHE`` refuses a cache that
does not match or misses a shard.

``--shard I/N`` splits the work over ``N`` processes (machines sharing the
folder, or one machine in turns): process ``I`` (from 0) writes shards ``I``,
``I + N``, ... and the same manifest; together they write the cache one
process would.
"""

import json
import os

from kdkeras.atomic import write_text
from kdkeras.cli.common import UserError

HELP = "cache a KerasHub teacher's top-k log-probabilities of your text on disk"
DESCRIPTION = __doc__.split("\n\n")[0]


def configure(p):
    p.add_argument("--teacher", required=True, metavar="PRESET",
                   help="a KerasHub causal LM preset: a save_to_preset or Hugging Face directory, or a handle")
    p.add_argument("--data", required=True, help="a .txt file, a folder of .txt files, or a .jsonl file")
    p.add_argument("--top-k", type=int, required=True, help="tokens kept per real token")
    p.add_argument("--sequence-length", type=int, required=True, help="tokens per training window")
    p.add_argument("--out", required=True, metavar="CACHE", help="the cache folder")
    p.add_argument("--temperature", type=float, default=1.0, help="temperature of the stored log-probabilities")
    p.add_argument("--validation", metavar="FILE", help="held-out data (default: a seeded 5 %% of DATA)")
    p.add_argument("--teacher-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="the teacher's weights and computation (bfloat16: half the memory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out documents")
    p.add_argument("--batch-size", type=int, default=8, help="windows per teacher call")
    p.add_argument("--shard-batches", type=int, default=64, help="batches per shard (the unit of resumption)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="write the I-th of N parts of the cache (0-based; default 0/1: all of it)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1))


def check_args(args):
    for flag, value in (("--top-k", args.top_k), ("--sequence-length", args.sequence_length),
                        ("--batch-size", args.batch_size), ("--shard-batches", args.shard_batches)):
        if value < 1:
            raise UserError(f"{flag} must be a positive integer; received {value}.")
    if not args.temperature > 0:
        raise UserError(f"--temperature must be > 0; received {args.temperature}.")
    args.part, args.parts = shard_of(args.shard)


def shard_of(value):
    """``(I, N)`` of ``--shard I/N``; a ``UserError`` unless ``0 <= I < N``."""
    try:
        part, parts = (int(v) for v in value.split("/"))
    except ValueError:
        raise UserError(f"--shard must be I/N with whole numbers, such as 0/2; received {value!r}.") from None
    if not 0 <= part < parts:
        raise UserError(f"--shard {value!r}: I must be in [0, N), counting from 0.")
    return part, parts


def manifest(teacher, args):
    """What the cache was made with: the teacher's and tokenizer's fingerprints and the settings."""
    from kdkeras.text import causal_lm

    prints = causal_lm.fingerprint(teacher)
    return {"teacher_fingerprint": prints["model"], "tokenizer_fingerprint": prints["tokenizer"],
            "sequence_length": args.sequence_length, "top_k": args.top_k, "temperature": float(args.temperature),
            "data": os.path.abspath(args.data), "seed": args.seed, "batch_size": args.batch_size,
            "validation": os.path.abspath(args.validation) if args.validation else None}


def run(args):
    """Writes the cache shards and the manifest; prints the bytes per token."""
    import tensorflow as tf

    from kdkeras.data import top_k
    from kdkeras.text import causal_lm

    check_args(args)
    try:
        teacher = causal_lm.load_causal_lm(args.teacher, dtype=args.teacher_dtype)
        data = causal_lm.lm_data(teacher.preprocessor.tokenizer, args.data, args.sequence_length,
                                 args.validation, args.seed)
        causal_lm.check_sequence_length(teacher, args.sequence_length)
    except ValueError as e:
        raise UserError(str(e)) from None
    windows = tf.data.Dataset.from_tensor_slices(data.train).batch(args.batch_size)
    batches = int(windows.cardinality())
    shards = -(-batches // args.shard_batches)
    record = dict(manifest(teacher, args), shards=shards)
    path = os.path.join(args.out, causal_lm.MANIFEST)
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != record:
                raise UserError(f"--out {args.out!r} holds a cache made with other arguments or another teacher: "
                                "give a new folder.")
    else:  # every part writes the same manifest, atomically
        write_text(path, json.dumps(record, indent=2))
    for shard in range(args.part, shards, args.parts):
        directory = os.path.join(args.out, f"shard-{shard:05d}")
        if os.path.isdir(directory):
            continue  # written by an earlier run (shards are written atomically)
        part = windows.skip(shard * args.shard_batches).take(args.shard_batches)
        if args.verbose:
            print(f"shard {shard + 1}/{shards}", flush=True)
        top_k.save_top_k(teacher, part, directory, args.top_k, temperature=args.temperature,
                         vocabulary_size=int(teacher.preprocessor.tokenizer.vocabulary_size()), verbose=args.verbose)
    tokens = float(data.train[2].sum())
    if args.parts > 1:
        print(f"Wrote part {args.part} of {args.parts} ({len(range(args.part, shards, args.parts))} of {shards} "
              f"shards) of the teacher's top {args.top_k} in {args.out}")
        return
    nbytes = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(args.out) for name in names)
    print(f"Cached the teacher's top {args.top_k} for {tokens:,.0f} real tokens in {shards} shard(s): "
          f"{nbytes / max(tokens, 1):.0f} bytes per token on disk (inputs included) in {args.out}")
