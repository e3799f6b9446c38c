"""The ``kdkeras`` command: one entry point for every job.

    kdkeras train-mnist [options]   the MNIST main job (scripts/train_mnist.py)
    kdkeras train-text [options]    the language-model main job (scripts/train_text.py)
    kdkeras train-classifier [opts] the text-classification job (scripts/train_text_classifier.py)
    kdkeras distill [options]       your own teacher, student and data
    kdkeras distill-lm [options]    your own KerasHub language models (presets) and text
    kdkeras distill-classifier [..] your own KerasHub text classifier (preset) and labelled text
    kdkeras generate [options]      a KerasHub teacher completes your prompts (sequence-level KD data)
    kdkeras cache-teacher [options] a KerasHub teacher's top-k of your text, on disk
    kdkeras tune [options]          choose T, alpha, loss and learning rate on validation data

``kdkeras COMMAND --help`` answers before TensorFlow is imported.
"""

import argparse
import sys

from kdkeras.cli import (cache_teacher, distill, distill_classifier, distill_lm, generate, train_classifier, train_mnist,
                         train_text, tune)
from kdkeras.cli.common import (EXIT_USAGE, OneLineParser, UserError, check_out, default_out,
                                import_tensorflow_quietly, remove_if_new)

#: subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "train-mnist": (train_mnist, "the MNIST main job: teacher, scratch student, distilled student"),
    "train-text": (train_text, "the language-model main job on text: teacher, scratch and distilled student"),
    "train-classifier": (train_classifier, "the text-classification job: a BERT teacher, a 1/4-size student, "
                                           "four ways"),
    "distill": (distill, distill.HELP),
    "distill-lm": (distill_lm, distill_lm.HELP),
    "distill-classifier": (distill_classifier, distill_classifier.HELP),
    "generate": (generate, generate.HELP),
    "cache-teacher": (cache_teacher, cache_teacher.HELP),
    "tune": (tune, tune.HELP),
}


def build_parser():
    p = OneLineParser(prog="kdkeras", formatter_class=argparse.RawDescriptionHelpFormatter,
                      description="kdkeras: knowledge distillation for Keras 3, one command for every job.",
                      epilog="kdkeras COMMAND --help shows a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        description = getattr(module, "DESCRIPTION", None) or module.__doc__.split("\n\n")[0]
        child = sub.add_parser(name, help=help_text, description=description,
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.configure(child)
    return p


def main(argv=None):
    """``kdkeras COMMAND ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:  # kdkeras --help, or no or an unknown command: a status, not an exit
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            return e.code
    args = parser.parse_args(argv)
    if args.command in ("train-mnist", "train-text", "train-classifier", "generate"):
        return SUBCOMMANDS[args.command][0].execute(args, prog=f"kdkeras {args.command}")
    return run_own_data(args.command, args, argv)


def run_own_data(command, args, argv):
    """``distill``, ``tune``, ``distill-lm``, ``distill-classifier``, ``cache-teacher``: checks the output folder, imports TensorFlow
    quietly, runs, reports errors."""
    args.argv = argv  # the command line, for the result file's provenance
    if getattr(args, "resume", False) and args.out is None:
        print(f"kdkeras {command}: error: --resume continues the run in --out DIR; pass its directory.",
              file=sys.stderr)
        return EXIT_USAGE
    args.out = args.out or default_out(command)
    try:
        new = check_out(args.out)
    except UserError as e:
        print(f"kdkeras {command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    import_tensorflow_quietly("kdkeras.experiment", "kdkeras.data.images")
    from kdkeras.callbacks import NonFiniteLossError

    try:
        SUBCOMMANDS[command][0].run(args)
    except UserError as e:
        remove_if_new(args.out, new)
        print(f"kdkeras {command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as e:
        print(f"kdkeras {command}: error: {e} The last good epoch is kept: --resume --out {args.out} continues "
              "from it (with a lower learning rate, or after repairing the data).", file=sys.stderr)
        return 1
    except RuntimeError as e:  # a search in which no trial completed
        print(f"kdkeras {command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
