"""``kdkeras distill-classifier``: distil a KerasHub text classifier into a smaller student on your labelled text.

    kdkeras distill-classifier --teacher PRESET --student PRESET|from-teacher:LAYERS --data FILE --out DIR

Writes ``DIR/student/`` (a preset: ``keras_hub.models.TextClassifier.from_preset``
loads it with its preprocessor and predicts from raw strings; ``classes.json``
beside it names the classes), ``metrics.json`` (held-out accuracy, macro F1,
KL to the teacher and agreement, for the teacher and the student before and
after) and ``report.md`` (the table and the deployed student's T = 1
probabilities on a few texts). A seeded 10 % of the texts is held out unless
``--validation FILE`` is given. ``--export hf`` also writes ``DIR/student-hf/``.
"""

import sys

from kdkeras.cli.common import UserError, checked_recipe

HELP = "distil a KerasHub text classifier preset into a smaller student on your labelled text"
DESCRIPTION = __doc__.split("\n\n")[0]


def configure(p):
    from kdkeras.encoder_recipe import add_arguments  # plain Python: --help answers before TensorFlow loads

    add_arguments(p)


def run(args):
    """Loads and checks everything, distils, evaluates and writes the outputs; returns the record."""
    from kdkeras.encoder_recipe import EncoderRecipe
    from kdkeras.text import encoder_job

    recipe = checked_recipe(EncoderRecipe, args)
    try:
        job = encoder_job.prepare(recipe)
    except ValueError as e:
        raise UserError(str(e)) from None
    record = encoder_job.distil_and_report(job, recipe,
                                           command=" ".join(["kdkeras distill-classifier", *args.argv[1:]]))
    after, teacher = record["student_after"], record["teacher"]
    print(f"\nHeld-out accuracy: teacher {teacher['accuracy']:.3f}, student before "
          f"{record['student_before']['accuracy']:.3f}, after {after['accuracy']:.3f} (agreement with the teacher "
          f"{after['agreement']:.3f}).\nWrote student/, metrics.json and report.md"
          f"{' and student-hf/' if recipe.export else ''} to {args.out}")
    return record


if __name__ == "__main__":
    from kdkeras.cli.dispatch import main

    sys.exit(main(["distill-classifier", *sys.argv[1:]]))
