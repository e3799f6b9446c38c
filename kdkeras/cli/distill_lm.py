"""``kdkeras distill-lm``: distil a KerasHub causal LM preset into a student on your own text.

    kdkeras distill-lm --teacher PRESET --student PRESET|from-teacher:LAYERS --data DATA --out DIR

Writes ``DIR/student/`` (a preset: ``keras_hub.models.CausalLM.from_preset``
loads it with its tokenizer), ``metrics.json`` (held-out bits per token and
byte, perplexity, KL to the teacher and top-1 agreement, for the teacher and
the student before and after; tokens a second; the command), ``report.md``
and ``samples.md``. A seeded 5 % of the documents is held out unless
``--validation FILE`` is given.
"""

import dataclasses
import shutil
import sys
import tempfile

from kdkeras.cli.common import UserError, checked_recipe
from kdkeras.cli.train_mnist import check_tf_config, make_strategy

HELP = "distil a KerasHub causal LM preset into a smaller student on your text"
DESCRIPTION = __doc__.split("\n\n")[0]


def configure(p):
    from kdkeras.lm_recipe import add_arguments  # plain Python: --help answers before TensorFlow loads

    add_arguments(p)


def recipe_of(args):
    """The checked :class:`kdkeras.lm_recipe.LMRecipe` of the flags (a ``UserError`` for a bad one)."""
    from kdkeras.lm_recipe import LMRecipe

    return checked_recipe(LMRecipe, args)


def run(args):
    """Loads and checks everything, distils, evaluates and writes the outputs."""
    from kdkeras.text import lm_job

    recipe = recipe_of(args)
    if recipe.strategy == "multiworker":
        check_tf_config()
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    strategy, is_chief = make_strategy(recipe.strategy)
    scratch = None if is_chief else tempfile.mkdtemp(prefix="kdkeras-worker-")
    if scratch:  # the other workers train alike; only the chief's outputs are kept
        recipe = dataclasses.replace(recipe, out=scratch)
    try:
        try:
            job = lm_job.prepare(recipe, strategy)
        except ValueError as e:
            raise UserError(str(e)) from None
        record = lm_job.distil_and_report(job, recipe, command=" ".join(["kdkeras distill-lm", *args.argv[1:]]))
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\nHeld-out bits per byte: teacher {record['teacher']['bits_per_byte']:.3f}, student before "
          f"{record['student_before']['bits_per_byte']:.3f}, after {record['student_after']['bits_per_byte']:.3f}; "
          f"{record['tokens_per_second']:.0f} tokens a second.\nWrote student/, metrics.json, report.md and "
          f"samples.md to {args.out}")
    return record


if __name__ == "__main__":
    from kdkeras.cli.dispatch import main

    sys.exit(main(["distill-lm", *sys.argv[1:]]))
