"""``kdkeras distill-lm``: distil a KerasHub causal LM preset into a student on your own text.

    kdkeras distill-lm --teacher PRESET --student PRESET|from-teacher:LAYERS --data DATA --out DIR

Writes ``DIR/student/`` (a preset: ``keras_hub.models.CausalLM.from_preset``
loads it with its tokenizer), ``metrics.json`` (held-out bits per token and
byte, perplexity, KL to the teacher and top-1 agreement, for the teacher and
the student before and after; tokens a second; the command), ``report.md``
and ``samples.md``. A seeded 5 % of the documents is held out unless
``--validation FILE`` is given.
"""

import os
import sys

from kdkeras.cli.common import UserError, check_distillation_args

HELP = "distil a KerasHub causal LM preset into a smaller student on your text"
DESCRIPTION = __doc__.split("\n\n")[0]
LOSSES = ("kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv")


def configure(p):
    p.add_argument("--teacher", required=True, metavar="PRESET",
                   help="a KerasHub causal LM preset: a save_to_preset or Hugging Face directory, or a handle")
    p.add_argument("--student", required=True, metavar="PRESET|from-teacher:LAYERS",
                   help="a preset, or from-teacher:LAYERS (the teacher's architecture with LAYERS layers, "
                        "initialised from every k-th teacher layer)")
    p.add_argument("--data", required=True, action="append",
                   help="a .txt file, a folder of .txt files, or a .jsonl file (text, or prompt/completion pairs "
                        "such as kdkeras generate writes); give it more than once to mix sources")
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--sequence-length", type=int, default=128, help="tokens per training window")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's peak rate (cosine decay)")
    p.add_argument("--loss", default="kl", choices=LOSSES)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--alpha", type=float, default=0.0, help="weight of the hard-label loss (1: no teacher)")
    p.add_argument("--top-k", type=int, default=0, help="cache the teacher's top-k in memory first (0: online)")
    p.add_argument("--teacher-cache", metavar="CACHE", help="train from a kdkeras cache-teacher folder")
    p.add_argument("--on-policy-fraction", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=32, help="on-policy continuation length")
    p.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: all weights)")
    p.add_argument("--validation", metavar="FILE", help="held-out data (default: a seeded 5 %% of DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tensorboard", metavar="DIR", help="TensorBoard logs")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))


def check_args(args):
    """Every flag that needs no model, before TensorFlow is imported."""
    for flag in ("steps", "sequence_length", "batch_size", "max_new_tokens"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive integer; received {getattr(args, flag)}.")
    for flag in ("top_k", "lora_rank"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be 0 or positive; received {getattr(args, flag)}.")
    if not args.learning_rate > 0:
        raise UserError(f"--learning-rate must be > 0; received {args.learning_rate}.")
    if not 0 <= args.on_policy_fraction <= 1:
        raise UserError(f"--on-policy-fraction must be in [0, 1]; received {args.on_policy_fraction}.")
    if args.on_policy_fraction and args.max_new_tokens >= args.sequence_length:
        raise UserError("--max-new-tokens must be smaller than --sequence-length.")
    if args.on_policy_fraction and (args.teacher_cache or args.top_k):
        raise UserError("on-policy distillation needs the teacher online: drop --teacher-cache / --top-k.")
    if args.teacher_cache and args.top_k:
        raise UserError("give --teacher-cache or --top-k, not both.")
    if args.teacher_cache and not os.path.isdir(args.teacher_cache):
        raise UserError(f"--teacher-cache {args.teacher_cache!r} is not a folder.")
    layers = student_layers(args.student)
    if layers is not None and layers < 1:
        raise UserError(f"--student {args.student!r}: from-teacher needs a positive number of layers.")
    check_distillation_args(args)


def student_layers(spec):
    """``N`` of ``from-teacher:N`` (a ``UserError`` when it is not a number), else ``None``."""
    if not spec.startswith("from-teacher:"):
        return None
    try:
        return int(spec.split(":", 1)[1])
    except ValueError:
        raise UserError(f"--student {spec!r}: write from-teacher:LAYERS with LAYERS a number.") from None


def run(args):
    """Loads and checks everything, distils, evaluates and writes the outputs."""
    from kdkeras.text import lm_job

    check_args(args)
    try:
        job = lm_job.prepare(args)
    except ValueError as e:
        raise UserError(str(e)) from None
    record = lm_job.distil_and_report(job, args, command=" ".join(["kdkeras distill-lm", *args.argv[1:]]))
    print(f"\nHeld-out bits per byte: teacher {record['teacher']['bits_per_byte']:.3f}, student before "
          f"{record['student_before']['bits_per_byte']:.3f}, after {record['student_after']['bits_per_byte']:.3f}; "
          f"{record['tokens_per_second']:.0f} tokens a second.\nWrote student/, metrics.json, report.md and "
          f"samples.md to {args.out}")
    return record


if __name__ == "__main__":
    from kdkeras.cli.dispatch import main

    sys.exit(main(["distill-lm", *sys.argv[1:]]))
