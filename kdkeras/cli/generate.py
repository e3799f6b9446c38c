"""``kdkeras generate``: a KerasHub teacher completes your prompts, the data of sequence-level distillation.

    kdkeras generate --teacher PRESET --prompts FILE --out FILE.jsonl

Writes one JSON line per sample: ``"prompt"``, ``"completion"`` (the text after
the prompt, up to and without the end token), ``"sample"``, ``"tokens"``,
``"ended"`` and ``"mean_logprob"`` (the teacher's mean log-probability of its
tokens), plus the prompt line's own fields. ``kdkeras distill-lm --data
FILE.jsonl`` then trains a student on the completions (Kim & Rush, 2016).
The same command and seed write the same lines, whatever ``--batch-size``.
Shards are written atomically to ``FILE.jsonl.parts/``; ``--resume`` continues
an interrupted run.
"""

import os
import sys
import time

from kdkeras.cli.common import EXIT_USAGE, UserError, import_tensorflow_quietly

HELP = "the teacher completes your prompts: data for sequence-level distillation"
DESCRIPTION = __doc__.split("\n\n")[0]


def configure(p):
    p.add_argument("--teacher", required=True, metavar="PRESET",
                   help="a KerasHub causal LM preset: a save_to_preset or Hugging Face directory, or a handle")
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="a UTF-8 .txt file (one prompt a line) or a .jsonl file with \"prompt\" per line")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the output file (JSON lines)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens generated at most per sample")
    p.add_argument("--samples-per-prompt", type=int, default=1, help="completions of each prompt")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: the mass kept (1: all tokens)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences decoded together (speed only)")
    p.add_argument("--teacher-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="the teacher's weights and computation (bfloat16: half the memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1))


def check_args(args):
    """Every flag, the prompts and ``--out``, before the teacher is loaded; returns ``(Sampling, Prompts, state)``."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer; received {args.batch_size}.")
    if not args.out.endswith(".jsonl"):
        raise UserError(f"--out {args.out!r} must name a .jsonl file.")
    if os.path.isdir(args.out):
        raise UserError(f"--out {args.out!r} is a folder: give a .jsonl file name.")
    import_tensorflow_quietly("kdkeras.text.generation")
    from kdkeras.text.generation import Sampling, output_state, read_prompts

    try:
        sampling = Sampling(max_new_tokens=args.max_new_tokens, samples_per_prompt=args.samples_per_prompt,
                            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
        prompts = read_prompts(args.prompts)
        state = output_state(args.out, args.resume)
    except ValueError as e:
        raise UserError(str(e)) from None
    return sampling, prompts, state


def run(args, sampling, prompts, state):
    """Loads the teacher, generates, writes ``--out``; prints a summary."""
    from kdkeras.text import causal_lm, generation

    if state == "complete":
        print(f"{args.out} is complete: nothing to do.")
        return
    try:
        teacher = causal_lm.load_causal_lm(args.teacher, dtype=args.teacher_dtype)
    except ValueError as e:
        raise UserError(str(e)) from None
    start = time.time()
    try:
        generation.generate(teacher, prompts, out=args.out, sampling=sampling, batch_size=args.batch_size,
                            resume=args.resume, verbose=args.verbose)
    except ValueError as e:
        raise UserError(str(e)) from None
    seconds = time.time() - start
    tokens, ended, count = _summary(args.out)
    print(f"Wrote {count:,} samples ({tokens:,} tokens, {ended:.0%} ended at the end token) to {args.out} in "
          f"{seconds:.0f} s ({tokens / max(seconds, 1e-9):,.0f} tokens a second).")


def _summary(path):
    import json

    tokens = ended = count = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            tokens += record["tokens"]
            ended += record["ended"]
            count += 1
    return tokens, ended / max(count, 1), count


def execute(args, prog="kdkeras generate"):
    """Runs the command with parsed arguments; returns the exit status (2 for a user error, writing nothing)."""
    try:
        inputs = check_args(args)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        run(args, *inputs)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the finished shards are kept: add --resume to continue.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    from kdkeras.cli.dispatch import main

    sys.exit(main(["generate", *sys.argv[1:]]))
